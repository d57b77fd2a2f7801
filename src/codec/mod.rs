//! Payload → PCM. ALAC through raopd's own decoder ([`alac`], which says why), L16 by
//! byte-swapping. Output is always interleaved native-endian i16 stereo.
//!
//! Payloads come off the network: no panic on input (issue 11); nothing here can panic, and
//! the release build aborts on a panic instead of unwinding (issue 14).
//!
//! ALAC frames in the *escape* (verbatim) form, which PulseAudio's RAOP sink sends, take a
//! shortcut ([`decode_verbatim`]): they are a 23- or 55-bit header and raw 16-bit samples,
//! copied here in one pass instead of bit field by bit field (3.7 µs a packet with AES on
//! x86-64, against about 40 µs through a general decoder, see README "Benchmarks").
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::unreachable
    )
)]

pub mod alac;

use alac::{AlacDecoder, AlacParams};

/// Frames in one packet at most. Every RAOP sender uses 352; the ring buffer's slots
/// are sized for it, so larger packets are refused at ANNOUNCE.
pub const MAX_FRAMES_PER_PACKET: u32 = 352;
/// Interleaved samples in one packet at most.
pub const MAX_SAMPLES_PER_PACKET: usize = MAX_FRAMES_PER_PACKET as usize * 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// Apple Lossless; `fmtp` is the SDP format parameters after the payload type.
    Alac { fmtp: String },
    /// Big-endian signed 16-bit PCM.
    L16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFormat {
    pub codec: Codec,
    pub frames_per_packet: u32,
}

impl StreamFormat {
    pub fn name(&self) -> &'static str {
        match self.codec {
            Codec::Alac { .. } => "ALAC",
            Codec::L16 => "L16",
        }
    }
}

/// Why a packet produced no audio (it is played as silence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The decoder rejected the data.
    Corrupt,
    /// More frames than a packet may carry.
    TooLong,
    /// The output buffer holds fewer than [`MAX_SAMPLES_PER_PACKET`] samples (a caller's
    /// mistake, not the data's).
    ShortOutput,
}

pub enum Decoder {
    Alac(Box<AlacDecoder>),
    L16,
}

impl Decoder {
    /// Builds a decoder; the format was validated at ANNOUNCE.
    pub fn new(format: &StreamFormat) -> Result<Self, String> {
        match &format.codec {
            Codec::Alac { fmtp } => {
                let params = AlacParams::from_fmtp(fmtp).map_err(|e| e.to_string())?;
                Ok(Decoder::Alac(Box::new(AlacDecoder::new(params))))
            }
            Codec::L16 => Ok(Decoder::L16),
        }
    }

    /// Decodes one packet payload into `out` (at least [`MAX_SAMPLES_PER_PACKET`] long);
    /// returns the number of frames.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, DecodeError> {
        match self {
            Decoder::L16 => {
                let frames = payload.len() / 4;
                if frames > MAX_FRAMES_PER_PACKET as usize {
                    return Err(DecodeError::TooLong);
                }
                let out = out.get_mut(..frames * 2).ok_or(DecodeError::ShortOutput)?;
                be16_samples(payload, 0, 0, out);
                Ok(frames)
            }
            Decoder::Alac(dec) => {
                let out = out
                    .get_mut(..MAX_SAMPLES_PER_PACKET)
                    .ok_or(DecodeError::ShortOutput)?;
                if let Some(frames) = decode_verbatim(payload, dec.frame_length(), out) {
                    return Ok(frames);
                }
                dec.decode(payload, out).map_err(|_| DecodeError::Corrupt)
            }
        }
    }
}

