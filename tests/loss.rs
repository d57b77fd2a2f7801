//! raopd recovers lost packets by retransmission, and keeps playing in sync when it cannot.
//!
//! nftables drops a share of the UDP packets to the daemon's audio port, chosen at random
//! (`--udp-port-base` fixes the ports: audio, control, timing from the base upwards), from the
//! first packet until one second into the trailing silence. Resent packets come back on the
//! control port, which is not touched.
//!
//! - 5 % loss, pyatv (L16) and PulseAudio (RSA + ALAC): every drop is asked for again and
//!   resent in time, so the output is still the input bit for bit; the summary says so
//!   (`lost=0`, `requested>0`, `recovered>0`) and the nft counters prove packets were dropped.
//! - 20 % loss, pyatv: the stream plays on in sync (a `sim:` DAC at 0 ppm): the noise is found at
//!   one constant output offset wherever it is not concealed, each stretch sounds at its due time
//!   within ±2 ms, the output has the right length, and the daemon's loss accounting agrees with
//!   the nft counter.
//!
//! The runs are serialised (see `common::serial`): retransmission is a real-time race, and a
//! starved CPU would make failures that say nothing about the daemon.

mod common;

use std::path::Path;
use std::time::Duration;

use common::audio::{self, Frame, SAMPLE_RATE};
use common::compare::assert_bit_exact;
use common::daemon::{Daemon, FifoCapture};
use common::loss::{add_udp_loss, clear_loss, loss_counters, LossCounters};
use common::netns::Netns;
use common::senders::{self, PulseOpts, PyatvOpts};
use common::sim::{find_anchors, Summary, Timing};
use common::TestDir;

const HOST: &str = "127.0.0.1";
/// The nftables table `common::loss` keeps its rules in.
const LOSS_TABLE: &str = "raopd_test_loss";

#[derive(Clone, Copy, Debug)]
enum Sender {
    Pyatv,
    PulseRsaAlac,
}

#[derive(Clone, Copy, Debug)]
enum Output {
    /// `pipe:` into a FIFO the harness drains.
    Pipe,
    /// `sim:PATH:+0ppm`: a regular file plus its timing log.
    Sim,
}

struct LossRun {
    input: Vec<Frame>,
    noise: usize,
    output: Vec<Frame>,
    timing: Option<Timing>,
    summary: Summary,
    counters: LossCounters,
    _daemon_log: common::LogOnPanic,
    _dir: TestDir,
}

