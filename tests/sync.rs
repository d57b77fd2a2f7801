//! raopd plays in sync with a DAC whose clock is off.
//!
//! pyatv streams about 100 s of white noise (then a few seconds of silence) into raopd writing to
//! a simulated DAC (`--output sim:OUT:±200ppm` and `0ppm`). The simulated DAC consumes frames at
//! 44100 * (1 + ppm / 1e6) per second of `CLOCK_MONOTONIC` and logs, in `OUT.timing`, when each
//! written frame sounds. The sender's clock is the machine's clock, so a receiver in sync plays
//! input frame k at `T0 + k / 44100` s for one constant `T0`. Uncorrected, a 200 ppm DAC would
//! drift 20 ms over the run.
//!
//! The checks do not trust the daemon's own arithmetic: short stretches of the input noise
//! (anchors) are located in the output, and each anchor's sound time comes from the timing log.
//! Sound time minus `k / 44100` must stay in a ±2 ms band; the output must be longer (fast DAC)
//! or shorter (slow DAC) than the input by ppm × duration, as many frames as the daemon says it
//! inserted or dropped; at 0 ppm the output is the input bit for bit. The daemon's end-of-stream
//! summary must agree (start error within 1 ms, sync error never beyond 2 ms, no resync).
//!
//! The three runs are real-time bound, not CPU bound, and each has its own namespace, so they
//! may run at the same time. `RAOPD_SYNC_SECS` shortens (or lengthens) the noise for quick
//! local runs; the default is 180 s ("several minutes" of a real sender).

mod common;

use std::time::Duration;

use common::audio::{self, Frame, SAMPLE_RATE};
use common::compare::assert_bit_exact;
use common::daemon::Daemon;
use common::netns::Netns;
use common::senders::{self, PyatvOpts};
use common::sim::{find_anchors, Anchors, Summary, Timing};
use common::TestDir;

const HOST: &str = "127.0.0.1";
/// Trailing silence: carries the noise through the receiver's latency before the sender stops.
const SILENCE_SECS: f64 = 4.0;
/// Anchor length and spacing in frames (64 frames of noise are unique; one anchor per 10 ms).
const ANCHOR_LEN: usize = 64;
const ANCHOR_STEP: usize = 441;
/// The sync band: every point within this of the median (ns)...
const BAND_NS: f64 = 2_000_000.0;
/// ...and max - min at most this (ns).
const SPREAD_NS: f64 = 4_000_000.0;

fn noise_secs() -> f64 {
    std::env::var("RAOPD_SYNC_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s: &f64| s >= 10.0)
        .unwrap_or(180.0)
}

/// What one run produced. Prints the daemon's log if the test fails while it is alive.
struct SyncRun {
    ppm: f64,
    input: Vec<Frame>,
    /// Input frames of noise (the signal span is `0..noise`).
    noise: usize,
    output: Vec<Frame>,
    timing: Timing,
    summary: Summary,
    _daemon_log: common::LogOnPanic,
    _dir: TestDir,
}

fn stream_to_sim(test: &str, port: u16, ppm: f64) -> SyncRun {
    stream_to_sim_with(test, port, ppm, noise_secs(), |_| {})
}

/// Streams `secs` of noise to a `sim:` output at `ppm`; `during(&daemon)` runs while pyatv
/// streams.
fn stream_to_sim_with(
    test: &str,
    port: u16,
    ppm: f64,
    secs: f64,
    during: impl FnOnce(&Daemon),
) -> SyncRun {
    stream_to_sim_opts(test, port, ppm, secs, &[], |_, _| {}, during)
}

/// [`stream_to_sim_with`] with more daemon arguments, and `before(&ns, &dir)` run once the
/// daemon is up and before pyatv starts.
fn stream_to_sim_opts(
    test: &str,
    port: u16,
    ppm: f64,
    secs: f64,
    extra: &[&str],
    before: impl FnOnce(&Netns, &TestDir),
    during: impl FnOnce(&Daemon),
) -> SyncRun {
    common::require_env();
    let dir = TestDir::new(test);
    let wav = dir.join("noise.wav");
    let input = audio::make_noise_wav(&wav, secs, SILENCE_SECS);
    let noise = (secs * f64::from(SAMPLE_RATE)).round() as usize;
    let out = dir.join("out.raw");
    let ns = Netns::new();
    let output_arg = format!("sim:{}:{ppm:+}ppm", out.display());
    let mut args = vec!["--name", test, "--no-mdns", "--output", &output_arg];
    args.extend_from_slice(extra);
    let mut raopd = Daemon::start(&ns, dir.path(), port, &args);
    before(&ns, &dir);
    let opts = PyatvOpts::unity();
    let sender = senders::pyatv_spawn(&ns, HOST, port, &wav, dir.path(), &opts);
    during(&raopd);
    let sent = sender.wait();
    // pyatv returns once its latency's worth of padding is sent; the daemon ends the stream at
    // TEARDOWN and logs the summary then.
    let log_path = raopd.log_path().to_path_buf();
    let summarised = common::wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("stream summary:"))
    });
    let still_running = raopd.is_running();
    raopd.stop();
    sent.assert_ok();
    assert!(still_running, "raopd exited during the stream");
    assert!(summarised, "raopd logged no stream summary after TEARDOWN");
    let log = std::fs::read_to_string(&log_path).expect("read daemon log");
    let output = audio::read_raw(&out);
    eprintln!(
        "{test}: {} output frames ({:.2} s); pyatv took {:.1} s",
        output.len(),
        audio::seconds(output.len()),
        sent.elapsed.as_secs_f64()
    );
    SyncRun {
        ppm,
        input,
        noise,
        output,
        timing: Timing::read(&out, ppm),
        summary: Summary::from_log(&log),
        _daemon_log: common::LogOnPanic(log_path),
        _dir: dir,
    }
}

