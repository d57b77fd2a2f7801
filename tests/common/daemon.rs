//! The daemon under test, run inside a test's namespace.
//!
//! By default the cargo-built `raopd`; `RAOPD_CMD` replaces the whole command prefix, e.g.
//! `qemu-mips target/mips-unknown-linux-musl/release/raopd`, so the same tests check a
//! cross-built binary under qemu-user.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::netns::{signal, Netns};
use super::{tail_of_file, wait_until};

/// The command prefix that runs the daemon: `$RAOPD_CMD` split on whitespace, else the binary
/// cargo built for this test run.
pub fn command_prefix() -> Vec<String> {
    match std::env::var("RAOPD_CMD") {
        Ok(cmd) if !cmd.trim().is_empty() => cmd.split_whitespace().map(String::from).collect(),
        _ => vec![env!("CARGO_BIN_EXE_raopd").to_string()],
    }
}

/// Whether the daemon runs under qemu-user. Then its process is qemu's, which has threads of
/// its own (e.g. its RCU thread), so per-process thread counts do not describe the daemon.
/// True when the daemon is a big-endian MIPS binary under `qemu-mips`: its ALSA output is
/// native-endian S16, i.e. big-endian bytes in the `file` plugin's output.
pub fn big_endian_daemon() -> bool {
    command_prefix()
        .first()
        .and_then(|p| {
            Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .is_some_and(|n| n == "qemu-mips")
}

pub fn runs_under_qemu() -> bool {
    command_prefix()
        .first()
        .and_then(|p| {
            Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .is_some_and(|n| n.starts_with("qemu-"))
}

/// A running daemon. Dropping it kills it (if [`Daemon::stop`] was not called); if the test is
/// panicking, the end of its log is printed, so panics here and in tests need not include it.
pub struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
    stdout: PathBuf,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Starts the daemon in `ns` with `--port PORT` followed by `args`, and waits until its RTSP
    /// port accepts TCP connections. stderr goes to `dir/raopd.log`, stdout to
    /// `dir/raopd.stdout` (the audio, with `--output stdout`). `RUST_LOG` is passed on, default
    /// `debug`: the log is only read when a test fails.
    pub fn start(ns: &Netns, dir: &Path, port: u16, args: &[&str]) -> Daemon {
        Self::start_with_env(ns, dir, port, args, &[])
    }

    /// [`Daemon::start`] with extra environment variables for the daemon (e.g. `HOME`, whose
    /// `.asoundrc` alsa-lib reads).
    pub fn start_with_env(
        ns: &Netns,
        dir: &Path,
        port: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let prefix = command_prefix();
        let log = dir.join("raopd.log");
        let stdout = dir.join("raopd.stdout");
        let mut cmd = ns.command(&prefix[0]);
        cmd.args(&prefix[1..])
            .arg("--port")
            .arg(port.to_string())
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create daemon stdout file"))
            .stderr(File::create(&log).expect("create daemon log"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut daemon = Daemon {
            child,
            port,
            log,
            stdout,
            status: None,
        };
        let limit = Duration::from_secs(if runs_under_qemu() { 60 } else { 20 });
        let deadline = Instant::now() + limit;
        while !ns.tcp_listening(port) {
            if let Some(status) = daemon.child.try_wait().expect("wait for daemon") {
                daemon.status = Some(status);
                panic!("raopd ({cmd:?}) exited with {status} before listening on port {port}");
            }
            assert!(
                Instant::now() < deadline,
                "raopd did not listen on TCP port {port} within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    /// The daemon's pid (qemu's under qemu-user: `ip netns exec` execs in place).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Threads of the daemon's process now (entries in /proc/PID/task); 0 once it has exited.
    pub fn threads(&self) -> usize {
        thread_count(self.pid())
    }

    /// Samples the thread count every 20 ms in the background until [`ThreadSampler::finish`].
    pub fn sample_threads(&self) -> ThreadSampler {
        ThreadSampler::start(self.pid())
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The file that receives the daemon's stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// The daemon's whole log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The end of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        tail_of_file(&self.log, 20_000)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("wait for daemon");
        }
        self.status.is_none()
    }

    /// Stops the daemon with SIGTERM, the way a service manager does, and waits for it to exit.
    /// Panics if it needs SIGKILL after 10 s: a daemon that ignores SIGTERM would leave its
    /// output unflushed.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        signal(self.pid(), libc::SIGTERM);
        let exited = wait_until(Duration::from_secs(10), || !self.is_running());
        if !exited {
            signal(self.pid(), libc::SIGKILL);
            let status = self.child.wait().expect("wait for killed daemon");
            self.status = Some(status);
            panic!("raopd did not exit within 10 s of SIGTERM");
        }
        self.status.expect("exited")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.is_running() {
            signal(self.pid(), libc::SIGTERM);
            if !wait_until(Duration::from_secs(3), || !self.is_running()) {
                signal(self.pid(), libc::SIGKILL);
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "---- raopd log ({}) ----\n{}\n---- end of raopd log ----",
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

fn thread_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Background sampler of a process's thread count; keeps the maximum seen.
pub struct ThreadSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicUsize>,
    handle: Option<JoinHandle<()>>,
}

impl ThreadSampler {
    fn start(pid: i32) -> ThreadSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicUsize::new(0));
        let (s, m) = (stop.clone(), max.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(thread_count(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        ThreadSampler {
            stop,
            max,
            handle: Some(handle),
        }
    }

    /// Stops sampling; returns the most threads seen at once.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.max.load(Ordering::Relaxed)
    }
}

impl Drop for ThreadSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Collects what the daemon writes to its `pipe:PATH` output: a FIFO at PATH drained by a
/// background thread into memory.
///
/// A FIFO read by another process is how the pipe output is used (a player or streaming server
/// reads it). The harness opens it read-write: the open never blocks, the daemon's open for
/// writing (blocking or not) always finds a reader, and a daemon that closes and reopens the
/// pipe between sessions does not end the capture with an EOF.
pub struct FifoCapture {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<u8>>>,
}

impl FifoCapture {
    pub fn create(path: &Path) -> FifoCapture {
        let _ = std::fs::remove_file(path);
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: c_path is a valid NUL-terminated string for the duration of the call.
        let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o666) };
        assert_eq!(
            rc,
            0,
            "mkfifo {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap_or_else(|e| panic!("open fifo {}: {e}", path.display()));
        // A 1 MiB pipe (6 s of audio) so a daemon that writes in bursts never waits on us.
        {
            use std::os::fd::AsRawFd;
            // SAFETY: fcntl on an fd we own; failure only leaves the default size.
            unsafe { libc::fcntl(fifo.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut data = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match fifo.read(&mut buf) {
                    Ok(n) if n > 0 => data.extend_from_slice(&buf[..n]),
                    Ok(_) => std::thread::sleep(Duration::from_millis(5)),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if s.load(Ordering::Relaxed) {
                            break; // stopped and drained
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => panic!("read fifo: {e}"),
                }
            }
            data
        });
        FifoCapture {
            path: path.to_path_buf(),
            stop,
            handle: Some(handle),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drains what is left and returns everything read; also writes it to `save_to` so a failed
    /// test leaves the raw output beside its logs.
    pub fn finish(mut self, save_to: &Path) -> Vec<u8> {
        self.stop.store(true, Ordering::Relaxed);
        let data = self
            .handle
            .take()
            .expect("finish once")
            .join()
            .expect("fifo reader thread panicked");
        let mut f = File::create(save_to).expect("create capture file");
        f.write_all(&data).expect("write capture file");
        data
    }
}

impl Drop for FifoCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
