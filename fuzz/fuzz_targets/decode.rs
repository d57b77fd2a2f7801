//! The audio path after the socket: an ANNOUNCE with an arbitrary `a=fmtp` (or none, for
//! L16), with or without AES, then arbitrary packets through the audio packet view,
//! decryption and the decoder, as `stream::Stream::handle_audio` does. The decoder must never
//! produce more frames than a packet may carry, and never panic (libFuzzer reports any
//! panic as a crash): the release build aborts on one, so a panic would take the daemon
//! down. Issue 14's proof that panics are unreachable is this target at >= 10 million
//! executions (`scripts/fuzz.sh --runs 10000000 decode`).
//!
//! Input: `fmtp line \n` then packets, each a big-endian u16 length and that many bytes.
//! The first byte of the fmtp line picks the codec (even: AppleLossless, odd: L16) and
//! encryption (bit 1).
#![no_main]
use libfuzzer_sys::fuzz_target;
use raopd::codec::{Decoder, MAX_SAMPLES_PER_PACKET};
use raopd::crypto::AudioCipher;
use raopd::rtp::AudioPacket;
use raopd::rtsp::sdp::parse_announce;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let nl = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let fmtp = String::from_utf8_lossy(&rest[..nl]);
    let mut packets = rest.get(nl + 1..).unwrap_or(&[]);
    let rtpmap = if mode & 1 == 0 {
        "AppleLossless"
    } else {
        "L16/44100/2"
    };
    let sdp = format!(
        "v=0\r\no=iTunes 1 0 IN IP4 192.168.1.20\r\ns=iTunes\r\nc=IN IP4 192.168.1.10\r\nt=0 0\r\n\
         m=audio 0 RTP/AVP 96\r\na=rtpmap:96 {rtpmap}\r\na=fmtp:96 {fmtp}\r\n"
    );
    let Ok(announce) = parse_announce(sdp.as_bytes()) else {
        return;
    };
    let mut decoder = Decoder::new(&announce.format).expect("ANNOUNCE validated the format");
    let cipher = (mode & 2 == 2).then(|| AudioCipher::new([0x11; 16], [0x22; 16]));
    let mut pcm = vec![0i16; MAX_SAMPLES_PER_PACKET];
    while packets.len() >= 2 {
        let n = u16::from_be_bytes([packets[0], packets[1]]) as usize;
        let n = n.min(packets.len() - 2);
        let mut pkt = packets[2..2 + n].to_vec();
        packets = &packets[2 + n..];
        let Ok(mut p) = AudioPacket::new_checked(&mut pkt[..]) else {
            continue;
        };
        let payload = p.payload_mut();
        if let Some(c) = &cipher {
            c.decrypt(payload);
        }
        if let Ok(frames) = decoder.decode(payload, &mut pcm) {
            assert!(frames * 2 <= MAX_SAMPLES_PER_PACKET, "{frames} frames");
        }
    }
});
