//! The command line as a new user meets it, against the real binary: wrong flags and values,
//! `--help` everywhere, `raopd status` without a daemon, an output device that is missing or
//! cannot take the stream's format (reported at start), `--wait-for-output` refusing senders
//! with the cause until the device appears, and a 32-character Cyrillic name accepted, shown
//! in the start line at the default log level and announced over mDNS as far as a DNS label
//! carries it; and a fatal signal named in the log before it ends the daemon.
//!
//! The wait-for-output and Cyrillic-name tests need root and the packages of
//! `scripts/setup-test-deps.sh` (namespaces, avahi, the pyatv venv); the others need nothing
//! but the binary and alsa-lib.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::audio;
use common::compare::assert_bit_exact;
use common::daemon::{self, Daemon};
use common::netns::{in_netns, signal, Netns};
use common::senders::{self, PyatvOpts};
use common::{wait_until, TestDir};

/// Runs the binary (or `$RAOPD_CMD`) with `args` and `env`, stdin closed; gives up after 20 s.
fn raopd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let prefix = daemon::command_prefix();
    let mut child = Command::new(&prefix[0])
        .args(&prefix[1..])
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {prefix:?}: {e}"));
    let end = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "raopd {args:?} still running after 20 s; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts exit status `code` and a single stderr line equal to `want`.
fn assert_error(args: &[&str], code: i32, want: &str) {
    let out = raopd(args, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "raopd {args:?}: {err}");
    assert_eq!(err, format!("{want}\n"), "raopd {args:?}");
    assert!(out.stdout.is_empty(), "raopd {args:?} printed to stdout");
}

#[test]
fn bad_flags_and_values_get_one_line_naming_flag_value_and_range() {
    let see = " (see raopd --help)";
    for (args, want) in [
        (
            &["--port", "0"][..],
            r#"invalid --port value "0": must be a whole number from 1 to 65535"#,
        ),
        (
            &["--port", "65536"][..],
            r#"invalid --port value "65536": must be a whole number from 1 to 65535"#,
        ),
        (
            &["--port=http"][..],
            r#"invalid --port value "http": must be a whole number from 1 to 65535"#,
        ),
        (&["--port"][..], "--port needs a value"),
        (
            &["--udp-port-base", "65534"][..],
            r#"invalid --udp-port-base value "65534": must be 0 (ephemeral ports) or a whole number from 1 to 65526: the stream's UDP ports run from it to it + 9, all within 65535"#,
        ),
        (
            &["--password", ""][..],
            r#"invalid --password value "": must be at least one character (leave --password out to play without one)"#,
        ),
        (
            &["--name", ""][..],
            r#"invalid --name value "": must be 1 to 50 characters (it has 0)"#,
        ),
        (
            &["--latency-ms", "50"][..],
            r#"invalid --latency-ms value "50": must be a whole number from 100 to 10000 ms"#,
        ),
        (
            &["--latency-offset-ms", "+3000"][..],
            r#"invalid --latency-offset-ms value "+3000": must be a whole number from -2000 to 2000 ms"#,
        ),
        (
            &["--session-timeout", "0"][..],
            r#"invalid --session-timeout value "0": must be a whole number from 1 to 86400 seconds"#,
        ),
        (
            &["--idle-timeout", "-1"][..],
            r#"invalid --idle-timeout value "-1": must be a whole number from 0 to 86400 seconds"#,
        ),
        (
            &["--session-interruption", "sometimes"][..],
            r#"invalid --session-interruption value "sometimes": must be allow or deny"#,
        ),
        (
            &["--mac", "AA:BB"][..],
            r#"invalid --mac value "AA:BB": must be six hex bytes like AA:BB:CC:DD:EE:FF"#,
        ),
        (
            &["--output", "jack"][..],
            r#"invalid --output: unknown output "jack": expected alsa[:PCM], pipe:PATH, stdout or sim:PATH[:+Nppm|:-Nppm]"#,
        ),
        (&["--prot", "5000"][..], r#"unknown option "--prot""#),
    ] {
        assert_error(args, 2, &format!("raopd: {want}{see}"));
    }
    let long = "ж".repeat(51);
    assert_error(
        &["--name", &long],
        2,
        &format!(
            r#"raopd: invalid --name value "{long}": must be 1 to 50 characters (it has 51){see}"#
        ),
    );
    assert_error(
        &["ctl", "reboot"],
        2,
        r#"raopd: invalid ctl value "reboot": must be one of play, pause, playpause, next, previous, volumeup, volumedown, stop (see raopd ctl --help)"#,
    );
    assert_error(
        &["status", "--verbose"],
        2,
        r#"raopd: status: unexpected argument "--verbose" (see raopd status --help)"#,
    );
}

#[test]
fn help_on_every_subcommand() {
    for (args, first_line) in [
        (&["--help"][..], "usage: raopd [options]"),
        (&["-h"][..], "usage: raopd [options]"),
        (&["status", "--help"][..], "usage: raopd status"),
        (&["ctl", "--help"][..], "usage: raopd ctl COMMAND"),
        (&["ctl", "play", "-h"][..], "usage: raopd ctl COMMAND"),
    ] {
        let out = raopd(args, &[]);
        let help = text(&out.stdout);
        assert!(out.status.success(), "raopd {args:?}: {:?}", out.status);
        assert!(
            help.starts_with(first_line),
            "raopd {args:?} printed:\n{help}"
        );
        assert!(
            out.stderr.is_empty(),
            "raopd {args:?}: {}",
            text(&out.stderr)
        );
    }
    // The daemon's help lists every option and its range.
    let help = text(&raopd(&["--help"], &[]).stdout);
    for flag in [
        "--name NAME",
        "1 to 50 characters",
        "--port PORT",
        "1 to 65535",
        "--wait-for-output",
        "--latency-offset-ms N       play N ms later (positive)",
        "--udp-port-base PORT",
        "--control-socket PATH",
        "raopd status",
        "raopd ctl COMMAND",
    ] {
        assert!(help.contains(flag), "--help lacks {flag:?}:\n{help}");
    }
}

#[test]
fn status_and_ctl_without_a_daemon_ask_whether_it_runs() {
    let dir = TestDir::new("cli_no_daemon");
    let missing = dir.join("none.sock");
    let m = missing.to_str().expect("utf-8 path");
    assert_error(
        &["status", "--control-socket", m],
        2,
        &format!("raopd: no control socket at {m}: is raopd running? (start it, or give the --control-socket it was started with)"),
    );
    assert_error(
        &["ctl", "pause", &format!("--control-socket={m}")],
        2,
        &format!("raopd: no control socket at {m}: is raopd running? (start it, or give the --control-socket it was started with)"),
    );
    // A socket file left by a daemon that is gone: nobody accepts.
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let s = stale.to_str().expect("utf-8 path");
    let out = raopd(&["status", "--control-socket", s], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("raopd: nothing answers at {s}: is raopd running?")),
        "{err}"
    );
}

