//! The daemon's I/O edge: the RTSP listener and one task per connection. Each task feeds
//! its connection's requests to a sans-IO [`Session`] and carries out what comes back (the
//! effects and questions, see [`crate::rtsp::session`]); the state the connections share
//! (who holds the speaker, take-over, timeouts, the volume, the output's health) is the
//! sans-IO [`Speaker`], whose decisions ([`Action`]) are carried out here too. Everything
//! runs on one `LocalExecutor` on the main thread; shared state is `Rc<RefCell<…>>`.

use crate::buffer::JitterBuffer;
use crate::config::Config;
use crate::control::{self, ControlHandler, Hooks, Remote, RemoteCommand};
use crate::crypto::AirportKey;
use crate::output::{ProbeError, Sink};
use crate::player::{self, Cmd, End, Pool, Resources, Sockets};
use crate::reactor::{Async, Timer};
use crate::rtsp::{
    parse_request, Answer, Claim, ConnectionInfo, Effect, Question, Reply, Session, StreamSetup,
    UdpPorts,
};
use crate::speaker::{Action, ConnId, Speaker, SpeakerConfig, StreamEnd, IDLE_CONNECTION};
use crate::stream::StreamStats;
use async_executor::LocalExecutor;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use std::cell::RefCell;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::rc::Rc;
use std::time::{Duration, Instant};

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

/// The edge's side of a running stream, kept by the [`Speaker`].
struct StreamHandle {
    cmds: async_channel::Sender<Cmd>,
    stats: Rc<RefCell<StreamStats>>,
}