/// Streams `noise_secs` of noise (then `silence_secs` of silence) from `sender` into a daemon
/// whose audio port (`udp_base`) loses `pct` % of its packets.
#[allow(clippy::too_many_arguments)]
fn stream_lossy(
    test: &str,
    port: u16,
    udp_base: u16,
    sender: Sender,
    kind: Output,
    pct: u32,
    noise_secs: f64,
    silence_secs: f64,
) -> LossRun {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new(test);
    let wav = dir.join("noise.wav");
    let input = audio::make_noise_wav(&wav, noise_secs, silence_secs);
    let noise = (noise_secs * f64::from(SAMPLE_RATE)).round() as usize;
    let raw = dir.join("out.raw");
    let ns = Netns::new();
    let fifo = matches!(kind, Output::Pipe).then(|| FifoCapture::create(&dir.join("out.fifo")));
    let output_arg = match &fifo {
        Some(f) => format!("pipe:{}", f.path().display()),
        None => format!("sim:{}:+0ppm", raw.display()),
    };
    let base = udp_base.to_string();
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        port,
        &[
            "--name",
            test,
            "--no-mdns",
            "--output",
            &output_arg,
            "--udp-port-base",
            &base,
        ],
    );
    add_udp_loss(&ns, &base, pct);
    let running = spawn(&ns, port, &wav, dir.path(), sender);
    // The loss ends one second into the trailing silence, once the rule has seen that many
    // packets: a drop among the very last packets could not be noticed (no later packet shows
    // the gap), and with loss to the end the accounting below would depend on luck.
    let until = ((noise_secs + 1.0) * f64::from(SAMPLE_RATE) / 352.0) as u64;
    let limit = Duration::from_secs_f64(noise_secs + silence_secs + 30.0);
    let lossy_to_the_end = !common::wait_until(limit, || {
        loss_counters(&ns).first().is_some_and(|c| c.seen >= until)
    });
    // An accept rule ahead of the drop rule ends the loss and freezes its counters exactly.
    ns.run_ok(
        "nft",
        [
            "insert", "rule", "inet", LOSS_TABLE, "input", "udp", "dport", &base, "accept",
        ],
    );
    let counters = loss_counters(&ns);
    let sent = running.wait();
    clear_loss(&ns);
    let log_path = raopd.log_path().to_path_buf();
    let summarised = common::wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("stream summary:"))
    });
    let still_running = raopd.is_running();
    raopd.stop();
    sent.assert_ok();
    assert!(still_running, "raopd exited during the stream");
    assert!(
        !lossy_to_the_end,
        "the loss rule saw fewer than {until} packets: {counters:?}"
    );
    assert!(summarised, "raopd logged no stream summary after TEARDOWN");
    let log = std::fs::read_to_string(&log_path).expect("read daemon log");
    // The loss hit the audio port: the one the daemon says it bound.
    assert!(
        log.contains(&format!("stream set up: audio {udp_base} ")),
        "the daemon's audio port is not {udp_base}"
    );
    assert_eq!(counters.len(), 1, "nft loss rule missing");
    let counters = counters[0];
    let output = match fifo {
        Some(f) => audio::raw_to_frames(&f.finish(&raw)),
        None => audio::read_raw(&raw),
    };
    let summary = Summary::from_log(&log);
    eprintln!(
        "{test}: {pct} % loss: nft saw {} audio packets, dropped {}; {} output frames ({:.2} s)\n  \
         summary: {}",
        counters.seen,
        counters.dropped,
        output.len(),
        audio::seconds(output.len()),
        summary.line
    );
    LossRun {
        input,
        noise,
        output,
        timing: matches!(kind, Output::Sim).then(|| Timing::read(&raw, 0.0)),
        summary,
        counters,
        _daemon_log: common::LogOnPanic(log_path),
        _dir: dir,
    }
}

fn spawn(ns: &Netns, port: u16, wav: &Path, logs: &Path, sender: Sender) -> senders::Sender {
    match sender {
        Sender::Pyatv => {
            let opts = PyatvOpts::unity();
            senders::pyatv_spawn(ns, HOST, port, wav, logs, &opts)
        }
        Sender::PulseRsaAlac => {
            let opts = PulseOpts::rsa_alac();
            senders::pulse_spawn(ns, HOST, port, wav, logs, &opts)
        }
    }
}

/// 5 % loss: everything recovered, output bit-exact, and the run really lost packets.
fn check_fully_recovered(test: &str, run: &LossRun) {
    let s = &run.summary;
    assert!(
        run.counters.dropped > 0,
        "{test}: nft dropped nothing ({:?}): the test proves nothing",
        run.counters
    );
    assert_eq!(s.int("lost"), 0, "{test}: packets lost for good");
    assert!(
        s.int("requested") > 0,
        "{test}: no packet was asked for again"
    );
    assert!(s.int("recovered") > 0, "{test}: no packet was recovered");
    assert!(
        s.int("requested") >= run.counters.dropped as i64,
        "{test}: {} packets requested, {} dropped",
        s.int("requested"),
        run.counters.dropped
    );
    assert_bit_exact(&run.input, &run.output, test);
}

#[test]
fn pyatv_5_percent_loss_is_recovered_bit_exact() {
    let run = stream_lossy(
        "loss5_pyatv",
        5301,
        7000,
        Sender::Pyatv,
        Output::Pipe,
        5,
        10.0,
        3.0,
    );
    check_fully_recovered("loss5_pyatv", &run);
}

#[test]
fn pulseaudio_rsa_alac_5_percent_loss_is_recovered_bit_exact() {
    let run = stream_lossy(
        "loss5_pulse",
        5302,
        7010,
        Sender::PulseRsaAlac,
        Output::Pipe,
        5,
        10.0,
        3.0,
    );
    check_fully_recovered("loss5_pulse", &run);
}

