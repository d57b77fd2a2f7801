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

/// Silence, a quiet ramp and a tone in turn, ending in a partial packet: the encoder's zero
/// runs, small residuals and its partial-frame header.
fn sparse_signal(frames: usize) -> Vec<i16> {
    (0..frames)
        .flat_map(|i| {
            let s = match (i / 3000) % 3 {
                0 => 0,
                1 => ((i % 64) as i16 - 32) / 8,
                _ => ((i as f64 * 0.01).sin() * 3000.0) as i16,
            };
            [s, -s]
        })
        .collect()
}

#[test]
fn partial_and_sparse_packets_decode_bit_exact() {
    let pcm = sparse_signal(352 * 120 + 101);
    let packets = encode_with_crate(&pcm);
    assert_eq!(packets.len(), 121);
    let out = decode_all(&packets, None);
    assert_eq!(first_difference(&out, &pcm), None, "decoded PCM differs");
}

/// A full-scale step right after silence: the encoder's history is clamped on the decoded
/// value alone, as Apple's decoder does and the `alac` crate does not (the crate refuses
/// some of these packets; raopd once did too).
#[test]
fn full_scale_step_after_silence_decodes_bit_exact() {
    for (l, r) in [
        (16384i16, -16384i16),
        (0, i16::MIN),
        (32767, -1),
        (i16::MIN, 0),
    ] {
        for from in [1usize, 3, 5, 9, 50, 351] {
            let mut pcm = vec![0i16; 352 * 2];
            for f in pcm.chunks_exact_mut(2).skip(from) {
                f.copy_from_slice(&[l, r]);
            }
            let out = decode_all(&encode_with_crate(&pcm), None);
            assert_eq!(
                first_difference(&out, &pcm),
                None,
                "step to ({l}, {r}) at frame {from}"
            );
        }
    }
}

/// raopd's decoder against the `alac` crate on damaged packets: bits flipped, bytes changed
/// in the audio data (past the element headers, where raopd follows Apple's decoder and the
/// crate does not: prediction modes, LPC order 0, a 16-bit shift), packets cut, from both test
/// signals. Wherever the crate decodes a packet (it needs the closing end tag, which raopd's
/// does not), raopd's must give the same frames; and raopd's must never panic (the crate
/// sometimes does: it is caught here).
#[test]
fn damaged_packets_decode_as_the_alac_crate_decodes_them() {
    let info = alac::StreamInfo::from_sdp_format_parameters(FMTP).unwrap();
    let mut reference = alac::Decoder::new(info.clone());
    let mut ours = decoder();
    let mut packets = encode_with_crate(&signal(352 * 40));
    packets.extend(encode_with_crate(&sparse_signal(352 * 40 + 7)));
    std::panic::set_hook(Box::new(|_| {}));
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut compared, mut crate_panics) = (0, 0);
    for round in 0..20_000 {
        let mut p = packets[round % packets.len()].clone();
        for _ in 0..=rand() % 4 {
            // Past the headers of a compressed stereo element with order-8 predictors
            // (41 bytes), when the packet is that long.
            let data = 48.min(p.len() - 1);
            let at = data + (rand() as usize) % (p.len() - data);
            match rand() % 3 {
                0 => p[at] ^= 1 << (rand() % 8),
                1 => p[at] = rand() as u8,
                _ => p.truncate(at.max(1)),
            }
        }
        let mut want = [0i16; MAX_SAMPLES_PER_PACKET];
        let theirs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reference
                .decode_packet(&p, &mut want)
                .map(|s| s.len() / 2)
                .ok()
        }));
        let mut got = [0i16; MAX_SAMPLES_PER_PACKET];
        let mine = ours.decode(&p, &mut got);
        match theirs {
            Ok(Some(frames)) => {
                compared += 1;
                assert_eq!(mine, Ok(frames), "round {round}: frame count");
                assert_eq!(
                    first_difference(&got[..frames * 2], &want[..frames * 2]),
                    None,
                    "round {round}: samples differ"
                );
            }
            Ok(None) => {}
            Err(_) => {
                crate_panics += 1;
                reference = alac::Decoder::new(info.clone());
            }
        }
        if let Ok(frames) = mine {
            assert!(frames <= 352, "round {round}: {frames} frames");
        }
    }
    let _ = std::panic::take_hook();
    // Most damage leaves a packet the crate still reads (flipped sample bits).
    assert!(compared > 3_000, "only {compared} packets compared");
    eprintln!("compared {compared} packets; the crate panicked on {crate_panics}");
}
