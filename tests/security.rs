//! Security of a password-protected running daemon, from a raw RTSP client: no ANNOUNCE,
//! SETUP, RECORD, SET_PARAMETER (or any other method) is acted on before the connection
//! authenticated, on any connection, with no or a wrong `Authorization`; and a Digest nonce
//! issued on one connection is refused on another, even with a response computed correctly
//! for it (the same answer is accepted on the connection that issued the nonce, so the test
//! computes Digest right). `raopd status` shows the speaker untouched throughout.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::daemon::Daemon;
use common::netns::{in_netns, Netns};
use common::TestDir;

use md5::{Digest, Md5};

const PORT: u16 = 5441;
const PASSWORD: &str = "s3cret";

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The Digest `Authorization` value (RFC 2617 without qop, as AirPlay 1 senders send it).
fn authorization(password: &str, nonce: &str, method: &str, uri: &str) -> String {
    let ha1 = md5_hex(&format!("iTunes:raop:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
    format!(
        "Digest username=\"iTunes\", realm=\"raop\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\""
    )
}

struct Conn(TcpStream, Vec<u8>);

impl Conn {
    fn new() -> Conn {
        let s = TcpStream::connect(("127.0.0.1", PORT)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Conn(s, Vec::new())
    }

    /// (status, head) of the answer; the body (if any) is skipped.
    fn request(&mut self, method: &str, headers: &str, body: &[u8]) -> (u16, String) {
        let mut raw = format!(
            "{method} rtsp://127.0.0.1/1 RTSP/1.0\r\nCSeq: 1\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        self.0.write_all(&raw).unwrap();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.1.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.1[..end]).to_string();
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while self.1.len() < end + 4 + len {
                    let n = self.0.read(&mut chunk).expect("body");
                    assert!(n > 0, "closed in a body");
                    self.1.extend_from_slice(&chunk[..n]);
                }
                self.1.drain(..end + 4 + len);
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

fn nonce_of(head: &str) -> String {
    let v = head
        .lines()
        .find_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .unwrap_or_else(|| panic!("401 without a challenge: {head}"));
    v.split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("nonce")
        .to_string()
}

const SDP: &str = "v=0\r\no=iTunes 1 0 IN IP4 127.0.0.1\r\ns=iTunes\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 96\r\na=rtpmap:96 L16/44100/2\r\n";

/// Every state-changing request, unauthenticated, with `auth` as its `Authorization`
/// header (none, or a wrong one); each must get 401 and a challenge.
fn unauthenticated_requests(auth: &str) -> Vec<String> {
    let mut c = Conn::new();
    let mut wrong = Vec::new();
    let transport = "Transport: RTP/AVP/UDP;unicast;interleaved=0-1;mode=record;control_port=6001;timing_port=6002\r\n";
    let sdp_hdr = format!("{auth}Content-Type: application/sdp\r\n");
    let setup_hdr = format!("{auth}{transport}");
    let param_hdr = format!("{auth}Content-Type: text/parameters\r\n");
    let dmap_hdr = format!("{auth}Content-Type: application/x-dmap-tagged\r\n");
    let rec_hdr = format!("{auth}RTP-Info: seq=1;rtptime=0\r\n");
    let cases: Vec<(&str, &str, &[u8])> = vec![
        ("ANNOUNCE", &sdp_hdr, SDP.as_bytes()),
        ("SETUP", &setup_hdr, b""),
        ("RECORD", &rec_hdr, b""),
        ("SET_PARAMETER", &param_hdr, b"volume: -10.0\r\n"),
        (
            "SET_PARAMETER",
            &dmap_hdr,
            b"mlit\x00\x00\x00\x0cminm\x00\x00\x00\x04evil",
        ),
        ("GET_PARAMETER", &param_hdr, b"volume\r\n"),
        ("FLUSH", &rec_hdr, b""),
        ("TEARDOWN", auth, b""),
        ("OPTIONS", auth, b""),
    ];
    for (method, headers, body) in cases {
        let (status, head) = c.request(method, headers, body);
        if status != 401 || !head.contains("WWW-Authenticate: Digest") {
            wrong.push(format!("{method} ({auth:?}): {head}"));
        }
    }
    wrong
}

fn status(socket: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raopd"))
        .args(["status", "--control-socket"])
        .arg(socket)
        .output()
        .expect("run raopd status");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn password_protected_speaker_acts_on_nothing_unauthenticated_and_nonces_stay_on_their_connection()
{
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new("security");
    let ns = Netns::new();
    let socket = ns.runtime_dir().join("ctl.sock");
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        PORT,
        &[
            "--name",
            "secure",
            "--no-mdns",
            "--output",
            "stdout",
            "--password",
            PASSWORD,
            "--control-socket",
            socket.to_str().unwrap(),
        ],
    );
    let before = status(&socket);
    assert!(
        before.contains("\"state\":\"idle\",\"sender\":null"),
        "{before}"
    );

    let wrong = in_netns(&ns, || {
        let mut wrong = Vec::new();
        // No Authorization, on three connections; a wrong password; a malformed header.
        for _ in 0..3 {
            wrong.extend(unauthenticated_requests(""));
        }
        let bad = format!(
            "Authorization: {}\r\n",
            authorization(
                "guess",
                "00000000000000000000000000000000",
                "ANNOUNCE",
                "rtsp://127.0.0.1/1"
            )
        );
        wrong.extend(unauthenticated_requests(&bad));
        wrong.extend(unauthenticated_requests(
            "Authorization: Digest garbage\r\n",
        ));
        wrong.extend(unauthenticated_requests(
            "Authorization: Basic aVR1bmVzOnMzY3JldA==\r\n",
        ));
        wrong
    });
    assert!(
        wrong.is_empty(),
        "acted on before authentication:\n{}",
        wrong.join("\n")
    );
    let after = status(&socket);
    assert!(
        after.contains("\"state\":\"idle\",\"sender\":null"),
        "{after}"
    );
    assert!(
        !after.contains("evil"),
        "metadata taken unauthenticated: {after}"
    );
    assert_eq!(
        before
            .split("\"volume_db\":")
            .nth(1)
            .map(|v| v.split(',').next()),
        after
            .split("\"volume_db\":")
            .nth(1)
            .map(|v| v.split(',').next()),
        "volume changed unauthenticated:\n{before}\n{after}"
    );

    // A nonce from connection A, answered correctly, is refused on connection B and
    // accepted on A.
    let (on_b, on_a, b_then) = in_netns(&ns, || {
        let mut a = Conn::new();
        let mut b = Conn::new();
        let (s, head_a) = a.request("OPTIONS", "", b"");
        assert_eq!(s, 401);
        let (s, _) = b.request("OPTIONS", "", b"");
        assert_eq!(s, 401);
        let nonce_a = nonce_of(&head_a);
        let answer = format!(
            "Authorization: {}\r\nContent-Type: application/sdp\r\n",
            authorization(PASSWORD, &nonce_a, "ANNOUNCE", "rtsp://127.0.0.1/1")
        );
        let on_b = b.request("ANNOUNCE", &answer, SDP.as_bytes());
        let on_a = a.request("ANNOUNCE", &answer, SDP.as_bytes());
        // B stays unauthenticated after the refused attempt.
        let b_then = b.request(
            "SET_PARAMETER",
            "Content-Type: text/parameters\r\n",
            b"volume: -5.0\r\n",
        );
        (on_b, on_a, b_then)
    });
    assert_eq!(
        on_b.0, 401,
        "a nonce of another connection was accepted: {}",
        on_b.1
    );
    assert_eq!(
        on_a.0, 200,
        "the correct answer on its own connection: {}",
        on_a.1
    );
    assert_eq!(b_then.0, 401, "{}", b_then.1);
    assert!(raopd.is_running(), "{}", raopd.log_tail());
}
