//! The output failing under a stream, against real alsa-lib, a real sender (pyatv) and real
//! sockets: a device that comes back within the grace period resumes the stream at the
//! position the sender's clock says; one that does not ends the stream, closes the sender's
//! RTSP connection and makes the speaker refuse new senders with `503` and the cause until
//! the device returns.
//!
//! The device is an ALSA PCM defined in a file of `ALSA_CONFIG_PATH`: alsa-lib's `file`
//! plugin writing into a FIFO that the test reads. Unplugging it, as a USB DAC is unplugged,
//! does two things: the PCM definition goes away (new opens fail with "no such device", as
//! they do when the card is gone; alsa-lib reads a changed configuration file again at the
//! next open) and the FIFO's reader goes away (writes fail: alsa-lib reports `EIO` for the
//! `EPIPE` it gets). Plugging it back in restores both, the reader first: alsa-lib's `file`
//! plugin opens its file blocking, and a FIFO without a reader would hold that open (and the
//! daemon's one thread) until one comes.
//!
//! Needs root and the packages of `scripts/setup-test-deps.sh` (namespaces, the pyatv venv,
//! avahi).

mod common;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::audio::{self, Frame};
use common::compare::assert_bit_exact;
use common::daemon::{self, Daemon};
use common::netns::{in_netns, Netns};
use common::senders::{self, PyatvOpts};
use common::{wait_until, TestDir};

const RATE: usize = 44_100;

/// A PCM named `dac` that comes and goes: its definition in a configuration file of
/// `ALSA_CONFIG_PATH`, and the FIFO its `file` plugin writes into.
struct Dac {
    conf: PathBuf,
    fifo: PathBuf,
    /// Bumped on every change, so each version of the file is a new file (see `write_conf`).
    version: u32,
}

impl Dac {
    fn new(dir: &Path) -> Dac {
        let fifo = dir.join("dac.fifo");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path for the duration of the call.
        let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
        assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
        Dac {
            conf: dir.join("dac.conf"),
            fifo,
            version: 0,
        }
    }

    /// The daemon's `ALSA_CONFIG_PATH`.
    fn config_path(&self) -> String {
        format!("/usr/share/alsa/alsa.conf:{}", self.conf.display())
    }

    /// alsa-lib notices a changed configuration file by its inode and modification time
    /// (whole seconds): each version is written beside it and renamed over it, a new inode.
    fn write_conf(&mut self, text: &str) {
        self.version += 1;
        let tmp = self.conf.with_extension(format!("conf.{}", self.version));
        std::fs::write(&tmp, text).expect("write ALSA configuration");
        std::fs::rename(&tmp, &self.conf).expect("rename ALSA configuration");
    }

    fn plug(&mut self) {
        let text = format!(
            "pcm.dac {{\n  type file\n  slave.pcm \"null\"\n  file \"{}\"\n  format \"raw\"\n}}\n",
            self.fifo.display()
        );
        self.write_conf(&text);
    }

    fn unplug(&mut self) {
        self.write_conf("# the DAC is unplugged\n");
    }
}

/// A process-like reader of the DAC's FIFO: while it holds the FIFO open, the daemon's
/// writes go through; when it closes it, they fail.
struct Reader {
    data: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Reader {
    fn open(fifo: &Path) -> Reader {
        // Non-blocking: opening the read side never waits for a writer.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
            .unwrap_or_else(|e| panic!("open {}: {e}", fifo.display()));
        let data = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (data.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while !s.load(Ordering::Relaxed) {
                match f.read(&mut buf) {
                    Ok(n) if n > 0 => d.lock().unwrap().extend_from_slice(&buf[..n]),
                    // 0: no writer at the moment (between the daemon's opens).
                    Ok(_) => std::thread::sleep(Duration::from_millis(5)),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => panic!("read fifo: {e}"),
                }
            }
            // Dropping `f` closes the FIFO's read side: the writer's next write fails.
        });
        Reader {
            data,
            stop,
            handle: Some(handle),
        }
    }

