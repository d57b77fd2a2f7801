//! One stream's I/O edge: its three UDP sockets, the sink, and the one timer, driven on the
//! reactor thread. It reads what arrives and hands it to the sans-IO stream core
//! ([`crate::stream::Stream`]), sends the datagrams the core yields, carries out what the core
//! asks of the sink (open, read, write the period it produced, stop), and keeps the output
//! failure policy (retries, grace), which is about the device rather than the stream.

use crate::buffer::JitterBuffer;
use crate::output::wait::SPURIOUS_BACKOFF;
use crate::output::{Sink, Waiter};
use crate::reactor::{Async, Timer};
use crate::rtsp::StreamSetup;
use crate::stream::{Output, SinkReading, Stream, StreamConfig, StreamStats, Transmit, Via};
use futures_lite::Stream as _;
use std::cell::RefCell;
use std::future::Future as _;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// How often stream statistics are logged at debug level.
const STATS_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// Bytes of room for one audio datagram: an RTP header and 352 frames of 16-bit stereo
/// (1,420 bytes on the wire from every sender tested) with room to spare.
const AUDIO_SLOT: usize = 2048;

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
    /// RECORD, with RTP-Info's (sequence number, RTP timestamp) when given.
    Record(Option<(u16, u32)>),
    /// FLUSH up to (sequence number, RTP timestamp), or everything.
    Flush(Option<(u16, u32)>),
    /// SET_PARAMETER volume, in AirPlay dB (-30..0, -144 mutes).
    Volume(f32),
    /// TEARDOWN, or another stream takes over.
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

/// A stream's settings: the core's ([`StreamConfig`]) plus the edge's period.
#[derive(Debug, Clone)]
pub struct PlayerConfig {
    /// Latency used when the sender states none (`--latency`), in frames.
    pub default_latency_frames: u32,
    /// Added to every due instant (`--latency-offset`), in ms (positive: later).
    pub latency_offset_ms: i64,
    /// No packet from the sender for this long ends the stream.
    pub session_timeout: Duration,
    /// While the output runs, the loop wakes at least this often to write to the sink and to
    /// take in the audio packets that arrived meanwhile (100 ms by default, a backstop: the
    /// sink's own wakeups come about every 100 ms, with about 12 packets each; streams whose
    /// latency leaves no room for that are read packet by packet).
    pub period: Duration,
}

/// [`PlayerConfig::period`] unless configured.
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(100);

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

/// Sink requests carried out per wakeup at most: a handful suffice (open, set the wakeup
/// level, read, write the prelude's padding, read, write a period); the bound only keeps a confused renderer from
/// spinning the loop.
const MAX_OUTPUT_STEPS: usize = 64;

