//! One stream's I/O edge: its three UDP sockets, the sink, and the timers, driven on the
//! reactor thread. It feeds packets into the sans-IO cores (jitter buffer, clock model,
//! renderer) and carries out what they ask for (resend and timing requests, writes).

mod render;

pub use render::{RenderStats, Renderer};

use crate::buffer::{BufferStats, Insert, JitterBuffer};
use crate::clock::{
    instant_of, ns_of as local_ns, ClockConfig, ClockModel, ClockStats, LatencyRule,
};
use crate::codec::Decoder;
use crate::crypto::AudioCipher;
use crate::output::wait::SPURIOUS_BACKOFF;
use crate::output::{Mixer, Sink, SoftMixer, Waiter};
use crate::reactor::{Async, Timer};
use crate::rtp::{self, payload_type as pt};
use crate::rtsp::StreamSetup;
use futures_lite::Stream as _;
use std::cell::RefCell;
use std::future::Future as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// How often stream statistics are logged at debug level.
const STATS_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// After the output fails mid-stream (a USB DAC unplugged, an ALSA PCM whose file or pipe
/// went away), the stream is kept (sockets, jitter buffer, clock) and the sink is opened
/// again this often: once a second, from a timer, never in a busy loop.
pub const OUTPUT_RETRY: Duration = Duration::from_secs(1);
/// How long a failed output is retried before the stream ends (10 s). The sender is then
/// told: its RTSP connection is closed, and new senders get `503` with the cause until the
/// output works again (see `server`). A DAC that is plugged back in within this resumes
/// the stream at the position the sender's clock says, as if nothing happened.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(10);
/// The output counts as working again once it has taken this much audio (1 s, in frames)
/// after it was reopened without failing: some devices open fine and fail only at the first
/// writes (alsa-lib's `file` plugin with an unwritable file fails once a buffer is full).
const RECOVERED_FRAMES: u64 = crate::RATE as u64;

/// Commands from the RTSP session to its stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cmd {
    Record(Option<(u16, u32)>),
    Flush(Option<(u16, u32)>),
    Volume(f32),
    Stop,
}

/// The speaker's long-lived parts, handed from stream to stream: allocated once.
pub struct Resources {
    pub sink: Box<dyn Sink>,
    pub buffer: JitterBuffer,
}

/// A one-slot channel holding [`Resources`]: a stream takes them when it starts and puts
/// them back when it ends, so a new stream waits for the old one to let go.
#[derive(Clone)]
pub struct Pool {
    pub tx: async_channel::Sender<Resources>,
    pub rx: async_channel::Receiver<Resources>,
}

impl Pool {
    pub fn new(res: Resources) -> Self {
        let (tx, rx) = async_channel::bounded(1);
        let _ = tx.try_send(res);
        Pool { tx, rx }
    }
}

#[derive(Debug, Clone)]
pub struct PlayerConfig {
    pub default_latency_frames: u32,
    pub latency_offset_ms: i64,
    /// No packet from the sender for this long ends the stream.
    pub session_timeout: Duration,
    /// While the output runs, the loop wakes at least this often to write to the sink and to
    /// take in the audio packets that arrived meanwhile (40 ms by default: about 5 packets a
    /// wakeup; streams whose latency leaves no room for that are read packet by packet).
    pub period: Duration,
}

/// [`PlayerConfig::period`] unless configured.
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(40);

/// A stream's statistics, shared with the status interface.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    pub buffer: BufferStats,
    pub render: RenderStats,
    pub clock: Option<ClockStats>,
    pub garbage_packets: u64,
    pub foreign_packets: u64,
    /// Timing requests sent to the sender.
    pub timing_requests: u64,
    pub decode_errors: u64,
    pub underruns: u64,
}

