//! Sharing the speaker: Digest passwords, a second sender refused (453) or taking over,
//! and a sender that vanishes. Real pyatv senders, real daemon, one network namespace per
//! test.
//!
//! PulseAudio 16's RAOP sink is not used with a password: it authenticates on a separate
//! connection at load time and then streams on a new connection without credentials, so
//! it cannot play to any password-protected receiver (shairport-sync included).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::audio::{self, Frame};
use common::compare::{assert_bit_exact, compare};
use common::daemon::{Daemon, FifoCapture};
use common::netns::Netns;
use common::senders::{self, PyatvOpts};
use common::TestDir;

const HOST: &str = "127.0.0.1";

fn opts(password: Option<&str>) -> PyatvOpts {
    PyatvOpts {
        volume_db: Some(0.0),
        password: password.map(str::to_string),
        ..PyatvOpts::default()
    }
}

/// A second input, different from the standard noise: the same noise negated and with the
/// channels swapped, so the comparator cannot confuse the two.
fn other_noise(path: &Path, noise: f64, silence: f64) -> Vec<Frame> {
    let frames: Vec<Frame> = audio::white_noise(noise, silence)
        .iter()
        .map(|[l, r]| [r.saturating_neg(), l.saturating_neg()])
        .collect();
    audio::write_wav(path, &frames);
    frames
}

fn subdir(dir: &TestDir, name: &str) -> std::path::PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Output frames that are not silence.
fn audible(frames: &[Frame]) -> usize {
    frames
        .iter()
        .filter(|[l, r]| l.unsigned_abs() > 1 || r.unsigned_abs() > 1)
        .count()
}

#[test]
fn password_right_plays_wrong_gets_nothing() {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new("password");
    let ns = Netns::new();
    let fifo = FifoCapture::create(&dir.join("out.fifo"));
    let out = format!("pipe:{}", fifo.path().display());
    let port = 5301;
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        port,
        &[
            "--name",
            "pw",
            "--no-mdns",
            "--password",
            "s3cret",
            "--output",
            &out,
        ],
    );
    let wav = dir.join("noise.wav");
    let input = audio::make_noise_wav(&wav, 3.0, 3.0);

    let wrong = senders::pyatv_stream(
        &ns,
        HOST,
        port,
        &wav,
        &subdir(&dir, "wrong"),
        &opts(Some("guess")),
    );
    assert!(
        !wrong.success(),
        "pyatv with a wrong password succeeded: {}",
        wrong.report()
    );
    let none = senders::pyatv_stream(&ns, HOST, port, &wav, &subdir(&dir, "none"), &opts(None));
    assert!(
        !none.success(),
        "pyatv without a password succeeded: {}",
        none.report()
    );
    let log = raopd.log();
    assert!(
        !log.contains("stream set up"),
        "a stream was set up without the right password:\n{}",
        raopd.log_tail()
    );
    assert!(
        log.contains("401 Unauthorized"),
        "no 401 was sent:\n{}",
        raopd.log_tail()
    );

    let right = senders::pyatv_stream(
        &ns,
        HOST,
        port,
        &wav,
        &subdir(&dir, "right"),
        &opts(Some("s3cret")),
    );
    std::thread::sleep(Duration::from_millis(500));
    raopd.stop();
    right.assert_ok();
    let output = audio::raw_to_frames(&fifo.finish(&dir.join("out.raw")));
    assert_bit_exact(&input, &output, "pyatv with the right password");
}

