//! Inputs seen from real senders in the field that must not cost a listener the music:
//! a refusable request in the middle of a live session (cover art bigger than the body
//! limit), values out of range (`volume: 0.300000`), and a request line without a URI
//! (`TEARDOWN  RTSP/1.0`). Real daemon, real pyatv sender, real sockets, one network
//! namespace per test.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::audio;
use common::compare::assert_bit_exact;
use common::daemon::{Daemon, FifoCapture};
use common::netns::{in_netns, Netns};
use common::senders::{self, PyatvOpts};
use common::TestDir;

/// Runs `raopd status` against the daemon's control socket.
fn status(socket: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raopd"))
        .args(["status", "--control-socket"])
        .arg(socket)
        .output()
        .expect("run raopd status");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// iTunes sends big cover art with `SET_PARAMETER image/jpeg` while a stream plays. A body
/// over the limit (1.5 MiB against 1 MiB) gets `413` and is read and thrown away: the
/// connection, the session and the audio go on, the next `SET_PARAMETER volume` on the same
/// connection gets 200, and the out-of-range `volume: 0.300000` is stored, reported and
/// played as 0 dB.
#[test]
fn oversized_artwork_mid_stream_keeps_session_audio_and_volume() {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new("field_artwork");
    let ns = Netns::new();
    let port = 5411;
    let socket = ns.runtime_dir().join("ctl.sock");
    let fifo = FifoCapture::create(&dir.join("out.fifo"));
    let output = format!("pipe:{}", fifo.path().display());
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        port,
        &[
            "--name",
            "field",
            "--no-mdns",
            "--output",
            &output,
            "--control-socket",
            socket.to_str().unwrap(),
        ],
    );
    let wav = dir.join("noise.wav");
    let input = audio::make_noise_wav(&wav, 6.0, 2.0);
    let opts = PyatvOpts {
        mid_stream_artwork: Some(1536 * 1024),
        ..PyatvOpts::unity()
    };
    let sender = senders::pyatv_spawn(&ns, "127.0.0.1", port, &wav, dir.path(), &opts);
    // After the mid-stream requests (2 s in), the daemon reports the applied volume.
    let t0 = Instant::now();
    let mut seen = String::new();
    while t0.elapsed() < Duration::from_secs(7) {
        seen = status(&socket);
        if t0.elapsed() > Duration::from_secs(4) && seen.contains("\"state\":\"playing\"") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let sent = sender.wait();
    std::thread::sleep(Duration::from_millis(500));
    assert!(raopd.is_running(), "raopd died:\n{}", raopd.log_tail());
    raopd.stop();
    sent.assert_ok();
    let out_text = std::fs::read_to_string(&sent.output_path).unwrap();
    let line = out_text
        .lines()
        .find(|l| l.starts_with("mid-stream:"))
        .unwrap_or_else(|| panic!("no mid-stream line: {}", sent.report()));
    println!("{line}");
    assert_eq!(
        line,
        "mid-stream: artwork 413; volume 200; get 200 'volume: 0.000000'",
        "answers to the mid-stream requests\n{}",
        raopd.log_tail()
    );
    assert!(
        seen.contains("\"state\":\"playing\"") && seen.contains("\"volume_db\":0"),
        "status after the mid-stream requests: {seen}"
    );
    assert!(
        !seen.contains("0.3"),
        "status reports the raw volume: {seen}"
    );
    // The whole stream, before and after the refused artwork, bit for bit.
    let out = audio::raw_to_frames(&fifo.finish(&dir.join("out.raw")));
    assert_bit_exact(&input, &out, "pyatv with oversized artwork mid-stream");
}

/// One RTSP connection, request by request; every response's status and head.
struct Conn(TcpStream, Vec<u8>);

impl Conn {
    fn new(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Conn(s, Vec::new())
    }

    fn raw(&mut self, raw: &[u8]) -> (u16, String) {
        self.0.write_all(raw).unwrap();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.1.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.1[..end]).to_string();
                self.1.drain(..end + 4);
                let status = text
                    .lines()
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                return (status, text);
            }
            let n = self.0.read(&mut chunk).expect("response");
            assert!(n > 0, "connection closed");
            self.1.extend_from_slice(&chunk[..n]);
        }
    }

    fn request(&mut self, method: &str, cseq: u32, headers: &str, body: &[u8]) -> (u16, String) {
        let mut raw = format!(
            "{method} rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: {cseq}\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        self.raw(&raw)
    }
}

