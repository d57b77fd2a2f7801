//! Cost of the per-packet receive path, per 352-frame packet: what the reactor does for every
//! audio packet between `recv_from` and the jitter buffer (`Stream::on_audio` in
//! `src/player/mod.rs`):
//!
//! - `packet_aes_alac`: AES-128-CBC decrypt (`AudioCipher`) + ALAC decode straight into the
//!   jitter buffer's slot (`Decoder`, packets made by the `alac-encoder` crate) + buffer
//!   insert/commit: the PulseAudio / iTunes path;
//! - `packet_alac`: the same without encryption;
//! - `packet_aes_alac_verbatim`: AES + ALAC in the escape (verbatim) form with a frame count
//!   and no end tag, as PulseAudio's RAOP sink sends it (read by raopd's own code, not the
//!   crate: `src/codec`);
//! - `packet_l16`: L16 (big-endian PCM, pyatv's format) into the buffer;
//! - `aes_decrypt`, `alac_decode`, `buffer_insert`: the parts on their own;
//! - `lib_aes_cbc_1408`, `lib_alac_decode`: the bare library calls with none of raopd's code
//!   around them: the `cbc`/`aes` crates decrypting 1408 bytes (a full 352-frame packet) in one
//!   call, and the `alac` crate's `Decoder::decode_packet` on one 352-frame packet (the
//!   decoder raopd used before its own, `src/codec/alac.rs`; `alac_decode` against it shows
//!   the difference).
//!
//! Each iteration also copies the packet into the receive buffer (as `recv_from` does) and, for
//! the paths through the jitter buffer, reads the 352 frames back out so the buffer stays at a
//! constant depth; both are memcpy-sized next to the rest.
//!
//! `cargo bench --bench packet_path` (release profile: `opt-level = "z"`, LTO, as shipped).
//! Output lines: `bench: <name> <ns/iter> ns/iter (<iters> iters)`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use raopd::buffer::{Insert, JitterBuffer};
use raopd::codec::{Codec, Decoder, StreamFormat, MAX_SAMPLES_PER_PACKET};
use raopd::crypto::AudioCipher;

const FRAMES: usize = 352;
const FMTP: &str = "352 0 16 40 10 14 2 255 0 0 44100";
/// Distinct packets cycled through (about 8 s of audio), so caches see a realistic mix.
const PACKETS: usize = 1024;
const KEY: [u8; 16] = *b"raopd-bench-key!";
const IV: [u8; 16] = *b"0123456789abcdef";
/// Measuring time per benchmark.
const BUDGET: Duration = Duration::from_millis(1200);

/// Music-like test signal: a few tones with a slow envelope plus low-level noise, so ALAC
/// compresses it about as much as real music (white noise would make it store verbatim frames).
fn signal(frames: usize) -> Vec<i16> {
    let mut x: u32 = 0x9e37_79b9;
    let mut out = Vec::with_capacity(frames * 2);
    for i in 0..frames {
        let t = i as f64 / 44100.0;
        let env = 0.55 + 0.45 * (t * 0.7).sin();
        let tones = (t * 2.0 * std::f64::consts::PI * 220.0).sin() * 0.35
            + (t * 2.0 * std::f64::consts::PI * 330.7).sin() * 0.2
            + (t * 2.0 * std::f64::consts::PI * 1761.3).sin() * 0.08;
        for ch in 0..2 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let noise = ((x >> 20) as f64 / 4096.0 - 0.5) * 0.01;
            let phase = if ch == 0 { 1.0 } else { 0.93 };
            let v = (tones * phase * env + noise) * 32767.0;
            out.push(v.clamp(-32768.0, 32767.0) as i16);
        }
    }
    out
}

fn alac_packets(pcm: &[i16]) -> Vec<Vec<u8>> {
    use alac_encoder::{AlacEncoder, FormatDescription};
    let input = FormatDescription::pcm::<i16>(44100.0, 2);
    let output = FormatDescription::alac(44100.0, FRAMES as u32, 2);
    let mut enc = AlacEncoder::new(&output);
    let mut buf = vec![0u8; output.max_packet_size() * 2];
    pcm.chunks(FRAMES * 2)
        .map(|chunk| {
            let bytes: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
            let n = enc.encode(&input, &bytes, &mut buf);
            buf[..n].to_vec()
        })
        .collect()
}

/// As senders do: CBC over the whole 16-byte blocks, IV reset per packet, the tail in clear.
fn encrypt(packets: &mut [Vec<u8>]) {
    use aes::cipher::{BlockEncryptMut, KeyIvInit};
    for p in packets {
        let n = p.len() & !15;
        let mut enc = cbc::Encryptor::<aes::Aes128>::new(&KEY.into(), &IV.into());
        for block in p[..n].chunks_exact_mut(16) {
            enc.encrypt_block_mut(block.into());
        }
    }
}