/// The edge loop, in the str0m shape: wait once for any of the sources (the three sockets,
/// the command channel, the sink's descriptors, one reusable timer), then drain every ready
/// socket until it would block, feed the stream core, send the datagrams it yields, carry out
/// what it asks of the sink, and sleep again. No future or timer is built per iteration and
/// the timer is re-armed only when its deadline changes, so each wakeup costs the reactor's
/// own handful of system calls plus the reads and writes themselves.
///
/// While the output runs, the audio socket is not watched: it is drained at every wakeup,
/// and wakeups come at least every [`PlayerConfig::period`], so audio packets are taken in
/// batches (about 12 per wakeup) instead of one wakeup each. Before the output starts, when the
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
    let underruns_before = sink.underruns();
    let now = Instant::now();
    let stream_cfg = StreamConfig {
        default_latency_frames: cfg.default_latency_frames,
        latency_offset_ms: cfg.latency_offset_ms,
        session_timeout: cfg.session_timeout,
    };
    let mut s = match Stream::new(&setup, &stream_cfg, buffer, volume_db, now) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot build decoder: {}", e.0);
            return End::Stopped;
        }
    };
    let mut abuf = vec![0u8; AUDIO_SLOT * crate::bind::BATCH];
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
        if s.is_timed_out(now) {
            log::warn!(
                "sender silent for {:?}: ending the stream",
                cfg.session_timeout
            );
            return End::Timeout;
        }
        while let Some(t) = s.poll_transmit(now) {
            send(&socks, &t);
        }
        let was_started = s.is_playing();
        // While the output is down, the sink is opened again only when a retry is due; in
        // between, audio falls due unheard.
        let retry_due = outage.as_ref().is_none_or(|o| now >= o.retry_at);
        let wake = if retry_due {
            match drive(&mut s, now, sink) {
                Ok(w) => w,
                Err(e) => {
                    sink.stop();
                    s.output_failed();
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
            s.discard_due(now);
            None
        };
        if let Some(o) = &mut outage {
            if s.is_playing() {
                let written = s.frames_written();
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
        let started = s.is_playing();
        if started && !was_started {
            waiter = Some(Waiter::new(sink));
            sink_backoff = None;
        } else if !started && was_started {
            // The sink was stopped (resync): its descriptors are gone.
            waiter = None;
        }
        *stats.borrow_mut() = StreamStats {
            underruns: sink.underruns().saturating_sub(underruns_before),
            ..s.stats()
        };
        if log::log_enabled!(log::Level::Debug)
            && now.duration_since(last_report) >= STATS_LOG_INTERVAL
        {
            last_report = now;
            log::debug!("stream: {}", stats.borrow().summary());
        }

        // Audio packets are taken in batches only while the stream's latency leaves room
        // for it: a real-time sender with a short latency (PipeWire: 250 ms) is read as
        // packets come.
        let batch = started && s.latency().saturating_sub(s.lead(sink.capacity())) > 3 * cfg.period;
        // The one timer: the earliest thing due (the core's own deadlines include the
        // session timeout).
        let mut deadline = s.poll_timeout().unwrap_or(now + cfg.session_timeout);
        if started {
            deadline = deadline.min(now + cfg.period);
        }
        if let Some(o) = &outage {
            // Retries, and the audio falling due meanwhile, are dropped at the pace of
            // periods.
            deadline = deadline.min(o.retry_at).min(now + cfg.period);
        }
        for t in [wake, sink_backoff].into_iter().flatten() {
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
        // Drain the sockets that signalled, and the audio socket at every wakeup while it is
        // taken in batches.
        let which = [ready.timing, ready.control, ready.audio || batch];
        drain(&mut s, &socks, which, &mut abuf, &mut cbuf, &mut tbuf, now);
        match ready.cmd {
            None => {}
            Some(None) | Some(Some(Cmd::Stop)) => return End::Stopped,
            Some(Some(Cmd::Record(start))) => s.record(now, start),
            Some(Some(Cmd::Flush(until))) => {
                s.flush(now, until);
                waiter = None;
                sink.stop();
            }
            Some(Some(Cmd::Volume(db))) => s.set_volume(now, db),
        }
    }
}

/// Carries out on `sink` what the core asks at `now` until it says when to come back
/// (`None`: not before a packet arrives). A sink error ends it; the caller stops the sink.
fn drive(
    s: &mut Stream<'_>,
    now: Instant,
    sink: &mut dyn Sink,
) -> std::io::Result<Option<Instant>> {
    for _ in 0..MAX_OUTPUT_STEPS {
        match s.poll_output(now, sink.capacity()) {
            Output::Start => {
                // Opening a sound card takes real time: the core measures from its end.
                let opening = Instant::now();
                sink.start()?;
                s.output_started(now + opening.elapsed(), sink.underruns());
            }
            Output::Read(at) => {
                let status = sink.status(at)?;
                s.output_reading(SinkReading {
                    status,
                    at: sink.status_time(at),
                    capacity: sink.capacity(),
                    underruns: sink.underruns(),
                    position_steps: sink.position_steps(),
                });
            }
            Output::Write { frames, at } => {
                let n = sink.write(at, frames)?;
                s.output_wrote(n);
            }
            Output::SetWakeup(frames) => {
                // A device that refuses keeps its default; the loop's spurious-wakeup backoff
                // then paces it.
                if let Err(e) = sink.set_wakeup(frames) {
                    log::debug!("{}: cannot set the wakeup level: {e}", sink.describe());
                }
            }
            Output::Stop(wake) => {
                sink.stop();
                return Ok(wake);
            }
            Output::Wait(wake) => return Ok(wake),
        }
    }
    log::debug!("output still busy after {MAX_OUTPUT_STEPS} steps");
    Ok(Some(now + Duration::from_millis(2)))
}

/// Reads the sockets marked in `which` (timing, control, audio) and feeds what came in to the
/// core: timing and control until they would block, audio in batches of
/// [`crate::bind::BATCH`] until one comes back short (level-triggered readiness wakes the loop
/// again for anything that arrived meanwhile).
fn drain(
    s: &mut Stream<'_>,
    socks: &Sockets,
    which: [bool; 3],
    abuf: &mut [u8],
    cbuf: &mut [u8],
    tbuf: &mut [u8],
    now: Instant,
) {
    let [timing, control, audio] = which;
    while let Some((n, from, at)) = timing.then(|| recv_stamped(&socks.timing, tbuf)).flatten() {
        s.handle_timing(now, &tbuf[..n], from, at);
    }
    while let Some((n, from)) = control.then(|| recv(&socks.control, cbuf)).flatten() {
        s.handle_control(now, &mut cbuf[..n], from);
    }
    // Audio in batches (recvmmsg): one call for the packets of a whole period.
    let mut got = [crate::bind::Datagram::default(); crate::bind::BATCH];
    let fd = socks.audio.get_ref().as_raw_fd();
    let mut more = audio;
    while more {
        let n = match crate::bind::recv_batch(fd, abuf, AUDIO_SLOT, &mut got) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    log::debug!("udp receive: {e}");
                }
                break;
            }
        };
        for (d, packet) in got.iter().zip(abuf.chunks_exact_mut(AUDIO_SLOT)).take(n) {
            if let (Some(from), Some(bytes)) = (d.from, packet.get_mut(..d.len)) {
                s.handle_audio(now, bytes, from);
            }
        }
        more = n == crate::bind::BATCH; // fewer: drained
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

/// Sends one datagram the core yielded without waiting: a request that does not fit the
/// socket buffer now is dropped (the next one is due soon).
fn send(socks: &Sockets, t: &Transmit) {
    let sock = match t.via {
        Via::Control => &socks.control,
        Via::Timing => &socks.timing,
    };
    if let Err(e) = sock.get_ref().send_to(t.bytes(), t.to) {
        log::debug!("udp send to {}: {e}", t.to);
    }
}
