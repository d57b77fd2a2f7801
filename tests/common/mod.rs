//! Harness shared by the integration tests that drive a real `raopd` process.
//!
//! The pieces, each in its own module:
//! - [`netns::Netns`]: a private network namespace per test, so senders and the daemon talk over
//!   their own loopback and every process is cleaned up with the namespace;
//! - [`daemon::Daemon`]: the daemon under test (the cargo-built binary, or `RAOPD_CMD`, e.g. a
//!   MIPS build under qemu-user);
//! - [`audio`]: deterministic white-noise WAV input;
//! - [`compare`]: checks that the daemon's raw output holds the input bit for bit;
//! - [`senders`]: real RAOP senders (pyatv, PulseAudio's module-raop-sink, PipeWire's
//!   module-raop-sink);
//! - [`loss`]: random UDP packet loss with nftables;
//! - [`pcap`], [`raop_wire`], [`clocks`]: a packet capture in the namespace and what the sender
//!   said on the wire, read without raopd's code, for checks of absolute timing.
//!
//! These tests need root (network namespaces, nftables) and the packages and venv that
//! `scripts/setup-test-deps.sh` installs. They do not skip without them: [`require_env`] fails
//! the test and says to run `scripts/test.sh`, so a missing dependency can never pass as green.

// Every test crate compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod audio;
pub mod clocks;
pub mod compare;
pub mod daemon;
pub mod loss;
pub mod netns;
pub mod pcap;
pub mod raop_wire;
pub mod senders;
pub mod sim;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The repository root (cargo runs integration tests there, but paths stay explicit).
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target dir, found from the per-crate scratch dir cargo gives integration tests
/// (`<target>/tmp`); `scripts/setup-test-deps.sh` puts the venv beside it.
pub fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

/// The Python venv holding pyatv: `$RAOPD_TEST_VENV`, else `<target>/test-env/venv`.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("RAOPD_TEST_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => target_dir().join("test-env").join("venv"),
    }
}

/// The venv's python.
pub fn venv_python() -> PathBuf {
    venv_dir().join("bin").join("python")
}

const HOW_TO_FIX: &str = "the end-to-end tests need root and the test dependencies: run \
     `sudo scripts/test.sh` (or `sudo scripts/setup-test-deps.sh` once, then `sudo cargo test`)";

/// Fails the calling test unless it runs as root with every program the harness uses present.
///
/// A failure rather than a skip: a machine without the dependencies must not report the
/// end-to-end tests as passed.
pub fn require_env() {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root (effective uid 0)".to_string());
    }
    for prog in [
        "ip",
        "ss",
        "nft",
        "timeout",
        "pulseaudio",
        "pactl",
        "paplay",
        "pipewire",
        "pw-cat",
        "pw-link",
        "sox",
        "bash",
    ] {
        if find_in_path(prog).is_none() {
            missing.push(format!("program `{prog}`"));
        }
    }
    let py = venv_python();
    if !py.exists() {
        missing.push(format!("pyatv venv at {}", venv_dir().display()));
    }
    assert!(
        missing.is_empty(),
        "missing: {}; {HOW_TO_FIX}",
        missing.join(", ")
    );
}

/// True when the effective uid is 0 (read from /proc: no libc call needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The full path of `prog` on `$PATH`, if any.
pub fn find_in_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Serialises the tests that stream real time audio within one test binary.
///
/// They could run in parallel (each has its own namespace), but on a two-core machine several
/// real-time senders plus debug-build daemons compete for CPU and make timing failures that say
/// nothing about the daemon. A test that panicked while holding the lock does not poison it for
/// the others.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A per-test scratch directory under the cargo target dir, emptied at the start.
///
/// It is kept when the test fails (its path is printed) so the daemon log, sender logs and raw
/// output can be inspected, and removed when the test passes.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(test_name: &str) -> TestDir {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("e2e")
            .join(test_name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `max_bytes` of a (log) file, for failure messages.
pub fn tail_of_file(path: &Path, max_bytes: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max_bytes);
            let text = String::from_utf8_lossy(&bytes[start..]).into_owned();
            if start > 0 {
                format!("[... {start} bytes before]\n{text}")
            } else {
                text
            }
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Prints the tail of a daemon log if the test that holds it panics: the log of a failing
/// end-to-end run is the first thing to read.
pub struct LogOnPanic(pub PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- raopd log ({}) ----\n{}\n---- end of raopd log ----",
                self.0.display(),
                tail_of_file(&self.0, 20_000)
            );
        }
    }
}

/// Sends an L16 ANNOUNCE to the daemon on `127.0.0.1:port` on a fresh connection and returns
/// the status line of the answer (then a TEARDOWN, in case it was accepted). For tests of
/// refusals (`503` with the cause while the output is missing). Call it inside the test's
/// namespace (`netns::in_netns`).
pub fn announce_status(port: u16) -> String {
    use std::io::{Read, Write};
    let sdp = "v=0\r\no=iTunes 1 0 IN IP4 127.0.0.1\r\ns=iTunes\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 0 RTP/AVP 96\r\na=rtpmap:96 L16/44100/2\r\n";
    let req = format!(
        "ANNOUNCE rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: 2\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req.as_bytes()).expect("send ANNOUNCE");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = s.write_all(b"TEARDOWN rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: 3\r\n\r\n");
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}
