//! Helpers shared by the fuzz targets: an RTSP edge and a `ControlHandler` that do nothing
//! but record, so that the crate's own sans-IO state machines can be driven with arbitrary
//! bytes, and the AirPort key parsed once per process.

use futures_lite::future::BoxedLocal;
use raopd::control::dacp::RemoteCommand;
use raopd::control::socket::ControlHandler;
use raopd::crypto::AirportKey;
use raopd::rtsp::message::{parse_request, Request, Response};
use raopd::rtsp::session::{
    Answer, Claim, ConnectionInfo, Effect, Question, Reply, Session, UdpPorts,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

/// The built-in AirPort key, parsed once (it costs milliseconds).
pub fn key() -> &'static AirportKey {
    static KEY: OnceLock<AirportKey> = OnceLock::new();
    KEY.get_or_init(AirportKey::load)
}

/// An edge that binds nothing and plays nothing: it answers the session's questions and
/// carries out its effects, keeping the last volume.
#[derive(Default)]
pub struct NullIo {
    pub volume: f32,
    pub busy: bool,
}

impl NullIo {
    /// One request as the server runs it: the session's question (if any) answered, then its
    /// effects carried out.
    pub fn handle(&mut self, s: &mut Session, req: &Request, key: &AirportKey) -> Response {
        let resp = match s.handle(req, key) {
            Reply::Done(r) => r,
            Reply::Ask(q) => s.answer(match q {
                Question::Claim if self.busy => Answer::Claim(Claim::Busy),
                Question::Claim => Answer::Claim(Claim::Granted),
                Question::Setup(_) => Answer::Setup(Ok(UdpPorts {
                    audio: 6001,
                    control: 6002,
                    timing: 6003,
                })),
                Question::Volume => Answer::Volume(self.volume),
            }),
        };
        self.drain(s);
        resp
    }

    /// Carries out the session's effects.
    pub fn drain(&mut self, s: &mut Session) {
        while let Some(e) = s.poll_effect() {
            match e {
                Effect::Volume(db) => self.volume = db,
                Effect::Metadata(dmap) => {
                    let mut np = raopd::control::now_playing::NowPlaying::new();
                    let _ = np.apply_dmap(&dmap);
                }
                _ => {}
            }
        }
    }
}

/// A session on a loopback connection, with or without a password.
pub fn session(password: Option<&str>) -> Session {
    Session::new(ConnectionInfo {
        local: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10)), 5000),
        peer: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)), 50000),
        mac: [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff],
        password: password.map(str::to_string),
    })
}

/// Frames `buf` the way the RTSP server does: requests are taken from the front until the
/// parser needs more bytes or reports an error (after which the server closes or, for a
/// non-fatal error, has nothing more to parse here); each complete request goes to `f`.
/// Checks the parser's own invariants.
pub fn for_each_request(mut buf: &[u8], mut f: impl FnMut(&Request)) {
    loop {
        match parse_request(buf) {
            Ok(Some((req, used))) => {
                assert!(
                    used > 0 && used <= buf.len(),
                    "consumed {used} of {}",
                    buf.len()
                );
                f(&req);
                buf = &buf[used..];
            }
            Ok(None) => return,
            Err(e) => {
                assert!((400..600).contains(&e.status), "status {}", e.status);
                return;
            }
        }
    }
}

/// Checks a serialised response: a status line and header lines, each ending in CRLF and
/// holding no other CR or LF (a header value taken from a request must not split the
/// response), then the body of exactly `Content-Length` bytes.
pub fn check_response(bytes: &[u8]) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response without a blank line");
    let head = &bytes[..end];
    let mut content_length = 0;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(
            !line.contains(&b'\r'),
            "bare CR in a response line: {line:?}"
        );
        let line = String::from_utf8_lossy(line);
        if let Some(v) = line.strip_prefix("Content-Length: ") {
            content_length = v.parse().expect("Content-Length");
        }
    }
    // Every LF in the head is preceded by CR (checked by the split above only for ends).
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && head[i - 1] == b'\r', "bare LF in a response head");
        }
    }
    assert_eq!(bytes.len() - end - 4, content_length, "body length");
}

/// A control-socket handler that answers every remote command at once.
pub struct NullHandler;

impl ControlHandler for NullHandler {
    fn status_json(&self) -> String {
        "{\"ok\":true}".into()
    }
    fn remote(&self, _cmd: RemoteCommand) -> BoxedLocal<Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}