    /// The frames read so far (native-endian S16 of the daemon, as little-endian frames).
    fn frames(&self) -> Vec<Frame> {
        to_frames(&self.data.lock().unwrap())
    }

    /// Closes the FIFO (the reader "goes away") and returns everything it read.
    fn close(mut self, save_to: &Path) -> Vec<Frame> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("reader thread");
        }
        let data = self.data.lock().unwrap();
        File::create(save_to)
            .and_then(|mut f| f.write_all(&data))
            .expect("save capture");
        to_frames(&data)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The `file` plugin writes the daemon's native byte order.
fn to_frames(raw: &[u8]) -> Vec<Frame> {
    let frames = audio::raw_to_frames(raw);
    if daemon::big_endian_daemon() {
        frames
            .into_iter()
            .map(|[l, r]| [l.swap_bytes(), r.swap_bytes()])
            .collect()
    } else {
        frames
    }
}

fn pack(f: &Frame) -> u32 {
    (f[0] as u16 as u32) << 16 | f[1] as u16 as u32
}

/// Where `output[at..]` is found in `input`, by its first two frames (white noise: unique),
/// and how many frames from there on equal the input's, in a row.
fn matched_run(input: &[Frame], output: &[Frame], at: usize) -> Option<(usize, usize)> {
    let key = (pack(output.get(at)?), pack(output.get(at + 1)?));
    let start = input
        .windows(2)
        .position(|w| (pack(&w[0]), pack(&w[1])) == key)?;
    let run = input[start..]
        .iter()
        .zip(&output[at..])
        .take_while(|(a, b)| a == b)
        .count();
    Some((start, run))
}

/// The first frame of `frames` with a sample beyond ±1 (the start of the noise).
fn first_signal(frames: &[Frame], from: usize) -> Option<usize> {
    frames
        .iter()
        .skip(from)
        .position(|f| f.iter().any(|s| s.unsigned_abs() > 1))
        .map(|i| i + from)
}

/// Starts the daemon on `dac` (plugged in, its reader present), announced with mDNS when
/// `mdns`.
fn start_daemon(ns: &Netns, dir: &Path, port: u16, dac: &Dac, mdns: bool) -> Daemon {
    let mut args = vec![
        "--name",
        "dac",
        "--mac",
        "AA:BB:CC:DD:EE:02",
        "--no-control-socket",
        "--output",
        "alsa:dac",
    ];
    if !mdns {
        args.push("--no-mdns");
    }
    Daemon::start_with_env(
        ns,
        dir,
        port,
        &args,
        &[("ALSA_CONFIG_PATH", &dac.config_path())],
    )
}

