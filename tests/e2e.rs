//! End-to-end acceptance tests: real senders stream into a real raopd, and what raopd outputs
//! must be the input, bit for bit, from its very first frame.
//!
//! Each test gets its own network namespace; the senders and the daemon talk over its loopback.
//! The input is 5 s of white noise then 3 s of digital silence (the silence carries the noise
//! through the receiver's latency buffer before the sender disconnects). Volume is pinned to
//! 0 dB (pyatv: `volume_db: Some(0.0)`; PulseAudio: sink at 100 %, which it sends as
//! `volume: 0.000000`; PipeWire sends no volume) so the daemon's software volume is the identity.
//!
//! Needs root and the packages of `scripts/setup-test-deps.sh`; `scripts/test.sh` runs
//! everything. Without them the tests fail (they do not skip) and say so.
//! `RAOPD_CMD` runs another build of the daemon, e.g. a MIPS binary under qemu-user.

mod common;

use std::path::Path;
use std::time::Duration;

use common::audio::{self, Frame};
use common::compare::assert_bit_exact;
use common::daemon::{self, Daemon, FifoCapture};
use common::netns::Netns;
use common::senders::{self, PipewireOpts, PulseOpts, PyatvOpts, SendResult};
use common::TestDir;

/// Senders reach the daemon over the namespace's loopback.
const HOST: &str = "127.0.0.1";

#[derive(Clone, Copy, Debug)]
enum Sender {
    /// pyatv's stock SDP: L16 (with an fmtp line), unencrypted.
    Pyatv,
    /// PulseAudio module-raop-sink: ALAC, RSA/AES, UDP.
    PulseRsaAlac,
    /// PipeWire libpipewire-module-raop-sink: ALAC, RSA/AES, UDP.
    PipewireRsaAlac,
    /// PipeWire libpipewire-module-raop-sink: `raop.audio.codec = PCM`, unencrypted, UDP.
    PipewirePcmNone,
}

#[derive(Clone, Copy, Debug)]
enum Output {
    /// `--output pipe:PATH`, PATH a FIFO the harness reads.
    Pipe,
    /// `--output alsa:file:FILE=PATH,FORMAT=raw`: alsa-lib's file plugin writes the raw data.
    AlsaFile,
}

/// What one streaming run produced. Holds the test's directory until the test's own assertions
/// are done, so a failing comparison keeps the files and prints the daemon's log.
struct Run {
    input: Vec<Frame>,
    output: Vec<Frame>,
    /// Most threads the daemon's process had at once while the sender streamed.
    max_threads: usize,
    _daemon_log: common::LogOnPanic,
    _dir: TestDir,
}

/// Streams the standard noise file from `sender` into a fresh daemon writing to `output`.
fn stream(test: &str, port: u16, sender: Sender, output: Output) -> Run {
    stream_with(test, port, sender, output, &["--no-mdns"])
}

/// [`stream`] with other daemon flags than `--no-mdns`.
fn stream_with(test: &str, port: u16, sender: Sender, output: Output, extra: &[&str]) -> Run {
    stream_secs(test, port, sender, output, extra, 5.0)
}

/// [`stream_with`] with `noise_secs` of noise (then 3 s of silence).
fn stream_secs(
    test: &str,
    port: u16,
    sender: Sender,
    output: Output,
    extra: &[&str],
    noise_secs: f64,
) -> Run {
    stream_tail(test, port, sender, output, extra, noise_secs, 3.0)
}

