//! The control-socket request parser: arbitrary bytes, arriving in arbitrary pieces, split
//! into request lines by the socket's line reader and answered by `handle_line`. Every
//! reply is one line of JSON; no request line longer than the limit reaches the handler.
//!
//! Input: first byte is the size of the pieces the bytes arrive in.
#![no_main]
use libfuzzer_sys::fuzz_target;
use raopd::control::socket::{handle_line, Line, LineReader, MAX_LINE};
use raopd_fuzz::NullHandler;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1) * 8;
    let mut reader = LineReader::default();
    for chunk in rest.chunks(piece) {
        reader.push(chunk);
        while let Some(line) = reader.next_line() {
            let reply = match line {
                Line::Request(req) => {
                    assert!(req.len() <= MAX_LINE);
                    futures_lite::future::block_on(handle_line(&req, &NullHandler))
                }
                Line::TooLong => continue,
            };
            assert!(!reply.contains('\n'), "reply spans lines: {reply:?}");
            assert!(reply.starts_with('{') && reply.ends_with('}'), "{reply:?}");
        }
        assert!(
            reader.buffered() <= MAX_LINE,
            "buffer grew to {}",
            reader.buffered()
        );
    }
});
