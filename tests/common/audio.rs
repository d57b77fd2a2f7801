//! Test input: deterministic white noise in a 16-bit 44100 Hz stereo WAV file.
//!
//! Noise, not a tone: a periodic signal matches itself at many offsets, so a comparison could
//! "find" it in the wrong place; independent noise on each channel also catches swapped channels.
//! Peak -6 dBFS leaves headroom, so a receiver that clips or scales shows up as a mismatch rather
//! than as saturated samples that happen to compare equal. The trailing digital silence pushes the
//! last noise through the receiver's latency buffer before the sender stops.

use std::path::Path;

pub const SAMPLE_RATE: u32 = 44_100;
pub const CHANNELS: u16 = 2;

/// One stereo frame, left then right.
pub type Frame = [i16; 2];

/// The seed of every test file: the same arguments give the same file, run after run.
const SEED: u64 = 0x5241_4f50_445f_4532; // "RAOPD_E2"

/// `noise_secs` of white noise (independent per channel, uniform in -16384..=16383, i.e. -6 dBFS
/// peak) followed by `silence_secs` of zeros.
pub fn white_noise(noise_secs: f64, silence_secs: f64) -> Vec<Frame> {
    let noise = (noise_secs * SAMPLE_RATE as f64).round() as usize;
    let silence = (silence_secs * SAMPLE_RATE as f64).round() as usize;
    let mut rng = SplitMix64(SEED);
    let mut sample = || ((rng.next() >> 49) as i32 - 16384) as i16;
    let mut frames = Vec::with_capacity(noise + silence);
    for _ in 0..noise {
        frames.push([sample(), sample()]);
    }
    frames.resize(noise + silence, [0, 0]);
    frames
}

/// Writes `frames` as a canonical 44-byte-header PCM WAV file.
pub fn write_wav(path: &Path, frames: &[Frame]) {
    let data_len = (frames.len() * 4) as u32;
    let mut bytes = Vec::with_capacity(44 + data_len as usize);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data_len).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    bytes.extend_from_slice(&1u16.to_le_bytes()); // PCM
    bytes.extend_from_slice(&CHANNELS.to_le_bytes());
    bytes.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    bytes.extend_from_slice(&(SAMPLE_RATE * 4).to_le_bytes()); // byte rate
    bytes.extend_from_slice(&4u16.to_le_bytes()); // block align
    bytes.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data_len.to_le_bytes());
    bytes.extend_from_slice(&frames_to_raw(frames));
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Writes the standard test file (`noise_secs` of noise, `silence_secs` of silence) to `path`
/// and returns its frames.
pub fn make_noise_wav(path: &Path, noise_secs: f64, silence_secs: f64) -> Vec<Frame> {
    let frames = white_noise(noise_secs, silence_secs);
    write_wav(path, &frames);
    frames
}

/// Raw S16LE interleaved bytes of `frames`.
pub fn frames_to_raw(frames: &[Frame]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|[l, r]| l.to_le_bytes().into_iter().chain(r.to_le_bytes()))
        .collect()
}

/// Frames of raw S16LE stereo bytes; a trailing partial frame is ignored.
pub fn raw_to_frames(raw: &[u8]) -> Vec<Frame> {
    raw.chunks_exact(4)
        .map(|b| {
            [
                i16::from_le_bytes([b[0], b[1]]),
                i16::from_le_bytes([b[2], b[3]]),
            ]
        })
        .collect()
}

/// Reads raw S16LE stereo output (as the daemon's pipe, stdout and ALSA file outputs write it).
pub fn read_raw(path: &Path) -> Vec<Frame> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    raw_to_frames(&raw)
}

/// The duration of `frames` at 44100 Hz, in seconds.
pub fn seconds(frames: usize) -> f64 {
    frames as f64 / SAMPLE_RATE as f64
}

/// SplitMix64: tiny, fast, well-distributed, and fixed forever (unlike an external crate's RNG,
/// whose stream may change between versions and silently change the test input).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