/// What the output and its timing log say, independently of the daemon.
struct Measured {
    anchors: Anchors,
    /// Net frames inserted (positive) or dropped (negative) across the noise, from the offsets
    /// of the first and last anchors.
    net: i64,
    /// Input frames between the first and the last anchor.
    input_span: usize,
    /// Sound time of each anchor minus its due time relative to input frame 0, in ns
    /// (input index, error), for anchors after the first second.
    errors: Vec<(usize, f64)>,
    median_ns: f64,
    min_ns: f64,
    max_ns: f64,
}

fn measure(run: &SyncRun) -> Measured {
    let anchors = find_anchors(
        &run.input,
        &run.output,
        0..run.noise,
        ANCHOR_LEN,
        ANCHOR_STEP,
        4 * ANCHOR_STEP as i64,
    );
    let (first, last) = match (anchors.found.first(), anchors.found.last()) {
        (Some(f), Some(l)) => (*f, *l),
        _ => panic!("no stretch of the input noise is in the output"),
    };
    let mut errors = Vec::new();
    for a in &anchors.found {
        if a.input < SAMPLE_RATE as usize {
            continue;
        }
        let sounds = run.timing.sound_ns(a.output as u64).unwrap_or_else(|| {
            panic!(
                "output frame {} (input {}) has no sound time in the timing log",
                a.output, a.input
            )
        });
        errors.push((
            a.input,
            sounds - a.input as f64 * 1e9 / f64::from(SAMPLE_RATE),
        ));
    }
    assert!(!errors.is_empty(), "no anchor after the first second");
    let mut sorted: Vec<f64> = errors.iter().map(|e| e.1).collect();
    sorted.sort_by(f64::total_cmp);
    let median_ns = sorted[sorted.len() / 2];
    Measured {
        net: last.offset() - first.offset(),
        input_span: last.input - first.input,
        median_ns,
        min_ns: sorted[0],
        max_ns: sorted[sorted.len() - 1],
        errors,
        anchors,
    }
}