#[test]
fn a_missing_output_device_is_reported_at_start() {
    let started = Instant::now();
    // Port 1 would need root and is surely free: the output is checked before the port.
    let out = raopd(
        &[
            "--output",
            "alsa:doesnotexist",
            "--no-mdns",
            "--no-control-socket",
            "--port",
            "1",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        text(&out.stderr),
        "raopd: output alsa:doesnotexist: no such ALSA device (No such file or directory); \
         `aplay -L` lists the ALSA device names, `aplay -l` the cards; give one as alsa:NAME, \
         e.g. alsa:plughw:CARD=Device,DEV=0 (--wait-for-output waits for a USB DAC that \
         appears later)\n",
        "one line, no alsa-lib noise"
    );
}

/// `$HOME/.asoundrc` with a PCM that takes one channel only, like a hw: device that cannot
/// play what the stream carries.
const MONO_ONLY: &str = "pcm.mono1 {\n  type multi\n  slaves.a.pcm \"null\"\n  \
                         slaves.a.channels 1\n  bindings.0.slave a\n  bindings.0.channel 0\n}\n";

#[test]
fn a_device_that_cannot_take_the_format_gets_the_plug_hint() {
    let dir = TestDir::new("cli_format");
    std::fs::write(dir.join(".asoundrc"), MONO_ONLY).expect("write .asoundrc");
    let home = dir.path().to_str().expect("utf-8 path");
    // A port that is taken: a daemon that gets past its output stops there.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let args = |out: &'static str| {
        [
            "--output",
            out,
            "--no-mdns",
            "--no-control-socket",
            "--port",
            port.as_str(),
        ]
        .map(String::from)
    };
    let args = |out: &'static str| args(out).to_vec();
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let out = raopd(&refs(&args("alsa:mono1")), &[("HOME", home)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "raopd: output alsa:mono1: the device cannot play 16-bit stereo at 44100 Hz \
         (2 channels: Invalid argument); use alsa:plug:mono1, which converts, or alsa:default\n"
    );
    // The hint works: through plug: the device opens, and the daemon gets as far as the
    // port, which is taken.
    let out = raopd(&refs(&args("alsa:plug:mono1")), &[("HOME", home)]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!("raopd: RTSP port {port}: Address already in use")),
        "{err}"
    );
    assert!(err.contains("choose another --port"), "{err}");
}

