//! Real RAOP senders, run inside a test's namespace under `timeout`.
//!
//! - pyatv 0.18.0 (`tests/senders/pyatv_stream.py`, venv from `scripts/setup-test-deps.sh`):
//!   L16 PCM, unencrypted, Digest user `pyatv`.
//! - PulseAudio 16.1's module-raop-sink (`tests/senders/pulse_stream.sh`): ALAC, RSA-encrypted
//!   AES, UDP, Digest user `iTunes`. At 100 % sink volume it sends `volume: 0.000000` (identity).
//! - PipeWire 0.3.65's libpipewire-module-raop-sink (`tests/senders/pipewire_stream.sh`): ALAC
//!   (uncompressed ALAC frames) with RSA-encrypted AES, or the same without encryption; UDP; no
//!   volume sent. One player can feed several sinks at once, one per receiver (multi-room).
//!
//! Each call can block until the sender is done ([`pyatv_stream`], [`pulse_stream`],
//! [`pipewire_stream`]) or return a running [`Sender`] for tests that need two at once.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::netns::{signal, Netns};
use super::{repo_dir, tail_of_file, venv_python};

/// Options of a pyatv stream.
#[derive(Clone, Debug, Default)]
pub struct PyatvOpts {
    /// Volume pyatv sends before streaming, in dB. `Some(0.0)` makes a receiver's software
    /// volume the identity; `None` leaves pyatv's default (-20.1 dB).
    pub volume_db: Option<f64>,
    /// Password for the receiver's RTSP Digest challenge.
    pub password: Option<String>,
    /// Leave the `a=fmtp` line out of pyatv's SDP. Only for receivers that cannot parse it
    /// (shairport-sync 3.3.8 crashes on it); raopd must take the stock SDP.
    pub no_fmtp: bool,
    /// Track metadata to send (DMAP); any of them makes pyatv send metadata and progress.
    pub title: Option<String>,
    pub artist: Option<String>,
    pub album: Option<String>,
    /// `DACP-ID` to send (16 hex digits) instead of pyatv's random one. pyatv sends both
    /// remote-control headers but runs no DACP server, so a test that answers DACP in its
    /// place announces `iTunes_Ctrl_<DACP-ID>` itself and must know the values.
    pub dacp_id: Option<String>,
    /// `Active-Remote` to send instead of pyatv's random one.
    pub active_remote: Option<u32>,
    /// 2 s into the stream, send cover art of this many bytes on pyatv's RTSP connection,
    /// then `volume: 0.300000` and `GET_PARAMETER volume`; the answers are printed on a
    /// `mid-stream:` line of the output.
    pub mid_stream_artwork: Option<usize>,
    /// pyatv's keep-alive (`POST /feedback` on its RTSP connection) every this many seconds
    /// instead of its stock 25 s, so that a test sees RTSP traffic within a few seconds.
    pub keep_alive_secs: Option<f64>,
}

impl PyatvOpts {
    /// pyatv as the exactness tests use it: volume 0 dB, so software volume is the identity.
    pub fn unity() -> Self {
        PyatvOpts {
            volume_db: Some(0.0),
            ..PyatvOpts::default()
        }
    }
}

/// Options of a PulseAudio stream.
#[derive(Clone, Debug)]
pub struct PulseOpts {
    /// `RSA` or `none`.
    pub encryption: String,
    /// `ALAC` or `PCM`.
    pub codec: String,
    pub password: Option<String>,
    /// Sink volume in percent, set with pactl before playing; 100 sends 0 dB.
    pub sink_volume_pct: Option<u32>,
    /// Seconds the sink stays up after paplay returns: the receiver is still playing its
    /// latency buffer, and stopping the sink sends TEARDOWN.
    pub tail_secs: f64,
}

impl Default for PulseOpts {
    fn default() -> Self {
        PulseOpts {
            encryption: "RSA".into(),
            codec: "ALAC".into(),
            password: None,
            sink_volume_pct: Some(100),
            tail_secs: 3.0,
        }
    }
}

