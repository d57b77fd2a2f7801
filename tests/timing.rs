//! Every frame sounds at the instant its sender asked for, checked without raopd's arithmetic.
//!
//! A real sender (pyatv: L16, unencrypted; PulseAudio's module-raop-sink: RSA + ALAC;
//! PipeWire's module-raop-sink: `PCM`, unencrypted, which 0.3.65 sends as ALAC) streams
//! 6 s of white noise into raopd inside a test namespace, raopd writing to a simulated DAC at
//! 0 ppm (`--output sim:OUT:+0ppm`). Three independent records are tied together:
//!
//! 1. **The wire.** `tcpdump` captures the namespace's `lo` (pcap, nanosecond
//!    `CLOCK_REALTIME` stamps). From it the test reads, with its own parsers
//!    (`common::pcap`, `common::raop_wire`): the RTSP conversation (the ANNOUNCE's SDP with
//!    `a=min-latency`/`a=max-latency`, the `User-Agent`, the ports of the SETUP reply, the
//!    `Audio-Latency` of the RECORD reply), the sender's sync packets (`80/90 D4` to raopd's
//!    control port), raopd's timing requests (`80 D2`) and the sender's replies (`80 D3`), and
//!    every audio packet (`80 60`/`80 E0`, and `80 D6` resends), decrypted and decoded here: L16
//!    is big-endian PCM; PulseAudio's ALAC is the uncompressed form, read from its bits after
//!    unwrapping the AES key with the AirPort key and AES-128-CBC per packet.
//! 2. **The sender's clock.** Each timing reply carries the sender's transmit time; the reply's
//!    capture stamp is a few µs later on `CLOCK_REALTIME`. The smallest `capture − transmit`
//!    over all replies is the offset from the sender's clock to `CLOCK_REALTIME` (an NTP-style
//!    estimate from the least-delayed exchange is printed beside it as a cross-check). Nothing
//!    assumes which clock a sender stamps with; the test names it from the offset (wall clock
//!    in the NTP era, `CLOCK_MONOTONIC`, …). `CLOCK_REALTIME − CLOCK_MONOTONIC` is measured in
//!    the test before and after the stream (a wall-clock step in between fails the test).
//! 3. **The DAC.** `OUT.timing` says on `CLOCK_MONOTONIC` when each output frame sounds
//!    (`common::sim::Timing`).
//!
//! Input frames are found in the output by content (64-frame stretches of the noise every
//! 10 ms, as in `tests/sync.rs`) and in the decoded packets, which gives each output frame's
//! RTP timestamp R. The instant the sender asked for is the latency rule of issue 8 (the
//! AirPort Express's, shairport-sync's rtp.c): with a sync packet's `rtp_now`, NTP time `T`
//! and stated latency `L = rtp_now − rtp_minus_latency`,
//!
//! ```text
//! la = L + Audio-Latency      (added when the sync flags are 7, or the User-Agent is AirPlay/N
//!                              with N <= 353 or N >= 371)
//! la = clamp(la, a=min-latency, a=max-latency)        (each bound only if the SDP has it)
//! frame R sounds at T + (R − rtp_now + la) / 44100 s  (sender's clock)
//! ```
//!
//! using the median line of the latest five sync packets captured before the frame sounds (the
//! senders here restate one line in every sync; the spread between them is printed). The
//! median, not the latest: a statement is stamped when the sender gets to send it, so one can
//! come milliseconds late (PulseAudio, its sink thread scheduled late, once sent one 1.6 ms
//! off all the others). raopd slews by 1/32 of such a residual, as it should; a reference
//! that jumped with that one statement for a second failed the test. measured − expected is
//! printed per sender (count, median, min, max in ms) and must be within ±1 ms at every anchor,
//! the first frame included. "All points", not only the median, because every term is exact
//! to well under 1 ms: the DAC log is computed (no sampling granularity), the clock offset
//! sandwich is sub-µs, at 0 ppm raopd makes no corrections, and the capture stamp of a timing
//! reply lags the sender's transmit stamp by the loopback's one-way delay (tens of µs), which
//! biases the expected instant that much late, i.e. measured − expected by as much early.
//! Observed: pyatv −0.07 ms (spread 0.015 ms), PulseAudio −0.05 ms (spread 0.15 ms: its sync
//! packets restate the RTP↔NTP line with up to 0.1 ms of jitter), PipeWire −0.01 to −0.08 ms
//! (its line drifts by 0.3 ms over the stream). Before the latency rule pyatv and PulseAudio
//! read −250 ms.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::audio::{self, Frame, SAMPLE_RATE};
use common::clocks::realtime_minus_monotonic_ns;
use common::daemon::Daemon;
use common::netns::Netns;
use common::pcap::{self, Capture};
use common::raop_wire::{Session, Sync};
use common::senders::{self, PipewireOpts, PulseOpts, PyatvOpts, Sender};
use common::sim::{find_anchors, Timing};
use common::TestDir;