#[test]
fn second_sender_is_refused_while_the_first_plays_on() {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new("deny");
    let ns = Netns::new();
    let fifo = FifoCapture::create(&dir.join("out.fifo"));
    let out = format!("pipe:{}", fifo.path().display());
    let port = 5302;
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        port,
        &["--name", "deny", "--no-mdns", "--output", &out],
    );
    let wav_a = dir.join("a.wav");
    let input_a = audio::make_noise_wav(&wav_a, 6.0, 3.0);
    let wav_b = dir.join("b.wav");
    other_noise(&wav_b, 2.0, 1.0);

    let a = senders::pyatv_spawn(&ns, HOST, port, &wav_a, &subdir(&dir, "a"), &opts(None));
    std::thread::sleep(Duration::from_secs(3));
    let b = senders::pyatv_stream(&ns, HOST, port, &wav_b, &subdir(&dir, "b"), &opts(None));
    assert!(
        !b.success(),
        "the second sender was not refused: {}",
        b.report()
    );
    let a = a.wait();
    std::thread::sleep(Duration::from_millis(500));
    raopd.stop();
    a.assert_ok();
    assert!(
        raopd.log().contains("453") || raopd.log().contains("speaker busy"),
        "no 453 in the log:\n{}",
        raopd.log_tail()
    );
    let output = audio::raw_to_frames(&fifo.finish(&dir.join("out.raw")));
    assert_bit_exact(&input_a, &output, "first sender while a second was refused");
}

#[test]
fn second_sender_takes_over_when_allowed() {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new("allow");
    let ns = Netns::new();
    let fifo = FifoCapture::create(&dir.join("out.fifo"));
    let out = format!("pipe:{}", fifo.path().display());
    let port = 5303;
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        port,
        &[
            "--name",
            "allow",
            "--no-mdns",
            "--session-interruption",
            "allow",
            "--output",
            &out,
        ],
    );
    let wav_a = dir.join("a.wav");
    audio::make_noise_wav(&wav_a, 20.0, 1.0);
    let wav_b = dir.join("b.wav");
    let input_b = other_noise(&wav_b, 4.0, 3.0);

    let a = senders::pyatv_spawn(&ns, HOST, port, &wav_a, &subdir(&dir, "a"), &opts(None));
    std::thread::sleep(Duration::from_secs(4));
    let b = senders::pyatv_stream(&ns, HOST, port, &wav_b, &subdir(&dir, "b"), &opts(None));
    let a = a.wait();
    std::thread::sleep(Duration::from_millis(500));
    assert!(raopd.is_running(), "raopd died:\n{}", raopd.log_tail());
    raopd.stop();
    b.assert_ok();
    assert!(
        a.elapsed < Duration::from_secs(19),
        "the first sender was not cut off: {}",
        a.report()
    );
    let output = audio::raw_to_frames(&fifo.finish(&dir.join("out.raw")));
    // The output holds some of A, then all of B, bit for bit.
    let c = compare(&input_b, &output);
    assert!(
        c.is_bit_exact(),
        "second sender's audio after the take-over:\n{c:?}"
    );
}

#[test]
fn a_vanished_sender_frees_the_speaker() {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new("vanish");
    let ns = Netns::new();
    let fifo = FifoCapture::create(&dir.join("out.fifo"));
    let out = format!("pipe:{}", fifo.path().display());
    let port = 5304;
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        port,
        &[
            "--name",
            "vanish",
            "--no-mdns",
            "--session-timeout",
            "5",
            "--output",
            &out,
        ],
    );
    let wav_a = dir.join("a.wav");
    audio::make_noise_wav(&wav_a, 30.0, 1.0);
    let wav_b = dir.join("b.wav");
    let input_b = other_noise(&wav_b, 3.0, 3.0);

    let _a = senders::pyatv_spawn(&ns, HOST, port, &wav_a, &subdir(&dir, "a"), &opts(None));
    std::thread::sleep(Duration::from_secs(4));
    // SIGKILL the sender's python process: no TEARDOWN, no goodbye.
    let pids = ns.run_ok("ip", ["netns", "pids", ns.name()]);
    let mut killed = 0;
    for pid in pids.split_whitespace() {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.contains("pyatv_stream.py") && !cmdline.starts_with("timeout") {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid])
                .status();
            killed += 1;
        }
    }
    assert!(killed > 0, "found no pyatv process to kill");
    let t0 = Instant::now();
    // A new sender gets the speaker within the session timeout.
    let mut played = None;
    while t0.elapsed() < Duration::from_secs(8) {
        let b = senders::pyatv_stream(&ns, HOST, port, &wav_b, &subdir(&dir, "b"), &opts(None));
        if b.success() {
            played = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_millis(500));
    raopd.stop();
    assert!(
        played.is_some(),
        "the speaker was not freed:\n{}",
        raopd.log_tail()
    );
    let output = audio::raw_to_frames(&fifo.finish(&dir.join("out.raw")));
    assert!(audible(&output) > 0);
    let c = compare(&input_b, &output);
    assert!(c.is_bit_exact(), "the new sender's audio:\n{c:?}");
}