/// ALAC packets in the escape (verbatim) form, as PulseAudio writes them: a 23-bit header
/// (CPE, has-size, escape), the 32-bit frame count, the samples, no end tag.
fn verbatim_packets(pcm: &[i16]) -> Vec<Vec<u8>> {
    pcm.chunks(FRAMES * 2)
        .map(|c| {
            let mut out = Vec::new();
            let (mut acc, mut n) = (0u64, 0u32);
            let mut push = |v: u32, bits: u32| {
                acc = acc << bits | u64::from(v);
                n += bits;
                while n >= 8 {
                    n -= 8;
                    out.push((acc >> n) as u8);
                }
            };
            push(1, 3);
            push(0, 4 + 12);
            push(1, 1);
            push(0, 2);
            push(1, 1);
            push(c.len() as u32 / 2, 32);
            for s in c {
                push(*s as u16 as u32, 16);
            }
            push(0, 7); // pad the last byte
            out
        })
        .collect()
}

fn l16_packets(pcm: &[i16]) -> Vec<Vec<u8>> {
    pcm.chunks(FRAMES * 2)
        .map(|c| c.iter().flat_map(|s| s.to_be_bytes()).collect())
        .collect()
}

/// Runs `f(i)` for `i = 0, 1, ...` for about [`BUDGET`] after a short warm-up and prints the
/// mean time per call.
fn bench(name: &str, mut f: impl FnMut(usize)) {
    let warm = Instant::now();
    let mut i = 0;
    while warm.elapsed() < Duration::from_millis(150) {
        f(i);
        i += 1;
    }
    // Batches sized so the clock is read rarely.
    let batch = (i / 15).max(1);
    let start = Instant::now();
    let mut iters = 0usize;
    while start.elapsed() < BUDGET {
        for _ in 0..batch {
            f(iters);
            iters += 1;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / iters as f64;
    println!("bench: {name} {ns:.1} ns/iter ({iters} iters)");
}

fn decoder(codec: Codec) -> Decoder {
    Decoder::new(&StreamFormat {
        codec,
        frames_per_packet: FRAMES as u32,
    })
    .expect("decoder")
}

/// One packet through the receive path; the buffer is read back to a constant depth.
struct Path {
    dec: Decoder,
    cipher: Option<AudioCipher>,
    buffer: JitterBuffer,
    recv: Vec<u8>,
    out: Vec<i16>,
    seq: u16,
    ts: u32,
}

impl Path {
    fn new(dec: Decoder, cipher: Option<AudioCipher>) -> Path {
        let mut buffer = JitterBuffer::with_capacity_frames(3 * 44100);
        buffer.reset(FRAMES);
        buffer.start_at(0);
        Path {
            dec,
            cipher,
            buffer,
            recv: vec![0; 2048],
            out: vec![0; MAX_SAMPLES_PER_PACKET],
            seq: 0,
            ts: 0,
        }
    }

    fn packet(&mut self, wire: &[u8]) {
        let payload = &mut self.recv[..wire.len()];
        payload.copy_from_slice(wire);
        if let Insert::Slot(idx) = self.buffer.insert(self.seq, self.ts, 0) {
            if let Some(c) = &self.cipher {
                c.decrypt(payload);
            }
            match self.dec.decode(payload, self.buffer.slot_pcm(idx)) {
                Ok(frames) => self.buffer.commit(idx, frames),
                Err(e) => panic!("packet {}: {e:?}", self.seq),
            }
        } else {
            panic!("packet {} not accepted", self.seq);
        }
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(FRAMES as u32);
        // Keep about 64 packets queued, like a stream with a couple of seconds' latency.
        if self.buffer.fill_packets() > 64 {
            black_box(self.buffer.read(&mut self.out));
        }
    }
}

fn main() {
    let pcm = signal(FRAMES * PACKETS);
    let alac = alac_packets(&pcm);
    let mut alac_enc = alac.clone();
    encrypt(&mut alac_enc);
    let l16 = l16_packets(&pcm);
    let mut verbatim_enc = verbatim_packets(&pcm);
    encrypt(&mut verbatim_enc);
    let mean = |p: &[Vec<u8>]| p.iter().map(Vec::len).sum::<usize>() / p.len();
    println!(
        "packets: {PACKETS} x {FRAMES} frames; ALAC {} bytes on average (PCM 1408)",
        mean(&alac)
    );

    // Sanity: the path really decodes what was encoded (a benchmark of garbage proves nothing).
    {
        let mut p = Path::new(decoder(Codec::Alac { fmtp: FMTP.into() }), None);
        let mut d = decoder(Codec::Alac { fmtp: FMTP.into() });
        let mut got = vec![0i16; MAX_SAMPLES_PER_PACKET];
        let cipher = AudioCipher::new(KEY, IV);
        for (i, wire) in alac_enc.iter().enumerate().take(50) {
            let mut w = wire.clone();
            cipher.decrypt(&mut w);
            let n = d.decode(&w, &mut got).expect("decode");
            assert_eq!(n, FRAMES);
            assert_eq!(got[..n * 2], pcm[i * FRAMES * 2..(i + 1) * FRAMES * 2]);
            p.packet(&alac[i]);
            let mut w = verbatim_enc[i].clone();
            cipher.decrypt(&mut w);
            let n = d.decode(&w, &mut got).expect("decode verbatim");
            assert_eq!(got[..n * 2], pcm[i * FRAMES * 2..(i + 1) * FRAMES * 2]);
        }
    }

    let mut p = Path::new(
        decoder(Codec::Alac { fmtp: FMTP.into() }),
        Some(AudioCipher::new(KEY, IV)),
    );
    bench("packet_aes_alac", |i| p.packet(&alac_enc[i % PACKETS]));

    let mut p = Path::new(
        decoder(Codec::Alac { fmtp: FMTP.into() }),
        Some(AudioCipher::new(KEY, IV)),
    );
    bench("packet_aes_alac_verbatim", |i| {
        p.packet(&verbatim_enc[i % PACKETS])
    });

    let mut p = Path::new(decoder(Codec::Alac { fmtp: FMTP.into() }), None);
    bench("packet_alac", |i| p.packet(&alac[i % PACKETS]));

    let mut p = Path::new(decoder(Codec::L16), None);
    bench("packet_l16", |i| p.packet(&l16[i % PACKETS]));

    let cipher = AudioCipher::new(KEY, IV);
    let mut buf = vec![0u8; 2048];
    bench("aes_decrypt", |i| {
        let w = &alac_enc[i % PACKETS];
        buf[..w.len()].copy_from_slice(w);
        cipher.decrypt(black_box(&mut buf[..w.len()]));
    });

    let mut d = decoder(Codec::Alac { fmtp: FMTP.into() });
    let mut out = vec![0i16; MAX_SAMPLES_PER_PACKET];
    bench("alac_decode", |i| {
        black_box(d.decode(black_box(&alac[i % PACKETS]), &mut out).ok());
    });

    lib_calls(&alac, &pcm);

    let mut buffer = JitterBuffer::with_capacity_frames(3 * 44100);
    buffer.reset(FRAMES);
    buffer.start_at(0);
    let mut rd = vec![0i16; MAX_SAMPLES_PER_PACKET];
    bench("buffer_insert", |i| {
        let seq = i as u16;
        if let Insert::Slot(idx) = buffer.insert(seq, (i * FRAMES) as u32, 0) {
            buffer.commit(idx, FRAMES);
        }
        if buffer.fill_packets() > 64 {
            black_box(buffer.read(&mut rd));
        }
    });
}

/// The bare library calls the receive path is built on, for comparison with the path.
fn lib_calls(alac: &[Vec<u8>], pcm: &[i16]) {
    use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, InnerIvInit, KeyInit};

    // AES-128-CBC over 1408 bytes (88 blocks) in one call, the key expanded once as raopd
    // does. Decrypting the same buffer again and again costs the same as fresh ciphertext.
    let aes = aes::Aes128::new(&KEY.into());
    let mut buf = [0x5au8; 1408];
    bench("lib_aes_cbc_1408", |_| {
        let dec = cbc::Decryptor::<aes::Aes128>::inner_iv_init(aes.clone(), &IV.into());
        let out = dec
            .decrypt_padded_mut::<NoPadding>(black_box(&mut buf))
            .expect("1408 is a whole number of blocks");
        black_box(out);
    });

    // The alac crate's own decoder, straight into an i16 buffer.
    let info = alac::StreamInfo::from_sdp_format_parameters(FMTP).expect("fmtp");
    let mut dec = alac::Decoder::new(info);
    let mut out = vec![0i16; FRAMES * 2];
    // Sanity: the bare decoder gives back what was encoded.
    let got = dec.decode_packet(&alac[0], &mut out).expect("alac decode");
    assert_eq!(got, &pcm[..FRAMES * 2]);
    bench("lib_alac_decode", |i| {
        let got = dec
            .decode_packet(black_box(&alac[i % PACKETS]), &mut out)
            .expect("alac decode");
        black_box(got);
    });
}
