//! Who holds the speaker, sans-IO: the state the RTSP connections share. The I/O edge
//! (`server.rs`) tells it what happened (a connection opened, a sender claimed the speaker,
//! a stream started or ended, a probe of the output) and carries out what it decides
//! ([`Action`]: close a connection, stop a stream, run a hook); nothing here touches a
//! socket, a timer or a device, so the rules are unit-tested with a made-up clock.
//!
//! The rules, as AirPort Express and shairport-sync behave:
//! - **One sender at a time.** A second sender's ANNOUNCE gets `453 Not Enough Bandwidth`
//!   while another connection holds the speaker, unless `--interruption allow`: then the new
//!   sender takes over, the old stream is stopped and the old connection closed (which the
//!   old sender sees as the end of its session).
//! - **Timeouts**, per connection ([`Speaker::poll_timeout`]): a connection without the
//!   speaker is closed after [`IDLE_CONNECTION`] of silence, one holding it after
//!   `--session-timeout`; while its stream is running the stream watches the sender
//!   instead, and a stream whose sender went silent frees the speaker.
//! - **Volume** (AirPlay dB: -30..0, -144 = mute) belongs to the speaker, not the stream:
//!   a new stream starts at the last volume set, as on an AirPort Express.
//! - **The output may be down**: not openable at start (`--wait-for-output`) or failed under
//!   a stream and not back within the renderer's grace. Senders are then refused with `503`
//!   and the cause until a probe before the next stream finds it working.

use crate::config::Interruption;
use crate::control::NowPlaying;
use crate::output::ProbeError;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A connection without the speaker is closed after this much silence (one holding it
/// gets `--session-timeout` instead).
pub const IDLE_CONNECTION: Duration = Duration::from_secs(120);

/// An RTSP connection, numbered by [`Speaker::open`].
pub type ConnId = u64;

/// The settings the speaker's rules follow.
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    /// What a second sender gets while one is playing (`--interruption`).
    pub interruption: Interruption,
    /// A connection holding the speaker is closed after this much silence while it has no
    /// stream running (`--session-timeout`).
    pub session_timeout: Duration,
    /// A connection without the speaker is closed after this much silence.
    pub idle_timeout: Duration,
    /// RTSP connections served at once; [`Speaker::open`] refuses one more.
    pub max_connections: usize,
    /// `--wait-for-output`: the output is probed before every new stream.
    pub wait_for_output: bool,
    /// The output's name, for the log.
    pub output: String,
}

/// How a stream ended, as far as the speaker cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// Stopped by the speaker (teardown, take-over, a newer SETUP).
    Stopped,
    /// The sender went silent for longer than the session timeout: it loses the speaker.
    SenderGone,
    /// The output failed and did not come back: senders get `503` with the cause.
    OutputFailed(ProbeError),
}

