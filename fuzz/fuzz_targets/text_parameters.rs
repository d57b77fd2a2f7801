//! `text/parameters` bodies (`volume: …`, `progress: …/…/…`) as SET_PARAMETER and
//! GET_PARAMETER carry them, through the session that parses them. Whatever volume the
//! session applies is a finite number.
#![no_main]
use libfuzzer_sys::fuzz_target;
use raopd::rtsp::message::Request;
use raopd_fuzz::{check_response, key, session, NullIo};

fuzz_target!(|data: &[u8]| {
    let mut s = session(None);
    let mut io = NullIo::default();
    for method in ["SET_PARAMETER", "GET_PARAMETER"] {
        let req = Request {
            method: method.into(),
            uri: "rtsp://192.168.1.10/1".into(),
            protocol: "RTSP/1.0".into(),
            headers: vec![
                ("CSeq".into(), "3".into()),
                ("Content-Type".into(), "text/parameters".into()),
            ],
            body: data.to_vec(),
        };
        let resp = io.handle(&mut s, &req, key());
        check_response(&resp.to_bytes("RTSP/1.0"));
        assert!(io.volume.is_finite(), "volume {}", io.volume);
    }
});
