//! Bad input against a running daemon: truncated, oversized and nonsense RTSP requests,
//! SDPs the daemon must refuse, and garbage UDP on a live stream's ports. Every request
//! gets the expected status; afterwards the same daemon still plays a real sender's
//! stream bit for bit.
//!
//! The test's sockets are opened inside the daemon's network namespace (the thread joins it
//! with setns(2)); the daemon, as everywhere else, is the real binary.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use common::audio;
use common::compare::assert_bit_exact;
use common::daemon::{Daemon, FifoCapture};
use common::netns::{in_netns, Netns};
use common::senders::{self, PyatvOpts};
use common::TestDir;

const PORT: u16 = 5201;

/// Sends raw bytes on a fresh connection; returns the status code of the first response
/// line (None if the daemon closed without answering).
fn exchange(raw: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", PORT)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The daemon may answer and close before reading everything (oversized input).
    let _ = s.write_all(raw);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.lines().next()?.split(' ').nth(1)?.parse().ok()
}

fn announce(sdp: &str) -> Vec<u8> {
    format!("ANNOUNCE rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: 2\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len()).into_bytes()
}

fn sdp(media: &str) -> String {
    format!("v=0\r\no=iTunes 1 0 IN IP4 127.0.0.1\r\ns=iTunes\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{media}")
}

const L16: &str = "m=audio 0 RTP/AVP 96\r\na=rtpmap:96 L16/44100/2\r\n";
const ALAC: &str = "m=audio 0 RTP/AVP 96\r\na=rtpmap:96 AppleLossless\r\na=fmtp:96 352 0 16 40 10 14 2 255 0 0 44100\r\n";

/// The RTSP table: request bytes and the status they must get.
fn rtsp_cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    let mut huge_header = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX-Pad: ".to_vec();
    huge_header.extend(std::iter::repeat_n(b'a', 40_000));
    huge_header.extend_from_slice(b"\r\n\r\n");
    let mut many_headers = b"OPTIONS * RTSP/1.0\r\n".to_vec();
    for i in 0..200 {
        many_headers.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many_headers.extend_from_slice(b"\r\n");
    let garbage: Vec<u8> = (0..2000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut garbage_req = garbage.clone();
    garbage_req.extend_from_slice(b"\r\n\r\n");
    vec![
        ("nonsense bytes", garbage_req, 400),
        ("lower-case method", b"options * RTSP/1.0\r\nCSeq: 1\r\n\r\n".to_vec(), 400),
        ("request line without version", b"OPTIONS *\r\nCSeq: 1\r\n\r\n".to_vec(), 400),
        ("unknown protocol version", b"OPTIONS * RTSP/7.0\r\nCSeq: 1\r\n\r\n".to_vec(), 505),
        ("header without colon", b"OPTIONS * RTSP/1.0\r\nCSeq 1\r\n\r\n".to_vec(), 400),
        ("oversized header", huge_header, 431),
        ("too many headers", many_headers, 431),
        ("oversized body", b"ANNOUNCE rtsp://x/1 RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 50000000\r\n\r\n".to_vec(), 413),
        ("bad Content-Length", b"ANNOUNCE rtsp://x/1 RTSP/1.0\r\nCSeq: 1\r\nContent-Length: -1\r\n\r\n".to_vec(), 400),
        ("unknown method", b"DESCRIBE rtsp://x/1 RTSP/1.0\r\nCSeq: 1\r\n\r\n".to_vec(), 501),
        ("SETUP before ANNOUNCE", b"SETUP rtsp://x/1 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/UDP;unicast\r\n\r\n".to_vec(), 455),
        ("RECORD before SETUP", b"RECORD rtsp://x/1 RTSP/1.0\r\nCSeq: 1\r\n\r\n".to_vec(), 455),
        ("malformed Apple-Challenge", b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nApple-Challenge: !!!\r\n\r\n".to_vec(), 200),
        ("garbage SDP", announce("this is not SDP"), 400),
        ("empty SDP", announce(""), 400),
        ("AAC", announce(&sdp("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 mpeg4-generic/44100/2\r\n")), 415),
        ("AAC-ELD", announce(&sdp("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 AAC-eld/44100/2\r\n")), 415),
        ("48 kHz PCM", announce(&sdp("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 L16/48000/2\r\n")), 415),
        ("24-bit ALAC", announce(&sdp("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 AppleLossless\r\na=fmtp:96 352 0 24 40 10 14 2 255 0 0 44100\r\n")), 415),
        ("FairPlay key", announce(&sdp(&format!("{ALAC}a=fpaeskey:RlBMWQECAQ\r\na=aesiv:AAAAAAAAAAAAAAAAAAAAAA\r\n"))), 415),
        ("rsaaeskey not base64", announce(&sdp(&format!("{ALAC}a=rsaaeskey:*&^%\r\na=aesiv:AAAAAAAAAAAAAAAAAAAAAA\r\n"))), 400),
        ("rsaaeskey not for our key", announce(&sdp(&format!("{ALAC}a=rsaaeskey:{}\r\na=aesiv:AAAAAAAAAAAAAAAAAAAAAA\r\n", "QUFB".repeat(86)))), 400),
        ("payload types disagree", announce(&sdp("m=audio 0 RTP/AVP 96\r\na=rtpmap:97 L16/44100/2\r\n")), 400),
        ("truncated ALAC fmtp", announce(&sdp("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 AppleLossless\r\na=fmtp:96 352 0 16\r\n")), 400),
        ("wrong content type", b"ANNOUNCE rtsp://x/1 RTSP/1.0\r\nCSeq: 1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi".to_vec(), 415),
    ]
}

/// An RTSP conversation on one connection, request by request.
struct Conn(TcpStream, Vec<u8>);

impl Conn {
    fn new() -> Conn {
        let s = TcpStream::connect(("127.0.0.1", PORT)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Conn(s, Vec::new())
    }

    /// Sends a request; returns (status, headers text).
    fn request(&mut self, method: &str, headers: &str, body: &[u8]) -> (u16, String) {
        let head = format!("{method} rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: 9\r\n{headers}Content-Length: {}\r\n\r\n", body.len());
        self.0.write_all(head.as_bytes()).unwrap();
        self.0.write_all(body).unwrap();
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
            assert!(n > 0, "connection closed during {method}");
            self.1.extend_from_slice(&chunk[..n]);
        }
    }
}

fn transport_port(headers: &str, key: &str) -> u16 {
    let t = headers
        .lines()
        .find(|l| l.starts_with("Transport:"))
        .expect("Transport header");
    t.split(';')
        .find_map(|p| p.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim().parse().ok())
        .expect(key)
}

/// Garbage UDP on a live stream of `sdp_media`: every kind of malformed packet on every port.
fn udp_garbage(sdp_media: &str) {
    let mut c = Conn::new();
    assert_eq!(
        c.request(
            "ANNOUNCE",
            "Content-Type: application/sdp\r\n",
            sdp(sdp_media).as_bytes()
        )
        .0,
        200
    );
    let ctl = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tim = UdpSocket::bind("127.0.0.1:0").unwrap();
    let transport = format!(
        "Transport: RTP/AVP/UDP;unicast;interleaved=0-1;mode=record;control_port={};timing_port={}\r\n",
        ctl.local_addr().unwrap().port(),
        tim.local_addr().unwrap().port()
    );
    let (status, headers) = c.request("SETUP", &transport, b"");
    assert_eq!(status, 200, "SETUP: {headers}");
    let audio: SocketAddr = ([127, 0, 0, 1], transport_port(&headers, "server_port")).into();
    let control: SocketAddr = ([127, 0, 0, 1], transport_port(&headers, "control_port")).into();
    let timing: SocketAddr = ([127, 0, 0, 1], transport_port(&headers, "timing_port")).into();
    assert_eq!(
        c.request("RECORD", "RTP-Info: seq=100;rtptime=35200\r\n", b"")
            .0,
        200
    );
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rnd: u32 = 0x1234_5678;
    let mut next = || {
        rnd ^= rnd << 13;
        rnd ^= rnd >> 17;
        rnd ^= rnd << 5;
        rnd
    };
    let rtp = |seq: u16, ts: u32, payload: &[u8]| {
        let mut p = vec![0x80, 0x60];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1]);
        p.extend_from_slice(payload);
        p
    };
    let mut packets: Vec<(SocketAddr, Vec<u8>)> = vec![
        (audio, vec![]),
        (audio, vec![0x80]),
        (audio, vec![0x80, 0x60, 0x00]),
        (audio, vec![0x40, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
        (audio, rtp(100, 35200, &[1, 2, 3])),
        (audio, rtp(100, 35200, &[0xff; 1400])),
        (audio, rtp(101, 35552, &[])),
        (audio, rtp(40000, 7, &[0u8; 1408])),
        (audio, rtp(102, 0xffff_fff0, &[0x55; 2000])),
        (control, vec![0x80, 0xd4, 0, 7]),
        (control, vec![0x90, 0xd4, 0, 7, 0, 0]),
        (control, vec![0x80, 0xd6, 0, 1, 0x80]),
        (control, vec![0x80, 0xd6, 0, 1, 0x80, 0x60, 0, 5]),
        (
            control,
            vec![
                0x80, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ),
        (timing, vec![0x80, 0xd3, 0, 7]),
        (
            timing,
            vec![
                0x80, 0xd3, 0, 7, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ),
        (timing, [0x80u8, 0xd2].repeat(8)),
    ];
    // Random datagrams of every size, to every port.
    for i in 0..600 {
        let len = (next() % 1500) as usize;
        let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 3 == 0 && len > 12 {
            p[0] = 0x80; // valid RTP version: reaches the decoder
            p[1] = 0x60;
        }
        packets.push(([audio, control, timing][i % 3], p));
    }
    for (dst, p) in &packets {
        tx.send_to(p, dst).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        c.request(
            "SET_PARAMETER",
            "Content-Type: text/parameters\r\n",
            b"volume: loud\r\n"
        )
        .0,
        400
    );
    assert_eq!(
        c.request(
            "SET_PARAMETER",
            "Content-Type: application/x-dmap-tagged\r\n",
            b"mlit\xff\xff"
        )
        .0,
        200
    );
    assert_eq!(c.request("FLUSH", "RTP-Info: seq=garbage\r\n", b"").0, 200);
    assert_eq!(c.request("TEARDOWN", "", b"").0, 200);
}

#[test]
fn bad_input_is_refused_and_the_daemon_keeps_serving() {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new("bad_input");
    let ns = Netns::new();
    let fifo = FifoCapture::create(&dir.join("out.fifo"));
    let output = format!("pipe:{}", fifo.path().display());
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        PORT,
        &["--name", "bad", "--no-mdns", "--output", &output],
    );

    let failures = in_netns(&ns, || {
        let mut failures = Vec::new();
        for (what, raw, want) in rtsp_cases() {
            let got = exchange(&raw);
            if got != Some(want) {
                failures.push(format!("{what}: expected {want}, got {got:?}"));
            }
        }
        // A request cut short by a vanished client, and one left dangling open.
        {
            let mut s = TcpStream::connect(("127.0.0.1", PORT)).unwrap();
            s.write_all(b"ANNOUNCE rtsp://x/1 RTSP/1.0\r\nContent-Length: 100\r\n\r\nv=0")
                .unwrap();
        }
        let dangling = TcpStream::connect(("127.0.0.1", PORT)).unwrap();
        (&dangling).write_all(b"OPTIONS * RTSP/1.0\r\nCSe").unwrap();
        udp_garbage(L16);
        udp_garbage(ALAC);
        if exchange(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n") != Some(200) {
            failures.push("OPTIONS after the garbage did not get 200".into());
        }
        failures
    });
    assert!(
        raopd.is_running(),
        "raopd died on bad input:\n{}",
        raopd.log_tail()
    );
    assert!(
        failures.is_empty(),
        "wrong answers:\n{}\n{}",
        failures.join("\n"),
        raopd.log_tail()
    );

    // The same daemon then plays a real sender's stream bit for bit.
    let wav = dir.join("noise.wav");
    let input = audio::make_noise_wav(&wav, 3.0, 3.0);
    let opts = PyatvOpts::unity();
    let sent = senders::pyatv_stream(&ns, "127.0.0.1", PORT, &wav, dir.path(), &opts);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        raopd.is_running(),
        "raopd died during the stream:\n{}",
        raopd.log_tail()
    );
    raopd.stop();
    sent.assert_ok();
    let out = audio::raw_to_frames(&fifo.finish(&dir.join("out.raw")));
    assert_bit_exact(&input, &out, "pyatv after bad input");
}