impl StreamStats {
    /// One line of `key=value` pairs: logged when a stream ends (tests read it) and
    /// periodically at debug level.
    pub fn summary(&self) -> String {
        let (b, r) = (&self.buffer, &self.render);
        let c = self.clock.as_ref();
        format!(
            "start_error_us={} sync_error_us={} max_sync_error_us={} frames_inserted={} frames_dropped={} resyncs={} \
             frames_written={} silence_frames={} received={} lost={} late={} duplicates={} requested={} recovered={} \
             resend_requests={} underruns={} decode_errors={} garbage_packets={} foreign_packets={} drift_ppm={:.1} \
             clock_offset_samples={} timing_requests={} latency_frames={} sync_outliers={} reanchors={} \
             late_restarts={} late_delay_ms={}",
            r.start_error_us,
            r.sync_error_us,
            r.max_sync_error_us,
            r.frames_inserted,
            r.frames_dropped,
            r.resyncs,
            r.frames_written,
            r.silence_frames,
            b.received,
            b.lost,
            b.late,
            b.duplicates,
            b.requested,
            b.recovered,
            b.resend_requests,
            self.underruns,
            self.decode_errors,
            self.garbage_packets,
            self.foreign_packets,
            c.map_or(0.0, |c| c.drift_ppm),
            c.map_or(0, |c| c.samples),
            self.timing_requests,
            c.map_or(0, |c| c.latency_frames),
            c.map_or(0, |c| c.sync_outliers),
            c.map_or(0, |c| c.reanchors),
            r.late_restarts,
            r.late_delay_ms,
        )
    }
}

/// Why a stream ended.
#[derive(Debug)]
pub enum End {
    Stopped,
    /// The sender went silent for longer than the session timeout.
    Timeout,
    /// The sink failed and still failed after [`OUTPUT_GRACE`] of retries: the last error.
    SinkFailed(std::io::Error),
}

/// A failed output being retried (see [`OUTPUT_GRACE`]).
struct Outage {
    /// When the output first failed.
    since: Instant,
    /// When to open it again.
    retry_at: Instant,
    /// The renderer's `frames_written` when the sink was last reopened, once it was.
    reopened_at_frames: Option<u64>,
}

/// The UDP sockets of a stream, bound at SETUP.
pub struct Sockets {
    pub audio: Async<UdpSocket>,
    pub control: Async<UdpSocket>,
    pub timing: Async<UdpSocket>,
}

struct Stream {
    setup: StreamSetup,
    decoder: Decoder,
    cipher: Option<AudioCipher>,
    clock: ClockModel,
    renderer: Renderer,
    mixer: SoftMixer,
    control_peer: Option<SocketAddr>,
    timing_peer: Option<SocketAddr>,
    stats: Rc<RefCell<StreamStats>>,
    last_heard: Instant,
    first_packet_seen: bool,
    /// A timing reply has come with the kernel's arrival stamp (logged once).
    stamped: bool,
    /// The sink's underrun count when the stream started.
    underruns_before: u64,
}

/// Runs one stream until it is stopped, times out or its sink fails. Takes the
/// resources from `pool` first and always puts them back.
pub async fn run(
    setup: StreamSetup,
    socks: Sockets,
    cfg: PlayerConfig,
    cmds: async_channel::Receiver<Cmd>,
    pool: Pool,
    stats: Rc<RefCell<StreamStats>>,
    volume_db: f32,
) -> End {
    let Ok(mut res) = pool.rx.recv().await else {
        return End::Stopped;
    };
    let end = run_with(&mut res, setup, socks, cfg, cmds, stats.clone(), volume_db).await;
    log::info!("stream summary: {}", stats.borrow().summary());
    res.sink.stop();
    let _ = pool.tx.try_send(res);
    end
}

/// What woke the stream loop.
#[derive(Default)]
struct Ready {
    audio: bool,
    control: bool,
    timing: bool,
    sink: bool,
    cmd: Option<Option<Cmd>>,
}

