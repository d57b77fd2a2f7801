//! The daemon's I/O edge: the RTSP listener, one task per connection, and the speaker
//! state they share (who holds it, the current stream, the volume). Everything runs on
//! one `LocalExecutor` on the main thread; shared state is `Rc<RefCell<…>>`.

use crate::buffer::JitterBuffer;
use crate::config::{Config, Interruption};
use crate::control::{self, ControlHandler, Hooks, NowPlaying, Remote, RemoteCommand};
use crate::crypto::AirportKey;
use crate::output::{ProbeError, Sink};
use crate::player::{self, Cmd, End, Pool, Resources, Sockets, StreamStats};
use crate::reactor::{Async, Timer};
use crate::rtsp::{parse_request, ConnectionInfo, Session, SessionIo, StreamSetup, UdpPorts};
use async_executor::LocalExecutor;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A connection without a stream is closed after this much silence (a sender holding the
/// speaker without streaming gets `--session-timeout` instead).
const IDLE_CONNECTION: Duration = Duration::from_secs(120);
/// RECORD is answered after this pause. PulseAudio's RAOP sink (16.x) aborts on an
/// assertion when the RECORD reply arrives before its I/O thread has registered the
/// sockets it set up after SETUP; a receiver on the same host answers fast enough to
/// hit that race nearly every time. 20 ms is far below anything a listener notices.
const RECORD_REPLY_DELAY: Duration = Duration::from_millis(20);
/// Bytes read from a connection at a time.
const READ_CHUNK: usize = 4096;
/// RTSP connections served at once; one more is answered `503` and closed. A sender uses
/// one (two while it takes over from another); the rest is room for senders probing the
/// speaker (OPTIONS, GET_PARAMETER) without letting a LAN client exhaust descriptors.
pub const MAX_RTSP_CONNECTIONS: usize = 16;
/// A request must arrive whole (head and body) this long after its first byte, or the
/// connection gets `408` and is closed: a client trickling bytes (slowloris) cannot hold a
/// connection, while 1 MiB of cover art still fits at 1 Mbit/s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A response (or refusal) that the client does not read within this is abandoned with
/// the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// `fut`, or `None` after `t`.
async fn timed<T>(t: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        Timer::after(t).await;
        None
    })
    .await
}

struct StreamHandle {
    owner: u64,
    /// Tells this stream from a later one of the same connection (a second SETUP).
    serial: u64,
    cmds: async_channel::Sender<Cmd>,
    stats: Rc<RefCell<StreamStats>>,
}

#[derive(Default)]
struct Speaker {
    /// The connection holding the speaker.
    owner: Option<u64>,
    stream: Option<StreamHandle>,
    /// AirPlay volume in dB, kept across streams.
    volume: f32,
    /// The sender of the current stream.
    sender: Option<IpAddr>,
    /// Remote control of that sender, if it offered one.
    remote: Option<Rc<Remote>>,
    now_playing: NowPlaying,
    next_conn: u64,
    /// RTSP connections open now.
    connections: usize,
    /// Per connection: a channel that closes it, with the reason for the log (a sender taken
    /// over by another, an output that failed under it).
    kick: Vec<(u64, async_channel::Sender<&'static str>)>,
}

pub struct Daemon {
    pub cfg: Config,
    pub mac: [u8; 6],
    key: AirportKey,
    speaker: RefCell<Speaker>,
    pool: Pool,
    ex: Rc<LocalExecutor<'static>>,
    pub hooks: Rc<RefCell<Hooks>>,
    /// Why the output cannot be used: it could not be opened at start (`--wait-for-output`),
    /// or it failed under a stream and did not come back within [`player::OUTPUT_GRACE`].
    /// While set, new senders are refused with `503` and the cause.
    output_problem: RefCell<Option<ProbeError>>,
    /// When the daemon started, for its uptime.
    started: Instant,
}

impl Daemon {
    /// Builds the daemon around an opened sink; allocates the jitter buffer once.
    pub fn new(
        cfg: Config,
        mac: [u8; 6],
        sink: Box<dyn Sink>,
        ex: Rc<LocalExecutor<'static>>,
    ) -> Rc<Self> {
        let rate = crate::RATE as usize;
        let latency_frames = cfg.latency.as_millis() as usize * rate / 1000;
        let buffer = JitterBuffer::with_capacity_frames(latency_frames.max(2 * rate) + rate);
        log::info!(
            "jitter buffer: {} packets, {} KiB",
            buffer.capacity_packets(),
            buffer.memory_bytes() / 1024
        );
        let mut hook_cfg = cfg.control.hooks.clone();
        hook_cfg.name = cfg.name.clone();
        Rc::new(Daemon {
            hooks: Rc::new(RefCell::new(Hooks::new(hook_cfg))),
            key: AirportKey::load(),
            speaker: RefCell::new(Speaker {
                volume: 0.0,
                ..Speaker::default()
            }),
            pool: Pool::new(Resources { sink, buffer }),
            cfg,
            mac,
            ex,
            output_problem: RefCell::new(None),
            started: Instant::now(),
        })
    }