const HOST: &str = "127.0.0.1";
const NOISE_SECS: f64 = 6.0;
/// Trailing silence. PulseAudio sends FLUSH as soon as paplay is done, when the receiver still
/// holds its whole latency (2.25 s: 88200 stated + 11025 frames) of audio: that much at the end
/// of the file is never heard, from any receiver, so it must be silence.
const SILENCE_SECS: f64 = 3.0;
const ANCHOR_LEN: usize = 64;
const ANCHOR_STEP: usize = 441;
/// The expected instant follows the median line of this many latest sync packets.
const SYNC_WINDOW: usize = 5;
/// Every anchor's measured − expected must be within this (ns).
const BOUND_NS: f64 = 1_000_000.0;
/// Seconds between 1900 (NTP era 0) and 1970 (Unix).
const NTP_UNIX_SECS: i128 = 2_208_988_800;

/// What a run left behind for the analysis.
struct Run {
    input: Vec<Frame>,
    noise: usize,
    output: Vec<Frame>,
    timing: Timing,
    session: Session,
    real_minus_mono_ns: i128,
    _log: common::LogOnPanic,
    _dir: TestDir,
}

/// Streams the noise with the sender `spawn` starts while the namespace's `lo` is captured.
fn run(
    test: &str,
    port: u16,
    spawn: impl FnOnce(&Netns, &std::path::Path, &std::path::Path) -> Sender,
) -> Run {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new(test);
    let wav = dir.join("noise.wav");
    let input = audio::make_noise_wav(&wav, NOISE_SECS, SILENCE_SECS);
    let noise = (NOISE_SECS * f64::from(SAMPLE_RATE)).round() as usize;
    let out = dir.join("out.raw");
    let ns = Netns::new();
    let pcap_path = dir.join("lo.pcap");
    let capture = Capture::start(&ns, &pcap_path);
    let rm_before = realtime_minus_monotonic_ns();
    let output_arg = format!("sim:{}:+0ppm", out.display());
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        port,
        &["--name", test, "--no-mdns", "--output", &output_arg],
    );
    let sent = spawn(&ns, &wav, dir.path()).wait();
    let log_path = raopd.log_path().to_path_buf();
    let summarised = common::wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("stream summary:"))
    });
    let still_running = raopd.is_running();
    raopd.stop();
    let tcpdump = capture.stop();
    let rm_after = realtime_minus_monotonic_ns();
    sent.assert_ok();
    assert!(still_running, "raopd exited during the stream");
    assert!(summarised, "raopd logged no stream summary after TEARDOWN");
    assert!(
        (rm_after - rm_before).abs() < 100_000,
        "CLOCK_REALTIME moved against CLOCK_MONOTONIC by {:.3} ms during the test (a wall-clock \
         step): the capture cannot be related to the DAC log; re-run",
        (rm_after - rm_before) as f64 / 1e6
    );
    let packets = pcap::read(&pcap_path);
    eprintln!(
        "{test}: {} TCP/UDP packets captured; tcpdump: {}",
        packets.len(),
        tcpdump
            .lines()
            .filter(|l| l.contains("packets"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let session = Session::from_capture(&packets, port);
    Run {
        input,
        noise,
        output: audio::read_raw(&out),
        timing: Timing::read(&out, 0.0),
        session,
        real_minus_mono_ns: (rm_before + rm_after) / 2,
        _log: common::LogOnPanic(log_path),
        _dir: dir,
    }
}

/// The sender's clock relative to `CLOCK_REALTIME`.
struct SenderClock {
    /// `CLOCK_REALTIME − sender clock`, ns: min over replies of capture − transmit.
    real_minus_sender_ns: i128,
    /// The same from the exchange with the shortest round trip, NTP-style (µs difference
    /// printed as a cross-check).
    ntp_style_ns: i128,
    /// Replies used.
    replies: usize,
}

fn sender_clock(s: &Session) -> SenderClock {
    assert!(
        !s.timing.is_empty(),
        "no timing exchange (raopd's 80 D2 to the sender's timing port and its 80 D3 reply) in \
         the capture: the sender's clock is unknown"
    );
    let real_minus_sender_ns = s
        .timing
        .iter()
        .map(|t| t.reply_captured_ns - t.sender_transmit_ns)
        .min()
        .expect("replies");
    let best = s
        .timing
        .iter()
        .min_by_key(|t| {
            (t.reply_captured_ns - t.request_captured_ns)
                - (t.sender_transmit_ns - t.sender_receive_ns)
        })
        .expect("replies");
    // offset = ((receive − request) + (transmit − reply)) / 2, sender − realtime.
    let sender_minus_real = ((best.sender_receive_ns - best.request_captured_ns)
        + (best.sender_transmit_ns - best.reply_captured_ns))
        / 2;
    SenderClock {
        real_minus_sender_ns,
        ntp_style_ns: -sender_minus_real,
        replies: s.timing.len(),
    }
}

/// Names the host clock a sender stamps with, from `CLOCK_REALTIME − sender`.
fn clock_name(real_minus_sender_ns: i128, real_minus_mono_ns: i128) -> String {
    let ntp = NTP_UNIX_SECS * 1_000_000_000;
    let candidates = [
        (-ntp, "CLOCK_REALTIME, NTP era (seconds since 1900)"),
        (0, "CLOCK_REALTIME, Unix epoch"),
        (real_minus_mono_ns, "CLOCK_MONOTONIC"),
        (
            real_minus_mono_ns - ntp,
            "CLOCK_MONOTONIC + 70 years (NTP era)",
        ),
    ];
    let near = candidates
        .iter()
        .map(|&(off, name)| ((real_minus_sender_ns - off).abs(), off, name))
        .min()
        .expect("candidates");
    if near.0 < 1_000_000_000 {
        format!(
            "{} (sender − that clock: {:+.3} ms)",
            near.2,
            (near.1 - real_minus_sender_ns) as f64 / 1e6
        )
    } else {
        format!(
            "no host clock (CLOCK_REALTIME − sender = {:.3} s)",
            real_minus_sender_ns as f64 / 1e9
        )
    }
}

/// `AirPlay/N` in a User-Agent, N as an integer (the part before any dot).
fn airplay_version(ua: &str) -> Option<u32> {
    ua.split_whitespace()
        .find_map(|w| w.strip_prefix("AirPlay/"))
        .and_then(|v| v.split('.').next()?.parse().ok())
}

/// The total latency in frames the rule gives for this session's sync packet `sync`.
fn total_latency(s: &Session, sync: &Sync) -> i64 {
    latency_rule(
        sync.stated_latency(),
        sync.flags,
        s.user_agent.as_deref(),
        s.audio_latency
            .expect("raopd's RECORD reply carries no Audio-Latency header"),
        s.min_latency,
        s.max_latency,
    )
}

/// The latency rule (see the module doc), frames: `stated` from the sync packet, `flags` its
/// bytes 2–3, `audio_latency` from the RECORD reply, `min`/`max` from the SDP.
fn latency_rule(
    stated: u32,
    flags: u16,
    user_agent: Option<&str>,
    audio_latency: u32,
    min: Option<u32>,
    max: Option<u32>,
) -> i64 {
    let adds = flags == 7
        || user_agent
            .and_then(airplay_version)
            .is_some_and(|n| n <= 353 || n >= 371);
    let mut la = i64::from(stated) + if adds { i64::from(audio_latency) } else { 0 };
    if let Some(min) = min {
        la = la.max(i64::from(min));
    }
    if let Some(max) = max {
        la = la.min(i64::from(max));
    }
    la
}

fn pack2(a: &Frame, b: &Frame) -> u64 {
    let p = |f: &Frame| u64::from(f[0] as u16) | (u64::from(f[1] as u16) << 16);
    p(a) | (p(b) << 32)
}

/// `RTP timestamp − input frame index` of the noise on the wire: every decoded packet that holds
/// noise is located in the input; all must agree (one continuous RTP stream).
fn rtp_offset(run: &Run) -> u32 {
    let noise = &run.input[..run.noise];
    let index: HashMap<u64, usize> = noise
        .windows(2)
        .enumerate()
        .map(|(k, w)| (pack2(&w[0], &w[1]), k))
        .collect();
    let mut offsets: HashMap<u32, usize> = HashMap::new();
    let mut packets_with_noise = 0;
    for p in &run.session.audio {
        let Some(k) = p
            .frames
            .get(..2)
            .and_then(|f| index.get(&pack2(&f[0], &f[1])))
        else {
            continue;
        };
        let n = p.frames.len().min(noise.len() - k);
        assert_eq!(
            p.frames[..n],
            noise[*k..k + n],
            "the audio packet with RTP timestamp {} starts like input frame {k} but differs",
            p.rtp
        );
        packets_with_noise += 1;
        *offsets.entry(p.rtp.wrapping_sub(*k as u32)).or_default() += 1;
    }
    let expected = run.noise / 352;
    assert!(
        packets_with_noise >= expected,
        "only {packets_with_noise} decoded audio packets hold the noise (at least {expected} \
         expected): the capture or its decoding lost audio"
    );
    assert_eq!(
        offsets.len(),
        1,
        "the noise is on the wire at several RTP offsets (offset: packets): {offsets:?}"
    );
    *offsets.keys().next().expect("one offset")
}

/// The errors of one run, ns, by input frame.
struct Measured {
    errors: Vec<(usize, f64)>,
    median: f64,
    min: f64,
    max: f64,
}

fn analyse(test: &str, run: &Run) -> Measured {
    let s = &run.session;
    assert!(
        !s.syncs.is_empty(),
        "no sync packet to raopd's control port in the capture"
    );
    let clock = sender_clock(s);
    let rm = run.real_minus_mono_ns;
    let off = rtp_offset(run);
    let anchors = find_anchors(
        &run.input,
        &run.output,
        0..run.noise,
        ANCHOR_LEN,
        ANCHOR_STEP,
        4 * ANCHOR_STEP as i64,
    );
    assert!(
        anchors.found.len() * 10 >= anchors.tried * 9,
        "{test}: only {} of {} stretches of the input noise are in the output",
        anchors.found.len(),
        anchors.tried
    );
    // A sync's line, mapped to CLOCK_MONOTONIC: frame R sounds at base + (R − rtp_now + la)/rate.
    let base_mono = |y: &Sync| y.ntp_ns + clock.real_minus_sender_ns - rm;
    let expected_mono = |y: &Sync, r: u32| {
        let frames = i64::from(r.wrapping_sub(y.rtp_now) as i32) + total_latency(s, y);
        base_mono(y) as f64 + frames as f64 * 1e9 / f64::from(SAMPLE_RATE)
    };
    let mut errors = Vec::new();
    for a in &anchors.found {
        let measured = run.timing.sound_ns(a.output as u64).unwrap_or_else(|| {
            panic!(
                "{test}: output frame {} (input {}) was never heard",
                a.output, a.input
            )
        });
        let r = off.wrapping_add(a.input as u32);
        let measured_real = measured as i128 + rm;
        // The median line of the last SYNC_WINDOW syncs captured before the frame sounds.
        let heard = s
            .syncs
            .iter()
            .filter(|y| y.captured_ns <= measured_real)
            .count()
            .max(1);
        let mut lines: Vec<f64> = s.syncs[heard.saturating_sub(SYNC_WINDOW)..heard]
            .iter()
            .map(|y| expected_mono(y, r))
            .collect();
        lines.sort_by(f64::total_cmp);
        errors.push((a.input, measured - lines[lines.len() / 2]));
    }
    let mut sorted: Vec<f64> = errors.iter().map(|e| e.1).collect();
    sorted.sort_by(f64::total_cmp);
    let m = Measured {
        median: sorted[sorted.len() / 2],
        min: sorted[0],
        max: sorted[sorted.len() - 1],
        errors,
    };

    // What the sender said, for the report.
    let first = &s.syncs[0];
    let r0 = off; // input frame 0
    let spread: Vec<f64> = s
        .syncs
        .iter()
        .map(|y| (expected_mono(y, r0) - expected_mono(first, r0)) / 1e6)
        .collect();
    let mut stated: Vec<u32> = s.syncs.iter().map(Sync::stated_latency).collect();
    stated.dedup();
    let sync_vs_wire: Vec<f64> = s
        .syncs
        .iter()
        .map(|y| (y.ntp_ns + clock.real_minus_sender_ns - y.captured_ns) as f64 / 1e6)
        .collect();
    let sdp_attrs: Vec<&str> = s
        .sdp
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("a=") && !l.starts_with("a=rsaaeskey") && !l.starts_with("a=aesiv")
        })
        .collect();
    eprintln!("{test}: SDP {sdp_attrs:?}");
    eprintln!(
        "{test}: sender clock: {}; from {} timing replies (NTP-style estimate differs by {:+.3} \
         ms)\n  User-Agent {:?}; SDP min-latency {:?} max-latency {:?}; raopd's Audio-Latency \
         {:?}\n  {} sync packets, flags {:#x}, stated latency {:?} frames, total latency {} \
         frames; each sync's time for input frame 0 vs the first's (ms): {:?}\n  sync NTP time \
         − its capture time (ms): {:?}\n  RTP timestamp of input frame 0: {}",
        clock_name(clock.real_minus_sender_ns, rm),
        clock.replies,
        (clock.ntp_style_ns - clock.real_minus_sender_ns) as f64 / 1e6,
        s.user_agent,
        s.min_latency,
        s.max_latency,
        s.audio_latency,
        s.syncs.len(),
        first.flags,
        stated,
        total_latency(s, first),
        round3(&spread),
        round3(&sync_vs_wire),
        r0
    );
    eprintln!(
        "{test}: measured − expected over {} anchors ({} of {} found): median {:+.3} ms, min \
         {:+.3} ms, max {:+.3} ms; input frame {}: {:+.3} ms",
        m.errors.len(),
        anchors.found.len(),
        anchors.tried,
        m.median / 1e6,
        m.min / 1e6,
        m.max / 1e6,
        m.errors[0].0,
        m.errors[0].1 / 1e6
    );
    m
}

