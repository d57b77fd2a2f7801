//! SDP: arbitrary ANNOUNCE bodies through `parse_announce`; an accepted format must build
//! a decoder (the server relies on ANNOUNCE having validated it).
#![no_main]
use libfuzzer_sys::fuzz_target;
use raopd::codec::Decoder;
use raopd::rtsp::sdp::parse_announce;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = parse_announce(data) {
        assert!(
            Decoder::new(&a.format).is_ok(),
            "ANNOUNCE accepted a format no decoder takes: {:?}",
            a.format
        );
    }
});