/// What the edge must do; drained with [`Speaker::poll_action`].
#[derive(Debug, PartialEq)]
pub enum Action<S> {
    /// Close this RTSP connection; `why` is for the log.
    Close { conn: ConnId, why: &'static str },
    /// Stop this stream (the handle given to [`Speaker::stream_started`]).
    StopStream(S),
    /// Audio starts, from this sender (the `--on-start` hook).
    AudioStarted(Option<IpAddr>),
    /// Audio stopped (the `--on-stop` hook, after its idle time).
    AudioStopped,
}

#[derive(Debug)]
struct Conn {
    id: ConnId,
    /// The connection's session holds the speaker (claimed at ANNOUNCE, until TEARDOWN):
    /// mirrors [`crate::rtsp::Session::holds_speaker`].
    claimed: bool,
    /// The last time the connection was heard from (or its timer re-armed).
    last_activity: Instant,
}

#[derive(Debug)]
struct Stream<S> {
    owner: ConnId,
    /// Tells this stream from a later one of the same connection (a second SETUP).
    serial: u64,
    handle: S,
}

/// The speaker's state. `S` is the edge's handle of a running stream (its command channel
/// and statistics), `R` its remote control of the sender; the speaker only keeps them.
pub struct Speaker<S, R> {
    cfg: SpeakerConfig,
    /// The connection holding the speaker.
    owner: Option<ConnId>,
    stream: Option<Stream<S>>,
    /// AirPlay volume in dB (-30..0, -144 = mute), kept across streams.
    volume: f32,
    /// The sender of the current stream.
    sender: Option<IpAddr>,
    /// Remote control of that sender, if it offered one.
    remote: Option<R>,
    now_playing: NowPlaying,
    /// Why the output cannot be used; while set, senders are refused with the cause.
    output_problem: Option<ProbeError>,
    /// Numbers connections and streams.
    next_id: u64,
    conns: Vec<Conn>,
    actions: VecDeque<Action<S>>,
}

impl<S, R> Speaker<S, R> {
    /// A free speaker at 0 dB.
    pub fn new(cfg: SpeakerConfig) -> Self {
        Speaker {
            cfg,
            owner: None,
            stream: None,
            volume: 0.0,
            sender: None,
            remote: None,
            now_playing: NowPlaying::new(),
            output_problem: None,
            next_id: 0,
            conns: Vec::new(),
            actions: VecDeque::new(),
        }
    }

    /// The next decision to carry out, oldest first.
    pub fn poll_action(&mut self) -> Option<Action<S>> {
        self.actions.pop_front()
    }

    // --- connections -----------------------------------------------------------------

    /// A new RTSP connection: its number, or `None` when [`SpeakerConfig::max_connections`]
    /// are open already (the edge answers `503` and closes it).
    pub fn open(&mut self, now: Instant) -> Option<ConnId> {
        if self.conns.len() >= self.cfg.max_connections {
            return None;
        }
        self.next_id += 1;
        self.conns.push(Conn {
            id: self.next_id,
            claimed: false,
            last_activity: now,
        });
        Some(self.next_id)
    }

    /// The connection is gone (after its session's teardown was carried out).
    pub fn close(&mut self, conn: ConnId) {
        self.conns.retain(|c| c.id != conn);
    }

    /// RTSP connections open now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The connection was heard from: its silence starts again.
    pub fn activity(&mut self, conn: ConnId, now: Instant) {
        if let Some(c) = self.conn_mut(conn) {
            c.last_activity = now;
        }
    }

    /// When the connection's silence runs out: [`SpeakerConfig::session_timeout`] after its
    /// last activity while it holds the speaker, [`SpeakerConfig::idle_timeout`] otherwise.
    /// Pass that moment to [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self, conn: ConnId) -> Option<Instant> {
        let c = self.conns.iter().find(|c| c.id == conn)?;
        Some(c.last_activity + self.limit(c))
    }

    /// The connection's timer fired at `now`. `Some(limit)`: it was silent for `limit` and
    /// is to be closed. `None`: not due yet, or its stream is running (audio flows and the
    /// stream watches the sender), so the timer is re-armed.
    pub fn handle_timeout(&mut self, conn: ConnId, now: Instant) -> Option<Duration> {
        let streaming = self.streaming(conn);
        let c = self.conns.iter().find(|c| c.id == conn)?;
        let limit = self.limit(c);
        if now < c.last_activity + limit {
            return None;
        }
        if streaming {
            self.activity(conn, now);
            return None;
        }
        Some(limit)
    }

    fn limit(&self, c: &Conn) -> Duration {
        if c.claimed {
            self.cfg.session_timeout
        } else {
            self.cfg.idle_timeout
        }
    }

    /// The connection holds the speaker and its stream is running.
    fn streaming(&self, conn: ConnId) -> bool {
        self.conns.iter().any(|c| c.id == conn && c.claimed)
            && self.owns(conn)
            && self.stream.as_ref().is_some_and(|s| s.owner == conn)
    }

