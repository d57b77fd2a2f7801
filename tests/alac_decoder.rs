//! The ALAC decoder against packets made by an encoder nobody here wrote: the
//! `alac-encoder` crate (a port of Apple's reference encoder), at 352 frames per packet
//! as RAOP senders make them. The decoded PCM must equal the input exactly, also after
//! a round trip through the per-packet AES-CBC layer. (ffmpeg's ALAC encoder cannot be
//! told to use 352-frame packets, so it is not used here.)

use raopd::codec::{Codec, Decoder, StreamFormat, MAX_SAMPLES_PER_PACKET};
use raopd::crypto::AudioCipher;

const FMTP: &str = "352 0 16 40 10 14 2 255 0 0 44100";

/// Deterministic test signal: noise on the left, a sweep-ish tone on the right, with
/// quiet and loud passages so the encoder uses both compressed and escape frames.
fn signal(frames: usize) -> Vec<i16> {
    let mut x: u32 = 0x9e37_79b9;
    let mut out = Vec::with_capacity(frames * 2);
    for i in 0..frames {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let loud = (i / 4410) % 3 != 0;
        let l = if loud {
            (x >> 16) as i16
        } else {
            ((x >> 16) as i16) >> 8
        };
        let r = ((i as f64 * 0.05 * (1.0 + i as f64 / 44100.0)).sin() * 20000.0) as i16;
        out.push(l);
        out.push(r);
    }
    out
}

fn decoder() -> Decoder {
    Decoder::new(&StreamFormat {
        codec: Codec::Alac { fmtp: FMTP.into() },
        frames_per_packet: 352,
    })
    .unwrap()
}

fn encode_with_crate(pcm: &[i16]) -> Vec<Vec<u8>> {
    use alac_encoder::{AlacEncoder, FormatDescription};
    let input = FormatDescription::pcm::<i16>(44100.0, 2);
    let output = FormatDescription::alac(44100.0, 352, 2);
    let mut enc = AlacEncoder::new(&output);
    // The encoder may overshoot its own size estimate before falling back to an
    // uncompressed frame: give it room.
    let mut buf = vec![0u8; output.max_packet_size() * 2];
    pcm.chunks(352 * 2)
        .map(|chunk| {
            let bytes: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
            let n = enc.encode(&input, &bytes, &mut buf);
            buf[..n].to_vec()
        })
        .collect()
}

fn decode_all(packets: &[Vec<u8>], cipher: Option<&AudioCipher>) -> Vec<i16> {
    let mut d = decoder();
    let mut out = Vec::new();
    let mut pcm = [0i16; MAX_SAMPLES_PER_PACKET];
    for (i, p) in packets.iter().enumerate() {
        let mut p = p.clone();
        if let Some(c) = cipher {
            c.decrypt(&mut p);
        }
        let frames = d
            .decode(&p, &mut pcm)
            .unwrap_or_else(|e| panic!("packet {i}: {e:?}"));
        out.extend_from_slice(&pcm[..frames * 2]);
    }
    out
}

fn first_difference(a: &[i16], b: &[i16]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then_some(a.len().min(b.len())))
}

#[test]
fn alac_encoder_crate_packets_decode_bit_exact() {
    let pcm = signal(352 * 400);
    let packets = encode_with_crate(&pcm);
    assert_eq!(packets.len(), 400);
    // Compressed packets are much smaller than the 1408 bytes of raw PCM.
    assert!(
        packets.iter().any(|p| p.len() < 1000),
        "encoder produced no compressed packet"
    );
    let out = decode_all(&packets, None);
    assert_eq!(first_difference(&out, &pcm), None, "decoded PCM differs");
}

#[test]
fn encrypted_alac_packets_decode_bit_exact() {
    use aes::cipher::{BlockEncryptMut, KeyIvInit};
    let key = *b"raopd-test-key!!";
    let iv = *b"0123456789abcdef";
    let pcm = signal(352 * 100);
    let mut packets = encode_with_crate(&pcm);
    for p in packets.iter_mut() {
        // As senders do: CBC over the whole 16-byte blocks, IV reset per packet, tail clear.
        let n = p.len() & !15;
        let mut enc = cbc::Encryptor::<aes::Aes128>::new(&key.into(), &iv.into());
        for block in p[..n].chunks_exact_mut(16) {
            enc.encrypt_block_mut(block.into());
        }
    }
    let out = decode_all(&packets, Some(&AudioCipher::new(key, iv)));
    assert_eq!(first_difference(&out, &pcm), None, "decoded PCM differs");
}