impl PulseOpts {
    /// module-raop-sink with RSA + ALAC over UDP, sink at 100 % (sent as 0 dB).
    pub fn rsa_alac() -> Self {
        PulseOpts {
            encryption: "RSA".into(),
            codec: "ALAC".into(),
            sink_volume_pct: Some(100),
            ..PulseOpts::default()
        }
    }
}

/// Options of a PipeWire stream.
#[derive(Clone, Debug)]
pub struct PipewireOpts {
    /// `raop.encryption.type`: `RSA` or `none`.
    pub encryption: String,
    /// `raop.audio.codec`: `ALAC` or `PCM` (both are sent as uncompressed ALAC frames by 0.3.65).
    pub codec: String,
    /// Seconds the sinks stay up after pw-cat returns: the receivers are still playing their
    /// latency buffers, and stopping the daemon sends TEARDOWN.
    pub tail_secs: f64,
}

impl Default for PipewireOpts {
    fn default() -> Self {
        PipewireOpts::rsa_alac()
    }
}

impl PipewireOpts {
    /// `raop.encryption.type = RSA`, `raop.audio.codec = ALAC`.
    pub fn rsa_alac() -> Self {
        PipewireOpts {
            encryption: "RSA".into(),
            codec: "ALAC".into(),
            tail_secs: 3.0,
        }
    }

    /// `raop.encryption.type = none`, `raop.audio.codec = PCM`.
    pub fn pcm_none() -> Self {
        PipewireOpts {
            encryption: "none".into(),
            codec: "PCM".into(),
            tail_secs: 3.0,
        }
    }
}

/// How a sender run ended.
#[derive(Debug)]
pub struct SendResult {
    pub what: String,
    /// `None` when the harness had to kill the sender at its time limit.
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
    /// The sender's stdout and stderr.
    pub output_path: PathBuf,
    /// The sender's own detailed log, if it has one (PulseAudio's).
    pub log_path: Option<PathBuf>,
}

impl SendResult {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The sender's output, and the end of its own log.
    pub fn report(&self) -> String {
        let mut r = format!(
            "{} ended with {} after {:.1} s; output:\n{}",
            self.what,
            match self.status {
                Some(s) if s.code() == Some(124) => "exit 124 (timed out)".to_string(),
                Some(s) => s.to_string(),
                None => "no exit status (killed by the harness)".to_string(),
            },
            self.elapsed.as_secs_f64(),
            tail_of_file(&self.output_path, 8000)
        );
        if let Some(log) = &self.log_path {
            r += &format!(
                "\n---- {} ----\n{}",
                log.display(),
                tail_of_file(log, 12000)
            );
        }
        r
    }

    /// Panics with the sender's output unless it succeeded.
    pub fn assert_ok(&self) {
        assert!(self.success(), "sender failed: {}", self.report());
    }
}

/// A sender still running.
pub struct Sender {
    what: String,
    child: Child,
    started: Instant,
    limit: Duration,
    output_path: PathBuf,
    log_path: Option<PathBuf>,
}

impl Sender {
    /// Freezes the sender for `d` and lets it go on: SIGSTOP to every process it started
    /// (the descendants of its `timeout`, which is left alone so its time limit still runs),
    /// then SIGCONT. What a sender looks like whose host stalls it, a loaded machine's
    /// scheduler or a laptop's Python runtime collecting garbage. Returns how many processes
    /// were frozen.
    pub fn stall(&self, d: Duration) -> usize {
        let pids = descendants(self.child.id());
        let send = |sig| {
            let sent = pids.iter().all(|&p| signal(p as i32, sig));
            assert!(sent, "signal {sig} to {pids:?} failed");
        };
        if !pids.is_empty() {
            send(libc::SIGSTOP);
            std::thread::sleep(d);
            send(libc::SIGCONT);
        }
        pids.len()
    }