/// The edge loop, in the str0m shape: wait once for any of the sources (the three sockets,
/// the command channel, the sink's descriptors, one reusable timer), then drain every ready
/// socket until it would block, feed the cores, send what they ask for, write to the sink,
/// and sleep again. No future or timer is built per iteration and the timer is re-armed only
/// when its deadline changes, so each wakeup costs the reactor's own handful of system calls
/// plus the reads and writes themselves.
///
/// While the output runs, the audio socket is not watched: it is drained at every wakeup,
/// and wakeups come at least every [`PlayerConfig::period`], so audio packets are taken in
/// batches (about 5 per 40 ms) instead of one wakeup each. Before the output starts, when the
/// stream's latency is too short for batches (less than three periods beyond what the
/// renderer commits ahead), and always for the control and timing sockets (timing replies
/// are stamped on arrival), each packet wakes the loop at once.
async fn run_with(
    res: &mut Resources,
    setup: StreamSetup,
    socks: Sockets,
    cfg: PlayerConfig,
    cmds: async_channel::Receiver<Cmd>,
    stats: Rc<RefCell<StreamStats>>,
    volume_db: f32,
) -> End {
    let mut cmds = std::pin::pin!(cmds);
    let Resources { sink, buffer } = res;
    let sink: &mut dyn Sink = sink.as_mut();
    buffer.reset(setup.format.frames_per_packet as usize);
    // The buffer and the sink outlive the stream: its statistics start from zero.
    buffer.stats = Default::default();
    let underruns_before = sink.underruns();
    let decoder = match Decoder::new(&setup.format) {
        Ok(d) => d,
        Err(e) => {
            log::error!("cannot build decoder: {e}");
            return End::Stopped;
        }
    };
    let now = Instant::now();
    let mut mixer = SoftMixer::default();
    mixer.set_volume(volume_db);
    let peer = |port: u16| (port != 0).then_some(SocketAddr::new(setup.client_ip, port));
    let mut s = Stream {
        cipher: setup.aes.map(|(k, iv)| AudioCipher::new(k, iv)),
        decoder,
        clock: ClockModel::new(
            ClockConfig {
                sample_rate: crate::RATE,
                timing_interval_ns: 3_000_000_000,
                output_offset_ns: cfg.latency_offset_ms * 1_000_000,
                default_latency_frames: cfg.default_latency_frames,
                latency: LatencyRule {
                    airplay_version: setup.airplay_version,
                    min_frames: setup.min_latency,
                    max_frames: setup.max_latency,
                    ..LatencyRule::default()
                },
            },
            local_ns(now),
        ),
        renderer: Renderer::new(),
        mixer,
        control_peer: peer(setup.client_control_port),
        timing_peer: peer(setup.client_timing_port),
        setup,
        stats,
        last_heard: now,
        first_packet_seen: false,
        stamped: false,
        underruns_before,
    };
    let mut abuf = vec![0u8; 2048];
    let mut cbuf = vec![0u8; 2048];
    let mut tbuf = [0u8; 128];
    let mut waiter: Option<Waiter> = None;
    // Until then the sink's descriptors are not watched (after a wakeup it refused).
    let mut sink_backoff: Option<Instant> = None;
    let mut timer = Timer::never();
    let mut armed: Option<Instant> = None;
    let mut last_report = now;
    let mut outage: Option<Outage> = None;
    loop {
        let now = Instant::now();
        if now.duration_since(s.last_heard) > cfg.session_timeout {
            log::warn!(
                "sender silent for {:?}: ending the stream",
                cfg.session_timeout
            );
            return End::Timeout;
        }
        s.send_requests(now, buffer, &socks);
        let was_started = s.renderer.is_started();
        let volume = &s.mixer;
        let clock = &s.clock;
        let due_of = |ts| clock.local_time_of(ts).map(instant_of);
        // While the output is down, the sink is opened again only when a retry is due; in
        // between, audio falls due unheard.
        let retry_due = outage.as_ref().is_none_or(|o| now >= o.retry_at);
        let wake = if retry_due {
            match s
                .renderer
                .pump(now, sink, buffer, &due_of, &|f| volume.apply(f))
            {
                Ok(w) => w,
                Err(e) => {
                    s.renderer.halt(sink);
                    match &mut outage {
                        None => {
                            log::warn!(
                                "{}: {e}: output failed; keeping the stream and opening the \
                                 output again every {} s for up to {} s",
                                sink.describe(),
                                OUTPUT_RETRY.as_secs(),
                                OUTPUT_GRACE.as_secs()
                            );
                            outage = Some(Outage {
                                since: now,
                                retry_at: now + OUTPUT_RETRY,
                                reopened_at_frames: None,
                            });
                        }
                        Some(o) if now.duration_since(o.since) >= OUTPUT_GRACE => {
                            log::error!(
                                "{}: {e}: still failing after {} s: ending the stream",
                                sink.describe(),
                                OUTPUT_GRACE.as_secs()
                            );
                            return End::SinkFailed(e);
                        }
                        Some(o) => {
                            log::debug!("{}: still failing: {e}", sink.describe());
                            o.retry_at = now + OUTPUT_RETRY;
                            o.reopened_at_frames = None;
                        }
                    }
                    None
                }
            }
        } else {
            s.renderer.discard_due(now, buffer, &due_of);
            None
        };
        if let Some(o) = &mut outage {
            if s.renderer.is_started() {
                let written = s.renderer.stats.frames_written;
                let mark = *o.reopened_at_frames.get_or_insert(written);
                if written.saturating_sub(mark) >= RECOVERED_FRAMES {
                    log::warn!(
                        "{}: works again after {} ms; playback resumed at the stream's position",
                        sink.describe(),
                        now.duration_since(o.since).as_millis()
                    );
                    outage = None;
                }
            }
        }
        let started = s.renderer.is_started();
        if started && !was_started {
            waiter = Some(Waiter::new(sink));
            sink_backoff = None;
        } else if !started && was_started {
            // The renderer stopped the sink (resync): its descriptors are gone.
            waiter = None;
        }
        s.publish_stats(buffer, sink);
        if log::log_enabled!(log::Level::Debug)
            && now.duration_since(last_report) >= STATS_LOG_INTERVAL
        {
            last_report = now;
            log::debug!("stream: {}", s.stats.borrow().summary());
        }

        // Audio packets are taken in batches only while the stream's latency leaves room
        // for it: a real-time sender with a short latency (PipeWire: 250 ms) is read as
        // packets come.
        let latency = Duration::from_nanos(
            u64::from(s.clock.latency_frames()) * 1_000_000_000 / u64::from(crate::RATE),
        );
        let batch = started && latency.saturating_sub(Renderer::lead(sink)) > 3 * cfg.period;
        // The one timer: the earliest thing due.
        let mut deadline = s.last_heard + cfg.session_timeout;
        if started {
            deadline = deadline.min(now + cfg.period);
        }
        if let Some(o) = &outage {
            // Retries, and the audio falling due meanwhile, are dropped at the pace of
            // periods.
            deadline = deadline.min(o.retry_at).min(now + cfg.period);
        }
        for t in [
            wake,
            s.clock.poll_timeout().map(instant_of),
            buffer.poll_timeout().map(instant_of),
            sink_backoff,
        ]
        .into_iter()
        .flatten()
        {
            deadline = deadline.min(t);
        }
        // Re-arming costs the reactor a notification: only when the deadline moves earlier
        // (waking early is harmless, the loop just looks again).
        if armed.is_none_or(|a| deadline < a) {
            timer.set_at(deadline);
            armed = Some(deadline);
        }
        let watch_sink = started && sink_backoff.is_none_or(|t| now >= t);
        let ready = std::future::poll_fn(|cx| {
            let mut r = Ready::default();
            if !batch {
                r.audio = socks.audio.poll_readable(cx).is_ready();
            }
            r.control = socks.control.poll_readable(cx).is_ready();
            r.timing = socks.timing.poll_readable(cx).is_ready();
            if let Poll::Ready(c) = cmds.as_mut().poll_next(cx) {
                r.cmd = Some(c);
            }
            if watch_sink {
                if let Some(w) = &waiter {
                    r.sink = w.poll_event(cx).is_ready();
                }
            }
            let fired = Pin::new(&mut timer).poll(cx).is_ready();
            if fired {
                armed = None;
            }
            if fired || r.audio || r.control || r.timing || r.sink || r.cmd.is_some() {
                Poll::Ready(r)
            } else {
                Poll::Pending
            }
        })
        .await;
        let now = Instant::now();
        if ready.sink {
            if let Some(w) = &mut waiter {
                match w.check(sink) {
                    Ok(true) => sink_backoff = None,
                    Ok(false) => {
                        log::trace!("{}: spurious wakeup", sink.describe());
                        sink_backoff = Some(now + SPURIOUS_BACKOFF);
                    }
                    Err(e) => log::debug!("{}: poll: {e}", sink.describe()),
                }
            }
        }
        // Drain until they would block: the sockets that signalled, and the audio socket at
        // every wakeup while it is taken in batches.
        let which = [ready.timing, ready.control, ready.audio || batch];
        s.drain(&socks, which, &mut abuf, &mut cbuf, &mut tbuf, now, buffer);
        match ready.cmd {
            None => {}
            Some(None) | Some(Some(Cmd::Stop)) => return End::Stopped,
            Some(Some(c)) => {
                s.last_heard = now;
                match c {
                    Cmd::Record(start) => {
                        if let Some((seq, ts)) = start {
                            buffer.start_at(seq);
                            s.renderer.set_start(ts);
                        }
                    }
                    Cmd::Flush(until) => {
                        log::info!("flush {until:?}");
                        buffer.flush(until);
                        s.renderer.reset();
                        if let Some((_, ts)) = until {
                            s.renderer.set_start(ts);
                        }
                        s.clock.reset_anchor();
                        s.first_packet_seen = false;
                        waiter = None;
                        sink.stop();
                    }
                    Cmd::Volume(db) => s.mixer.set_volume(db),
                    Cmd::Stop => unreachable!(),
                }
            }
        }
    }
}

