//! One RTSP connection's state machine, sans-IO: a parsed [`Request`] goes in, a
//! [`Response`] and the connection's [`Effect`]s come out. The session never calls the
//! outside world; the I/O edge (`server.rs`) carries out what it is told, so tests drive the
//! whole protocol without sockets.
//!
//! ## The shape (str0m style)
//!
//! - [`Session::handle`] takes a request and returns a [`Reply`]. Most requests are answered
//!   at once ([`Reply::Done`]). What the request changes outside the session (RECORD starts
//!   playback, FLUSH drops audio, a volume, metadata, TEARDOWN) is queued as an [`Effect`],
//!   which the edge drains with [`Session::poll_effect`] after every call and before it writes
//!   the response, so a sender's next request always finds the previous one carried out.
//! - Three requests cannot be answered without the edge: ANNOUNCE needs the speaker
//!   (another sender may hold it: `453`; the output may be down: `503` with its cause),
//!   SETUP needs the bound UDP ports (or `500` when they cannot be bound), and
//!   `GET_PARAMETER volume` needs the speaker's volume, which outlives the session. For
//!   these `handle` returns [`Reply::Ask`] with a [`Question`]; the edge works out the
//!   [`Answer`] and passes it to [`Session::answer`], which returns the response. The session
//!   keeps what it needs in between (the parsed SDP, `CSeq`, the `Apple-Response`), so the
//!   two steps are one request to the sender. The edge must answer before it hands the
//!   session another request; a question left unanswered is dropped by the next `handle`, and
//!   an answer that fits no question gets `500`.
//!
//! This was chosen over callbacks (the earlier `SessionIo` trait) so the session's output is
//! data that tests can compare, and over making every answer an input known in advance (the
//! edge would have to bind UDP sockets before it knew a SETUP was valid).
//!
//! Requests and replies follow the RAOP profile of RTSP/1.0 (RFC 2326) as AirPlay 1 senders
//! use it; the reverse-engineered description is at <https://nto.github.io/AirPlay.html>
//! (section "Audio") and in shairport-sync's `rtsp.c`.

use super::message::{Request, Response};
use super::sdp::{parse_announce, Announce};
use super::{auth, message::FrameError};
use crate::codec::StreamFormat;
use crate::crypto::AirportKey;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

/// What the I/O edge knows about this connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Our end of the TCP connection (its address signs the `Apple-Response`).
    pub local: SocketAddr,
    /// The sender's end.
    pub peer: SocketAddr,
    /// The MAC address we announce, also signed in the `Apple-Response`.
    pub mac: [u8; 6],
    /// `--password`: requests need HTTP Digest authentication (RFC 2617) once per connection.
    pub password: Option<String>,
}

/// Our UDP ports for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPorts {
    /// RTP audio (`server_port` in the SETUP reply's `Transport`).
    pub audio: u16,
    /// RTCP-like control: sync packets in, resend requests out.
    pub control: u16,
    /// NTP-like timing requests and replies.
    pub timing: u16,
}

/// Everything needed to receive a stream, collected from ANNOUNCE and SETUP.
#[derive(Debug, Clone)]
pub struct StreamSetup {
    pub format: StreamFormat,
    /// AES key and IV; `None` for unencrypted streams.
    pub aes: Option<([u8; 16], [u8; 16])>,
    pub client_ip: IpAddr,
    pub client_control_port: u16,
    pub client_timing_port: u16,
    /// SDP `a=min-latency`, in frames.
    pub min_latency: Option<u32>,
    /// SDP `a=max-latency`, in frames.
    pub max_latency: Option<u32>,
    /// N of a `User-Agent: AirPlay/N.M` header (iOS, macOS), for the latency rule.
    pub airplay_version: Option<u32>,
    /// `DACP-ID` and `Active-Remote`, for remote control of the sender.
    pub dacp_id: Option<String>,
    pub active_remote: Option<String>,
}