/// Whether avahi (on the namespace's bus `bus`) resolves the daemon's announcement.
fn announced(ns: &Netns, bus: &str, port: u16) -> bool {
    let out = ns
        .command("avahi-browse")
        .args(["-kprt", "_raop._tcp"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .output()
        .expect("avahi-browse");
    String::from_utf8_lossy(&out.stdout).lines().any(|l| {
        let f: Vec<&str> = l.split(';').collect();
        // avahi-browse escapes characters of the instance name as `\DDD`: the MAC part is
        // plain.
        f.len() > 9 && f[0] == "=" && f[3].starts_with("AABBCCDDEE02") && f[8] == port.to_string()
    })
}

/// Waits until `reader` has taken `secs` of the sender's noise; panics with the daemon's log
/// otherwise.
fn wait_for_noise(reader: &Reader, secs: f64, raopd: &Daemon) {
    let ok = wait_until(Duration::from_secs(20), || {
        let f = reader.frames();
        first_signal(&f, 0).is_some_and(|i| f.len() - i >= (secs * RATE as f64) as usize)
    });
    assert!(
        ok,
        "no {secs} s of audio through the DAC:\n{}",
        raopd.log_tail()
    );
}

#[test]
fn an_output_that_fails_mid_stream_and_returns_within_the_grace_period_resumes_the_stream() {
    common::require_env();
    let _serial = common::serial();
    const PORT: u16 = 5461;
    let dir = TestDir::new("output_failure_returns");
    let mut dac = Dac::new(dir.path());
    dac.plug();
    let first = Reader::open(&dac.fifo);
    let ns = Netns::new();
    let mut raopd = start_daemon(&ns, dir.path(), PORT, &dac, false);

    let wav = dir.join("noise.wav");
    let input = audio::make_noise_wav(&wav, 12.0, 1.0);
    let sender = senders::pyatv_spawn(
        &ns,
        "127.0.0.1",
        PORT,
        &wav,
        dir.path(),
        &PyatvOpts::unity(),
    );
    wait_for_noise(&first, 2.5, &raopd);

    // Unplugged: the PCM is gone and its writes fail.
    dac.unplug();
    let cut = Instant::now();
    let before = first.close(&dir.join("before.raw"));
    assert!(
        wait_until(Duration::from_secs(5), || raopd
            .log()
            .contains("output failed; keeping the stream")),
        "no warning about the failed output:\n{}",
        raopd.log_tail()
    );
    std::thread::sleep(Duration::from_millis(2500));
    // Plugged back in, 2.5 s later: the reader first (see the module docs).
    let second = Reader::open(&dac.fifo);
    dac.plug();
    let outage = cut.elapsed();
    let back = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || raopd
            .log()
            .contains("works again")),
        "the output was not reopened within 5 s of its return:\n{}",
        raopd.log_tail()
    );
    let resumed_after = back.elapsed();
    let result = sender.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert!(raopd.is_running(), "raopd exited:\n{}", raopd.log_tail());
    let after = second.close(&dir.join("after.raw"));
    raopd.stop();
    result.assert_ok();
    let log = raopd.log();
    // One warning for the failure, naming the output and the error, and one line for the
    // return; no panic.
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("output failed; keeping the stream"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("alsa:dac: write: snd_pcm_writei failed: Input/output error"),
        "{}",
        warnings[0]
    );
    assert!(!log.contains("panicked"), "{}", raopd.log_tail());
    assert!(
        !log.contains("ending the stream"),
        "the stream ended:\n{}",
        raopd.log_tail()
    );

    // Before the cut: the sender's audio, bit for bit, from its first frame.
    let i = first_signal(&before, 0).expect("audio before the cut");
    let (start1, run1) = matched_run(&input, &before, i).expect("the input before the cut");
    assert_eq!(start1, 0, "the stream did not start with its first frame");
    assert!(
        run1 + i + 1 >= before.len(),
        "mismatch before the cut at output frame {}",
        i + run1
    );
    // After the return: the sender's audio again, bit for bit, to its end.
    let j = first_signal(&after, 0).expect("no audio after the output returned");
    let (start2, run2) = matched_run(&input, &after, j).expect("the input after the return");
    let noise_end = input.len() - RATE; // 1 s of silence follows the noise
    assert!(
        start2 + run2 >= noise_end,
        "after the return, the output follows the input for {run2} frames from input frame \
         {start2}, not to the end of the noise ({noise_end})"
    );
    // At the right position: what fell due while the output was down was skipped, not
    // played late. The gap spans the outage, give or take the frames written ahead of their
    // time (≤ 0.2 s), the retry interval (1 s) and a loaded machine.
    let gap = audio::seconds(start2 - run1);
    let outage = outage.as_secs_f64() + resumed_after.as_secs_f64();
    assert!(
        gap > outage - 1.5 && gap < outage + 1.0,
        "{gap:.2} s of the stream skipped for an outage of {outage:.2} s"
    );
}