fn round3(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 1000.0).round() / 1000.0).collect()
}

fn check(test: &str, m: &Measured) {
    let outside: Vec<&(usize, f64)> = m.errors.iter().filter(|e| e.1.abs() > BOUND_NS).collect();
    assert!(
        m.median.abs() <= BOUND_NS && outside.is_empty(),
        "{test}: frames do not sound at the instant the sender asked for: measured − expected \
         is {:+.3} ms (median; min {:+.3}, max {:+.3}); {} of {} anchors beyond ±1 ms, the \
         first at input frame {} ({:+.3} ms). Negative = early.",
        m.median / 1e6,
        m.min / 1e6,
        m.max / 1e6,
        outside.len(),
        m.errors.len(),
        outside.first().map_or(0, |e| e.0),
        outside.first().map_or(0.0, |e| e.1 / 1e6)
    );
}

#[test]
fn pyatv_l16_sounds_at_the_requested_instant() {
    let test = "timing_pyatv";
    let run = run(test, 5311, |ns, wav, dir| {
        senders::pyatv_spawn(ns, HOST, 5311, wav, dir, &PyatvOpts::unity())
    });
    let m = analyse(test, &run);
    check(test, &m);
}

#[test]
fn pulseaudio_rsa_alac_sounds_at_the_requested_instant() {
    let test = "timing_pulse";
    let run = run(test, 5312, |ns, wav, dir| {
        senders::pulse_spawn(ns, HOST, 5312, wav, dir, &PulseOpts::rsa_alac())
    });
    let m = analyse(test, &run);
    check(test, &m);
}

