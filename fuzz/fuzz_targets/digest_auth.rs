//! Digest `Authorization` parsing: arbitrary header values (and methods) checked against a
//! fixed password and nonce. A value that does not carry the right response never passes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use raopd::rtsp::auth::verify;

const NONCE: &str = "0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    // `method\nheader`: the method is the request's, the header the client's.
    let (method, header) = s.split_once('\n').unwrap_or(("OPTIONS", &s));
    let ok = verify(header, method, "secret", NONCE);
    // Only a header naming our nonce can pass.
    assert!(!ok || header.contains(NONCE));
});
