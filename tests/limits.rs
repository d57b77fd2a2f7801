//! Resource limits of a running daemon under attack from the LAN: a flood of RTSP
//! connections (the one beyond the limit gets `503`), a slowloris client trickling one
//! header byte a second (cut with `408` after a bounded time), and garbage UDP on the live
//! stream's audio, control and timing ports, including well-formed RTP with absurd sequence
//! numbers and timestamps from a foreign address. Afterwards, and during the floods, a real
//! sender (pyatv) plays bit-exact, and the daemon's resident memory (`VmRSS`) has not grown
//! beyond a small bound. Loopback addresses in a private network namespace only; every loop
//! and duration is bounded.
//!
//! The local control socket under the same kind of abuse: one client beyond its limit is
//! refused, a client trickling a request a byte at a time and an idle one are cut, and
//! meanwhile `raopd status` answers and RTSP is served.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::audio::{self, Frame};
use common::compare::assert_bit_exact;
use common::daemon::{Daemon, FifoCapture};
use common::netns::{in_netns, Netns};
use common::senders::{self, PyatvOpts};
use common::TestDir;

const PORT: u16 = 5431;
/// `--udp-port-base`: the stream's audio, control and timing ports are this and the next two.
const UDP_BASE: u16 = 6130;
/// The daemon's limit (`raopd::server::MAX_RTSP_CONNECTIONS`).
const MAX_RTSP_CONNECTIONS: usize = 16;
/// The daemon's `REQUEST_TIMEOUT`, and the slack allowed on a loaded machine.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const SLACK: Duration = Duration::from_secs(4);
/// Resident memory the daemon may gain across the attacks and a second stream (allocator
/// noise; the jitter buffer and decoders are allocated once, before the baseline).
const RSS_BOUND_KIB: i64 = 2048;

/// Joins `ns`'s network namespace on the calling thread.
fn enter(ns_name: &str) {
    let file = std::fs::File::open(format!("/var/run/netns/{ns_name}")).expect("open netns");
    // SAFETY: setns on this thread only; the fd is valid for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a new thread inside `ns`.
fn spawn_in<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let name = ns.name().to_string();
    std::thread::spawn(move || {
        enter(&name);
        f()
    })
}

/// The daemon's resident memory in KiB, from /proc/PID/status.
fn rss_kib(pid: i32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Sends `req` on `s` and returns the first response line (empty if closed without one).
fn first_line(s: &mut TcpStream, req: &[u8]) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(req);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.lines().next().unwrap_or("").to_string()
}

/// A second input, different from the standard noise (negated, channels swapped), so the
/// comparator cannot confuse the two streams in one capture.
fn other_noise(path: &Path, noise: f64, silence: f64) -> Vec<Frame> {
    let frames: Vec<Frame> = audio::white_noise(noise, silence)
        .iter()
        .map(|[l, r]| [r.saturating_neg(), l.saturating_neg()])
        .collect();
    audio::write_wav(path, &frames);
    frames
}