/// [`stream_secs`] with `tail_secs` of silence after the noise (the sender ends that long
/// after the last noise frame: a daemon told to play later needs more).
fn stream_tail(
    test: &str,
    port: u16,
    sender: Sender,
    output: Output,
    extra: &[&str],
    noise_secs: f64,
    tail_secs: f64,
) -> Run {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new(test);
    let wav = dir.join("noise.wav");
    let input = audio::make_noise_wav(&wav, noise_secs, tail_secs);
    let raw = dir.join("out.raw");

    let ns = Netns::new();
    let fifo = matches!(output, Output::Pipe).then(|| FifoCapture::create(&dir.join("out.fifo")));
    let output_arg = match &fifo {
        Some(f) => format!("pipe:{}", f.path().display()),
        None => format!("alsa:file:FILE={},FORMAT=raw", raw.display()),
    };
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        port,
        &[&["--name", test, "--output", &output_arg], extra].concat(),
    );

    let threads = raopd.sample_threads();
    let sent = send(&ns, port, &wav, dir.path(), sender);
    let max_threads = threads.finish();
    // The sender may return while the last audio is still queued in the daemon.
    std::thread::sleep(Duration::from_millis(500));
    let still_running = raopd.is_running();
    raopd.stop();

    sent.assert_ok();
    assert!(still_running, "raopd exited during the stream");
    let output = match fifo {
        Some(f) => audio::raw_to_frames(&f.finish(&raw)),
        None if daemon::big_endian_daemon() => audio::read_raw(&raw)
            .into_iter()
            .map(|[l, r]| [l.swap_bytes(), r.swap_bytes()])
            .collect(),
        None => audio::read_raw(&raw),
    };
    eprintln!(
        "{test}: {} output frames ({:.2} s), daemon threads at most {max_threads}",
        output.len(),
        audio::seconds(output.len())
    );
    Run {
        input,
        output,
        max_threads,
        _daemon_log: common::LogOnPanic(raopd.log_path().to_path_buf()),
        _dir: dir,
    }
}

fn send(ns: &Netns, port: u16, wav: &Path, logs: &Path, sender: Sender) -> SendResult {
    match sender {
        Sender::Pyatv => {
            let opts = PyatvOpts::unity();
            senders::pyatv_stream(ns, HOST, port, wav, logs, &opts)
        }
        Sender::PulseRsaAlac => {
            let opts = PulseOpts::rsa_alac();
            senders::pulse_stream(ns, HOST, port, wav, logs, &opts)
        }
        Sender::PipewireRsaAlac => {
            let opts = PipewireOpts::rsa_alac();
            senders::pipewire_stream(ns, &[(HOST, port)], wav, logs, &opts)
        }
        Sender::PipewirePcmNone => {
            let opts = PipewireOpts::pcm_none();
            senders::pipewire_stream(ns, &[(HOST, port)], wav, logs, &opts)
        }
    }
}

#[test]
fn pyatv_l16_to_pipe_is_bit_exact() {
    let run = stream("pyatv_l16_pipe", 5101, Sender::Pyatv, Output::Pipe);
    assert_bit_exact(&run.input, &run.output, "pyatv (L16) -> raopd pipe output");
}

#[test]
fn pyatv_l16_to_alsa_file_is_bit_exact() {
    let run = stream("pyatv_l16_alsa", 5102, Sender::Pyatv, Output::AlsaFile);
    assert_bit_exact(
        &run.input,
        &run.output,
        "pyatv (L16) -> raopd ALSA file output",
    );
}

#[test]
fn pulseaudio_rsa_alac_to_pipe_is_bit_exact() {
    let run = stream("pulse_alac_pipe", 5103, Sender::PulseRsaAlac, Output::Pipe);
    assert_bit_exact(
        &run.input,
        &run.output,
        "PulseAudio (RSA + ALAC) -> raopd pipe output",
    );
}

/// `--latency-offset-ms 2000` holds every packet 2 s longer: PulseAudio's packets are then
/// played 4.25 s after they are sent, and the jitter buffer must hold all of them (sized for
/// 3 s, it restarted at the newest packet over and over, and the output was not the input).
#[test]
fn pulseaudio_with_the_largest_latency_offset_is_bit_exact() {
    let extra = ["--no-mdns", "--latency-offset-ms", "2000"];
    let run = stream_tail(
        "pulse_offset_pipe",
        5112,
        Sender::PulseRsaAlac,
        Output::Pipe,
        &extra,
        5.0,
        6.0,
    );
    assert_bit_exact(
        &run.input,
        &run.output,
        "PulseAudio (RSA + ALAC) -> raopd pipe output, 2 s later",
    );
}

#[test]
fn pulseaudio_rsa_alac_to_alsa_file_is_bit_exact() {
    let run = stream(
        "pulse_alac_alsa",
        5104,
        Sender::PulseRsaAlac,
        Output::AlsaFile,
    );
    assert_bit_exact(
        &run.input,
        &run.output,
        "PulseAudio (RSA + ALAC) -> raopd ALSA file output",
    );
}

