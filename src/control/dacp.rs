//! DACP: remote control of the sender (play/pause, next track, volume) from the speaker.
//!
//! A sender that can be controlled says so in its RTSP requests with `DACP-ID: <hex>` and
//! `Active-Remote: <n>`. It runs a small HTTP server announced over mDNS as
//! `iTunes_Ctrl_<DACP-ID>._dacp._tcp.local`; a command is `GET /ctrl-int/1/<cmd>` with the
//! `Active-Remote` number as the credential, answered `204 No Content` (or 200).
//!
//! Finding the server's port takes one mDNS question. Rather than extending the responder
//! (which owns port 5353 for announcing), [`resolve`] sends a one-shot query from an ephemeral
//! port: responders answer those by unicast straight to the asking port (RFC 6762 section
//! 5.1 and 6.7), so no multicast membership or shared socket is needed. The packet
//! building and parsing are sans-IO ([`browse_query`], [`parse_browse_response`]) so they can
//! also be fed from the responder's socket, where unsolicited announcements arrive.
//!
//! The server is always addressed at the sender's RTSP peer address: the A records in the
//! reply may name addresses on other interfaces or link-local IPv6 addresses without scope,
//! while the RTSP peer is known to be reachable.
//!
//! Responses and mDNS answers come off the network: no panic on input (issue 11).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::unreachable
    )
)]

use crate::reactor::{Async, Timer};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, Question, CLASS, QCLASS, QTYPE, TYPE};
use std::cell::Cell;
use std::fmt;

pub use crate::config::ctl::RemoteCommand;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// How long to look for the sender's DACP server on mDNS.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long one HTTP command may take, connect to reply.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// The mDNS query is repeated this often until an answer comes (UDP may drop it).
const RESOLVE_RETRY: Duration = Duration::from_millis(500);
/// The reply's status line and headers must fit in this; the body is never read.
const MAX_RESPONSE_HEAD: usize = 4096;
const MDNS_PORT: u16 = 5353;
/// How often a lookup checks for an address seen on the responder's socket.
const SEEN_POLL: Duration = Duration::from_millis(25);
const MDNS_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);

#[derive(Debug)]
pub enum DacpError {
    /// The `DACP-ID` or `Active-Remote` value cannot be used (it would not fit a DNS label
    /// or an HTTP header).
    Invalid(&'static str),
    /// No mDNS answer for the sender's DACP service.
    NotFound,
    Timeout,
    Io(std::io::Error),
    /// The sender answered with this HTTP status.
    Status(u16),
    /// The reply was not HTTP.
    BadResponse,
}

impl fmt::Display for DacpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(what) => write!(f, "unusable {what} from the sender"),
            Self::NotFound => f.write_str("the sender's remote control service was not found"),
            Self::Timeout => f.write_str("the sender did not answer in time"),
            Self::Io(e) => write!(f, "remote control: {e}"),
            Self::Status(s) => write!(f, "the sender refused the command (HTTP {s})"),
            Self::BadResponse => f.write_str("the sender's reply was not HTTP"),
        }
    }
}

impl std::error::Error for DacpError {}

impl From<std::io::Error> for DacpError {
    fn from(e: std::io::Error) -> Self {
        DacpError::Io(e)
    }
}

/// A `DACP-ID` is 16 hex digits; anything that is not a short run of letters and digits
/// could smuggle dots into the DNS name.
fn valid_dacp_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `Active-Remote` is a decimal number; it is copied into a request header, so nothing
/// else may pass.
fn valid_active_remote(n: &str) -> bool {
    (1..=20).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit())
}

/// `iTunes_Ctrl_<DACP-ID>._dacp._tcp.local`
pub fn service_name(dacp_id: &str) -> String {
    format!("iTunes_Ctrl_{dacp_id}._dacp._tcp.local")
}