/// One header byte a second until the daemon answers or closes; returns how long that
/// took, the bytes sent and the answer's first line.
fn slowloris() -> (Duration, usize, String) {
    let mut s = TcpStream::connect(("127.0.0.1", PORT)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let started = Instant::now();
    let head = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX-Slow: ";
    let mut sent = 0;
    let mut answer = Vec::new();
    // Bounded: 60 bytes, a minute at most.
    for i in 0..60 {
        let byte = head.get(i).copied().unwrap_or(b'a');
        if s.write_all(&[byte]).is_err() {
            break;
        }
        sent += 1;
        let mut chunk = [0u8; 256];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    let line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    (started.elapsed(), sent, line)
}

/// A bounded flood on the stream's three ports: from a foreign address (127.0.0.9), random
/// bytes and well-formed RTP with absurd sequence numbers and timestamps; from the sender's
/// own address, datagrams that are not RTP at all (wrong version, truncated). Returns the
/// number of datagrams sent.
fn udp_flood() -> usize {
    let ports = [UDP_BASE, UDP_BASE + 1, UDP_BASE + 2];
    let foreign = UdpSocket::bind("127.0.0.9:0").expect("bind foreign");
    let local = UdpSocket::bind("127.0.0.1:0").expect("bind local");
    let mut rnd: u32 = 0x9e37_79b9;
    let mut next = move || {
        rnd ^= rnd << 13;
        rnd ^= rnd >> 17;
        rnd ^= rnd << 5;
        rnd
    };
    let mut sent = 0;
    // 40 rounds of 3 × 60 datagrams, ~25 ms apart: about 7000 datagrams a second for 1 s.
    for round in 0..40 {
        for i in 0..60 {
            for (k, port) in ports.iter().enumerate() {
                let dst = SocketAddr::from(([127, 0, 0, 1], *port));
                let len = (next() % 1400) as usize + 1;
                let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let from_sender = (i + k + round) % 4 == 0;
                if from_sender {
                    // Never RTP: version bits 0, or shorter than a header.
                    p[0] &= 0x3f;
                    p.truncate(1 + len % 11);
                    let _ = local.send_to(&p, dst);
                } else {
                    if i % 2 == 0 && len > 12 {
                        // Well-formed RTP (audio 0x60, sync 0xd4, timing 0xd3 / resend 0xd6)
                        // with an absurd sequence number and timestamp.
                        p[0] = 0x80;
                        p[1] = [0x60, 0xd4, 0xd3, 0xd6][(i / 2) % 4];
                    }
                    let _ = foreign.send_to(&p, dst);
                }
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    sent
}

#[test]
fn connection_flood_slowloris_and_udp_floods_leave_audio_exact_and_memory_flat() {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new("limits");
    let ns = Netns::new();
    let fifo = FifoCapture::create(&dir.join("out.fifo"));
    let output = format!("pipe:{}", fifo.path().display());
    let udp_base = UDP_BASE.to_string();
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        PORT,
        &[
            "--name",
            "limits",
            "--no-mdns",
            "--output",
            &output,
            "--udp-port-base",
            &udp_base,
        ],
    );
    let pid = raopd.pid();
    let opts = PyatvOpts::unity();

    // A first stream allocates what streams need; the baseline is taken after it.
    let warm = dir.join("warm");
    std::fs::create_dir_all(&warm).unwrap();
    let wav1 = warm.join("noise.wav");
    audio::make_noise_wav(&wav1, 1.5, 1.0);
    senders::pyatv_stream(&ns, "127.0.0.1", PORT, &wav1, &warm, &opts).assert_ok();
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_kib(pid);

    // Connection flood: MAX held open, the next one refused with 503, then room again.
    let (held_ok, refused) = in_netns(&ns, || {
        let mut held = Vec::new();
        let mut ok = 0;
        for _ in 0..MAX_RTSP_CONNECTIONS {
            let mut s = TcpStream::connect(("127.0.0.1", PORT)).expect("connect");
            if first_line(&mut s, b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n").contains(" 200 ") {
                ok += 1;
            }
            held.push(s);
        }
        let mut extra = TcpStream::connect(("127.0.0.1", PORT)).expect("connect");
        let refused = first_line(&mut extra, b"OPTIONS * RTSP/1.0\r\nCSeq: 2\r\n\r\n");
        (ok, refused)
    });
    assert_eq!(held_ok, MAX_RTSP_CONNECTIONS, "{}", raopd.log_tail());
    assert!(
        refused.starts_with("RTSP/1.0 503"),
        "connection {} got {refused:?}",
        MAX_RTSP_CONNECTIONS + 1
    );
    let freed = common::wait_until(Duration::from_secs(5), || {
        in_netns(&ns, || {
            let mut s = TcpStream::connect(("127.0.0.1", PORT)).expect("connect");
            first_line(&mut s, b"OPTIONS * RTSP/1.0\r\nCSeq: 3\r\n\r\n").contains(" 200 ")
        })
    });
    assert!(freed, "closed connections were not given back");

    // A stream plays while a slowloris client trickles and UDP floods every stream port.
    let wav2 = dir.join("other.wav");
    let input = other_noise(&wav2, 8.0, 1.5);
    let sender = senders::pyatv_spawn(&ns, "127.0.0.1", PORT, &wav2, dir.path(), &opts);
    let slow = spawn_in(&ns, slowloris);
    let bound = common::wait_until(Duration::from_secs(15), || {
        ns.udp_sockets().contains(&format!(":{}", UDP_BASE + 2))
    });
    assert!(
        bound,
        "the stream's UDP ports never appeared:\n{}",
        raopd.log_tail()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let flooded = in_netns(&ns, udp_flood);
    let result = sender.wait();
    let (slow_for, slow_sent, slow_answer) = slow.join().expect("slowloris thread");
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss_kib(pid);
    eprintln!(
        "limits: {flooded} flood datagrams; slowloris cut after {slow_for:?} ({slow_sent} bytes) with {slow_answer:?}; \
         VmRSS {rss_before} KiB before, {rss_after} KiB after"
    );
    assert!(raopd.is_running(), "raopd died:\n{}", raopd.log_tail());
    assert!(
        slow_answer.starts_with("RTSP/1.0 408"),
        "slowloris client got {slow_answer:?} after {slow_for:?}"
    );
    assert!(
        slow_for <= REQUEST_TIMEOUT + SLACK,
        "slowloris client held its connection for {slow_for:?}"
    );
    raopd.stop();
    result.assert_ok();
    let log = raopd.log();
    assert!(
        log.split("foreign_packets=")
            .skip(1)
            .any(|rest| !rest.starts_with("0 ")),
        "the foreign datagrams were not counted as such:\n{}",
        raopd.log_tail()
    );
    let out = audio::raw_to_frames(&fifo.finish(&dir.join("out.raw")));
    assert_bit_exact(&input, &out, "pyatv during the floods");
    assert!(
        rss_after - rss_before <= RSS_BOUND_KIB,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

/// `raopd status --control-socket PATH` (the real command-line client): exit code and stdout.
fn raopd_status(socket: &Path) -> (Option<i32>, String) {
    let prefix = common::daemon::command_prefix();
    let out = std::process::Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg("status")
        .arg("--control-socket")
        .arg(socket)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run raopd status");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// Reads from `s` until the peer closes it (or 60 s pass); returns what was read and when the
/// end came, or `None` for the time if it never did.
fn read_to_close(s: &mut UnixStream) -> (String, Option<Instant>) {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(Instant::now()),
                )
            }
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(Instant::now()),
                )
            }
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), None),
        }
    }
}