/// PipeWire's sync packets state a latency of 0 frames: the sender relies on the receiver adding
/// the `Audio-Latency` it announced (11025 frames), as an AirPort Express does. The first noise
/// frame must come out, not be skipped as late.
#[test]
fn pipewire_rsa_alac_to_pipe_is_bit_exact() {
    let run = stream(
        "pipewire_alac_pipe",
        5106,
        Sender::PipewireRsaAlac,
        Output::Pipe,
    );
    assert_bit_exact(
        &run.input,
        &run.output,
        "PipeWire (RSA + ALAC) -> raopd pipe output",
    );
}

#[test]
fn pipewire_pcm_none_to_pipe_is_bit_exact() {
    let run = stream(
        "pipewire_pcm_pipe",
        5107,
        Sender::PipewirePcmNone,
        Output::Pipe,
    );
    assert_bit_exact(
        &run.input,
        &run.output,
        "PipeWire (unencrypted PCM) -> raopd pipe output",
    );
}

/// The daemon is one reactor thread plus async-io's parked helper: count the threads of its
/// process while the heaviest stream (RSA + ALAC) plays, with mDNS, the control socket and
/// hooks all on.
///
/// Under qemu-user (`RAOPD_CMD` starting with `qemu-`) the process is qemu's, which adds threads
/// of its own, so the count is reported but not asserted.
#[test]
fn at_most_two_threads_while_streaming() {
    // Everything on: mDNS responder, control socket, hooks.
    let dir = std::env::temp_dir().join(format!("raopd-threads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("ctl.sock");
    let run = stream_with(
        "threads",
        5105,
        Sender::PulseRsaAlac,
        Output::Pipe,
        &[
            "--control-socket",
            socket.to_str().unwrap(),
            "--on-start",
            "true",
            "--on-stop",
            "true",
            "--idle-timeout",
            "1",
        ]
        .into_iter()
        // qemu-user answers big-endian guests' netlink interface listing with a
        // byte-swapped attribute that musl's getifaddrs never gets past (real routers
        // are not affected): no mDNS under qemu.
        .chain(daemon::runs_under_qemu().then_some("--no-mdns"))
        .collect::<Vec<_>>(),
    );
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        run.max_threads > 0,
        "the thread sampler never saw the daemon"
    );
    if daemon::runs_under_qemu() {
        eprintln!(
            "threads: {} (qemu-user process; not asserted)",
            run.max_threads
        );
        return;
    }
    assert!(
        run.max_threads <= 2,
        "raopd had {} threads while streaming; at most 2 allowed",
        run.max_threads
    );
}

/// Checks of the harness itself (no root, no daemon): the comparator must tell exact output
/// from every kind of damage, or the tests above prove nothing.
mod harness {
    use super::common::audio::{self, Frame};
    use super::common::compare::{compare, Verdict};

    fn noise() -> Vec<Frame> {
        audio::white_noise(1.0, 0.5)
    }

    /// The input as a receiver would write it: `lead` frames of silence first.
    fn delayed(input: &[Frame], lead: usize) -> Vec<Frame> {
        let mut out = vec![[0, 0]; lead];
        out.extend_from_slice(input);
        out
    }

    #[test]
    fn noise_is_deterministic_and_at_minus_6_dbfs() {
        let a = audio::white_noise(1.0, 0.5);
        assert_eq!(a, audio::white_noise(1.0, 0.5));
        assert_eq!(a.len(), 66_150);
        let peak = a
            .iter()
            .flat_map(|f| f.iter())
            .map(|&s| (s as i32).abs())
            .max();
        assert_eq!(peak, Some(16384));
        assert!(a[44_100..].iter().all(|f| *f == [0, 0]));
        let same = a[..44_100].iter().filter(|f| f[0] == f[1]).count();
        assert!(same < 10, "channels are not independent");
    }

    #[test]
    fn wav_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("raopd-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.wav");
        let frames = audio::make_noise_wav(&path, 0.1, 0.1);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(&bytes[..4], b"RIFF");
        assert_eq!(&bytes[8..16], b"WAVEfmt ");
        assert_eq!(u16::from_le_bytes([bytes[22], bytes[23]]), 2);
        assert_eq!(
            u32::from_le_bytes(bytes[24..28].try_into().unwrap()),
            44_100
        );
        assert_eq!(audio::raw_to_frames(&bytes[44..]), frames);
    }

    #[test]
    fn exact_output_after_leading_silence_is_bit_exact() {
        let input = noise();
        let mut output = delayed(&input, 12_345);
        output.truncate(output.len() - 1000); // ends inside the trailing silence
        let c = compare(&input, &output);
        assert_eq!(c.verdict, Verdict::BitExact, "{c}");
        assert_eq!(c.offset, Some(12_345));
        assert_eq!(c.trailing_absent, 1000);
    }

    #[test]
    fn lost_start_is_reported_as_leading_loss() {
        let input = noise();
        let mut output = delayed(&input, 5000);
        for f in &mut output[5000..5000 + 3168] {
            *f = [0, 0];
        }
        let c = compare(&input, &output);
        assert_eq!(c.verdict, Verdict::BitExactAfterLeadingLoss(3168), "{c}");
        assert_eq!(
            c.verdict.to_string(),
            "BIT_EXACT_AFTER_LEADING_LOSS(3168 frames)"
        );
    }

    #[test]
    fn one_changed_sample_is_not_exact() {
        let input = noise();
        let mut output = delayed(&input, 100);
        output[100 + 20_000][1] ^= 1;
        let c = compare(&input, &output);
        assert_eq!(c.verdict, Verdict::NotExact, "{c}");
        assert_eq!(c.mismatch_runs.len(), 1);
        assert_eq!(c.mismatch_runs[0].start, 20_000);
        assert_eq!(c.max_abs_diff, 1);
    }

    #[test]
    fn dropped_packet_is_not_exact() {
        let input = noise();
        let mut output = delayed(&input, 100);
        output.drain(100 + 10_000..100 + 10_352);
        let c = compare(&input, &output);
        assert_eq!(c.verdict, Verdict::NotExact, "{c}");
        assert!(c.chunk_offsets.len() >= 2, "{c}");
    }

    #[test]
    fn output_ending_inside_the_signal_is_not_exact() {
        let input = noise();
        let output = delayed(&input[..30_000], 100);
        let c = compare(&input, &output);
        assert_eq!(c.verdict, Verdict::NotExact, "{c}");
        assert_eq!(c.mismatch_runs[0].missing, 44_100 - 30_000);
    }

    #[test]
    fn noise_in_trailing_silence_is_not_exact() {
        let input = noise();
        let mut output = delayed(&input, 100);
        output[100 + 50_000] = [3, 3];
        let c = compare(&input, &output);
        assert_eq!(c.verdict, Verdict::NotExact, "{c}");
        assert_eq!(c.trailing_differ, 1);
    }

    #[test]
    fn scaled_output_is_not_found() {
        let input = noise();
        let output: Vec<Frame> = delayed(&input, 100)
            .iter()
            .map(|f| [f[0] / 2, f[1] / 2])
            .collect();
        let c = compare(&input, &output);
        assert_eq!(c.verdict, Verdict::NotExact);
        assert_eq!(c.offset, None);
        assert!(c.to_string().contains("-6.0 dB"), "{c}");
    }

    #[test]
    fn swapped_channels_are_not_found() {
        let input = noise();
        let output: Vec<Frame> = input.iter().map(|f| [f[1], f[0]]).collect();
        assert_eq!(compare(&input, &output).verdict, Verdict::NotExact);
    }
}

/// A whole minute of audio: the reactor's timers keep firing (timing requests go out all
/// along; the clock model sends them every 200 ms, then every second, then every 3 s) and the
/// output stays bit-exact. Run against the big-endian musl build under qemu-mips this is the
/// check that async-io's timers work there.
#[test]
fn a_minute_of_audio_keeps_timers_running() {
    let run = stream_secs(
        "minute",
        5106,
        Sender::Pyatv,
        Output::Pipe,
        &["--no-mdns"],
        60.0,
    );
    assert_bit_exact(&run.input, &run.output, "pyatv, 60 s");
    let log = std::fs::read_to_string(&run._daemon_log.0).unwrap();
    let summary = common::sim::Summary::from_log(&log);
    assert!(
        summary.int("timing_requests") >= 20,
        "too few timing requests: {}",
        summary.line
    );
    assert_eq!(summary.int("resyncs"), 0, "{}", summary.line);
    assert_eq!(summary.int("lost"), 0, "{}", summary.line);
}
