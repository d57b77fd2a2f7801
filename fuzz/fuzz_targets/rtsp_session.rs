//! The whole RTSP connection: arbitrary bytes framed into requests and answered by one
//! `Session` (ANNOUNCE with SDP, SETUP's Transport, RECORD/FLUSH's RTP-Info, SET_PARAMETER
//! bodies, GET_PARAMETER, Apple-Challenge, TEARDOWN). The first byte chooses whether the
//! speaker has a password (bit 0), whether another sender holds it (bit 1) and whether the
//! RSA work runs (bit 2): `Apple-Challenge` signatures and `a=rsaaeskey` decryption cost
//! milliseconds each, so without bit 2 those headers are dropped and `rsaaeskey` lines
//! renamed, which keeps the rest of the protocol at thousands of executions a second.
//! Every response must be well formed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use raopd_fuzz::{check_response, for_each_request, key, session, NullIo};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut s = session((mode & 1 == 1).then_some("secret"));
    let mut io = NullIo {
        busy: mode & 2 == 2,
        ..NullIo::default()
    };
    let rsa = mode & 4 == 4;
    for_each_request(rest, |req| {
        let mut req = req.clone();
        if !rsa {
            req.headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case("Apple-Challenge"));
            for w in req
                .body
                .windows(9)
                .enumerate()
                .filter(|(_, w)| w.eq_ignore_ascii_case(b"rsaaeskey"))
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
            {
                req.body[w + 8] = b'X';
            }
        }
        let req = &req;
        let resp = io.handle(&mut s, req, key());
        check_response(&resp.to_bytes(&req.protocol));
    });
    s.closed();
    io.drain(&mut s);
});
