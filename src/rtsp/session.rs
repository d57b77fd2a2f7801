//! One RTSP connection's state machine, sans-IO: a parsed [`Request`] goes in, a
//! [`Response`] comes out. Whatever needs the outside world (binding UDP sockets,
//! starting playback, claiming the speaker) is asked of a [`SessionIo`] implemented by
//! the I/O edge, so tests drive the whole protocol without sockets.

use super::message::{Request, Response};
use super::sdp::{parse_announce, Announce};
use super::{auth, message::FrameError};
use crate::codec::StreamFormat;
use crate::crypto::AirportKey;
use std::net::{IpAddr, SocketAddr};

/// What the I/O edge knows about this connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub mac: [u8; 6],
    pub password: Option<String>,
}

/// Our UDP ports for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPorts {
    pub audio: u16,
    pub control: u16,
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

/// The outside world, as the session needs it.
pub trait SessionIo {
    /// ANNOUNCE, before claiming: whether the speaker can play at all. `Err(reason)` refuses
    /// the stream with `503 Service Unavailable (reason)`, e.g. an output device that cannot
    /// be opened (`--wait-for-output`).
    fn ready(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// ANNOUNCE wants the speaker. `false` means another sender has it (→ 453).
    fn claim(&mut self) -> bool;
    /// Binds the stream's UDP sockets and starts receiving.
    fn setup(&mut self, setup: StreamSetup) -> std::io::Result<UdpPorts>;
    /// RECORD: playback starts at this sequence number / RTP timestamp if given.
    fn record(&mut self, start: Option<(u16, u32)>);
    /// FLUSH: drop audio before this sequence number / RTP timestamp.
    fn flush(&mut self, until: Option<(u16, u32)>);
    /// AirPlay volume in dB: -30..0, -144 = mute.
    fn set_volume(&mut self, db: f32);
    fn volume(&self) -> f32;
    /// DMAP-tagged metadata (`application/x-dmap-tagged`).
    fn metadata(&mut self, dmap: &[u8]);
    /// Cover art; an empty body (`image/none`) clears it.
    fn artwork(&mut self, content_type: &str, data: &[u8]);
    /// `progress: start/current/end` in RTP timestamps.
    fn progress(&mut self, start: u32, current: u32, end: u32);
    /// The stream ends (TEARDOWN or connection closed): release sockets and the speaker.
    fn teardown(&mut self);
}

pub use crate::clock::AUDIO_LATENCY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Init,
    Announced,
    SetUp,
    Recording,
}

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
}

fn status(code: u16, reason: &str) -> Response {
    Response::new(code, reason)
}