/// The error curve, thinned to one point per 5 s, for failure messages and the test's output.
fn curve(m: &Measured) -> String {
    m.errors
        .iter()
        .filter(|(k, _)| k % (5 * SAMPLE_RATE as usize) < ANCHOR_STEP)
        .map(|(k, e)| {
            format!(
                "{:.0}s:{:+.2}",
                *k as f64 / f64::from(SAMPLE_RATE),
                (e - m.median_ns) / 1e6
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The checks every run passes, whatever the DAC's rate.
fn check_sync(test: &str, run: &SyncRun) -> Measured {
    let m = measure(run);
    let s = &run.summary;
    let offsets = m.anchors.offsets();
    eprintln!(
        "{test}: {}/{} anchors found, {} distinct offsets ({:?} .. {:?}); sync error after 1 s: \
         median {:.3} ms (CLOCK_MONOTONIC of input frame 0 mod 1 s: {:.3} s), min {:+.3} ms, \
         max {:+.3} ms from the median; net frames {} over {} input frames\n  curve (ms from \
         median): {}\n  summary: {}",
        m.anchors.found.len(),
        m.anchors.tried,
        offsets.len(),
        offsets.first(),
        offsets.last(),
        m.median_ns / 1e6,
        (m.median_ns / 1e9) % 1.0,
        (m.min_ns - m.median_ns) / 1e6,
        (m.max_ns - m.median_ns) / 1e6,
        m.net,
        m.input_span,
        curve(&m),
        s.line
    );

    // Nearly every anchor is found: the only ones missing are those a correction cut in two
    // (at most one frame per 352 is inserted or dropped, and the ppm sets how many).
    let expected_corrections = run.ppm.abs() / 1e6 * run.noise as f64;
    let missing = m.anchors.tried - m.anchors.found.len();
    assert!(
        missing as f64 <= expected_corrections * 1.2 + 5.0,
        "{test}: {missing} of {} anchors not found in the output (about {expected_corrections:.0} \
         corrections expected)",
        m.anchors.tried
    );
    // The last anchor may be one a correction cut in two (about 1 % of runs at ±200 ppm):
    // the span may end one anchor short.
    assert!(
        m.input_span + ANCHOR_LEN + 2 * ANCHOR_STEP >= run.noise,
        "{test}: the anchors cover input frames {:?}..{:?} of 0..{}",
        m.anchors.found.first().map(|a| a.input),
        m.anchors.found.last().map(|a| a.input),
        run.noise
    );

    // In sync: sound time - k/44100 stays in a ±2 ms band after the first second.
    let outside: Vec<&(usize, f64)> = m
        .errors
        .iter()
        .filter(|(_, e)| (e - m.median_ns).abs() > BAND_NS)
        .collect();
    assert!(
        outside.is_empty() && m.max_ns - m.min_ns <= SPREAD_NS,
        "{test}: out of sync: sound time - due time spans {:.3} ms (max {:.3} ms allowed); {} \
         anchors beyond ±{:.1} ms of the median, first at input {:?}\ncurve: {}",
        (m.max_ns - m.min_ns) / 1e6,
        SPREAD_NS / 1e6,
        outside.len(),
        BAND_NS / 1e6,
        outside.first(),
        curve(&m)
    );

    // Frames added or removed, from the output itself: ppm × duration within 10 % (or within
    // the frames of the ±2 ms band, which the daemon lets build up before it corrects: the same
    // for the default 100 s, the larger allowance for shorter runs).
    let expected_net = run.ppm / 1e6 * m.input_span as f64;
    let band_frames = BAND_NS * f64::from(SAMPLE_RATE) / 1e9;
    assert!(
        (m.net as f64 - expected_net).abs() <= (expected_net.abs() * 0.1).max(band_frames),
        "{test}: the output's noise span is {} frames longer than the input's; a {:+} ppm DAC \
         needs {expected_net:+.1}",
        m.net,
        run.ppm
    );

    // ...and as many as the daemon says it inserted and dropped. The summary also counts the
    // corrections in the output outside the noise span (the trailing silence).
    let (inserted, dropped) = (s.int("frames_inserted"), s.int("frames_dropped"));
    let last = m.anchors.found.last().expect("anchors");
    let first = m.anchors.found[0];
    let outside_span = (run.output.len() - last.output) + first.output;
    let slack = (run.ppm.abs() / 1e6 * outside_span as f64).ceil() as i64 + 2;
    assert!(
        (inserted - dropped - m.net).abs() <= slack,
        "{test}: the daemon reports {inserted} frames inserted and {dropped} dropped, the \
         output shows a net {} across the noise (±{slack} for the {outside_span} frames outside it)",
        m.net
    );
    // Corrections only go one way: the error never swings across the 2 ms dead band.
    if run.ppm > 0.0 {
        assert_eq!(dropped, 0, "{test}: frames dropped for a fast DAC");
    } else if run.ppm < 0.0 {
        assert_eq!(inserted, 0, "{test}: frames inserted for a slow DAC");
    }

    // The daemon's own account.
    assert!(
        s.int("start_error_us").abs() <= 1000,
        "{test}: start error {} µs",
        s.int("start_error_us")
    );
    assert!(
        s.int("max_sync_error_us") <= 2000,
        "{test}: sync error reached {} µs",
        s.int("max_sync_error_us")
    );
    assert_eq!(s.int("resyncs"), 0, "{test}: output restarted");
    assert_eq!(s.int("underruns"), 0, "{test}: the DAC ran dry");
    assert_eq!(s.int("decode_errors"), 0, "{test}: decode errors");
    m
}

#[test]
fn fast_dac_plus_200_ppm_stays_in_sync() {
    let run = stream_to_sim("sync_plus200", 5201, 200.0);
    let m = check_sync("sync_plus200", &run);
    assert!(m.net > 0, "a fast DAC needs frames inserted");
}

#[test]
fn slow_dac_minus_200_ppm_stays_in_sync() {
    let run = stream_to_sim("sync_minus200", 5202, -200.0);
    let m = check_sync("sync_minus200", &run);
    assert!(m.net < 0, "a slow DAC needs frames dropped");
}

#[test]
fn exact_dac_is_bit_exact_and_never_corrected() {
    let run = stream_to_sim("sync_exact", 5203, 0.0);
    let m = check_sync("sync_exact", &run);
    assert_eq!(m.net, 0);
    assert_eq!(m.anchors.offsets().len(), 1, "the offset moved");
    assert_eq!(
        (
            run.summary.int("frames_inserted"),
            run.summary.int("frames_dropped")
        ),
        (0, 0),
        "corrections at 0 ppm"
    );
    assert_bit_exact(&run.input, &run.output, "pyatv -> raopd sim:0ppm output");
}

/// A sender whose sync statements jitter by ±20–40 ms around its true RTP↔NTP line (timers
/// that fire late while the RTP timestamps stay exact, as seen from a real sender in the
/// field): `tests/senders/sync_jitter_relay.py` sits on the daemon's control port (an
/// nftables redirect of pyatv's packets) and rewrites every sync packet that way. No single
/// statement may move the schedule: the output stays bit-exact with zero corrections.
#[test]
fn jittered_sync_statements_leave_the_output_bit_exact() {
    let test = "sync_jitter";
    // --udp-port-base 7100 in a fresh namespace: audio 7100, control 7101, timing 7102.
    let (control, relay) = (7101u16, 7150u16);
    let jitter_log = std::cell::RefCell::new(None);
    let run = stream_to_sim_opts(
        test,
        5205,
        0.0,
        20.0,
        &["--udp-port-base", "7100"],
        |ns, dir| {
            let log = dir.join("sync-jitter.log");
            let child = ns
                .command("python3")
                .arg(common::repo_dir().join("tests/senders/sync_jitter_relay.py"))
                .args([relay.to_string(), control.to_string()])
                .arg(&log)
                .spawn()
                .expect("start the sync jitter relay");
            ns.adopt(child);
            ns.run_ok("nft", ["add", "table", "ip", "raopd_test_jitter"]);
            ns.run_ok(
                "nft",
                [
                    "add",
                    "chain",
                    "ip",
                    "raopd_test_jitter",
                    "out",
                    "{ type nat hook output priority -100; }",
                ],
            );
            let rule =
                format!("udp dport {control} udp sport != {relay} counter redirect to :{relay}");
            ns.run_ok(
                "nft",
                [
                    "add",
                    "rule",
                    "ip",
                    "raopd_test_jitter",
                    "out",
                    rule.as_str(),
                ],
            );
            *jitter_log.borrow_mut() = Some(log);
        },
        |_| {},
    );
    let log = jitter_log.into_inner().expect("relay started");
    let jitters: Vec<i64> = std::fs::read_to_string(&log)
        .expect("read the relay's log")
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    eprintln!(
        "{test}: {} sync packets jittered (ms): {:?}; summary: {}",
        jitters.len(),
        jitters.iter().map(|j| j / 1_000_000).collect::<Vec<_>>(),
        run.summary.line
    );
    assert!(
        jitters.len() >= 10,
        "{test}: only {} sync packets went through the relay",
        jitters.len()
    );
    let s = &run.summary;
    assert_eq!(
        (
            s.int("frames_inserted"),
            s.int("frames_dropped"),
            s.int("resyncs")
        ),
        (0, 0, 0),
        "{test}: corrections at 0 ppm: {}",
        s.line
    );
    assert_eq!(
        s.int("reanchors"),
        0,
        "{test}: the schedule moved: {}",
        s.line
    );
    assert!(
        s.int("sync_outliers") >= 5,
        "{test}: the daemon saw no noisy statements: {}",
        s.line
    );
    assert_bit_exact(
        &run.input,
        &run.output,
        "pyatv (jittered syncs) -> raopd sim:0ppm",
    );
}

/// The daemon stalls (SIGSTOP for 400 ms, longer than the 200 ms the DAC holds) 8 s into a
/// stream: the DAC runs dry. Afterwards the output must be back in sync within a few seconds
/// (an empty device after an underrun must not be taken for one that reports no delay).
#[test]
fn output_stall_is_recovered() {
    let test = "sync_stall";
    let run = stream_to_sim_with(test, 5204, 0.0, 20.0, |raopd| {
        std::thread::sleep(Duration::from_secs(10)); // pyatv connects, then 8 s of stream
        common::netns::signal(raopd.pid(), libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(400));
        common::netns::signal(raopd.pid(), libc::SIGCONT);
    });
    let m = measure(&run);
    let before: Vec<f64> = m
        .errors
        .iter()
        .filter(|(k, _)| *k < 6 * SAMPLE_RATE as usize)
        .map(|e| e.1)
        .collect();
    let after: Vec<&(usize, f64)> = m
        .errors
        .iter()
        .filter(|(k, _)| *k > 14 * SAMPLE_RATE as usize)
        .collect();
    assert!(!before.is_empty() && !after.is_empty(), "no anchors");
    let due = before[before.len() / 2];
    let off: Vec<&&(usize, f64)> = after
        .iter()
        .filter(|(_, e)| (e - due).abs() > BAND_NS)
        .collect();
    assert!(
        off.is_empty(),
        "{test}: 6 s after the stall {} of {} stretches sound more than 2 ms from their due \
         time, e.g. input frame {} by {:+.1} ms; summary: {}",
        off.len(),
        after.len(),
        off[0].0,
        (off[0].1 - due) / 1e6,
        run.summary.line
    );
}

/// Checks of the analysis itself (no root, no daemon).
mod harness {
    use super::common::audio::white_noise;
    use super::common::sim::{find_anchors, Summary, Timing};

    #[test]
    fn timing_interpolates_within_a_write_and_honours_stops() {
        let t = Timing::parse(
            "0 1000000000\n# note\n352 1007981859\n# stop 500 1010000000\n704 2000000000\n",
            0.0,
        );
        assert_eq!(t.writes.len(), 3);
        assert_eq!(t.stops, vec![(500, 1_010_000_000)]);
        assert_eq!(t.sound_ns(0), Some(1e9));
        let s = t.sound_ns(441).unwrap();
        assert!((s - (1_007_981_859.0 + 89.0 * 1e9 / 44100.0)).abs() < 1e-3);
        assert_eq!(t.sound_ns(600), None, "discarded by the stop");
        assert_eq!(t.sound_ns(704), Some(2e9));
        // A fast DAC: frames follow each other sooner.
        let fast = Timing::parse("0 0\n", 200.0);
        let s = fast.sound_ns(44_100).unwrap();
        assert!((s - 1e9 / 1.0002).abs() < 1.0, "{s}");
    }

    #[test]
    fn summary_is_parsed() {
        let s = Summary::from_log(
            "x\n[INFO] stream summary: start_error_us=1\n[INFO] stream summary: \
             start_error_us=-12 frames_inserted=3 drift_ppm=0.5\nend",
        );
        assert_eq!(s.int("start_error_us"), -12);
        assert_eq!(s.int("frames_inserted"), 3);
        assert_eq!(s.get("drift_ppm"), 0.5);
    }

    #[test]
    #[should_panic(expected = "no `stream summary:` line")]
    fn missing_summary_fails() {
        Summary::from_log("[INFO] nothing here");
    }

    #[test]
    fn anchors_follow_inserted_and_dropped_frames() {
        let input = white_noise(1.0, 0.0);
        let mut output = vec![[0, 0]; 100];
        output.extend_from_slice(&input[..10_000]);
        output.push(input[9_999]); // inserted
        output.extend_from_slice(&input[10_000..30_000]);
        output.extend_from_slice(&input[30_001..]); // dropped
        let a = find_anchors(&input, &output, 0..input.len(), 64, 441, 100);
        assert_eq!(a.offsets(), vec![100, 101, 100]);
        assert!(a.found.len() + 2 >= a.tried);
        // A concealed gap: anchors missing, the offset unchanged.
        for f in &mut output[20_100..21_000] {
            *f = [0, 0];
        }
        let b = find_anchors(&input, &output, 0..input.len(), 64, 441, 100);
        assert_eq!(b.offsets(), vec![100, 101, 100]);
        assert!(b.found.len() < a.found.len());
    }
}