fn announce_l16(c: &mut Conn, cseq: u32) -> u16 {
    let sdp = "v=0\r\no=iTunes 1 0 IN IP4 127.0.0.1\r\ns=iTunes\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 96\r\na=rtpmap:96 L16/44100/2\r\n";
    c.request(
        "ANNOUNCE",
        cseq,
        "Content-Type: application/sdp\r\n",
        sdp.as_bytes(),
    )
    .0
}

/// `TEARDOWN  RTSP/1.0` (two spaces: no URI) ends the session: 200 with the request's CSeq,
/// and the speaker is free for another sender while the first connection is still open.
/// Other liberal request lines (`*`, absolute URLs, `HTTP/1.1`) and bounded refusals on a
/// live session (an unknown version, a malformed line) leave the session as it was.
#[test]
fn teardown_without_uri_is_honoured_and_refusals_keep_the_session() {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new("field_teardown");
    let ns = Netns::new();
    let port = 5412;
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        port,
        &["--name", "field", "--no-mdns", "--output", "pipe:/dev/null"],
    );
    let failures = in_netns(&ns, move || {
        let mut f = Vec::new();
        let mut a = Conn::new(port);
        assert_eq!(announce_l16(&mut a, 1), 200);
        let ctl = UdpSocket::bind("127.0.0.1:0").unwrap();
        let transport = format!(
            "Transport: RTP/AVP/UDP;unicast;mode=record;control_port={};timing_port={}\r\n",
            ctl.local_addr().unwrap().port(),
            ctl.local_addr().unwrap().port()
        );
        let (s, h) = a.request("SETUP", 2, &transport, b"");
        assert_eq!(s, 200, "SETUP: {h}");
        assert_eq!(
            a.request("RECORD", 3, "RTP-Info: seq=1;rtptime=0\r\n", b"")
                .0,
            200
        );
        // Refusals inside the live session: answered, CSeq echoed, session kept.
        for (raw, want) in [
            (&b"OPTIONS * RTSP/2.0\r\nCSeq: 4\r\n\r\n"[..], 505),
            (b"OPTIONS * RTSP/1.0 x\r\nCSeq: 4\r\n\r\n", 400),
            (b"OPTIONS * RTSP/1.0\r\nCSeq: 4\r\nNo colon\r\n\r\n", 400),
            (
                b"SET_PARAMETER * RTSP/1.0\r\nCSeq: 4\r\nContent-Type: text/parameters\r\nContent-Length: 12\r\n\r\nvolume: loud",
                400,
            ),
            (b"OPTIONS * HTTP/1.1\r\nCSeq: 4\r\n\r\n", 200),
            (b"OPTIONS rtsp://127.0.0.1:5412/x RTSP/1.0\r\nCSeq: 4\r\n\r\n", 200),
        ] {
            let (s, h) = a.raw(raw);
            if s != want || !h.contains("CSeq: 4") {
                f.push(format!(
                    "{:?}: got {s}, want {want} with CSeq 4: {h}",
                    String::from_utf8_lossy(raw)
                ));
            }
        }
        // Still the live session: another sender is refused.
        let mut b = Conn::new(port);
        let busy = announce_l16(&mut b, 1);
        if busy != 453 {
            f.push(format!(
                "second sender during the session got {busy}, not 453"
            ));
        }
        let (s, h) = a.raw(b"TEARDOWN  RTSP/1.0\r\nCSeq: 5\r\n\r\n");
        if s != 200 || !h.contains("CSeq: 5") {
            f.push(format!("TEARDOWN without URI: {h}"));
        }
        // The speaker is free at once, with the first connection still open.
        let mut c = Conn::new(port);
        let free = announce_l16(&mut c, 1);
        if free != 200 {
            f.push(format!("after TEARDOWN another sender got {free}, not 200"));
        }
        drop(a);
        f
    });
    assert!(raopd.is_running(), "raopd died:\n{}", raopd.log_tail());
    raopd.stop();
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        raopd.log_tail()
    );
}