/// The control socket of a running daemon: with a client trickling a request one byte a
/// second (it would need 30 s), an idle client and `MAX_CLIENTS - 2` clients that made a
/// request, the next connection is refused with an error and closed, and so is `raopd status`
/// (exit 1). Once the polite clients leave, `raopd status` answers every time while the two
/// others hang on, and RTSP `OPTIONS` is answered. The trickling client is cut with an error
/// `REQUEST_TIMEOUT` after its first byte, the idle one is closed after `CLIENT_IDLE`, and then
/// all `MAX_CLIENTS` slots are free again.
#[test]
fn control_socket_refuses_the_extra_client_and_cuts_slow_and_idle_ones() {
    use raopd::control::socket::{CLIENT_IDLE, MAX_CLIENTS, REQUEST_TIMEOUT};

    common::require_env();
    let _serial = common::serial();
    const PORT: u16 = 5432;
    let dir = TestDir::new("limits_control");
    let ns = Netns::new();
    let socket = ns.runtime_dir().join("ctl.sock");
    let socket_arg = socket.to_str().expect("utf-8 path").to_string();
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        PORT,
        &[
            "--name",
            "Limits",
            "--output",
            "pipe:/dev/null",
            "--control-socket",
            &socket_arg,
        ],
    );
    assert!(
        common::wait_until(Duration::from_secs(10), || raopd_status(&socket).0
            == Some(0)),
        "raopd status never answered: {:?}",
        raopd_status(&socket)
    );

    // The slowloris: a request line padded to 30 bytes, one byte a second.
    let path = socket.clone();
    let slow = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&path).expect("connect");
        let mut reader = s.try_clone().unwrap();
        let request = format!("{:>29}\n", "status");
        let started = Instant::now();
        let reading = std::thread::spawn(move || read_to_close(&mut reader));
        let mut sent = 0;
        for b in request.bytes() {
            if s.write_all(&[b]).is_err() || reading.is_finished() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
        let (got, closed) = reading.join().unwrap();
        (closed.map(|t| t - started), sent, got)
    });
    let path = socket.clone();
    let idle = std::thread::spawn(move || {
        let started = Instant::now();
        let mut s = UnixStream::connect(&path).expect("connect");
        let (got, closed) = read_to_close(&mut s);
        (closed.map(|t| t - started), got)
    });
    std::thread::sleep(Duration::from_millis(300));

    // Fill the remaining slots with clients that proved theirs with a request.
    let held: Vec<UnixStream> = (0..MAX_CLIENTS - 2)
        .map(|_| {
            let mut s = UnixStream::connect(&socket).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"status\n").unwrap();
            let mut line = String::new();
            BufReader::new(s.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert!(line.starts_with('{') && line.contains("\"name\""), "{line}");
            s
        })
        .collect();
    let mut extra = UnixStream::connect(&socket).expect("connect");
    let (refused, closed) = read_to_close(&mut extra);
    assert_eq!(refused, "{\"ok\":false,\"error\":\"too many clients\"}\n");
    assert!(closed.is_some(), "the refused connection is closed");
    let (code, out) = raopd_status(&socket);
    assert_eq!(
        (code, out.as_str()),
        (Some(1), r#"{"ok":false,"error":"too many clients"}"#),
        "raopd status with every slot taken"
    );

    drop(held);
    // The daemon frees the slots when it sees the connections close.
    assert!(
        common::wait_until(Duration::from_secs(5), || raopd_status(&socket).0
            == Some(0)),
        "raopd status not answered after the polite clients left: {:?}",
        raopd_status(&socket)
    );
    // While the slow and the idle client hang on: status and RTSP keep being answered.
    let mut rounds = 0;
    let give_up = Instant::now() + CLIENT_IDLE + SLACK * 2;
    while !(slow.is_finished() && idle.is_finished()) && Instant::now() < give_up {
        let (code, out) = raopd_status(&socket);
        assert_eq!(code, Some(0), "raopd status during the attack: {out}");
        assert!(out.contains("\"name\":\"Limits\""), "{out}");
        let options = in_netns(&ns, || {
            let mut s = TcpStream::connect(("127.0.0.1", PORT)).expect("connect RTSP");
            first_line(&mut s, b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        });
        assert_eq!(options, "RTSP/1.0 200 OK", "RTSP during the attack");
        rounds += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let (slow_closed, slow_sent, slow_got) = slow.join().unwrap();
    let (idle_closed, idle_got) = idle.join().unwrap();
    println!(
        "slowloris cut after {slow_closed:?} ({slow_sent} bytes sent), idle client after \
         {idle_closed:?}; {rounds} rounds of status and OPTIONS meanwhile"
    );
    let slow_closed = slow_closed.expect("the slowloris client was never cut");
    assert!(
        slow_closed >= REQUEST_TIMEOUT && slow_closed <= REQUEST_TIMEOUT + SLACK,
        "slowloris cut after {slow_closed:?}, not {REQUEST_TIMEOUT:?} after its first byte"
    );
    assert_eq!(slow_got, "{\"ok\":false,\"error\":\"request timeout\"}\n");
    let idle_closed = idle_closed.expect("the idle client was never closed");
    assert!(
        idle_closed >= CLIENT_IDLE && idle_closed <= CLIENT_IDLE + SLACK,
        "idle client closed after {idle_closed:?}, not {CLIENT_IDLE:?}"
    );
    assert_eq!(idle_got, "", "nothing is sent to an idle client");

    // Every slot is free again.
    let again: Vec<UnixStream> = (0..MAX_CLIENTS)
        .map(|_| {
            let mut s = UnixStream::connect(&socket).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"status\n").unwrap();
            let mut line = String::new();
            BufReader::new(s.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert!(
                line.contains("\"name\":\"Limits\""),
                "slot not freed: {line}"
            );
            s
        })
        .collect();
    drop(again);
    assert!(raopd.is_running(), "raopd died:\n{}", raopd.log_tail());
    raopd.stop();
}