/// Decodes an ALAC packet whose first element is an *uncompressed* (escape) 16-bit stereo
/// element: the header (tag `ID_CPE`, element instance, 12 unused bits, has-size, shift 0,
/// escape), an optional 32-bit frame count, then the samples, interleaved left/right, 16 bits
/// each, big-endian, from bit 23 (or 55) on. Returns the number of frames, or `None` when
/// the packet is not of this form (compressed, another layout, or cut short), for
/// [`AlacDecoder`] to decode.
///
/// What follows the samples is not read: an `ID_END` tag (Apple's encoder), nothing
/// (PulseAudio's RAOP sink, which leaves the end tag out), or fill elements; for a stereo
/// stream none of it changes the samples, so this gives exactly what [`AlacDecoder`] (and
/// the `alac` crate, where it decodes the packet at all) gives. Follows Apple's
/// `ALACDecoder::Decode` (`escapeFlag` branch, the ALAC source release of 2011).
fn decode_verbatim(payload: &[u8], max_frames: u32, out: &mut [i16]) -> Option<usize> {
    let mut b = alac::Reader::new(payload);
    let tag = b.read(3).ok()?;
    let _instance = b.read(4).ok()?;
    let unused = b.read(12).ok()?;
    let has_size = b.read(1).ok()?;
    let shift = b.read(2).ok()?;
    let escape = b.read(1).ok()?;
    if tag != 1 || unused != 0 || shift != 0 || escape != 1 {
        return None;
    }
    let frames = if has_size == 1 {
        b.read(32).ok()?
    } else {
        max_frames
    };
    if frames == 0 || frames > max_frames {
        return None;
    }
    let out = out.get_mut(..frames as usize * 2)?;
    // Every sample must be present.
    if b.left() < frames as usize * 32 {
        return None;
    }
    // Samples are 16 bits, so each starts at the same bit within its byte.
    let (first, bit) = (b.pos() / 8, (b.pos() % 8) as u32);
    be16_samples(payload, first, bit, out);
    Some(frames as usize)
}