/// Field item 6: a sender whose mDNS responder answers by multicast only (never unicast to
/// the asker's port). `raopd ctl pause` still reaches its DACP server: the daemon's own
/// responder socket receives the multicast answer and hands it to the lookup. The DACP
/// server is a plain HTTP listener in the test; the sender is a raw RTSP client sending
/// `DACP-ID` and `Active-Remote` like iTunes does.
#[test]
fn remote_control_found_when_the_sender_answers_mdns_by_multicast_only() {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new("field_dacp_multicast");
    let ns = Netns::new();
    let port = 5413;
    let socket = ns.runtime_dir().join("ctl.sock");
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        port,
        &[
            "--name",
            "field",
            "--output",
            "stdout",
            "--control-socket",
            socket.to_str().unwrap(),
        ],
    );
    const DACP_ID: &str = "A1B2C3D4E5F60718";
    const ACTIVE_REMOTE: &str = "1986535575";
    let dacp = in_netns(&ns, || std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let dacp_port = dacp.local_addr().unwrap().port();
    let script = common::repo_dir().join("tests/senders/mdns_multicast_only.py");
    let mut responder = ns
        .command(common::venv_python())
        .arg(&script)
        .args([DACP_ID, &dacp_port.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the multicast-only responder");
    let mut responder_out = std::io::BufReader::new(responder.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut responder_out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready", "responder: {line}");

    // A session that offers remote control.
    let mut c = in_netns(&ns, move || Conn::new(port));
    let remote_headers = format!("DACP-ID: {DACP_ID}\r\nActive-Remote: {ACTIVE_REMOTE}\r\n");
    assert_eq!(announce_l16(&mut c, 1), 200);
    let (ctl, tim) = in_netns(&ns, || {
        (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        )
    });
    let transport = format!(
        "Transport: RTP/AVP/UDP;unicast;interleaved=0-1;mode=record;control_port={};timing_port={}\r\n{remote_headers}",
        ctl.local_addr().unwrap().port(),
        tim.local_addr().unwrap().port()
    );
    let (status, head) = c.request("SETUP", 2, &transport, b"");
    assert_eq!(status, 200, "SETUP: {head}");

    // The DACP server: one request, answered 204, its head kept.
    let server = std::thread::spawn(move || {
        dacp.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match dacp.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
                    return Some(String::from_utf8_lossy(&head).into_owned());
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(_) => return None,
            }
        }
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raopd"))
        .args(["ctl", "pause", "--control-socket"])
        .arg(&socket)
        .output()
        .expect("run raopd ctl pause");
    let request = server.join().unwrap();
    let _ = responder.kill();
    let _ = responder.wait();
    let mut answered = String::new();
    let _ = std::io::BufRead::read_line(&mut responder_out, &mut answered);
    assert!(
        out.status.success(),
        "raopd ctl pause failed: {}{}\nresponder: {answered}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        raopd.log_tail()
    );
    let request = request.expect("the DACP server got no request");
    assert!(
        request.starts_with("GET /ctrl-int/1/pause HTTP/1.1\r\n"),
        "DACP request: {request}"
    );
    assert!(
        request.contains(&format!("Active-Remote: {ACTIVE_REMOTE}\r\n")),
        "DACP request without the Active-Remote credential: {request}"
    );
    assert!(
        answered.contains("by multicast"),
        "the responder never answered: {answered:?}"
    );
    assert_eq!(c.request("TEARDOWN", 3, "", b"").0, 200);
    assert!(raopd.is_running(), "{}", raopd.log_tail());
}