/// One datagram if there is one (the socket is non-blocking). Errors other than "would block"
/// (ICMP port unreachable surfacing from an earlier send) are logged and end this drain.
fn recv(sock: &Async<UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match sock.get_ref().recv_from(buf) {
        Ok(r) => Some(r),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => {
            log::debug!("udp receive: {e}");
            None
        }
    }
}

/// Asks the kernel to stamp each datagram on `sock` with its arrival time (`SO_TIMESTAMPNS`,
/// socket(7)), read by [`recv_stamped`]. Best effort: without it, arrival is the loop's time.
pub fn stamp_arrivals(sock: &UdpSocket) {
    let on: libc::c_int = 1;
    if let Err(e) = crate::bind::setsockopt(
        sock.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPNS,
        &on,
    ) {
        log::debug!("SO_TIMESTAMPNS: {e}: timing replies dated when read");
    }
}

/// Like [`recv`], plus when the datagram arrived: the kernel's stamp ([`stamp_arrivals`])
/// carried over to the monotonic clock, or `None` without a plausible one. Timing replies
/// dated when the loop gets to them (a busy 400 MHz board: milliseconds later) would make
/// the return leg look long and move the clock estimate after the stream has started.
fn recv_stamped(
    sock: &Async<UdpSocket>,
    buf: &mut [u8],
) -> Option<(usize, SocketAddr, Option<Instant>)> {
    let mut stamp: Option<libc::timespec> = None;
    let mut on_cmsg = |level, kind, data: &[u8]| {
        if (level, kind) == (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) {
            stamp = crate::bind::cmsg_value(data);
        }
    };
    let fd = sock.get_ref().as_raw_fd();
    let (n, from) = match crate::bind::recvmsg(fd, buf, libc::MSG_DONTWAIT, &mut on_cmsg) {
        Ok((n, Some(from))) => (n, from),
        Ok((_, None)) => return None,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                log::debug!("udp receive: {e}");
            }
            return None;
        }
    };
    let arrival = stamp.and_then(|ts| {
        let mut now_rt = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let now = Instant::now();
        // SAFETY: clock_gettime only writes the timespec passed.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now_rt) };
        let ns = |t: &libc::timespec| i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec);
        let age = ns(&now_rt) - ns(&ts);
        // A stamp in the future or older than a second is not this datagram's (or the
        // realtime clock stepped): fall back to the loop's time.
        (0..1_000_000_000)
            .contains(&age)
            .then(|| now - Duration::from_nanos(age as u64))
    });
    Some((n, from, arrival))
}