/// A change outside the session that a request asks for, in the order requests arrive.
/// Drained with [`Session::poll_effect`].
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// RECORD: playback starts at this sequence number / RTP timestamp if given
    /// (`RTP-Info: seq=…;rtptime=…`).
    Record(Option<(u16, u32)>),
    /// FLUSH: drop audio before this sequence number / RTP timestamp if given.
    Flush(Option<(u16, u32)>),
    /// `SET_PARAMETER volume`: AirPlay volume in dB, already normalised to -30..0 or -144
    /// (mute).
    Volume(f32),
    /// DMAP-tagged metadata (`application/x-dmap-tagged`), the body as sent.
    Metadata(Vec<u8>),
    /// Cover art (`image/*`, lower case); an empty body (`image/none`) clears it.
    Artwork { content_type: String, data: Vec<u8> },
    /// `progress: start/current/end` in RTP timestamps; `current` lies within start..end
    /// (modulo 2^32).
    Progress { start: u32, current: u32, end: u32 },
    /// The stream ends (TEARDOWN, or the connection closed while holding the speaker):
    /// release the sockets and the speaker.
    Teardown,
}

/// What [`Session::handle`] gives back.
#[derive(Debug)]
pub enum Reply {
    /// The response, to be written after the effects are carried out.
    Done(Response),
    /// The response needs the edge's answer to this question: pass it to [`Session::answer`].
    Ask(Question),
}

/// What the session must know from the edge before it can answer a request.
#[derive(Debug, Clone)]
pub enum Question {
    /// ANNOUNCE: can the speaker play at all (the output may be down), and may this
    /// connection have it? A connection that already holds the speaker (a second ANNOUNCE)
    /// keeps it; only the output is checked. Answered with [`Answer::Claim`].
    Claim,
    /// SETUP: bind the stream's UDP sockets and start receiving it. Answered with
    /// [`Answer::Setup`].
    Setup(StreamSetup),
    /// `GET_PARAMETER volume`: the speaker's volume. Answered with [`Answer::Volume`].
    Volume,
}

/// The edge's answer to a [`Question`].
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Whether the connection holds the speaker now.
    Claim(Claim),
    /// The ports bound, or why they could not be (logged; the sender gets `500`).
    Setup(Result<UdpPorts, String>),
    /// AirPlay volume in dB: -30..0, -144 = mute.
    Volume(f32),
}

/// The answer to [`Question::Claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The connection holds the speaker.
    Granted,
    /// Another sender has it and may not be interrupted: `453 Not Enough Bandwidth`, as
    /// AirPort Express and shairport-sync answer.
    Busy,
    /// The speaker cannot play (e.g. an output device that cannot be opened,
    /// `--wait-for-output`): `503 Service Unavailable (cause)`.
    Unavailable(String),
}

/// A request waiting for its [`Answer`], with what its response needs then.
#[derive(Debug)]
struct Pending {
    cseq: Option<String>,
    apple_response: Option<String>,
    kind: PendingKind,
}

#[derive(Debug)]
enum PendingKind {
    Announce {
        announce: Box<Announce>,
        aes: Option<([u8; 16], [u8; 16])>,
    },
    Setup,
    Volume,
}

/// What `dispatch` decided: a response now, or a question first.
enum Step {
    Done(Response),
    Ask(Question, PendingKind),
}

impl From<Response> for Step {
    fn from(r: Response) -> Self {
        Step::Done(r)
    }
}

pub use crate::clock::AUDIO_LATENCY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Init,
    Announced,
    SetUp,
    Recording,
}

/// One RTSP connection's protocol state (see the module docs for how it is driven).
pub struct Session {
    info: ConnectionInfo,
    server: String,
    nonce: String,
    authenticated: bool,
    state: State,
    announce: Option<Announce>,
    aes: Option<([u8; 16], [u8; 16])>,
    /// We hold the speaker (claimed at ANNOUNCE).
    claimed: bool,
    session_id: u32,
    /// From the last `User-Agent: AirPlay/N` seen on this connection.
    airplay_version: Option<u32>,
    effects: VecDeque<Effect>,
    pending: Option<Pending>,
}