#[test]
fn wait_for_output_refuses_senders_with_the_cause_until_the_device_appears() {
    common::require_env();
    let _serial = common::serial();
    const PORT: u16 = 5401;
    let dir = TestDir::new("cli_wait_for_output");
    // alsa-lib reads the files of ALSA_CONFIG_PATH again when they change (a file that is
    // missing at first included), so a PCM defined there later stands for a USB DAC that is
    // plugged in after the daemon started.
    let late_conf = dir.join("late.conf");
    let config_path = format!("/usr/share/alsa/alsa.conf:{}", late_conf.display());
    let raw = dir.join("late.raw");
    let ns = Netns::new();
    let mut raopd = Daemon::start_with_env(
        &ns,
        dir.path(),
        PORT,
        &[
            "--name",
            "late",
            "--no-mdns",
            "--no-control-socket",
            "--output",
            "alsa:late",
            "--wait-for-output",
        ],
        &[("ALSA_CONFIG_PATH", &config_path)],
    );
    assert!(
        raopd.log().contains(
            "output alsa:late: no such ALSA device (No such file or directory); `aplay -L`"
        ) && raopd.log().contains("waiting for it (--wait-for-output)"),
        "no warning at start:\n{}",
        raopd.log_tail()
    );

    let refused = in_netns(&ns, move || common::announce_status(PORT));
    assert_eq!(
        refused,
        "RTSP/1.0 503 Service Unavailable (output alsa:late: no such ALSA device \
         (No such file or directory))"
    );

    // The USB DAC "appears": alsa-lib finds the PCM at the next session's open.
    std::fs::write(
        &late_conf,
        format!(
            "pcm.late {{\n  type file\n  slave.pcm \"null\"\n  file \"{}\"\n  format \"raw\"\n}}\n",
            raw.display()
        ),
    )
    .expect("write late.conf");

    // A real sender now plays, bit for bit, through the device the daemon waited for.
    let wav = dir.join("noise.wav");
    let input = audio::make_noise_wav(&wav, 3.0, 2.0);
    let sent = senders::pyatv_stream(
        &ns,
        "127.0.0.1",
        PORT,
        &wav,
        dir.path(),
        &PyatvOpts::unity(),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(raopd.is_running(), "raopd exited:\n{}", raopd.log_tail());
    raopd.stop();
    sent.assert_ok();
    assert!(raopd.log().contains("output alsa:late works now"));
    let output = if daemon::big_endian_daemon() {
        audio::read_raw(&raw)
            .into_iter()
            .map(|[l, r]| [l.swap_bytes(), r.swap_bytes()])
            .collect()
    } else {
        audio::read_raw(&raw)
    };
    assert_bit_exact(&input, &output, "pyatv -> raopd after --wait-for-output");
}

/// Undoes avahi-browse's escapes in a parsable-output field: `\DDD` (a decimal byte value)
/// and `\X` (the character X).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let digits = b
                .get(i + 1..i + 4)
                .filter(|d| d.iter().all(u8::is_ascii_digit))
                .and_then(|d| std::str::from_utf8(d).ok());
            if let Some(v) = digits.and_then(|d| d.parse::<u8>().ok()) {
                out.push(v);
                i += 4;
            } else {
                out.push(b[i + 1]);
                i += 2;
            }
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_32_character_cyrillic_name_is_accepted_and_announced() {
    common::require_env();
    let _serial = common::serial();
    const PORT: u16 = 5402;
    const NAME: &str = "Кухня в гостиной на втором этаже";
    // 59 bytes of UTF-8; a DNS label leaves 50 after "AABBCCDDEE01@": cut at a character.
    const ANNOUNCED: &str = "Кухня в гостиной на втором";
    assert_eq!(NAME.chars().count(), 32);
    let dir = TestDir::new("cli_cyrillic");
    let ns = Netns::new();
    let bus = ns.start_avahi();
    let socket = ns.runtime_dir().join("c.sock");
    let log = dir.join("raopd.log");
    let prefix = daemon::command_prefix();
    // Started by hand: the default log level (no RUST_LOG) is part of what is checked.
    let child = ns
        .command(&prefix[0])
        .args(&prefix[1..])
        .args(["--name", NAME, "--port", &PORT.to_string()])
        .args(["--mac", "AA:BB:CC:DD:EE:01", "--output", "alsa:null"])
        .arg("--control-socket")
        .arg(&socket)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start raopd");
    let pid = child.id() as i32;
    ns.adopt(child);
    assert!(
        wait_until(Duration::from_secs(20), || ns.tcp_listening(PORT)),
        "raopd did not listen: {}",
        common::tail_of_file(&log, 4000)
    );

    let instance = format!("AABBCCDDEE01@{ANNOUNCED}");
    let mut lines = Vec::new();
    let resolved = wait_until(Duration::from_secs(15), || {
        let out = ns
            .command("avahi-browse")
            .args(["-kprt", "_raop._tcp"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus)
            .output()
            .expect("avahi-browse");
        lines = text(&out.stdout)
            .lines()
            .map(|l| l.split(';').map(unescape).collect::<Vec<_>>())
            .filter(|f| f.len() > 9 && f[0] == "=")
            .collect();
        !lines.is_empty()
    });
    assert!(resolved, "avahi-browse resolved nothing");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0][3], instance, "avahi's instance name");
    assert_eq!(lines[0][8], PORT.to_string());

    let script = common::repo_dir().join("tests/senders/zeroconf_resolve.py");
    let out = ns
        .command(common::venv_python())
        .arg(&script)
        .output()
        .expect("zeroconf");
    let json = text(&out.stdout);
    assert!(
        json.contains(&format!(r#""seen": ["{instance}._raop._tcp.local."]"#))
            && json.contains(&format!(r#""port": {PORT}"#)),
        "python-zeroconf: {json}{}",
        text(&out.stderr)
    );

    // The daemon keeps the whole name; the status shows it.
    let status = raopd(
        &[
            "status",
            "--control-socket",
            socket.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(
        text(&status.stdout).contains(&format!(r#""name":"{NAME}""#)),
        "{}",
        text(&status.stdout)
    );

    signal(pid, libc::SIGTERM);
    assert!(wait_until(Duration::from_secs(10), || !ns.tcp_listening(PORT)));
    // At the default log level: the cut is explained, then the start line; nothing else.
    let log = std::fs::read_to_string(&log).expect("read log");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "log at the default level:\n{log}");
    assert_eq!(
        lines[0],
        format!(
            "[WARN  raopd] --name \"{NAME}\" is 59 bytes of UTF-8; mDNS carries 50 after the \
             MAC@ prefix, so senders list it as \"{ANNOUNCED}\""
        )
    );
    assert!(
        lines[1].starts_with(&format!(
            "[INFO  raopd::start] raopd {}: speaker \"{NAME}\" (announced with mDNS as \
             \"{ANNOUNCED}\") on RTSP port {PORT}, UDP ports ephemeral, output alsa:null, \
             interfaces lo 127.0.0.1, latency 2000 ms",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        lines[1]
    );
}

/// A bug that ends the daemon leaves one line in the log: the fatal-signal handler
/// (`src/fatal.rs`) names the signal on stderr, and the process still ends by that signal
/// (procd and core dumps see what they saw before). Shown with the signals a panic becomes:
/// SIGTRAP (a trap instruction: the MIPS firmware builds' `panic = "immediate-abort"`),
/// SIGABRT (a host build's panic), and SIGSEGV; each sent by another process, which the
/// handler treats the same way as one the daemon raised itself.
#[test]
fn a_fatal_signal_leaves_a_line_naming_it_and_still_ends_the_daemon() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    const PORT: u16 = 5467;
    let prefix = daemon::command_prefix();
    for (sig, name) in [
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGSEGV, "SIGSEGV"),
    ] {
        let port = PORT.to_string();
        let mut cmd = Command::new(&prefix[0]);
        cmd.args(&prefix[1..])
            .args(["--no-mdns", "--no-control-socket", "--port", &port])
            .args(["--output", "pipe:/dev/null"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: setrlimit only, between fork and exec: no core files from these signals.
        unsafe {
            cmd.pre_exec(|| {
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {prefix:?}: {e}"));
        let listening = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", PORT)).is_ok()
        });
        if !listening {
            let _ = child.kill();
            panic!("raopd did not listen on port {PORT}");
        }
        assert!(signal(child.id() as i32, sig), "kill {name}");
        // A daemon that survived the signal is a failure, not a hang.
        let ended = wait_until(Duration::from_secs(20), || {
            child.try_wait().expect("wait").is_some()
        });
        if !ended {
            let _ = child.kill();
            panic!("{name} did not end the daemon");
        }
        let out = child.wait_with_output().expect("output");
        let err = text(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(sig),
            "{name}: {:?}\n{err}",
            out.status
        );
        let line = format!("raopd: fatal signal {name} (");
        assert_eq!(
            err.lines().filter(|l| l.starts_with(&line)).count(),
            1,
            "{name}: no line naming it on stderr:\n{err}"
        );
    }
}