#[test]
fn an_output_that_does_not_return_ends_the_stream_and_senders_are_refused_until_it_does() {
    common::require_env();
    let _serial = common::serial();
    const PORT: u16 = 5462;
    let dir = TestDir::new("output_failure_gone");
    let mut dac = Dac::new(dir.path());
    dac.plug();
    let first = Reader::open(&dac.fifo);
    let ns = Netns::new();
    let bus = ns.start_avahi();
    let mut raopd = start_daemon(&ns, dir.path(), PORT, &dac, true);

    let wav = dir.join("long.wav");
    audio::make_noise_wav(&wav, 25.0, 0.0);
    let sender_dir = dir.join("first-sender");
    std::fs::create_dir_all(&sender_dir).unwrap();
    let mut sender = senders::pyatv_spawn(
        &ns,
        "127.0.0.1",
        PORT,
        &wav,
        &sender_dir,
        &PyatvOpts::unity(),
    );
    wait_for_noise(&first, 1.5, &raopd);
    dac.unplug();
    let cut = Instant::now();
    first.close(&dir.join("before.raw"));

    // The grace period runs out: the stream ends and the sender's connection is closed.
    assert!(
        wait_until(Duration::from_secs(16), || raopd
            .log()
            .contains("closing the sender's connection")),
        "the stream did not end:\n{}",
        raopd.log_tail()
    );
    let ended = cut.elapsed();
    assert!(
        ended >= Duration::from_secs(9),
        "the stream ended {ended:?} after the cut, before the grace period"
    );
    // pyatv notices and gives up, long before its 25 s file would have ended.
    assert!(
        wait_until(Duration::from_secs(8), || !sender.is_running()),
        "pyatv still streams {:?} after the daemon closed its connection",
        cut.elapsed()
    );
    let result = sender.wait();
    assert!(
        !result.success(),
        "pyatv reported success for a stream cut off: {}",
        result.report()
    );

    // New senders are told why; the speaker is still announced.
    let refused = in_netns(&ns, move || common::announce_status(PORT));
    assert_eq!(
        refused,
        "RTSP/1.0 503 Service Unavailable (output alsa:dac: no such ALSA device \
         (No such file or directory))"
    );
    assert!(raopd.is_running(), "raopd exited:\n{}", raopd.log_tail());
    assert!(
        wait_until(Duration::from_secs(10), || announced(&ns, &bus, PORT)),
        "avahi does not resolve the speaker after the output failed"
    );

    // The DAC returns: a new stream plays bit for bit.
    let second = Reader::open(&dac.fifo);
    dac.plug();
    let short = dir.join("short.wav");
    let input = audio::make_noise_wav(&short, 3.0, 1.0);
    let sent = senders::pyatv_stream(
        &ns,
        "127.0.0.1",
        PORT,
        &short,
        dir.path(),
        &PyatvOpts::unity(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let output = second.close(&dir.join("after.raw"));
    assert!(raopd.is_running(), "raopd exited:\n{}", raopd.log_tail());
    raopd.stop();
    sent.assert_ok();
    let log = raopd.log();
    assert!(
        log.contains("output alsa:dac works now"),
        "{}",
        raopd.log_tail()
    );
    assert!(!log.contains("panicked"), "{}", raopd.log_tail());
    assert_bit_exact(&input, &output, "pyatv -> raopd after the output returned");
}

#[test]
fn a_file_pcm_that_cannot_write_its_file_is_reported_at_start() {
    // alsa-lib 1.2.8 opens and configures a `file` PCM whose file cannot be created and
    // fails only when the first buffer is written out: the start-up check plays a buffer of
    // silence to find out.
    // A port that is taken: a daemon that gets past its output stops there.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let prefix = daemon::command_prefix();
    let mut child = std::process::Command::new(&prefix[0])
        .args(&prefix[1..])
        .args([
            "--output",
            "alsa:file:FILE=/nonexistent/out.raw,FORMAT=raw",
            "--no-mdns",
            "--no-control-socket",
            "--port",
            &port,
        ])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run raopd");
    let exited = wait_until(Duration::from_secs(20), || {
        child.try_wait().expect("wait").is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(exited, "raopd still running after 20 s: {err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        "raopd: output alsa:file:FILE=/nonexistent/out.raw,FORMAT=raw: playing failed \
         (Input/output error); the device went away or cannot be written (for a `file` PCM: \
         its file or pipe)\n"
    );
}