fn status(code: u16, reason: &str) -> Response {
    Response::new(code, reason)
}

impl Session {
    /// A fresh connection: no speaker, not authenticated, a new Digest nonce and `Session` id.
    pub fn new(info: ConnectionInfo) -> Self {
        let nonce: [u8; 16] = crate::crypto::random_bytes();
        let id: [u8; 4] = crate::crypto::random_bytes();
        Session {
            info,
            server: format!("raopd/{}", env!("CARGO_PKG_VERSION")),
            nonce: nonce.iter().map(|b| format!("{b:02x}")).collect(),
            authenticated: false,
            state: State::Init,
            announce: None,
            aes: None,
            claimed: false,
            // pyatv parses Session as an integer: keep it numeric and positive.
            session_id: u32::from_be_bytes(id) & 0x7fff_ffff | 1,
            airplay_version: None,
            effects: VecDeque::new(),
            pending: None,
        }
    }

    /// True while this connection holds the speaker.
    pub fn holds_speaker(&self) -> bool {
        self.claimed
    }

    /// The next effect to carry out, oldest first; `None` when all are drained.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// Answers a request, or asks the edge first ([`Reply::Ask`]). Never fails: protocol
    /// errors become 4xx responses. Drain [`poll_effect`](Self::poll_effect) afterwards.
    pub fn handle(&mut self, req: &Request, key: &AirportKey) -> Reply {
        if self.pending.take().is_some() {
            log::warn!(
                "{}: a question to the edge was not answered",
                self.info.peer
            );
        }
        if let Some(v) = req.header("User-Agent").and_then(airplay_version) {
            self.airplay_version = Some(v);
        }
        let apple_response = req.header("Apple-Challenge").and_then(|ch| {
            let r = key.apple_response(ch, self.info.local.ip(), self.info.mac);
            if r.is_none() {
                log::warn!("{}: malformed Apple-Challenge ignored", self.info.peer);
            }
            r
        });
        let cseq = req.header("CSeq").map(str::to_string);
        match self.dispatch(req, key) {
            Step::Done(resp) => Reply::Done(self.finish(resp, cseq, apple_response)),
            Step::Ask(question, kind) => {
                self.pending = Some(Pending {
                    cseq,
                    apple_response,
                    kind,
                });
                Reply::Ask(question)
            }
        }
    }

    /// The edge's answer to the [`Question`] of the last [`handle`](Self::handle): returns
    /// the response to that request. An answer without a question, or to another question,
    /// gets `500` (an edge bug, never the sender's).
    pub fn answer(&mut self, answer: Answer) -> Response {
        let Some(p) = self.pending.take() else {
            log::error!("{}: an answer without a question", self.info.peer);
            return self.finish(status(500, "Internal Server Error"), None, None);
        };
        let resp = match (p.kind, answer) {
            (PendingKind::Announce { announce, aes }, Answer::Claim(c)) => {
                self.claimed_answer(*announce, aes, c)
            }
            (PendingKind::Setup, Answer::Setup(ports)) => self.setup_answer(ports),
            (PendingKind::Volume, Answer::Volume(db)) => Response::ok().body(
                "text/parameters",
                format!("volume: {db:.6}\r\n").into_bytes(),
            ),
            (kind, answer) => {
                log::error!(
                    "{}: answer {answer:?} does not fit the question ({kind:?})",
                    self.info.peer
                );
                status(500, "Internal Server Error")
            }
        };
        self.finish(resp, p.cseq, p.apple_response)
    }

    /// The headers every response carries.
    fn finish(
        &self,
        mut resp: Response,
        cseq: Option<String>,
        apple_response: Option<String>,
    ) -> Response {
        if let Some(cseq) = cseq {
            resp.headers.insert(0, ("CSeq".into(), cseq));
        }
        if let Some(r) = apple_response {
            resp.headers.push(("Apple-Response".into(), r));
        }
        resp.headers
            .push(("Audio-Jack-Status".into(), "connected; type=analog".into()));
        resp.headers.push(("Server".into(), self.server.clone()));
        if matches!(self.state, State::SetUp | State::Recording) {
            resp.headers
                .push(("Session".into(), self.session_id.to_string()));
        }
        resp
    }