/// An mDNS query for the SRV record of the sender's DACP service. `None` if the id is not
/// a plausible DACP-ID.
pub fn browse_query(dacp_id: &str) -> Option<Vec<u8>> {
    if !valid_dacp_id(dacp_id) {
        return None;
    }
    let name = service_name(dacp_id);
    // Legacy unicast replies echo the query id; a non-zero one tells them apart.
    let mut p = Packet::new_query(0x4443);
    p.questions.push(Question::new(
        Name::new(&name).ok()?,
        QTYPE::TYPE(TYPE::SRV),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    p.build_bytes_vec().ok()
}

/// The sender's DACP server from an mDNS packet: the port of an SRV record for
/// [`service_name`] in any section, at `sender_ip` (see the module docs for why). `None`
/// for packets that do not answer it, including a goodbye (TTL 0) record.
pub fn parse_browse_response(
    packet: &[u8],
    dacp_id: &str,
    sender_ip: IpAddr,
) -> Option<SocketAddr> {
    if !valid_dacp_id(dacp_id) {
        return None;
    }
    let msg = Packet::parse(packet).ok()?;
    let want = service_name(dacp_id);
    let want = Name::new(&want).ok()?;
    msg.answers
        .iter()
        .chain(&msg.additional_records)
        .chain(&msg.name_servers)
        .filter(|rr| rr.name == want && rr.ttl > 0)
        .find_map(|rr| match &rr.rdata {
            RData::SRV(srv) if srv.port != 0 => Some(SocketAddr::new(sender_ip, srv.port)),
            _ => None,
        })
}

/// Asks for the sender's DACP server: one-shot mDNS queries from an ephemeral port, sent to
/// the sender itself and (IPv4) to the mDNS group, repeated until an answer or `timeout`.
pub async fn resolve(
    dacp_id: &str,
    sender_ip: IpAddr,
    timeout: Duration,
) -> Result<SocketAddr, DacpError> {
    let mut targets = vec![SocketAddr::new(sender_ip, MDNS_PORT)];
    if sender_ip.is_ipv4() {
        targets.push(SocketAddr::new(MDNS_V4.into(), MDNS_PORT));
    }
    resolve_via(dacp_id, sender_ip, &targets, timeout).await
}

/// [`resolve`] with the query destinations given (tests use a fake responder).
pub(crate) async fn resolve_via(
    dacp_id: &str,
    sender_ip: IpAddr,
    targets: &[SocketAddr],
    timeout: Duration,
) -> Result<SocketAddr, DacpError> {
    let query = browse_query(dacp_id).ok_or(DacpError::Invalid("DACP-ID"))?;
    let any: IpAddr = if sender_ip.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let sock = Async::new(UdpSocket::bind((any, 0))?)?;
    let work = async {
        let mut buf = vec![0u8; 9000];
        loop {
            for t in targets {
                // One unreachable destination (no multicast route) must not stop the other.
                if let Err(e) = sock.send_to(&query, *t).await {
                    log::debug!("dacp: mDNS query to {t}: {e}");
                }
            }
            let retry_at = Instant::now() + RESOLVE_RETRY;
            loop {
                let recv = async { Some(sock.recv_from(&mut buf).await) };
                let retry = async {
                    Timer::at(retry_at).await;
                    None
                };
                match future::or(recv, retry).await {
                    Some(Ok((n, _))) => {
                        let packet = buf.get(..n).unwrap_or_default();
                        if let Some(addr) = parse_browse_response(packet, dacp_id, sender_ip) {
                            return Ok(addr);
                        }
                    }
                    // A receive error would repeat at once: wait for the next round instead.
                    Some(Err(_)) => {
                        Timer::at(retry_at).await;
                        break;
                    }
                    None => break,
                }
            }
        }
    };
    let limit = async {
        Timer::after(timeout).await;
        Err(DacpError::NotFound)
    };
    future::or(work, limit).await
}

/// The HTTP request for `cmd`. `host` goes into the `Host` header.
pub fn request_bytes(
    cmd: RemoteCommand,
    host: SocketAddr,
    active_remote: &str,
) -> Result<Vec<u8>, DacpError> {
    if !valid_active_remote(active_remote) {
        return Err(DacpError::Invalid("Active-Remote"));
    }
    Ok(format!(
        "GET /ctrl-int/1/{} HTTP/1.1\r\nHost: {host}\r\nActive-Remote: {active_remote}\r\nConnection: close\r\n\r\n",
        cmd.dacp_path()
    )
    .into_bytes())
}

/// The status code of an HTTP reply once its head is complete; `Ok(None)` while more bytes
/// are needed.
pub fn parse_status(head: &[u8]) -> Result<Option<u16>, DacpError> {
    let mut headers = [httparse::EMPTY_HEADER; 24];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => resp.code.map(Some).ok_or(DacpError::BadResponse),
        Ok(httparse::Status::Partial) => Ok(None),
        // More headers than we have room for: the status line itself parsed fine.
        Err(httparse::Error::TooManyHeaders) => resp.code.map(Some).ok_or(DacpError::BadResponse),
        Err(_) => Err(DacpError::BadResponse),
    }
}

/// Sends one command to the DACP server at `addr` and waits for its status line.
pub async fn send_command(
    addr: SocketAddr,
    active_remote: &str,
    cmd: RemoteCommand,
    timeout: Duration,
) -> Result<(), DacpError> {
    let request = request_bytes(cmd, addr, active_remote)?;
    let exchange = async {
        let mut stream = Async::<TcpStream>::connect(addr).await?;
        stream.write_all(&request).await?;
        let mut head = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                // Closed before the head was complete.
                return Err(DacpError::BadResponse);
            }
            head.extend_from_slice(chunk.get(..n).unwrap_or_default());
            if let Some(code) = parse_status(&head)? {
                return Ok(code);
            }
            if head.len() > MAX_RESPONSE_HEAD {
                return Err(DacpError::BadResponse);
            }
        }
    };
    let limit = async {
        Timer::after(timeout).await;
        Err(DacpError::Timeout)
    };
    match future::or(exchange, limit).await? {
        200..=299 => {
            log::info!("remote control: {cmd} sent to {addr}");
            Ok(())
        }
        code => Err(DacpError::Status(code)),
    }
}