    /// Records that the output could not be opened at start (`--wait-for-output`): senders
    /// are refused with the cause until a new session finds it working.
    pub fn set_output_problem(&self, problem: Option<ProbeError>) {
        *self.output_problem.borrow_mut() = problem;
    }

    /// With `--wait-for-output`, or after the output failed under a stream, checks the output
    /// again before a new stream (while no stream holds it): the USB DAC may have appeared,
    /// come back, or gone. `Err` holds the cause for the sender.
    fn check_output(&self) -> Result<(), String> {
        let watched = self.cfg.wait_for_output || self.output_problem.borrow().is_some();
        if !watched || self.speaker.borrow().stream.is_some() {
            return Ok(());
        }
        let verdict = crate::output::probe(&self.cfg.output).err();
        let mut problem = self.output_problem.borrow_mut();
        match verdict {
            None => {
                if problem.take().is_some() {
                    log::warn!("output {} works now", self.cfg.output);
                }
                Ok(())
            }
            Some(p) if p.busy => Ok(()),
            Some(p) => {
                if problem.as_ref() != Some(&p) {
                    log::warn!("{p}");
                }
                let cause = p.cause.clone();
                *problem = Some(p);
                Err(cause)
            }
        }
    }

    /// An mDNS response seen on the responder's port 5353: if it announces the current
    /// sender's DACP server, the remote control learns its address from it. Senders whose
    /// responder answers by multicast only are found this way (the one-shot lookup from an
    /// ephemeral port never hears them).
    pub fn mdns_response(&self, src: SocketAddr, packet: &[u8]) {
        let remote = self.speaker.borrow().remote.clone();
        let Some(remote) = remote else { return };
        if let Some(addr) =
            control::dacp::parse_browse_response(packet, remote.dacp_id(), remote.sender_ip())
        {
            if remote.addr() != Some(addr) {
                log::debug!("dacp: {} is at {addr} (seen from {src})", remote.dacp_id());
            }
            remote.set_addr(addr);
        }
    }

    /// SIGHUP: while no stream holds the output, opens it once and logs the result (with
    /// `--wait-for-output` this also clears or sets the cause senders are told). A playing
    /// stream is left alone.
    pub fn recheck_output(&self) {
        if self.speaker.borrow().stream.is_some() {
            log::info!("output {} in use by the current stream", self.cfg.output);
            return;
        }
        match crate::output::probe(&self.cfg.output) {
            Ok(()) => {
                log::warn!("output {} works", self.cfg.output);
                *self.output_problem.borrow_mut() = None;
            }
            Err(p) => {
                log::warn!("{p}");
                if self.cfg.wait_for_output && !p.busy {
                    *self.output_problem.borrow_mut() = Some(p);
                }
            }
        }
    }