    /// The reply to a request that could not be framed.
    pub fn frame_error(&self, e: &FrameError) -> Response {
        log::info!("{}: bad request: {} {}", self.info.peer, e.status, e.reason);
        let mut r = status(e.status, e.reason);
        if let Some(cseq) = &e.cseq {
            r.headers.push(("CSeq".into(), cseq.clone()));
        }
        r.close = e.fatal;
        r.headers.push(("Server".into(), self.server.clone()));
        r
    }

    /// The connection closed: whatever it held is released ([`Effect::Teardown`] if it held
    /// the speaker).
    pub fn closed(&mut self) {
        self.pending = None;
        self.teardown();
    }

    fn teardown(&mut self) {
        if self.claimed {
            self.effects.push_back(Effect::Teardown);
            self.claimed = false;
        }
        self.state = State::Init;
    }

    fn dispatch(&mut self, req: &Request, key: &AirportKey) -> Step {
        if let Some(pw) = self.info.password.as_deref() {
            if !self.authenticated {
                let ok = req
                    .header("Authorization")
                    .is_some_and(|h| auth::verify(h, &req.method, pw, &self.nonce));
                if !ok {
                    if req.header("Authorization").is_some() {
                        log::warn!("{}: wrong password", self.info.peer);
                    }
                    return status(401, "Unauthorized")
                        .header("WWW-Authenticate", auth::challenge(&self.nonce))
                        .into();
                }
                // Senders authenticate once per connection (PulseAudio re-sends its
                // OPTIONS answer on every request), so the connection stays trusted.
                self.authenticated = true;
            }
        }
        match req.method.as_str() {
            "OPTIONS" => Response::ok().header(
                "Public",
                "ANNOUNCE, SETUP, RECORD, PAUSE, FLUSH, TEARDOWN, OPTIONS, GET_PARAMETER, SET_PARAMETER, POST, GET",
            ).into(),
            "ANNOUNCE" => self.announce(req, key),
            "SETUP" => self.setup(req),
            "RECORD" => self.record(req).into(),
            "FLUSH" => {
                if !self.claimed {
                    return status(455, "Method Not Valid In This State").into();
                }
                self.effects.push_back(Effect::Flush(rtp_info(req)));
                Response::ok().into()
            }
            "TEARDOWN" => {
                self.teardown();
                Response::ok().header("Connection", "close").into()
            }
            "SET_PARAMETER" => self.set_parameter(req).into(),
            "GET_PARAMETER" => {
                let body = String::from_utf8_lossy(&req.body);
                if body.lines().any(|l| l.trim() == "volume") {
                    Step::Ask(Question::Volume, PendingKind::Volume)
                } else {
                    Response::ok().into()
                }
            }
            // pyatv probes these; neither matters to an AirPlay 1 receiver.
            "POST" if req.path() == "/feedback" => Response::ok().into(),
            "GET" | "POST" => status(404, "Not Found").into(),
            "PAUSE" => Response::ok().into(),
            _ => status(501, "Not Implemented").into(),
        }
    }