/// The remote control of one sender: what it told us in RTSP, and where its DACP server
/// is once found. Create it when a session brings `DACP-ID` and `Active-Remote`; keep it in
/// an `Rc` so command futures can outlive the borrow of the daemon state.
#[derive(Debug)]
pub struct Remote {
    dacp_id: String,
    active_remote: String,
    sender_ip: IpAddr,
    /// The DACP server, once resolved (or told by [`Remote::set_addr`]).
    addr: Cell<Option<SocketAddr>>,
}

impl Remote {
    /// Checks the header values now, so that a sender with unusable ones is simply not
    /// remote-controllable instead of failing at every command.
    pub fn new(dacp_id: &str, active_remote: &str, sender_ip: IpAddr) -> Result<Self, DacpError> {
        if !valid_dacp_id(dacp_id) {
            return Err(DacpError::Invalid("DACP-ID"));
        }
        if !valid_active_remote(active_remote) {
            return Err(DacpError::Invalid("Active-Remote"));
        }
        Ok(Remote {
            dacp_id: dacp_id.to_string(),
            active_remote: active_remote.to_string(),
            sender_ip,
            addr: Cell::new(None),
        })
    }

    pub fn dacp_id(&self) -> &str {
        &self.dacp_id
    }

    pub fn sender_ip(&self) -> IpAddr {
        self.sender_ip
    }