/// Sends one datagram without waiting: a request that does not fit the socket buffer now is
/// dropped (the next one is due soon).
fn send(sock: &Async<UdpSocket>, b: &[u8], to: SocketAddr) {
    if let Err(e) = sock.get_ref().send_to(b, to) {
        log::debug!("udp send to {to}: {e}");
    }
}

/// IPv4 peers may show up as v4-mapped IPv6 addresses on dual-stack sockets.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Stream {
    /// Only the session's sender may feed it.
    fn accept(&mut self, from: SocketAddr) -> bool {
        let ok = canonical(from.ip()) == canonical(self.setup.client_ip);
        if !ok {
            self.stats.borrow_mut().foreign_packets += 1;
        }
        ok
    }

    fn on_audio(&mut self, pkt: &mut [u8], now: Instant, buffer: &mut JitterBuffer, _depth: u8) {
        let Ok(mut p) = rtp::AudioPacket::new_checked(&mut *pkt) else {
            self.stats.borrow_mut().garbage_packets += 1;
            return;
        };
        self.last_heard = now;
        let (seq, ts) = (p.sequence(), p.timestamp());
        if !self.first_packet_seen {
            self.first_packet_seen = true;
            self.clock.handle_first_packet(ts, local_ns(now));
            // Without RECORD's RTP-Info the first packet to arrive starts the stream.
            self.renderer.set_start(ts);
        }
        match buffer.insert(seq, ts, local_ns(now)) {
            Insert::Slot(idx) => {
                let payload = p.payload_mut();
                if let Some(c) = &self.cipher {
                    c.decrypt(payload);
                }
                match self.decoder.decode(payload, buffer.slot_pcm(idx)) {
                    Ok(frames) => buffer.commit(idx, frames),
                    Err(e) => {
                        log::debug!("packet {seq}: {e:?}; played as silence");
                        self.stats.borrow_mut().decode_errors += 1;
                        buffer.commit_silence(idx);
                    }
                }
            }
            other => log::trace!("packet {seq}: {other:?}"),
        }
    }

    fn on_control(&mut self, pkt: &mut [u8], now: Instant, buffer: &mut JitterBuffer) {
        match rtp::classify(pkt) {
            Ok(pt::SYNC) => {
                if let Ok(p) = rtp::SyncPacket::new_checked(&*pkt) {
                    self.last_heard = now;
                    let r = rtp::SyncRepr::parse(&p);
                    self.clock.handle_sync(&r, local_ns(now));
                    return;
                }
            }
            Ok(pt::RETRANSMIT) => {
                if let Ok(r) = rtp::RetransmitPacket::new_checked(&*pkt) {
                    let range = r.inner_range();
                    self.on_audio(&mut pkt[range], now, buffer, 1);
                    return;
                }
            }
            _ => {}
        }
        self.stats.borrow_mut().garbage_packets += 1;
    }

    fn on_timing(&mut self, pkt: &[u8], now: Instant) {
        match rtp::TimingPacket::new_checked(pkt) {
            Ok(p) if p.is_reply() => {
                self.last_heard = now;
                self.clock.handle_timing_reply(
                    p.origin(),
                    p.receive(),
                    p.transmit(),
                    local_ns(now),
                );
            }
            _ => self.stats.borrow_mut().garbage_packets += 1,
        }
    }

    /// Reads the sockets marked in `which` (timing, control, audio) until they would block
    /// and feeds what came in to the cores.
    #[allow(clippy::too_many_arguments)]
    fn drain(
        &mut self,
        socks: &Sockets,
        which: [bool; 3],
        abuf: &mut [u8],
        cbuf: &mut [u8],
        tbuf: &mut [u8],
        now: Instant,
        buffer: &mut JitterBuffer,
    ) {
        let [timing, control, audio] = which;
        while let Some((n, from, at)) = timing.then(|| recv_stamped(&socks.timing, tbuf)).flatten()
        {
            if self.accept(from) {
                if at.is_some() && !self.stamped {
                    self.stamped = true;
                    log::debug!("timing replies dated by the kernel's arrival stamps");
                }
                self.on_timing(&tbuf[..n], at.unwrap_or(now));
            }
        }
        while let Some((n, from)) = control.then(|| recv(&socks.control, cbuf)).flatten() {
            if self.accept(from) {
                self.on_control(&mut cbuf[..n], now, buffer);
            }
        }
        while let Some((n, from)) = audio.then(|| recv(&socks.audio, abuf)).flatten() {
            if self.accept(from) {
                self.on_audio(&mut abuf[..n], now, buffer, 0);
            }
        }
    }

    /// Sends the resend and timing requests that are due.
    fn send_requests(&mut self, now: Instant, buffer: &mut JitterBuffer, socks: &Sockets) {
        if let Some(peer) = self.control_peer {
            while let Some(r) = buffer.poll_resend(local_ns(now)) {
                let mut b = [0u8; rtp::RESEND_LEN];
                rtp::ResendRequest {
                    request_seq: r.request_seq,
                    first: r.first,
                    count: r.count,
                }
                .emit(&mut b);
                log::debug!("resend request {}+{}", r.first, r.count);
                send(&socks.control, &b, peer);
            }
        } else {
            while buffer.poll_resend(local_ns(now)).is_some() {}
        }
        if let Some(transmit) = self.clock.poll_timing_request(local_ns(now)) {
            if let Some(peer) = self.timing_peer {
                let mut b = [0u8; rtp::TIMING_LEN];
                rtp::TimingRepr {
                    reply: false,
                    origin: 0,
                    receive: 0,
                    transmit,
                }
                .emit(&mut b);
                send(&socks.timing, &b, peer);
                self.stats.borrow_mut().timing_requests += 1;
            }
        }
    }

    fn publish_stats(&self, buffer: &JitterBuffer, sink: &dyn Sink) {
        let mut st = self.stats.borrow_mut();
        st.buffer = buffer.stats;
        st.render = self.renderer.stats;
        st.underruns = sink.underruns().saturating_sub(self.underruns_before);
        st.clock = Some(self.clock.stats());
    }
}