    /// Statistics of the current stream, if any.
    pub fn stream_stats(&self) -> Option<StreamStats> {
        self.speaker
            .borrow()
            .stream
            .as_ref()
            .map(|s| s.stats.borrow().clone())
    }

    /// Accepts RTSP connections forever. `iface` is the interface the listener is tied to
    /// (`--interface`); the stream's UDP sockets are then tied to it too.
    pub async fn serve(
        self: Rc<Self>,
        listener: Async<TcpListener>,
        iface: Option<Rc<str>>,
    ) -> std::io::Result<()> {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    log::warn!("accept: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let id = {
                let mut sp = self.speaker.borrow_mut();
                if sp.connections >= MAX_RTSP_CONNECTIONS {
                    None
                } else {
                    sp.connections += 1;
                    sp.next_conn += 1;
                    Some(sp.next_conn)
                }
            };
            let Some(id) = id else {
                log::warn!("{peer}: refused, {MAX_RTSP_CONNECTIONS} RTSP connections open");
                self.ex
                    .spawn(async move {
                        let mut stream = stream;
                        let refusal = crate::rtsp::Response::new(503, "Service Unavailable")
                            .header("Connection", "close")
                            .to_bytes("RTSP/1.0");
                        let _ = timed(WRITE_TIMEOUT, stream.write_all(&refusal)).await;
                    })
                    .detach();
                continue;
            };
            let d = self.clone();
            let iface = iface.clone();
            self.ex
                .spawn(async move {
                    d.clone().connection(stream, peer, id, iface).await;
                    d.speaker.borrow_mut().connections -= 1;
                })
                .detach();
        }
    }

