//! RTSP request framing and parsing: arbitrary bytes as they arrive on the RTSP connection,
//! taken apart request by request by `parse_request` (as the server does), each error
//! turned into the response the server sends.
#![no_main]
use libfuzzer_sys::fuzz_target;
use raopd::rtsp::message::parse_request;
use raopd_fuzz::{check_response, for_each_request, session};

fuzz_target!(|data: &[u8]| {
    for_each_request(data, |req| {
        let _ = req.header("CSeq");
    });
    // The reply to a request that cannot be framed is well formed.
    if let Err(e) = parse_request(data) {
        let s = session(None);
        check_response(&s.frame_error(&e).to_bytes("RTSP/1.0"));
    }
});