#[test]
fn pipewire_pcm_unencrypted_sounds_at_the_requested_instant() {
    let test = "timing_pipewire";
    let run = run(test, 5313, |ns, wav, dir| {
        senders::pipewire_spawn(ns, &[(HOST, 5313)], wav, dir, &PipewireOpts::pcm_none())
    });
    let m = analyse(test, &run);
    check(test, &m);
}

/// Checks of the analysis itself (no root, no daemon).
mod harness {
    use super::common::pcap::{self, Packet, Proto};
    use super::common::raop_wire::{alac_verbatim, ntp_to_ns, rtsp_messages};
    use super::{airplay_version, clock_name, latency_rule, NTP_UNIX_SECS};

    /// Writes bits most significant first, as PulseAudio's `bit_writer` does.
    fn put(bits: &mut Vec<bool>, v: u32, n: usize) {
        bits.extend((0..n).rev().map(|i| (v >> i) & 1 == 1));
    }

    fn bytes(bits: &[bool]) -> Vec<u8> {
        bits.chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |b, (i, &x)| b | (u8::from(x) << (7 - i)))
            })
            .collect()
    }

    #[test]
    fn uncompressed_alac_is_read_with_and_without_a_size() {
        let frames = [[1i16, -1], [i16::MIN, i16::MAX], [0x1234, -0x1234]];
        for has_size in [true, false] {
            let mut b = Vec::new();
            put(&mut b, 1, 3); // channel pair
            put(&mut b, 0, 16);
            put(&mut b, u32::from(has_size), 1);
            put(&mut b, 0, 2);
            put(&mut b, 1, 1); // escape: uncompressed
            if has_size {
                put(&mut b, frames.len() as u32, 32);
            }
            for f in frames {
                put(&mut b, u32::from(f[0] as u16), 16);
                put(&mut b, u32::from(f[1] as u16), 16);
            }
            put(&mut b, 7, 3); // end tag, which PulseAudio leaves out
            assert_eq!(alac_verbatim(&bytes(&b), 3).as_deref(), Some(&frames[..]));
        }
        // A compressed frame (escape flag 0) is refused, not misread.
        let mut b = Vec::new();
        put(&mut b, 1, 3);
        put(&mut b, 0, 20);
        assert_eq!(alac_verbatim(&bytes(&b), 3), None);
    }

    #[test]
    fn pcap_records_give_ports_payloads_and_nanosecond_stamps() {
        let mut f = Vec::new();
        f.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes()); // ns magic
        f.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0]);
        f.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
        let payload = [0x80u8, 0xd4, 0, 7];
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        let ip_len = 20 + 8 + payload.len();
        frame.extend_from_slice(&[0x45, 0, 0, ip_len as u8, 0, 0, 0, 0, 64, 17, 0, 0]);
        frame.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        frame.extend_from_slice(&[0x17, 0x71, 0x8e, 0x78, 0, 12, 0, 0]); // 6001 -> 36472
        frame.extend_from_slice(&payload);
        frame.extend_from_slice(&[0; 6]); // Ethernet padding beyond the IP length
        for w in [
            1_700_000_000u32,
            123_456_789,
            frame.len() as u32,
            frame.len() as u32,
        ] {
            f.extend_from_slice(&w.to_le_bytes());
        }
        f.extend_from_slice(&frame);
        let path = std::env::temp_dir().join(format!("raopd-pcap-{}.pcap", std::process::id()));
        std::fs::write(&path, &f).unwrap();
        let packets = pcap::read(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(packets.len(), 1);
        let p = &packets[0];
        assert_eq!(p.ts_ns, 1_700_000_000_123_456_789);
        assert_eq!((p.proto, p.src_port, p.dst_port), (Proto::Udp, 6001, 36472));
        assert_eq!(p.payload, payload);
    }

    #[test]
    fn tcp_streams_are_reassembled_once_in_order() {
        let seg = |seq: u32, data: &[u8]| Packet {
            ts_ns: 0,
            proto: Proto::Tcp,
            src_port: 1,
            dst_port: 2,
            tcp_seq: seq,
            payload: data.to_vec(),
        };
        let packets = [
            seg(u32::MAX - 1, b"AN"),
            seg(6, b" rtsp"), // out of order
            seg(0, b"NOUNCE"),
            seg(0, b"NOUNCE"), // retransmitted
        ];
        assert_eq!(pcap::tcp_stream(&packets, 1, 2), b"ANNOUNCE rtsp");
        let msgs = rtsp_messages(
            b"ANNOUNCE x RTSP/1.0\r\nContent-Length: 3\r\n\r\nv=0RTSP/1.0 200 OK\r\nCSeq: 2\r\n\r\n",
        );
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            (msgs[0].method(), &msgs[0].body[..]),
            ("ANNOUNCE", &b"v=0"[..])
        );
        assert_eq!(msgs[1].header("cseq"), Some("2"));
    }

    #[test]
    fn the_latency_rule_adds_audio_latency_where_senders_expect_it() {
        // flags 7 (iTunes style, PulseAudio, PipeWire, pyatv): stated + Audio-Latency.
        assert_eq!(latency_rule(88200, 7, None, 11025, None, None), 99225);
        // PipeWire states 0 and relies on the receiver's 11025, within the SDP's bounds.
        assert_eq!(latency_rule(0, 7, None, 11025, Some(11025), None), 11025);
        assert_eq!(latency_rule(0, 7, None, 11025, Some(22050), None), 22050);
        assert_eq!(
            latency_rule(88200, 7, None, 11025, None, Some(88200)),
            88200
        );
        // flags 4: only for AirPlay/N user agents with N <= 353 or N >= 371.
        assert_eq!(latency_rule(88200, 4, None, 11025, None, None), 88200);
        assert_eq!(
            latency_rule(88200, 4, Some("AirPlay/360.1"), 11025, None, None),
            88200
        );
        assert_eq!(
            latency_rule(88200, 4, Some("AirPlay/380"), 11025, None, None),
            99225
        );
        assert_eq!(airplay_version("iTunes/11.0.4 (Windows; N)"), None);
        assert_eq!(airplay_version("AirPlay/550.10"), Some(550));
    }

    #[test]
    fn ntp_times_and_clock_names() {
        assert_eq!(ntp_to_ns(&[0, 0, 0, 2, 0x80, 0, 0, 0]), 2_500_000_000);
        let ntp = NTP_UNIX_SECS * 1_000_000_000;
        let rm = 1_700_000_000_000_000_000i128 - 5_000_000_000_000;
        assert!(clock_name(-ntp + 20_000, rm).starts_with("CLOCK_REALTIME, NTP era"));
        assert!(clock_name(rm - ntp, rm).starts_with("CLOCK_MONOTONIC + 70 years"));
        assert!(clock_name(rm, rm).starts_with("CLOCK_MONOTONIC ("));
        assert!(clock_name(12_345_000_000_000, rm).starts_with("no host clock"));
    }
}