    async fn connection(
        self: Rc<Self>,
        mut stream: Async<TcpStream>,
        peer: SocketAddr,
        id: u64,
        iface: Option<Rc<str>>,
    ) {
        let local = match stream.get_ref().local_addr() {
            Ok(a) => a,
            Err(_) => return,
        };
        log::info!("{peer}: connected");
        let _ = stream.get_ref().set_nodelay(true);
        let (kick_tx, kick_rx) = async_channel::bounded::<&'static str>(1);
        self.speaker.borrow_mut().kick.push((id, kick_tx));
        let mut session = Session::new(ConnectionInfo {
            local,
            peer,
            mac: self.mac,
            password: self.cfg.password.clone(),
        });
        let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
        let mut chunk = vec![0u8; READ_CHUNK];
        // Bytes of a refused request's body still to be read and thrown away.
        let mut discard = 0usize;
        // When the first byte of a request still incomplete arrived.
        let mut request_started: Option<Instant> = None;
        'conn: loop {
            // Answer every complete request already buffered.
            loop {
                match parse_request(&buf) {
                    Ok(Some((req, used))) => {
                        buf.drain(..used);
                        request_started = None;
                        log::debug!("{peer}: {} {}", req.method, req.uri);
                        let resp = session.handle(
                            &req,
                            &self.key,
                            &mut ConnIo {
                                d: &self,
                                id,
                                iface: iface.as_deref(),
                            },
                        );
                        log::debug!("{peer}: -> {} {}", resp.status, resp.reason);
                        if req.method == "RECORD" {
                            Timer::after(RECORD_REPLY_DELAY).await;
                        }
                        let bytes = resp.to_bytes(&req.protocol);
                        let sent = timed(WRITE_TIMEOUT, stream.write_all(&bytes)).await;
                        if !matches!(sent, Some(Ok(()))) || resp.close {
                            break 'conn;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let resp = session.frame_error(&e);
                        let bytes = resp.to_bytes("RTSP/1.0");
                        let sent = timed(WRITE_TIMEOUT, stream.write_all(&bytes)).await;
                        if !matches!(sent, Some(Ok(()))) || e.fatal {
                            break 'conn;
                        }
                        // The refused request is dropped, also the part of its body still
                        // to come; the connection and its stream go on.
                        request_started = None;
                        let now = e.skip.min(buf.len());
                        buf.drain(..now);
                        discard = e.skip - now;
                    }
                }
            }
            // The clock of a partly received request starts with its first byte.
            if buf.is_empty() && discard == 0 {
                request_started = None;
            } else if request_started.is_none() {
                request_started = Some(Instant::now());
            }
            let streaming = session.holds_speaker() && self.owns(id) && self.has_stream(id);
            let idle_limit = if session.holds_speaker() {
                self.cfg.session_timeout
            } else {
                IDLE_CONNECTION
            };
            let read = async { Some(stream.read(&mut chunk).await) };
            let idle = async {
                Timer::after(idle_limit).await;
                None
            };
            let incomplete = async {
                match request_started {
                    Some(t) => Timer::at(t + REQUEST_TIMEOUT).await,
                    None => future::pending().await,
                };
                Some(Err(std::io::Error::from(std::io::ErrorKind::TimedOut)))
            };
            let read = future::or(read, incomplete);
            let kicked = async {
                let why = kick_rx.recv().await.unwrap_or("closed");
                Some(Err(std::io::Error::other(why)))
            };
            match future::or(kicked, future::or(read, idle)).await {
                Some(Ok(0)) => break,
                Some(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    log::info!(
                        "{peer}: request not complete {REQUEST_TIMEOUT:?} after its first byte: closing"
                    );
                    let refusal = crate::rtsp::Response::new(408, "Request Timeout")
                        .header("Connection", "close")
                        .to_bytes("RTSP/1.0");
                    let _ = timed(WRITE_TIMEOUT, stream.write_all(&refusal)).await;
                    break;
                }
                Some(Err(e)) => {
                    log::info!("{peer}: {e}");
                    break;
                }
                Some(Ok(n)) => {
                    let dropped = discard.min(n);
                    discard -= dropped;
                    buf.extend_from_slice(&chunk[dropped..n]);
                }
                // While audio flows the stream watches the sender (its own timeout).
                None if streaming => {}
                None => {
                    log::info!("{peer}: silent for {idle_limit:?}: closing");
                    break;
                }
            }
        }
        session.closed(&mut ConnIo {
            d: &self,
            id,
            iface: iface.as_deref(),
        });
        self.speaker.borrow_mut().kick.retain(|(c, _)| *c != id);
        log::info!("{peer}: disconnected");
    }

    fn has_stream(&self, id: u64) -> bool {
        self.speaker
            .borrow()
            .stream
            .as_ref()
            .is_some_and(|s| s.owner == id)
    }

    fn owns(&self, id: u64) -> bool {
        self.speaker.borrow().owner == Some(id)
    }

    fn send(&self, id: u64, cmd: Cmd) {
        let sp = self.speaker.borrow();
        if let Some(s) = sp.stream.as_ref().filter(|s| s.owner == id) {
            let _ = s.cmds.try_send(cmd);
        }
    }

    /// Frees the speaker: no owner, sender or now-playing any more.
    fn release(sp: &mut Speaker) {
        sp.owner = None;
        sp.sender = None;
        sp.remote = None;
        sp.now_playing.clear();
    }

    /// Stops the current stream (its task returns the resources to the pool).
    fn stop_stream(sp: &mut Speaker) {
        if let Some(s) = sp.stream.take() {
            let _ = s.cmds.try_send(Cmd::Stop);
        }
    }