    fn announce(&mut self, req: &Request, key: &AirportKey) -> Step {
        let ct = req.header("Content-Type").unwrap_or("application/sdp");
        if !ct.eq_ignore_ascii_case("application/sdp") {
            return status(
                415,
                "Unsupported Media Type (ANNOUNCE needs application/sdp)",
            )
            .into();
        }
        let a = match parse_announce(&req.body) {
            Ok(a) => a,
            Err(e) => {
                log::warn!("{}: ANNOUNCE refused: {}", self.info.peer, e.reason);
                return status(e.status, &refusal_phrase(e.status, &e.reason)).into();
            }
        };
        let aes = match (&a.rsaaeskey, &a.aesiv) {
            (Some(k), Some(iv)) => {
                let key = match key.decrypt_aes_key(k) {
                    Ok(k) => k,
                    Err(e) => {
                        log::warn!("{}: ANNOUNCE refused: {e}", self.info.peer);
                        return status(400, &format!("Bad Request ({e})")).into();
                    }
                };
                let iv: [u8; 16] = match crate::crypto::b64_decode(iv)
                    .and_then(|v| v.try_into().ok())
                {
                    Some(iv) => iv,
                    None => {
                        return status(400, "Bad Request (aesiv is not 16 bytes of base64)").into()
                    }
                };
                Some((key, iv))
            }
            _ => None,
        };
        Step::Ask(
            Question::Claim,
            PendingKind::Announce {
                announce: Box::new(a),
                aes,
            },
        )
    }

    /// ANNOUNCE, second step: the edge's verdict on the speaker.
    fn claimed_answer(
        &mut self,
        a: Announce,
        aes: Option<([u8; 16], [u8; 16])>,
        claim: Claim,
    ) -> Response {
        match claim {
            Claim::Granted => {}
            Claim::Unavailable(reason) => {
                log::warn!("{}: ANNOUNCE refused: {reason}", self.info.peer);
                return status(503, &refusal_phrase(503, &reason));
            }
            // A connection already holding the speaker keeps it (the edge says so too).
            Claim::Busy if self.claimed => {}
            Claim::Busy => {
                log::info!("{}: speaker busy, refusing a second sender", self.info.peer);
                return status(453, "Not Enough Bandwidth");
            }
        }
        self.claimed = true;
        log::info!(
            "{}: ANNOUNCE {} {}",
            self.info.peer,
            a.format.name(),
            if aes.is_some() {
                "encrypted"
            } else {
                "unencrypted"
            }
        );
        self.aes = aes;
        self.announce = Some(a);
        self.state = State::Announced;
        Response::ok()
    }