pub struct Daemon {
    pub cfg: Config,
    pub mac: [u8; 6],
    key: AirportKey,
    speaker: RefCell<Speaker<StreamHandle, Rc<Remote>>>,
    /// Per connection: a channel that closes it, with the reason for the log (a sender taken
    /// over by another, an output that failed under it).
    kick: RefCell<Vec<(ConnId, async_channel::Sender<&'static str>)>>,
    pool: Pool,
    ex: Rc<LocalExecutor<'static>>,
    pub hooks: Rc<RefCell<Hooks>>,
    /// When the daemon started, for its uptime.
    started: Instant,
}

/// Frames the jitter buffer holds: the audio a sender sends ahead, which is played its
/// latency after it is sent, plus 1 s for bursts and resends. The latency assumed is the
/// larger of `--latency-ms` and 2 s (what every tested sender states; iTunes and AirPort-era
/// senders too), plus the 11025 frames a receiver adds ([`crate::clock::AUDIO_LATENCY`]), plus
/// a positive `--latency-offset-ms`, which holds every packet longer. A stated latency beyond
/// that overflows the buffer, which then restarts at the newest packet (counted as a resync).
fn buffer_frames(cfg: &Config) -> usize {
    let rate = crate::RATE as usize;
    let ms = |ms: u64| ms as usize * rate / 1000;
    let latency = ms(cfg.latency.as_millis() as u64).max(2 * rate);
    let offset = ms(cfg.latency_offset_ms.max(0) as u64);
    latency + crate::clock::AUDIO_LATENCY as usize + offset + rate
}

impl Daemon {
    /// Builds the daemon around an opened sink; allocates the jitter buffer once.
    pub fn new(
        cfg: Config,
        mac: [u8; 6],
        sink: Box<dyn Sink>,
        ex: Rc<LocalExecutor<'static>>,
    ) -> Rc<Self> {
        let buffer = JitterBuffer::with_capacity_frames(buffer_frames(&cfg));
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
            speaker: RefCell::new(Speaker::new(SpeakerConfig {
                interruption: cfg.interruption,
                session_timeout: cfg.session_timeout,
                idle_timeout: IDLE_CONNECTION,
                max_connections: MAX_RTSP_CONNECTIONS,
                wait_for_output: cfg.wait_for_output,
                output: cfg.output.to_string(),
            })),
            kick: RefCell::new(Vec::new()),
            pool: Pool::new(Resources { sink, buffer }),
            cfg,
            mac,
            ex,
            started: Instant::now(),
        })
    }

    /// Records that the output could not be opened at start (`--wait-for-output`): senders
    /// are refused with the cause until a new session finds it working.
    pub fn set_output_problem(&self, problem: Option<ProbeError>) {
        self.speaker.borrow_mut().set_output_problem(problem);
    }

    /// With `--wait-for-output`, or after the output failed under a stream, checks the output
    /// again before a new stream (while no stream holds it): the USB DAC may have appeared,
    /// come back, or gone. `Err` holds the cause for the sender.
    fn check_output(&self) -> Result<(), String> {
        if !self.speaker.borrow().output_check_due() {
            return Ok(());
        }
        let verdict = crate::output::probe(&self.cfg.output);
        self.speaker.borrow_mut().output_checked(verdict)
    }

    /// Carries out the speaker's decisions.
    fn act(&self) {
        let actions: Vec<_> = {
            let mut sp = self.speaker.borrow_mut();
            std::iter::from_fn(|| sp.poll_action()).collect()
        };
        for a in actions {
            match a {
                Action::Close { conn, why } => {
                    if let Some((_, k)) = self.kick.borrow().iter().find(|(c, _)| *c == conn) {
                        let _ = k.try_send(why);
                    }
                }
                Action::StopStream(s) => {
                    let _ = s.cmds.try_send(Cmd::Stop);
                }
                Action::AudioStarted(sender) => self.hooks.borrow_mut().audio_started(sender),
                Action::AudioStopped => self.hooks.borrow_mut().audio_stopped(Instant::now()),
            }
        }
    }

    /// An mDNS response seen on the responder's port 5353: if it announces the current
    /// sender's DACP server, the remote control learns its address from it. Senders whose
    /// responder answers by multicast only are found this way (the one-shot lookup from an
    /// ephemeral port never hears them).
    pub fn mdns_response(&self, src: SocketAddr, packet: &[u8]) {
        let remote = self.speaker.borrow().remote().cloned();
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
        if self.speaker.borrow().stream().is_some() {
            log::info!("output {} in use by the current stream", self.cfg.output);
            return;
        }
        let verdict = crate::output::probe(&self.cfg.output);
        match &verdict {
            Ok(()) => log::warn!("output {} works", self.cfg.output),
            Err(p) => log::warn!("{p}"),
        }
        self.speaker.borrow_mut().output_rechecked(verdict);
    }

    /// Statistics of the current stream, if any.
    pub fn stream_stats(&self) -> Option<StreamStats> {
        self.speaker
            .borrow()
            .stream()
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
            let id = self.speaker.borrow_mut().open(Instant::now());
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
                    d.speaker.borrow_mut().close(id);
                })
                .detach();
        }
    }

    async fn connection(
        self: Rc<Self>,
        mut stream: Async<TcpStream>,
        peer: SocketAddr,
        id: ConnId,
        iface: Option<Rc<str>>,
    ) {
        let local = match stream.get_ref().local_addr() {
            Ok(a) => a,
            Err(_) => return,
        };
        log::info!("{peer}: connected");
        let _ = stream.get_ref().set_nodelay(true);
        let (kick_tx, kick_rx) = async_channel::bounded::<&'static str>(1);
        self.kick.borrow_mut().push((id, kick_tx));
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
                        let resp = match session.handle(&req, &self.key) {
                            Reply::Done(resp) => resp,
                            Reply::Ask(q) => {
                                let a = self.answer(id, iface.as_deref(), q);
                                session.answer(a)
                            }
                        };
                        self.carry_out(id, &mut session);
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
            let deadline = {
                let mut sp = self.speaker.borrow_mut();
                sp.activity(id, Instant::now());
                sp.poll_timeout(id)
            };
            let read = async { Some(stream.read(&mut chunk).await) };
            let idle = async {
                match deadline {
                    Some(t) => Timer::at(t).await,
                    None => future::pending().await,
                };
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
                // Silent until the deadline: closed, unless its stream is running (then the
                // stream watches the sender and the speaker re-arms the timer).
                None => {
                    let due = self.speaker.borrow_mut().handle_timeout(id, Instant::now());
                    if let Some(limit) = due {
                        log::info!("{peer}: silent for {limit:?}: closing");
                        break;
                    }
                }
            }
        }
        session.closed();
        self.carry_out(id, &mut session);
        self.kick.borrow_mut().retain(|(c, _)| *c != id);
        log::info!("{peer}: disconnected");
    }

    /// The answer to a session's question, worked out with the speaker and the sockets.
    fn answer(self: &Rc<Self>, id: ConnId, iface: Option<&str>, q: Question) -> Answer {
        match q {
            Question::Claim => Answer::Claim(match self.check_output() {
                Err(cause) => Claim::Unavailable(cause),
                Ok(()) => {
                    let granted = self.speaker.borrow_mut().claim(id);
                    self.act();
                    if granted {
                        Claim::Granted
                    } else {
                        Claim::Busy
                    }
                }
            }),
            Question::Setup(setup) => Answer::Setup(
                self.setup_stream(id, iface, setup)
                    .map_err(|e| e.to_string()),
            ),
            Question::Volume => Answer::Volume(self.speaker.borrow().volume()),
        }
    }

    /// Carries out the session's effects (before its response is written).
    fn carry_out(&self, id: ConnId, session: &mut Session) {
        while let Some(effect) = session.poll_effect() {
            let mut sp = self.speaker.borrow_mut();
            let send = |sp: &Speaker<StreamHandle, Rc<Remote>>, cmd: Cmd| {
                if let Some(s) = sp.stream_of(id) {
                    let _ = s.cmds.try_send(cmd);
                }
            };
            match effect {
                Effect::Record(start) => {
                    send(&sp, Cmd::Record(start));
                    sp.record(id);
                }
                Effect::Flush(until) => {
                    send(&sp, Cmd::Flush(until));
                    sp.flush(id);
                }
                Effect::Volume(db) => {
                    if sp.set_volume(id, db) {
                        send(&sp, Cmd::Volume(db));
                    }
                }
                Effect::Metadata(dmap) => sp.metadata(id, &dmap),
                Effect::Artwork { content_type, data } => sp.artwork(id, &content_type, &data),
                Effect::Progress {
                    start,
                    current,
                    end,
                } => sp.progress(id, start, current, end),
                Effect::Teardown => sp.teardown(id),
            }
            drop(sp);
            self.act();
        }
    }

    /// SETUP: binds the stream's UDP sockets (tied to `iface` when given) and starts its
    /// task; the ports for the sender.
    fn setup_stream(
        self: &Rc<Self>,
        id: ConnId,
        iface: Option<&str>,
        setup: StreamSetup,
    ) -> std::io::Result<UdpPorts> {
        if !self.speaker.borrow().owns(id) {
            return Err(std::io::Error::other("speaker taken over"));
        }
        let socks = Sockets {
            audio: Async::new(self.bind_udp(iface)?)?,
            control: Async::new(self.bind_udp(iface)?)?,
            timing: Async::new({
                let timing = self.bind_udp(iface)?;
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
            default_latency_frames: (self.cfg.latency.as_millis() as u64 * u64::from(crate::RATE)
                / 1000) as u32,
            latency_offset_ms: self.cfg.latency_offset_ms,
            session_timeout: self.cfg.session_timeout,
            period: player::DEFAULT_PERIOD,
        };
        let remote = match (&setup.dacp_id, &setup.active_remote) {
            (Some(id), Some(ar)) => match Remote::new(id, ar, setup.client_ip) {
                Ok(r) => Some(Rc::new(r)),
                Err(e) => {
                    log::info!("no remote control: {e}");
                    None
                }
            },
            _ => None,
        };
        let handle = StreamHandle {
            cmds: tx,
            stats: stats.clone(),
        };
        let (serial, volume) =
            self.speaker
                .borrow_mut()
                .stream_started(id, setup.client_ip, remote, handle);
        self.act();
        log::info!(
            "stream set up: audio {} control {} timing {}",
            ports.audio,
            ports.control,
            ports.timing
        );
        let d = self.clone();
        let pool = d.pool.clone();
        self.ex
            .spawn(async move {
                let end = player::run(setup, socks, cfg, rx, pool, stats, volume).await;
                log::info!("stream ended: {end:?}");
                let end = match end {
                    End::Stopped => StreamEnd::Stopped,
                    End::Timeout => StreamEnd::SenderGone,
                    End::SinkFailed(e) => {
                        let problem = crate::output::failure(&d.cfg.output, &e);
                        log::error!(
                            "{problem}; closing the sender's connection, and refusing senders \
                             with 503 until the output works again"
                        );
                        StreamEnd::OutputFailed(problem)
                    }
                };
                d.speaker.borrow_mut().stream_ended(id, serial, end);
                d.act();
            })
            .detach();
        Ok(ports)
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

impl ControlHandler for Daemon {
    fn status_json(&self) -> String {
        let sp = self.speaker.borrow();
        let stats = sp.stream().map(|s| s.stats.borrow().clone());
        control::status_json(
            &control::Status {
                name: &self.cfg.name,
                port: self.cfg.port,
                version: env!("CARGO_PKG_VERSION"),
                playing: sp.stream().is_some(),
                sender: sp.sender(),
                volume_db: sp.volume(),
                remote_control: sp.remote().is_some(),
                now_playing: sp.now_playing(),
                stats: stats.as_ref(),
                uptime_s: self.started.elapsed().as_secs(),
            },
            Instant::now(),
        )
    }

    fn remote(&self, cmd: RemoteCommand) -> future::BoxedLocal<Result<(), String>> {
        let remote = self.speaker.borrow().remote().cloned();
        Box::pin(async move {
            match remote {
                Some(r) => r.send(cmd).await.map_err(|e| e.to_string()),
                None => Err("no sender offers remote control".into()),
            }
        })
    }
}