    /// Waits for the sender to end (it runs under `timeout`; the harness kills it too, a little
    /// later, should `timeout` itself hang).
    pub fn wait(mut self) -> SendResult {
        let deadline = self.started + self.limit + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for sender") {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        SendResult {
            what: self.what.clone(),
            status,
            elapsed: self.started.elapsed(),
            output_path: self.output_path.clone(),
            log_path: self.log_path.clone(),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Streams `wav` with pyatv to `host:port` and waits for it to finish.
/// Output goes to `log_dir/pyatv.out`.
pub fn pyatv_stream(
    ns: &Netns,
    host: &str,
    port: u16,
    wav: &Path,
    log_dir: &Path,
    opts: &PyatvOpts,
) -> SendResult {
    pyatv_spawn(ns, host, port, wav, log_dir, opts).wait()
}

/// Starts a pyatv stream without waiting for it.
pub fn pyatv_spawn(
    ns: &Netns,
    host: &str,
    port: u16,
    wav: &Path,
    log_dir: &Path,
    opts: &PyatvOpts,
) -> Sender {
    let script = repo_dir().join("tests/senders/pyatv_stream.py");
    let mut args: Vec<String> = vec![
        venv_python().to_string_lossy().into_owned(),
        script.to_string_lossy().into_owned(),
        host.to_string(),
        port.to_string(),
        wav.to_string_lossy().into_owned(),
    ];
    if let Some(db) = opts.volume_db {
        args.push(format!("--volume-db={db}"));
    }
    if let Some(pw) = &opts.password {
        args.extend(["--password".to_string(), pw.clone()]);
    }
    if opts.no_fmtp {
        args.push("--no-fmtp".into());
    }
    for (flag, value) in [
        ("--title", &opts.title),
        ("--artist", &opts.artist),
        ("--album", &opts.album),
    ] {
        if let Some(v) = value {
            args.extend([flag.to_string(), v.clone()]);
        }
    }
    if let Some(id) = &opts.dacp_id {
        args.extend(["--dacp-id".to_string(), id.clone()]);
    }
    if let Some(n) = opts.active_remote {
        args.push(format!("--active-remote={n}"));
    }
    if let Some(n) = opts.mid_stream_artwork {
        args.push(format!("--mid-stream-artwork={n}"));
    }
    if let Some(s) = opts.keep_alive_secs {
        args.push(format!("--keep-alive={s}"));
    }
    let limit = Duration::from_secs_f64(wav_seconds(wav) + 30.0);
    spawn_timed(ns, "pyatv", &args, limit, log_dir.join("pyatv.out"), None)
}

/// Streams `wav` through PulseAudio's RAOP sink to `host:port` and waits for it to finish.
/// Output goes to `log_dir/pulse.out`, PulseAudio's debug log to `log_dir/pulseaudio.log`.
pub fn pulse_stream(
    ns: &Netns,
    host: &str,
    port: u16,
    wav: &Path,
    log_dir: &Path,
    opts: &PulseOpts,
) -> SendResult {
    pulse_spawn(ns, host, port, wav, log_dir, opts).wait()
}

/// Starts a PulseAudio stream without waiting for it.
pub fn pulse_spawn(
    ns: &Netns,
    host: &str,
    port: u16,
    wav: &Path,
    log_dir: &Path,
    opts: &PulseOpts,
) -> Sender {
    let script = repo_dir().join("tests/senders/pulse_stream.sh");
    let mut args: Vec<String> = vec![
        "bash".into(),
        script.to_string_lossy().into_owned(),
        host.to_string(),
        port.to_string(),
        wav.to_string_lossy().into_owned(),
        log_dir.to_string_lossy().into_owned(),
        "--encryption".into(),
        opts.encryption.clone(),
        "--codec".into(),
        opts.codec.clone(),
        "--tail".into(),
        opts.tail_secs.to_string(),
    ];
    if let Some(pw) = &opts.password {
        args.extend(["--password".to_string(), pw.clone()]);
    }
    if let Some(pct) = opts.sink_volume_pct {
        args.extend(["--sink-volume".to_string(), pct.to_string()]);
    }
    let limit = Duration::from_secs_f64(wav_seconds(wav) + opts.tail_secs + 40.0);
    spawn_timed(
        ns,
        "PulseAudio module-raop-sink",
        &args,
        limit,
        log_dir.join("pulse.out"),
        Some(log_dir.join("pulseaudio.log")),
    )
}

/// Streams `wav` through PipeWire's RAOP sink to every receiver in `receivers` (`(host, port)`,
/// one sink each, all fed by one pw-cat) and waits for it to finish. Output goes to
/// `log_dir/pipewire.out`, the daemon's log (raop-sink at debug level) to
/// `log_dir/pipewire.log`, pw-cat's and pw-link's to `log_dir/pw-cat.log`.
pub fn pipewire_stream(
    ns: &Netns,
    receivers: &[(&str, u16)],
    wav: &Path,
    log_dir: &Path,
    opts: &PipewireOpts,
) -> SendResult {
    pipewire_spawn(ns, receivers, wav, log_dir, opts).wait()
}

/// Starts a PipeWire stream to `receivers` without waiting for it.
pub fn pipewire_spawn(
    ns: &Netns,
    receivers: &[(&str, u16)],
    wav: &Path,
    log_dir: &Path,
    opts: &PipewireOpts,
) -> Sender {
    assert!(!receivers.is_empty(), "pipewire_spawn: no receiver");
    let script = repo_dir().join("tests/senders/pipewire_stream.sh");
    let mut args: Vec<String> = vec![
        "bash".into(),
        script.to_string_lossy().into_owned(),
        wav.to_string_lossy().into_owned(),
        log_dir.to_string_lossy().into_owned(),
    ];
    args.extend(
        receivers
            .iter()
            .map(|(host, port)| format!("{host}:{port}")),
    );
    args.extend([
        "--encryption".into(),
        opts.encryption.clone(),
        "--codec".into(),
        opts.codec.clone(),
        "--tail".into(),
        opts.tail_secs.to_string(),
    ]);
    let limit = Duration::from_secs_f64(wav_seconds(wav) + opts.tail_secs + 40.0);
    spawn_timed(
        ns,
        "PipeWire libpipewire-module-raop-sink",
        &args,
        limit,
        log_dir.join("pipewire.out"),
        Some(log_dir.join("pipewire.log")),
    )
}

/// Runs `args` in `ns` under `timeout LIMIT` (then SIGKILL 5 s later), output to `out`.
fn spawn_timed(
    ns: &Netns,
    what: &str,
    args: &[String],
    limit: Duration,
    out: PathBuf,
    log_path: Option<PathBuf>,
) -> Sender {
    let file = File::create(&out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
    let mut cmd = ns.command("timeout");
    cmd.args(["-k", "5", &format!("{:.0}", limit.as_secs_f64().ceil())])
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup output file"))
        .stderr(file);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
    Sender {
        what: what.to_string(),
        child,
        started: Instant::now(),
        limit,
        output_path: out,
        log_path,
    }
}

/// Every process below `pid`, from `/proc/PID/task/TID/children`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{p}/task"))
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default();
        for task in tasks {
            let children = std::fs::read_to_string(task.join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(c);
                todo.push(c);
            }
        }
    }
    found
}

/// Duration of a 16-bit stereo 44100 Hz WAV from its size (good enough for time limits).
fn wav_seconds(wav: &Path) -> f64 {
    let len = std::fs::metadata(wav)
        .unwrap_or_else(|e| panic!("{}: {e}", wav.display()))
        .len();
    len.saturating_sub(44) as f64 / (44_100.0 * 4.0)
}