/// Runs `raopd status` against the daemon's control socket.
fn status(socket: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raopd"))
        .args(["status", "--control-socket"])
        .arg(socket)
        .output()
        .expect("run raopd status");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn metadata_from_a_sender_shows_in_status() {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new("metadata");
    let ns = Netns::new();
    let socket = ns.runtime_dir().join("ctl.sock");
    let port = 5305;
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        port,
        &[
            "--name",
            "meta",
            "--no-mdns",
            "--output",
            "pipe:/dev/null",
            "--control-socket",
            socket.to_str().unwrap(),
        ],
    );
    let idle = status(&socket);
    assert!(
        idle.contains("\"state\":\"idle\""),
        "status before streaming: {idle}"
    );
    let wav = dir.join("noise.wav");
    audio::make_noise_wav(&wav, 6.0, 1.0);
    let o = PyatvOpts {
        title: Some("Blue \"Monday\"".into()),
        artist: Some("Ørkestra".into()),
        album: Some("Tests".into()),
        ..opts(None)
    };
    let sender = senders::pyatv_spawn(&ns, HOST, port, &wav, &subdir(&dir, "a"), &o);
    let t0 = Instant::now();
    let mut seen = String::new();
    while t0.elapsed() < Duration::from_secs(6) {
        seen = status(&socket);
        if seen.contains("Blue \\\"Monday\\\"") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = sender.wait();
    raopd.stop();
    r.assert_ok();
    assert!(
        seen.contains("\"state\":\"playing\""),
        "status while streaming: {seen}"
    );
    for want in [
        "\"title\":\"Blue \\\"Monday\\\"\"",
        "\"artist\":\"Ørkestra\"",
        "\"album\":\"Tests\"",
        "\"sender\":\"127.0.0.1\"",
    ] {
        assert!(seen.contains(want), "{want} missing from status: {seen}");
    }
}

/// Statistics belong to one stream: two pyatv streams one after the other into one daemon each
/// report their own packets (the jitter buffer and the sink outlive streams; their counters
/// must not add up).
#[test]
fn statistics_start_from_zero_for_every_stream() {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new("sessions_stats_reset");
    let ns = Netns::new();
    let port = 5312;
    let out = dir.join("out.raw");
    let output = format!("sim:{}:+0ppm", out.display());
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        port,
        &["--name", "stats", "--no-mdns", "--output", &output],
    );
    let _log = common::LogOnPanic(raopd.log_path().to_path_buf());
    let wav = dir.join("noise.wav");
    audio::make_noise_wav(&wav, 2.0, 1.0);
    let received = |log: &str| -> Vec<u64> {
        log.lines()
            .filter(|l| l.contains("stream summary:"))
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix("received="))?
                    .parse()
                    .ok()
            })
            .collect()
    };
    for (i, name) in ["first", "second"].into_iter().enumerate() {
        senders::pyatv_stream(&ns, HOST, port, &wav, &subdir(&dir, name), &opts(None)).assert_ok();
        assert!(
            common::wait_until(Duration::from_secs(10), || received(&raopd.log()).len() > i),
            "no stream summary after the {name} stream"
        );
    }
    let counts = received(&raopd.log());
    assert!(raopd.is_running(), "raopd died");
    raopd.stop();
    let (a, b) = (counts[0], counts[1]);
    assert!(a > 200, "first stream: {a} packets");
    assert!(
        b < a + a / 4,
        "the second stream reports {b} packets, the first {a}: counters add up across streams"
    );
}