/// Fills `out` with the big-endian 16-bit samples of `bytes` that start `bit` bits (0–7) into
/// byte `first`, one after the other: sample i is the pair at byte `first + 2 i` shifted left
/// by `bit`, filled from the top bits of the byte after the pair (none taken when `bit` is 0,
/// so that byte may be missing). Samples past the end of `bytes` are left as they are.
/// Four samples come from one 64-bit word (a third less time than sample by sample at the
/// release profile's opt-level "z").
fn be16_samples(bytes: &[u8], first: usize, bit: u32, out: &mut [i16]) {
    let bit = bit.min(7);
    let src = bytes.get(first..).unwrap_or_default();
    let n = out.len().min(src.len() / 2);
    let out = out.get_mut(..n).unwrap_or_default();
    let mut at = 0;
    let mut quads = out.chunks_exact_mut(4);
    for o in &mut quads {
        let (Some(word), Ok(o)) = (src.get(at..at + 8), <&mut [i16; 4]>::try_from(o)) else {
            return;
        };
        let word = u64::from_be_bytes(word.try_into().unwrap_or_default());
        let next = src.get(at + 8).copied().unwrap_or(0);
        let v = (word << bit) | (u64::from(next) >> (8 - bit));
        *o = [
            (v >> 48) as i16,
            (v >> 32) as i16,
            (v >> 16) as i16,
            v as i16,
        ];
        at += 8;
    }
    for o in quads.into_remainder() {
        let Some(pair) = src.get(at..at + 2) else {
            return;
        };
        let word = u16::from_be_bytes(pair.try_into().unwrap_or_default());
        let next = src.get(at + 2).copied().unwrap_or(0);
        *o = ((word << bit) | (u16::from(next) >> (8 - bit))) as i16;
        at += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l16_byte_swaps() {
        let mut d = Decoder::new(&StreamFormat {
            codec: Codec::L16,
            frames_per_packet: 352,
        })
        .unwrap();
        let mut out = [0i16; MAX_SAMPLES_PER_PACKET];
        let n = d
            .decode(
                &[0x12, 0x34, 0xff, 0xfe, 0x80, 0x00, 0x7f, 0xff, 0xaa],
                &mut out,
            )
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(&out[..4], &[0x1234, -2, i16::MIN, i16::MAX]);
        assert_eq!(d.decode(&[0; 4 * 353], &mut out), Err(DecodeError::TooLong));
    }

    /// An escape (verbatim) stereo ALAC packet: header, the frame count when `has_size`, the
    /// samples, then the `ID_END` tag when `end`; zero-padded to a byte.
    fn verbatim_packet(samples: &[i16], has_size: bool, end: bool) -> Vec<u8> {
        let mut bits: Vec<u8> = Vec::new();
        let mut push = |v: u32, n: usize| {
            for i in (0..n).rev() {
                bits.push(((v >> i) & 1) as u8);
            }
        };
        push(1, 3); // ID_CPE
        push(0, 4);
        push(0, 12);
        push(has_size as u32, 1);
        push(0, 2);
        push(1, 1); // escape
        if has_size {
            push(samples.len() as u32 / 2, 32);
        }
        for s in samples {
            push(*s as u16 as u32, 16);
        }
        if end {
            push(7, 3);
        }
        bits.chunks(8)
            .map(|c| c.iter().enumerate().fold(0u8, |a, (i, b)| a | b << (7 - i)))
            .collect()
    }

    fn alac_format() -> StreamFormat {
        StreamFormat {
            codec: Codec::Alac {
                fmtp: "352 0 16 40 10 14 2 255 0 0 44100".into(),
            },
            frames_per_packet: 352,
        }
    }

    /// Every bit offset and sample count up to 13 against reading the bits one by one.
    #[test]
    fn be16_samples_at_any_bit() {
        let bytes: Vec<u8> = (0..40u32).map(|i| (i * 0x9d + 0x35) as u8).collect();
        let bit_at = |k: usize| (bytes[k / 8] >> (7 - k % 8)) & 1;
        for first in 0..3 {
            for bit in 0..8u32 {
                for n in 0..14 {
                    let mut out = vec![0x5555i16; n + 1];
                    be16_samples(&bytes, first, bit, &mut out[..n]);
                    for (i, &got) in out[..n].iter().enumerate() {
                        let start = first * 8 + bit as usize + 16 * i;
                        let want = (0..16).fold(0u16, |a, j| a << 1 | u16::from(bit_at(start + j)));
                        assert_eq!(got as u16, want, "first {first} bit {bit} n {n} sample {i}");
                    }
                    assert_eq!(out[n], 0x5555, "nothing written past the samples asked for");
                }
            }
        }
        // Past the end of the bytes: left as it was.
        let mut out = [7i16; 4];
        be16_samples(&[0x12, 0x34, 0x56], 0, 0, &mut out);
        assert_eq!(out, [0x1234, 7, 7, 7]);
    }

    #[test]
    fn verbatim_alac_without_end_tag() {
        // As PulseAudio writes them: a frame count, and no end tag.
        let samples: Vec<i16> = (0..8).map(|i| (i * 4097 - 16000) as i16).collect();
        let bytes = verbatim_packet(&samples, true, false);
        let mut d = Decoder::new(&alac_format()).unwrap();
        let mut out = [0i16; MAX_SAMPLES_PER_PACKET];
        assert_eq!(d.decode(&bytes, &mut out), Ok(4));
        assert_eq!(&out[..8], &samples[..]);
        // Truncated: refused, not misread.
        assert_eq!(
            d.decode(&bytes[..bytes.len() - 2], &mut out),
            Err(DecodeError::Corrupt)
        );
    }

    #[test]
    fn verbatim_alac_decodes_as_the_alac_crate_does() {
        // Every layout the crate accepts (with the end tag; with and without a frame count,
        // so the samples start at bit 55 or 23; frame counts that leave 0 and 2 samples
        // after the last group of four), full-scale extremes and noise: the samples
        // read here are the crate's, sample for sample.
        let mut x: u32 = 0x9e37_79b9;
        let mut noise = |n: usize| -> Vec<i16> {
            (0..n)
                .map(|i| match i % 7 {
                    0 => i16::MIN,
                    1 => i16::MAX,
                    2 => -1,
                    _ => {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as i16
                    }
                })
                .collect()
        };
        let info =
            ::alac::StreamInfo::from_sdp_format_parameters("352 0 16 40 10 14 2 255 0 0 44100")
                .unwrap();
        for (frames, has_size) in [(352, false), (352, true), (100, true), (7, true), (1, true)] {
            let samples = noise(frames * 2);
            let bytes = verbatim_packet(&samples, has_size, true);
            let mut want = [0i16; MAX_SAMPLES_PER_PACKET];
            let n = ::alac::Decoder::new(info.clone())
                .decode_packet(&bytes, &mut want)
                .unwrap()
                .len();
            assert_eq!(n, frames * 2);
            assert_eq!(&want[..n], &samples[..]);
            let mut d = Decoder::new(&alac_format()).unwrap();
            let mut out = [0i16; MAX_SAMPLES_PER_PACKET];
            assert_eq!(
                d.decode(&bytes, &mut out),
                Ok(frames),
                "{frames} {has_size}"
            );
            assert_eq!(&out[..n], &want[..n]);
        }
    }

    #[test]
    fn alac_garbage_never_panics() {
        let mut d = Decoder::new(&alac_format()).unwrap();
        let mut out = [0i16; MAX_SAMPLES_PER_PACKET];
        // A deterministic stream of random packets of random lengths.
        let mut x: u32 = 0x1234_5678;
        let mut buf = [0u8; 1500];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = (x % 1500) as usize;
            for b in buf[..len].iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            if let Ok(frames) = d.decode(&buf[..len], &mut out) {
                assert!(frames <= 352);
            }
        }
    }
}