impl Session {
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
        }
    }

    /// True while this connection holds the speaker.
    pub fn holds_speaker(&self) -> bool {
        self.claimed
    }

    /// Answers a request. Never fails: protocol errors become 4xx responses.
    pub fn handle(&mut self, req: &Request, key: &AirportKey, io: &mut dyn SessionIo) -> Response {
        if let Some(v) = req.header("User-Agent").and_then(airplay_version) {
            self.airplay_version = Some(v);
        }
        let mut resp = self.dispatch(req, key, io);
        if let Some(cseq) = req.header("CSeq") {
            resp.headers.insert(0, ("CSeq".into(), cseq.to_string()));
        }
        if let Some(ch) = req.header("Apple-Challenge") {
            let ip = self.info.local.ip();
            match key.apple_response(ch, ip, self.info.mac) {
                Some(r) => resp.headers.push(("Apple-Response".into(), r)),
                None => log::warn!("{}: malformed Apple-Challenge ignored", self.info.peer),
            }
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

    /// The connection closed: whatever it held is released.
    pub fn closed(&mut self, io: &mut dyn SessionIo) {
        if self.claimed {
            io.teardown();
            self.claimed = false;
        }
        self.state = State::Init;
    }

    fn dispatch(&mut self, req: &Request, key: &AirportKey, io: &mut dyn SessionIo) -> Response {
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
                        .header("WWW-Authenticate", auth::challenge(&self.nonce));
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
            ),
            "ANNOUNCE" => self.announce(req, key, io),
            "SETUP" => self.setup(req, io),
            "RECORD" => self.record(req, io),
            "FLUSH" => {
                if !self.claimed {
                    return status(455, "Method Not Valid In This State");
                }
                io.flush(rtp_info(req));
                Response::ok()
            }
            "TEARDOWN" => {
                if self.claimed {
                    io.teardown();
                    self.claimed = false;
                }
                self.state = State::Init;
                Response::ok().header("Connection", "close")
            }
            "SET_PARAMETER" => self.set_parameter(req, io),
            "GET_PARAMETER" => {
                let body = String::from_utf8_lossy(&req.body);
                if body.lines().any(|l| l.trim() == "volume") {
                    Response::ok().body("text/parameters", format!("volume: {:.6}\r\n", io.volume()).into_bytes())
                } else {
                    Response::ok()
                }
            }
            // pyatv probes these; neither matters to an AirPlay 1 receiver.
            "POST" if req.path() == "/feedback" => Response::ok(),
            "GET" | "POST" => status(404, "Not Found"),
            "PAUSE" => Response::ok(),
            _ => status(501, "Not Implemented"),
        }
    }

    fn announce(&mut self, req: &Request, key: &AirportKey, io: &mut dyn SessionIo) -> Response {
        let ct = req.header("Content-Type").unwrap_or("application/sdp");
        if !ct.eq_ignore_ascii_case("application/sdp") {
            return status(
                415,
                "Unsupported Media Type (ANNOUNCE needs application/sdp)",
            );
        }
        let a = match parse_announce(&req.body) {
            Ok(a) => a,
            Err(e) => {
                log::warn!("{}: ANNOUNCE refused: {}", self.info.peer, e.reason);
                return status(e.status, &refusal_phrase(e.status, &e.reason));
            }
        };
        let aes = match (&a.rsaaeskey, &a.aesiv) {
            (Some(k), Some(iv)) => {
                let key = match key.decrypt_aes_key(k) {
                    Ok(k) => k,
                    Err(e) => {
                        log::warn!("{}: ANNOUNCE refused: {e}", self.info.peer);
                        return status(400, &format!("Bad Request ({e})"));
                    }
                };
                let iv: [u8; 16] = match crate::crypto::b64_decode(iv)
                    .and_then(|v| v.try_into().ok())
                {
                    Some(iv) => iv,
                    None => return status(400, "Bad Request (aesiv is not 16 bytes of base64)"),
                };
                Some((key, iv))
            }
            _ => None,
        };
        if let Err(reason) = io.ready() {
            log::warn!("{}: ANNOUNCE refused: {reason}", self.info.peer);
            return status(503, &refusal_phrase(503, &reason));
        }
        if !self.claimed {
            if !io.claim() {
                log::info!("{}: speaker busy, refusing a second sender", self.info.peer);
                return status(453, "Not Enough Bandwidth");
            }
            self.claimed = true;
        }
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

    fn setup(&mut self, req: &Request, io: &mut dyn SessionIo) -> Response {
        let Some(a) = self.announce.clone().filter(|_| self.claimed) else {
            return status(455, "Method Not Valid In This State");
        };
        let transport = req.header("Transport").unwrap_or("");
        if transport.to_ascii_uppercase().contains("TCP") {
            return status(461, "Unsupported Transport (only UDP)");
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
            return status(400, "Bad Request (Transport port not in 0..65535)");
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
        match io.setup(setup) {
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

    fn record(&mut self, req: &Request, io: &mut dyn SessionIo) -> Response {
        if !matches!(self.state, State::SetUp | State::Recording) {
            return status(455, "Method Not Valid In This State");
        }
        self.state = State::Recording;
        io.record(rtp_info(req));
        Response::ok().header("Audio-Latency", AUDIO_LATENCY.to_string())
    }

    fn set_parameter(&mut self, req: &Request, io: &mut dyn SessionIo) -> Response {
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
                            Some(v) => io.set_volume(v),
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
                                io.progress(s, c, e);
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
                io.metadata(&req.body);
                Response::ok()
            }
            t if t.starts_with("image/") => {
                io.artwork(t, &req.body);
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