#[test]
fn pyatv_20_percent_loss_keeps_playing_in_sync() {
    let test = "loss20_pyatv";
    let run = stream_lossy(test, 5303, 7020, Sender::Pyatv, Output::Sim, 20, 20.0, 4.0);
    let s = &run.summary;
    let drops = run.counters.dropped as i64;
    // About one packet in five was dropped (a binomial draw: ±4 sigma).
    let seen = run.counters.seen as f64;
    let sigma = (seen * 0.2 * 0.8).sqrt();
    assert!(
        seen > 0.0 && (drops as f64 - 0.2 * seen).abs() <= 4.0 * sigma,
        "{test}: nft dropped {drops} of {seen} packets"
    );

    // The daemon's accounting against the nft counter: every drop was noticed and asked for;
    // it cannot have lost more than was dropped.
    let (requested, recovered, lost) = (s.int("requested"), s.int("recovered"), s.int("lost"));
    assert!(
        requested >= drops,
        "{test}: {requested} packets requested, {drops} dropped"
    );
    assert!(lost <= drops, "{test}: {lost} lost, only {drops} dropped");
    assert!(
        recovered > 0 && recovered + lost <= requested,
        "{test}: recovered {recovered} + lost {lost} vs requested {requested}"
    );
    assert_eq!(s.int("resyncs"), 0, "{test}: output restarted");
    assert_eq!(s.int("underruns"), 0, "{test}: the DAC ran dry");

    // The noise is at one constant offset wherever it was not concealed.
    let anchors = find_anchors(&run.input, &run.output, 0..run.noise, 64, 441, 4 * 441);
    let offsets = anchors.offsets();
    let missing = anchors.tried - anchors.found.len();
    eprintln!(
        "{test}: {}/{} anchors found at offsets {offsets:?}",
        anchors.found.len(),
        anchors.tried
    );
    assert_eq!(
        offsets.len(),
        1,
        "{test}: the noise moved in the output (drift, a dropped or repeated stretch): offsets \
         {offsets:?}"
    );
    // A lost 352-frame packet spoils at most two 64-frame anchors 441 frames apart.
    assert!(
        missing as i64 <= 2 * lost,
        "{test}: {missing} anchors missing but only {lost} packets lost"
    );
    let off = offsets[0];
    // The output has the right length: the start padding plus the input, give or take the end
    // of the trailing silence the sender's TEARDOWN cuts (a few %).
    let expected_len = off as f64 + run.input.len() as f64;
    assert!(
        (run.output.len() as f64 - expected_len).abs() <= 0.03 * run.input.len() as f64,
        "{test}: {} output frames, expected about {expected_len:.0}",
        run.output.len()
    );

    // In sync: every stretch found sounds at its due time, within ±2 ms of the median.
    let timing = run.timing.as_ref().expect("sim output has a timing log");
    let errors: Vec<f64> = anchors
        .found
        .iter()
        .filter(|a| a.input >= SAMPLE_RATE as usize)
        .map(|a| {
            let t = timing
                .sound_ns(a.output as u64)
                .unwrap_or_else(|| panic!("output frame {} was never heard", a.output));
            t - a.input as f64 * 1e9 / f64::from(SAMPLE_RATE)
        })
        .collect();
    let mut sorted = errors.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let (lo, hi) = (sorted[0] - median, sorted[sorted.len() - 1] - median);
    eprintln!(
        "{test}: sound time - due time: {:+.3} .. {:+.3} ms around the median",
        lo / 1e6,
        hi / 1e6
    );
    assert!(
        lo >= -2e6 && hi <= 2e6,
        "{test}: out of sync: {:+.3} .. {:+.3} ms around the median",
        lo / 1e6,
        hi / 1e6
    );
    assert!(
        s.int("max_sync_error_us") <= 2000,
        "{test}: the daemon's sync error reached {} µs",
        s.int("max_sync_error_us")
    );
}