    /// The DACP server's address if known.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr.get()
    }

    /// Records the DACP server's address, e.g. from an mDNS announcement seen elsewhere
    /// (see [`parse_browse_response`]).
    pub fn set_addr(&self, addr: SocketAddr) {
        self.addr.set(Some(addr));
    }

    /// Sends `cmd`, finding the DACP server first if needed. A remembered address that no
    /// longer answers (the sender restarted its server on a new port) is looked up again
    /// once.
    pub async fn send(&self, cmd: RemoteCommand) -> Result<(), DacpError> {
        let cached = self.addr.get();
        let addr = match cached {
            Some(a) => a,
            None => self.lookup().await?,
        };
        match send_command(addr, &self.active_remote, cmd, COMMAND_TIMEOUT).await {
            Err(DacpError::Io(e)) if cached.is_some() => {
                log::debug!("dacp: {addr}: {e}; looking the server up again");
                self.addr.set(None);
                let addr = self.lookup().await?;
                send_command(addr, &self.active_remote, cmd, COMMAND_TIMEOUT).await
            }
            other => other,
        }
    }

    /// Asks by mDNS, and meanwhile watches for the address arriving another way: an answer
    /// multicast to the group reaches the daemon's responder socket, not the query's
    /// ephemeral port, and is handed over with [`Remote::set_addr`].
    async fn lookup(&self) -> Result<SocketAddr, DacpError> {
        let asked = resolve(&self.dacp_id, self.sender_ip, RESOLVE_TIMEOUT);
        let seen = async {
            loop {
                Timer::after(SEEN_POLL).await;
                if let Some(a) = self.addr.get() {
                    return Ok(a);
                }
            }
        };
        let addr = future::or(asked, seen).await?;
        log::debug!("dacp: {} is at {addr}", self.dacp_id);
        self.addr.set(Some(addr));
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, SRV};
    use simple_dns::{PacketFlag, ResourceRecord};
    use std::io::{Read, Write};
    use std::net::TcpListener;

    const ID: &str = "1A2B3C4D5E6F7A8B";

    fn srv_reply(name: &str, port: u16, ttl: u32, id: u16) -> Vec<u8> {
        let mut p = Packet::new_reply(id);
        p.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("elsewhere.local"),
            CLASS::IN,
            120,
            RData::A(A::from(Ipv4Addr::new(10, 9, 9, 9))),
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked(name),
            CLASS::IN,
            ttl,
            RData::SRV(SRV {
                priority: 0,
                weight: 0,
                port,
                target: Name::new_unchecked("sender.local"),
            }),
        ));
        p.build_bytes_vec_compressed().unwrap()
    }

    #[test]
    fn query_asks_for_the_service_srv() {
        let q = browse_query(ID).unwrap();
        let p = Packet::parse(&q).unwrap();
        assert_eq!(p.questions.len(), 1);
        assert_eq!(
            p.questions[0].qname.to_string(),
            "iTunes_Ctrl_1A2B3C4D5E6F7A8B._dacp._tcp.local"
        );
        assert_eq!(p.questions[0].qtype, QTYPE::TYPE(TYPE::SRV));
        assert!(!p.has_flags(PacketFlag::RESPONSE));
        assert_eq!(browse_query("bad.id"), None);
        assert_eq!(browse_query(""), None);
    }

    #[test]
    fn response_gives_the_port_at_the_sender() {
        let ip: IpAddr = Ipv4Addr::new(192, 168, 1, 20).into();
        let name = service_name(ID);
        let r = srv_reply(&name, 3689, 120, 0);
        assert_eq!(
            parse_browse_response(&r, ID, ip),
            Some(SocketAddr::new(ip, 3689))
        );
        // Names compare case-insensitively.
        let r = srv_reply(&name.to_ascii_lowercase(), 3690, 120, 0);
        assert_eq!(
            parse_browse_response(&r, ID, ip),
            Some(SocketAddr::new(ip, 3690))
        );
        let other = srv_reply(&service_name("FFFF"), 3689, 120, 0);
        assert_eq!(parse_browse_response(&other, ID, ip), None);
        let goodbye = srv_reply(&name, 3689, 0, 0);
        assert_eq!(parse_browse_response(&goodbye, ID, ip), None);
        assert_eq!(parse_browse_response(b"garbage", ID, ip), None);
        assert_eq!(parse_browse_response(&[], ID, ip), None);
        for cut in 0..r.len() {
            let _ = parse_browse_response(&r[..cut], ID, ip);
        }
    }

    #[test]
    fn request_and_status_parsing() {
        let addr: SocketAddr = "192.168.1.20:3689".parse().unwrap();
        let req = request_bytes(RemoteCommand::Next, addr, "1986535575").unwrap();
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "GET /ctrl-int/1/nextitem HTTP/1.1\r\nHost: 192.168.1.20:3689\r\n\
             Active-Remote: 1986535575\r\nConnection: close\r\n\r\n"
        );
        assert!(matches!(
            request_bytes(RemoteCommand::Play, addr, "1\r\nX: y"),
            Err(DacpError::Invalid(_))
        ));
        let v6: SocketAddr = "[fe80::1]:3689".parse().unwrap();
        let req = String::from_utf8(request_bytes(RemoteCommand::Play, v6, "7").unwrap()).unwrap();
        assert!(req.contains("Host: [fe80::1]:3689\r\n"));

        assert_eq!(
            parse_status(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap(),
            Some(204)
        );
        assert_eq!(parse_status(b"HTTP/1.1 204 No Con").unwrap(), None);
        assert_eq!(parse_status(b"").unwrap(), None);
        assert!(parse_status(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn remote_rejects_unusable_headers() {
        let ip: IpAddr = Ipv4Addr::LOCALHOST.into();
        assert!(Remote::new(ID, "12", ip).is_ok());
        assert!(Remote::new("a.b", "12", ip).is_err());
        assert!(Remote::new(ID, "x", ip).is_err());
    }

    /// A one-shot HTTP responder: returns the request head it read.
    fn http_responder(reply: &'static [u8]) -> (u16, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 256];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut b).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&b[..n]);
            }
            s.write_all(reply).unwrap();
            String::from_utf8(req).unwrap()
        });
        (port, h)
    }

    #[test]
    fn command_over_tcp() {
        let (port, h) = http_responder(b"HTTP/1.1 204 No Content\r\nDAAP-Server: iTunes\r\n\r\n");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let r = crate::reactor::block_on(send_command(
            addr,
            "1986535575",
            RemoteCommand::PlayPause,
            COMMAND_TIMEOUT,
        ));
        assert!(r.is_ok(), "{r:?}");
        let req = h.join().unwrap();
        assert_eq!(
            req,
            format!(
                "GET /ctrl-int/1/playpause HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                 Active-Remote: 1986535575\r\nConnection: close\r\n\r\n"
            )
        );

        let (port, h) = http_responder(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let r = crate::reactor::block_on(send_command(
            addr,
            "5",
            RemoteCommand::Stop,
            COMMAND_TIMEOUT,
        ));
        assert!(matches!(r, Err(DacpError::Status(403))), "{r:?}");
        assert!(h.join().unwrap().starts_with("GET /ctrl-int/1/stop "));
    }

    #[test]
    fn silent_server_times_out_and_closed_port_fails() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let r = crate::reactor::block_on(send_command(
            addr,
            "5",
            RemoteCommand::Play,
            Duration::from_millis(200),
        ));
        assert!(matches!(r, Err(DacpError::Timeout)), "{r:?}");
        drop(l);
        let r = crate::reactor::block_on(send_command(
            addr,
            "5",
            RemoteCommand::Play,
            COMMAND_TIMEOUT,
        ));
        assert!(matches!(r, Err(DacpError::Io(_))), "{r:?}");
    }

    #[test]
    fn resolve_against_a_fake_responder_then_send() {
        let (http_port, h) = http_responder(b"HTTP/1.1 200 OK\r\n\r\n");
        let responder = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = responder.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let (n, from) = responder.recv_from(&mut buf).unwrap();
            let q = Packet::parse(&buf[..n]).unwrap();
            let name = q.questions[0].qname.to_string();
            // First an unrelated answer, then ours, as a busy network would deliver them.
            responder
                .send_to(&srv_reply(&service_name("FFFF"), 1, 120, q.id()), from)
                .unwrap();
            responder
                .send_to(&srv_reply(&name, http_port, 120, q.id()), from)
                .unwrap();
        });
        let ip: IpAddr = Ipv4Addr::LOCALHOST.into();
        let addr =
            crate::reactor::block_on(resolve_via(ID, ip, &[target], RESOLVE_TIMEOUT)).unwrap();
        assert_eq!(addr, SocketAddr::new(ip, http_port));
        t.join().unwrap();

        let remote = Remote::new(ID, "42", ip).unwrap();
        remote.set_addr(addr);
        crate::reactor::block_on(remote.send(RemoteCommand::VolumeUp)).unwrap();
        assert!(h
            .join()
            .unwrap()
            .starts_with("GET /ctrl-int/1/volumeup HTTP/1.1\r\n"));
    }

    #[test]
    fn resolve_gives_up() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ip: IpAddr = Ipv4Addr::LOCALHOST.into();
        let r = crate::reactor::block_on(resolve_via(
            ID,
            ip,
            &[silent.local_addr().unwrap()],
            Duration::from_millis(300),
        ));
        assert!(matches!(r, Err(DacpError::NotFound)), "{r:?}");
    }
}