    fn setup(&mut self, req: &Request) -> Step {
        let Some(a) = self.announce.as_ref().filter(|_| self.claimed) else {
            return status(455, "Method Not Valid In This State").into();
        };
        let transport = req.header("Transport").unwrap_or("");
        if transport.to_ascii_uppercase().contains("TCP") {
            return status(461, "Unsupported Transport (only UDP)").into();
        }
        // Normalised here, once: a port is 1..=65535, or absent (0 also means absent, as
        // senders without a control channel send it). Anything else is refused rather than
        // silently taken as "no port".
        let port = |name: &str| -> Result<u16, ()> {
            let value = transport.split(';').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            });
            match value {
                None => Ok(0),
                Some(v) => v.parse::<u16>().map_err(|_| ()),
            }
        };
        let (Ok(control_port), Ok(timing_port)) = (port("control_port"), port("timing_port"))
        else {
            return status(400, "Bad Request (Transport port not in 0..65535)").into();
        };
        let setup = StreamSetup {
            format: a.format.clone(),
            aes: self.aes,
            client_ip: self.info.peer.ip(),
            client_control_port: control_port,
            client_timing_port: timing_port,
            min_latency: a.min_latency,
            max_latency: a.max_latency,
            airplay_version: self.airplay_version,
            dacp_id: req.header("DACP-ID").map(str::to_string),
            active_remote: req.header("Active-Remote").map(str::to_string),
        };
        Step::Ask(Question::Setup(setup), PendingKind::Setup)
    }

    /// SETUP, second step: the ports the edge bound, or why it could not.
    fn setup_answer(&mut self, ports: Result<UdpPorts, String>) -> Response {
        match ports {
            Ok(p) => {
                self.state = State::SetUp;
                Response::ok().header(
                    "Transport",
                    format!(
                        "RTP/AVP/UDP;unicast;mode=record;server_port={};control_port={};timing_port={}",
                        p.audio, p.control, p.timing
                    ),
                )
            }
            Err(e) => {
                log::error!("{}: SETUP failed: {e}", self.info.peer);
                status(500, "Internal Server Error (cannot bind UDP ports)")
            }
        }
    }

    fn record(&mut self, req: &Request) -> Response {
        if !matches!(self.state, State::SetUp | State::Recording) {
            return status(455, "Method Not Valid In This State");
        }
        self.state = State::Recording;
        self.effects.push_back(Effect::Record(rtp_info(req)));
        Response::ok().header("Audio-Latency", AUDIO_LATENCY.to_string())
    }

    fn set_parameter(&mut self, req: &Request) -> Response {
        let ct = req
            .header("Content-Type")
            .unwrap_or("text/parameters")
            .to_ascii_lowercase();
        match ct.as_str() {
            "text/parameters" => {
                let body = String::from_utf8_lossy(&req.body);
                for line in body.lines() {
                    let Some((name, value)) = line.split_once(':') else {
                        continue;
                    };
                    match name.trim() {
                        // Normalised here, once: everything downstream (mixer, stored
                        // volume, GET_PARAMETER, status) sees -30..0 or -144.
                        "volume" => match value
                            .trim()
                            .parse::<f32>()
                            .ok()
                            .filter(|v| v.is_finite())
                            .and_then(crate::output::volume::clamp_airplay_db)
                        {
                            Some(v) => self.effects.push_back(Effect::Volume(v)),
                            None => return status(400, "Bad Request (volume is not a number)"),
                        },
                        "progress" => {
                            let n: Vec<u32> = value
                                .trim()
                                .split('/')
                                .filter_map(|x| x.parse().ok())
                                .collect();
                            if let [s, c, e] = n[..] {
                                // RTP timestamps wrap: a current position outside
                                // start..end (modulo 2^32) is taken as the end.
                                let c = if c.wrapping_sub(s) > e.wrapping_sub(s) {
                                    e
                                } else {
                                    c
                                };
                                self.effects.push_back(Effect::Progress {
                                    start: s,
                                    current: c,
                                    end: e,
                                });
                            } else {
                                return status(
                                    400,
                                    "Bad Request (progress is not start/current/end)",
                                );
                            }
                        }
                        _ => {}
                    }
                }
                Response::ok()
            }
            "application/x-dmap-tagged" => {
                self.effects.push_back(Effect::Metadata(req.body.clone()));
                Response::ok()
            }
            t if t.starts_with("image/") => {
                self.effects.push_back(Effect::Artwork {
                    content_type: t.to_string(),
                    data: req.body.clone(),
                });
                Response::ok()
            }
            _ => status(415, "Unsupported Media Type"),
        }
    }
}

/// A reason phrase with the refusal's detail, e.g. "Unsupported Media Type (unsupported codec AAC)".
fn refusal_phrase(status: u16, reason: &str) -> String {
    let base = match status {
        415 => "Unsupported Media Type",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    // Reason phrases are one line of text.
    let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
    format!("{base} ({reason})")
}

/// N of a `User-Agent` such as `AirPlay/353.2` or `iTunes/12.8 (Macintosh) AirPlay/353.2`;
/// `None` when there is no AirPlay product token or its version is not a number.
fn airplay_version(user_agent: &str) -> Option<u32> {
    let v = user_agent
        .split_whitespace()
        .find_map(|t| t.strip_prefix("AirPlay/"))?;
    let major = v.split('.').next()?;
    major.parse().ok()
}

/// `RTP-Info: seq=…;rtptime=…`.
fn rtp_info(req: &Request) -> Option<(u16, u32)> {
    let v = req.header("RTP-Info")?;
    let get = |k: &str| {
        v.split(';')
            .find_map(|p| p.trim().strip_prefix(k)?.strip_prefix('=').map(str::trim))
    };
    Some((get("seq")?.parse().ok()?, get("rtptime")?.parse().ok()?))
}

#[cfg(test)]
mod tests;