    fn conn_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.id == conn)
    }

    // --- the output ------------------------------------------------------------------

    /// Whether the output must be probed before a new sender is taken: with
    /// `--wait-for-output` or after it failed, and only while no stream holds it.
    pub fn output_check_due(&self) -> bool {
        (self.cfg.wait_for_output || self.output_problem.is_some()) && self.stream.is_none()
    }

    /// The probe's verdict before a new sender: `Err(cause)` refuses it with `503`. A device
    /// that another program holds (`busy`) is not refused: it is opened when audio comes.
    pub fn output_checked(&mut self, verdict: Result<(), ProbeError>) -> Result<(), String> {
        match verdict {
            Ok(()) => {
                if self.output_problem.take().is_some() {
                    log::warn!("output {} works now", self.cfg.output);
                }
                Ok(())
            }
            Err(p) if p.busy => Ok(()),
            Err(p) => {
                if self.output_problem.as_ref() != Some(&p) {
                    log::warn!("{p}");
                }
                let cause = p.cause.clone();
                self.output_problem = Some(p);
                Err(cause)
            }
        }
    }

    /// A probe asked for by the operator (SIGHUP) while no stream runs: a working output
    /// clears the problem; a failing one is logged, and with `--wait-for-output` (unless
    /// another program holds it) becomes what senders are told.
    pub fn output_rechecked(&mut self, verdict: Result<(), ProbeError>) {
        match verdict {
            Ok(()) => self.output_problem = None,
            Err(p) => {
                if self.cfg.wait_for_output && !p.busy {
                    self.output_problem = Some(p);
                }
            }
        }
    }

    /// Sets (or clears) why the output cannot be used, e.g. from the probe at start.
    pub fn set_output_problem(&mut self, problem: Option<ProbeError>) {
        self.output_problem = problem;
    }

    /// Why the output cannot be used now, if it cannot.
    pub fn output_problem(&self) -> Option<&ProbeError> {
        self.output_problem.as_ref()
    }

    // --- the sender ------------------------------------------------------------------

    /// ANNOUNCE wants the speaker for `conn` (after the output check passed). `false`:
    /// another sender holds it and may not be interrupted (→ `453`). A connection that
    /// already holds it keeps it. With [`Interruption::Allow`] the holder's stream is
    /// stopped and its connection closed.
    pub fn claim(&mut self, conn: ConnId) -> bool {
        let held = self.conns.iter().any(|c| c.id == conn && c.claimed);
        if !held {
            match self.owner {
                None => {}
                Some(o) if o == conn => {}
                Some(old) if self.cfg.interruption == Interruption::Allow => {
                    log::info!("a new sender takes over the speaker");
                    self.stop_stream();
                    self.actions.push_back(Action::Close {
                        conn: old,
                        why: "taken over",
                    });
                }
                Some(_) => return false,
            }
            self.owner = Some(conn);
        }
        if let Some(c) = self.conn_mut(conn) {
            c.claimed = true;
        }
        true
    }

    /// True while `conn` holds the speaker.
    pub fn owns(&self, conn: ConnId) -> bool {
        self.owner == Some(conn)
    }

    /// `conn`'s stream is set up (its sockets bound) and starts: the previous stream, if
    /// any, is stopped. Returns the new stream's serial (for
    /// [`stream_ended`](Self::stream_ended)) and the volume it starts at, in dB. The edge
    /// checks [`owns`](Self::owns) first.
    pub fn stream_started(
        &mut self,
        conn: ConnId,
        sender: IpAddr,
        remote: Option<R>,
        handle: S,
    ) -> (u64, f32) {
        self.stop_stream();
        self.next_id += 1;
        let serial = self.next_id;
        self.stream = Some(Stream {
            owner: conn,
            serial,
            handle,
        });
        self.sender = Some(sender);
        self.remote = remote;
        (serial, self.volume)
    }

    /// The stream `serial` of `conn` ended. A sender that went silent loses the speaker; a
    /// failed output is kept as the cause for refusing senders, and the sender's connection
    /// is closed (it sees the speaker gone instead of playing on into silence).
    pub fn stream_ended(&mut self, conn: ConnId, serial: u64, end: StreamEnd) {
        self.actions.push_back(Action::AudioStopped);
        if self.stream.as_ref().is_some_and(|s| s.serial == serial) {
            self.stream = None;
        }
        match end {
            StreamEnd::SenderGone if self.owns(conn) => self.owner = None,
            StreamEnd::OutputFailed(problem) => {
                self.output_problem = Some(problem);
                if self.owns(conn) {
                    self.release();
                }
                self.actions.push_back(Action::Close {
                    conn,
                    why: "output failed",
                });
            }
            _ => {}
        }
    }

    /// The stream of `conn`, if it has the current one (to send it commands).
    pub fn stream_of(&self, conn: ConnId) -> Option<&S> {
        self.stream
            .as_ref()
            .filter(|s| s.owner == conn)
            .map(|s| &s.handle)
    }

    /// The current stream, whoever has it.
    pub fn stream(&self) -> Option<&S> {
        self.stream.as_ref().map(|s| &s.handle)
    }

    /// RECORD from `conn`: audio starts if it holds the speaker.
    pub fn record(&mut self, conn: ConnId) {
        if self.owns(conn) {
            self.actions.push_back(Action::AudioStarted(self.sender));
        }
    }

    /// FLUSH from `conn`: audio stops (for now) if it holds the speaker.
    pub fn flush(&mut self, conn: ConnId) {
        if self.owns(conn) {
            self.actions.push_back(Action::AudioStopped);
        }
    }

    /// `SET_PARAMETER volume` from `conn`, in dB (-30..0, -144 = mute): kept if `conn` holds
    /// the speaker (`true`: pass it to the stream), ignored otherwise.
    pub fn set_volume(&mut self, conn: ConnId, db: f32) -> bool {
        if self.owns(conn) {
            self.volume = db;
        }
        self.owns(conn)
    }

    /// The speaker's volume in dB (-30..0, -144 = mute).
    pub fn volume(&self) -> f32 {
        self.volume
    }

    /// DMAP metadata from `conn`, if it holds the speaker; bad metadata is logged and ignored.
    pub fn metadata(&mut self, conn: ConnId, dmap: &[u8]) {
        if self.owns(conn) {
            if let Err(e) = self.now_playing.apply_dmap(dmap) {
                log::info!("metadata ignored: {e}");
            }
        }
    }

    /// Cover art from `conn`, if it holds the speaker.
    pub fn artwork(&mut self, conn: ConnId, content_type: &str, data: &[u8]) {
        if self.owns(conn) {
            self.now_playing.set_artwork(content_type, data);
        }
    }

    /// Progress from `conn` in RTP timestamps, if it holds the speaker.
    pub fn progress(&mut self, conn: ConnId, start: u32, current: u32, end: u32) {
        if self.owns(conn) {
            self.now_playing.set_progress(start, current, end);
        }
    }

    /// `conn`'s session let go of the speaker (TEARDOWN, or its connection closed): if it
    /// still holds it, the speaker is freed and its stream stopped.
    pub fn teardown(&mut self, conn: ConnId) {
        if let Some(c) = self.conn_mut(conn) {
            c.claimed = false;
        }
        if self.owns(conn) {
            self.release();
            self.stop_stream();
            self.actions.push_back(Action::AudioStopped);
        }
    }

    /// The sender of the current stream.
    pub fn sender(&self) -> Option<IpAddr> {
        self.sender
    }

    /// Remote control of the current sender, if it offered one.
    pub fn remote(&self) -> Option<&R> {
        self.remote.as_ref()
    }

    /// What is playing, from the sender's metadata.
    pub fn now_playing(&self) -> &NowPlaying {
        &self.now_playing
    }

    /// No owner, sender or now-playing any more.
    fn release(&mut self) {
        self.owner = None;
        self.sender = None;
        self.remote = None;
        self.now_playing.clear();
    }

    fn stop_stream(&mut self) {
        if let Some(s) = self.stream.take() {
            self.actions.push_back(Action::StopStream(s.handle));
        }
    }
}

#[cfg(test)]
mod tests;