    /// Binds one UDP socket on all addresses, tied to `iface` when given: an ephemeral port,
    /// or the first free one of the `--udp-port-base` range (checked at start to lie within
    /// 65535).
    fn bind_udp(&self, iface: Option<&str>) -> std::io::Result<UdpSocket> {
        let base = self.cfg.udp_port_base;
        if base == 0 {
            return crate::bind::udp_socket(iface, 0);
        }
        let mut last = None;
        for port in base..=base.saturating_add(crate::config::UDP_PORT_RANGE - 1) {
            match crate::bind::udp_socket(iface, port) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no UDP port free")))
    }
}

/// The [`SessionIo`] of one connection.
struct ConnIo<'a> {
    d: &'a Rc<Daemon>,
    id: u64,
    /// The interface the connection came in on, with `--interface`.
    iface: Option<&'a str>,
}

impl SessionIo for ConnIo<'_> {
    fn ready(&mut self) -> Result<(), String> {
        self.d.check_output()
    }

    fn claim(&mut self) -> bool {
        let mut sp = self.d.speaker.borrow_mut();
        match sp.owner {
            None => {}
            Some(o) if o == self.id => {}
            Some(old) if self.d.cfg.interruption == Interruption::Allow => {
                log::info!("a new sender takes over the speaker");
                Daemon::stop_stream(&mut sp);
                // The old sender's connection is closed, which it sees as the end.
                if let Some((_, k)) = sp.kick.iter().find(|(c, _)| *c == old) {
                    let _ = k.try_send("taken over");
                }
            }
            Some(_) => return false,
        }
        sp.owner = Some(self.id);
        true
    }

    fn setup(&mut self, setup: StreamSetup) -> std::io::Result<UdpPorts> {
        if !self.d.owns(self.id) {
            return Err(std::io::Error::other("speaker taken over"));
        }
        let socks = Sockets {
            audio: Async::new(self.d.bind_udp(self.iface)?)?,
            control: Async::new(self.d.bind_udp(self.iface)?)?,
            timing: Async::new({
                let timing = self.d.bind_udp(self.iface)?;
                player::stamp_arrivals(&timing);
                timing
            })?,
        };
        let ports = UdpPorts {
            audio: socks.audio.get_ref().local_addr()?.port(),
            control: socks.control.get_ref().local_addr()?.port(),
            timing: socks.timing.get_ref().local_addr()?.port(),
        };
        let (tx, rx) = async_channel::unbounded();
        let stats = Rc::new(RefCell::new(StreamStats::default()));
        let cfg = player::PlayerConfig {
            default_latency_frames: (self.d.cfg.latency.as_millis() as u64 * u64::from(crate::RATE)
                / 1000) as u32,
            latency_offset_ms: self.d.cfg.latency_offset_ms,
            session_timeout: self.d.cfg.session_timeout,
            period: player::DEFAULT_PERIOD,
        };
        let mut sp = self.d.speaker.borrow_mut();
        Daemon::stop_stream(&mut sp);
        sp.next_conn += 1;
        let serial = sp.next_conn;
        sp.stream = Some(StreamHandle {
            owner: self.id,
            serial,
            cmds: tx,
            stats: stats.clone(),
        });
        let volume = sp.volume;
        sp.sender = Some(setup.client_ip);
        sp.remote = match (&setup.dacp_id, &setup.active_remote) {
            (Some(id), Some(ar)) => match Remote::new(id, ar, setup.client_ip) {
                Ok(r) => Some(Rc::new(r)),
                Err(e) => {
                    log::info!("no remote control: {e}");
                    None
                }
            },
            _ => None,
        };
        drop(sp);
        log::info!(
            "stream set up: audio {} control {} timing {}",
            ports.audio,
            ports.control,
            ports.timing
        );
        let d = self.d.clone();
        let id = self.id;
        let pool = d.pool.clone();
        self.d
            .ex
            .spawn(async move {
                let end = player::run(setup, socks, cfg, rx, pool, stats, volume).await;
                log::info!("stream ended: {end:?}");
                d.hooks.borrow_mut().audio_stopped(Instant::now());
                let mut sp = d.speaker.borrow_mut();
                if sp.stream.as_ref().is_some_and(|s| s.serial == serial) {
                    sp.stream = None;
                }
                match end {
                    End::Timeout if sp.owner == Some(id) => {
                        // A vanished sender frees the speaker.
                        sp.owner = None;
                    }
                    End::SinkFailed(e) => {
                        let problem = crate::output::failure(&d.cfg.output, &e);
                        log::error!(
                            "{problem}; closing the sender's connection, and refusing senders \
                             with 503 until the output works again"
                        );
                        *d.output_problem.borrow_mut() = Some(problem);
                        if sp.owner == Some(id) {
                            Daemon::release(&mut sp);
                        }
                        // The sender sees its connection closed (the speaker gone) instead of
                        // playing on into silence.
                        if let Some((_, k)) = sp.kick.iter().find(|(c, _)| *c == id) {
                            let _ = k.try_send("output failed");
                        }
                    }
                    _ => {}
                }
            })
            .detach();
        Ok(ports)
    }

    fn record(&mut self, start: Option<(u16, u32)>) {
        self.d.send(self.id, Cmd::Record(start));
        if self.d.owns(self.id) {
            let sender = self.d.speaker.borrow().sender;
            self.d.hooks.borrow_mut().audio_started(sender);
        }
    }

    fn flush(&mut self, until: Option<(u16, u32)>) {
        self.d.send(self.id, Cmd::Flush(until));
        if self.d.owns(self.id) {
            self.d.hooks.borrow_mut().audio_stopped(Instant::now());
        }
    }

    fn set_volume(&mut self, db: f32) {
        if self.d.owns(self.id) {
            self.d.speaker.borrow_mut().volume = db;
            self.d.send(self.id, Cmd::Volume(db));
        }
    }

    fn volume(&self) -> f32 {
        self.d.speaker.borrow().volume
    }

    fn metadata(&mut self, dmap: &[u8]) {
        if self.d.owns(self.id) {
            if let Err(e) = self.d.speaker.borrow_mut().now_playing.apply_dmap(dmap) {
                log::info!("metadata ignored: {e}");
            }
        }
    }

    fn artwork(&mut self, content_type: &str, data: &[u8]) {
        if self.d.owns(self.id) {
            let mut sp = self.d.speaker.borrow_mut();
            sp.now_playing.set_artwork(content_type, data);
        }
    }

    fn progress(&mut self, start: u32, current: u32, end: u32) {
        if self.d.owns(self.id) {
            let mut sp = self.d.speaker.borrow_mut();
            sp.now_playing.set_progress(start, current, end);
        }
    }

    fn teardown(&mut self) {
        let mut sp = self.d.speaker.borrow_mut();
        if sp.owner == Some(self.id) {
            Daemon::release(&mut sp);
            Daemon::stop_stream(&mut sp);
            drop(sp);
            self.d.hooks.borrow_mut().audio_stopped(Instant::now());
        }
    }
}

impl ControlHandler for Daemon {
    fn status_json(&self) -> String {
        let sp = self.speaker.borrow();
        let stats = sp.stream.as_ref().map(|s| s.stats.borrow().clone());
        control::status_json(
            &control::Status {
                name: &self.cfg.name,
                port: self.cfg.port,
                version: env!("CARGO_PKG_VERSION"),
                playing: sp.stream.is_some(),
                sender: sp.sender,
                volume_db: sp.volume,
                remote_control: sp.remote.is_some(),
                now_playing: &sp.now_playing,
                stats: stats.as_ref(),
                uptime_s: self.started.elapsed().as_secs(),
            },
            Instant::now(),
        )
    }

    fn remote(&self, cmd: RemoteCommand) -> future::BoxedLocal<Result<(), String>> {
        let remote = self.speaker.borrow().remote.clone();
        Box::pin(async move {
            match remote {
                Some(r) => r.send(cmd).await.map_err(|e| e.to_string()),
                None => Err("no sender offers remote control".into()),
            }
        })
    }
}
