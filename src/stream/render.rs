//! The per-period output path: decides which frames go to the sink and when. The first
//! frame of a stream is placed exactly on its due instant by padding with silence (or
//! skipping, if we are late); after that the sink is kept filled to a target depth from
//! the jitter buffer, with silence standing in for packets that never came.
//!
//! Sans-IO: the renderer never calls the sink. [`Renderer::poll`] says what to do with it next
//! ([`Output`]: open it, read its status, set its wakeup level, write the frames the renderer
//! produced into its own buffer, stop it, or wait), and the edge (`player`) carries that out
//! and reports back ([`Renderer::started`], [`Renderer::reading`], [`Renderer::wrote`]),
//! polling again until told to wait. One poll round costs the sink one status reading and one
//! write, as a direct call would.
//!
//! # Measuring a sound card
//!
//! A sound card's position often moves in steps: `snd-aloop` and other timer-driven devices
//! by a kernel tick (4 ms at HZ=250), USB devices by a transfer. A delay read between two steps
//! is too long by up to one step, never too short, and the moment of the reading is taken after
//! the device answered ([`Sink::status_time`](crate::output::Sink::status_time)), so it errs late too. Every reading of the sync
//! error is therefore too late by something between zero and a step, and the smallest reading
//! of the last second ([`ERROR_WINDOW`]) is the estimate; drops and inserts shift the stored
//! readings with them. An average would sit half a step late and make the renderer drop frames
//! that were on time.
//!
//! The minimum only finds the truth if some readings fall just after a step. The sink's own
//! wakeups do not: the device signals room when it steps, so they all come one wakeup latency
//! after a step (on the emulated board, 0.4–1 ms). A stepping sink ([`Sink::position_steps`](crate::output::Sink::position_steps))
//! is therefore also read at instants of the renderer's own, a pseudo-random 15–35 ms apart,
//! which fall at every phase of the steps. And the sink is asked to wake the loop only once
//! there is room for a useful write ([`Sink::set_wakeup`](crate::output::Sink::set_wakeup)): kept nearly full, a sound card
//! with the default threshold of one free period signals writable all the time.
//!
//! Where the stream starts on such a card cannot be known before the card runs: the first step
//! may come at once or a whole tick after the start. So the card is started up to
//! [`PRELUDE`] before the lead time and fed silence, at most [`PRELUDE_FILL`] ahead, while its
//! position is read; the silence before the first frame is cut to length from the smallest
//! reading only when the first frame is written. Correcting the start costs silence, never
//! audio (shairport-sync also plays measured silence before the first frame).
//!
//! A stream whose audio keeps arriving after it is due (a sender whose latency is shorter
//! than its path, or a latency rule that does not fit it) would otherwise play nothing but
//! silence. Once a second's worth of arriving audio has been discarded as late with no audio
//! played in between, and late audio has kept arriving for a second ([`LATE_RUN_SPAN`]) at
//! about real-time pace, the renderer says so at warning level and restarts the stream later
//! by the lateness seen plus [`LATE_MARGIN`]: late audio beats silence. The extra delay is
//! kept for the rest of the stream and reported (`late_delay_ms`).
//!
//! A sender that stalls for longer than its latency (its host busy, a runtime collecting
//! garbage) and then sends what it owes in a burst is not such a sender: its late audio comes
//! many times faster than real time, and what follows is on time. That audio is given up and
//! plays as silence, and the stream goes on at the instant the sender asked, in step with
//! other rooms, as shairport-sync does. (The firmware image's 3-minute pyatv stream on a
//! loaded CI machine was moved 1.45 s later in three restarts before this rule.)

use crate::buffer::{JitterBuffer, Next};
use crate::output::{SinkStatus, RATE};
use std::time::{Duration, Instant};

/// Frames produced per write at most.
const CHUNK: usize = 352;
/// The sink is kept filled to this much audio at most; it is also how early frames are
/// committed, so a packet missing this close to its time is given up.
const TARGET_FILL_MAX: usize = 8820; // 200 ms
/// Added to the target fill when deciding to start: the start itself takes a moment.
const START_SLACK: Duration = Duration::from_millis(5);
/// A timestamp jump larger than this is a new timeline, not a gap to fill.
const MAX_GAP: i32 = 44100;
/// Sync errors within this are left alone (1 ms).
const TOLERANCE_NS: i64 = 1_000_000;
/// Beyond this (50 ms) stuffing frames would take too long: restart output at the
/// right position instead.
const RESYNC_NS: i64 = 50_000_000;
/// At most one frame is inserted or dropped per this many frames (about 2800 ppm at
/// most), so corrections are spread out and inaudible.
const CORRECTION_SPACING: u64 = 352;
/// Late audio discarded in a row, with none played, before the stream is moved later: 1 s.
const LATE_RUN_FRAMES: u64 = RATE as u64;
/// ... and for at least this long: late audio must keep arriving, not come in one burst.
const LATE_RUN_SPAN: Duration = Duration::from_secs(1);
/// Added to the lateness seen when the stream is moved later (100 ms), for the jitter of
/// the path.
pub const LATE_MARGIN: Duration = Duration::from_millis(100);
/// A stepping sink's position is also read at instants of the renderer's own, this far apart
/// (uniformly between the two; 40 readings a second on average), besides the sink's own
/// wakeups, which all come at one phase of its steps (module docs).
const READING_SPACING: (Duration, Duration) =
    (Duration::from_millis(15), Duration::from_millis(35));
/// The sink wakes the loop once this much room (96 ms) opens below the fill the renderer
/// keeps (see `Renderer::wakeup_level`), about when the renderer's own deadline (half the
/// target drained, `after_audio`) falls: some 10 wakeups a second instead of 40 (CPU, issue
/// 10; a wakeup, with its system calls and context switches, cost about 90 µs on the x86 VM
/// the benchmark ran on), with 104 ms still queued in a sink kept at the usual 200 ms.
const WAKE_ROOM: usize = 12 * CHUNK;
/// Sync-error readings are kept this long for their minimum (module docs).
const ERROR_WINDOW: Duration = Duration::from_secs(1);
/// The sink is started up to this long before the lead time, to measure it before the first
/// frame is placed (module docs).
const PRELUDE: Duration = Duration::from_millis(500);
/// Silence queued in the sink at most while it is measured, in frames (60 ms).
const PRELUDE_FILL: usize = 2646;

/// Counters, exposed for logs and the status interface.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RenderStats {
    /// Frames the sink took (audio and silence after the start), in frames.
    pub frames_written: u64,
    /// Silence written: start padding, missing packets, starvation.
    pub silence_frames: u64,
    /// Frames dropped because the stream started late.
    pub skipped_frames: u64,
    /// How far the stream was from its due instant when first measured, two chunks after
    /// the start (the sink's delay then says when the next frame sounds), in
    /// microseconds (positive: late).
    pub start_error_us: i64,
    /// Difference between when frames sound and when they are due, the smallest reading of
    /// the last second (module docs), in microseconds (positive: late).
    pub sync_error_us: i64,
    /// Largest |sync error| seen since the stream started, in microseconds.
    pub max_sync_error_us: i64,
    /// Frames duplicated (output running fast) and dropped (running slow).
    pub frames_inserted: u64,
    pub frames_dropped: u64,
    /// Times output was restarted because the error grew too large.
    pub resyncs: u64,
    /// Frames of buffered audio dropped here because they were already due (packets that the
    /// jitter buffer refused as late count in `BufferStats::late` instead).
    pub late_frames: u64,
    /// Times the stream was moved later because its audio kept arriving late.
    pub late_restarts: u64,
    /// How much later than asked the stream plays because of that, in ms.
    pub late_delay_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Correction {
    None,
    Insert,
    Drop,
    /// One reading beyond the resync limit: write nothing until the next says more.
    Hold,
    Resync,
}

/// Sliding minimum of readings over [`ERROR_WINDOW`], kept as the minima of [`SLOTS`]
/// consecutive time slots: fixed memory whatever the reading rate.
///
/// A queue of the readings themselves (a monotone queue) needs room for every reading of a
/// second that is not below the ones after it. On the emulated board (issue 13) the loop
/// took about 70 readings a second, nearly all of them late by a tick, and a 64-entry queue
/// overflowed by dropping its front, which was the minimum: the error then read a tick's
/// worth too late and the renderer dropped frames that were on time. Slots cannot overflow;
/// the window is between `ERROR_WINDOW - SLOT` and `ERROR_WINDOW` long.
#[derive(Default)]
struct MinWindow {
    /// When slot 0 began (the first reading since the last clear).
    origin: Option<Instant>,
    /// Per slot: its number since `origin`, and the smallest reading in it.
    slots: [Option<(u64, i64)>; SLOTS],
    /// The newest slot read into.
    newest: u64,
}

/// Slots of [`MinWindow`]: the window moves in steps of `ERROR_WINDOW / SLOTS` (100 ms).
const SLOTS: usize = 10;

impl MinWindow {
    fn clear(&mut self) {
        *self = Self::default();
    }

    /// The slot number of instant `at` (readings before the origin count as slot 0).
    fn slot_of(&mut self, at: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(at);
        let slot = ERROR_WINDOW.as_nanos() / SLOTS as u128;
        (at.saturating_duration_since(origin).as_nanos() / slot) as u64
    }

    fn push(&mut self, at: Instant, v: i64) {
        let n = self.slot_of(at);
        if n + (SLOTS as u64) <= self.newest {
            // Older than the window (readings are dated by the sink, not always in order).
            return;
        }
        self.newest = self.newest.max(n);
        let entry = &mut self.slots[(n % SLOTS as u64) as usize];
        *entry = match *entry {
            Some((m, old)) if m == n => Some((n, old.min(v))),
            _ => Some((n, v)),
        };
    }

    fn min(&self) -> Option<i64> {
        let oldest = self.newest.saturating_sub(SLOTS as u64 - 1);
        self.slots
            .iter()
            .flatten()
            .filter(|&&(n, _)| n >= oldest)
            .map(|&(_, v)| v)
            .min()
    }

    fn shift(&mut self, by: i64) {
        for (_, v) in self.slots.iter_mut().flatten() {
            *v += by;
        }
    }
}

fn signed_ns(a: Instant, b: Instant) -> i64 {
    if a >= b {
        (a - b).as_nanos() as i64
    } else {
        -((b - a).as_nanos() as i64)
    }
}

fn frames_to_ns(frames: i64) -> i64 {
    frames * 1_000_000_000 / i64::from(RATE)
}

/// The output path's state (module docs): where the stream is, how far off its instants the
/// sink plays, and the period being written.
pub struct Renderer {
    started: bool,
    /// The stream's latency in frames ([`Renderer::set_latency`]); `usize::MAX` until set.
    latency_frames: usize,
    start_ts: Option<u32>,
    next_ts: u32,
    /// Sync error in ns (the window's minimum); `None` until measured after a start.
    error_ns: Option<i64>,
    /// The sync error last logged at trace level (ns): logged again once it moved 0.1 ms.
    logged_error_ns: i64,
    /// The sink's underrun count when last looked at: an underrun makes the readings before
    /// it worthless (the device restarted with a gap).
    underruns_seen: u64,
    /// When the next dithered reading of a stepping sink is due, and the dither's state.
    reading_at: Instant,
    dither: u32,
    /// Readings of the sync error plus `frames_to_ns(net_dropped)`, which corrections leave
    /// unchanged. During the prelude: when frame 0 of the start sounds, relative to `base`.
    readings: MinWindow,
    /// Frames dropped minus frames inserted since the start.
    net_dropped: i64,
    /// The sink is running silence and being measured; the first frame is not written yet.
    prelude: bool,
    /// When the sink was started (the prelude's readings are relative to it).
    base: Instant,
    /// The last reading was beyond the resync limit.
    far: bool,
    /// Frames written since the last correction.
    since_correction: u64,
    /// The sink's delay follows real playback. Plugin devices such as alsa-lib's `null`
    /// and `file` swallow frames instantly and report no delay: they are fed by the
    /// clock instead (frames go out `target` ahead of their due time) and never
    /// drift-corrected.
    paced: bool,
    pacing_checked: bool,
    written_since_start: u64,
    /// Late audio dropped here since audio was last played, in frames.
    late_run: u64,
    /// The buffer's count of late packets when audio was last played.
    late_mark: u64,
    /// Where to restart for the overlapping frames of the late run: the RTP timestamp
    /// after the last of them.
    late_overlap_end: Option<u32>,
    /// Late frames of the run (dropped here and refused by the buffer) at the last look
    /// ([`Renderer::after_audio`]), and the instants of the first and the last look that
    /// found more: how long late audio has kept arriving.
    late_seen: u64,
    late_span: Option<(Instant, Instant)>,
    /// Added to every due instant: see the module docs.
    late_delay: Duration,
    /// Frames of `scratch` the sink did not take yet (a short write): written first next time.
    pending: std::ops::Range<usize>,
    scratch: Box<[i16]>,
    /// What the renderer is in the middle of: the request it made of the edge.
    step: Step,
    /// The sink reading the edge answered [`Output::Read`] with, until used.
    reading: Option<SinkReading>,
    /// A wakeup level to ask for next ([`Output::SetWakeup`]), as the fill kept, in frames.
    wake_fill: Option<usize>,
    /// The sink's position moves in steps (its last reading said so).
    steps: bool,
    /// Counters for logs and the status interface.
    pub stats: RenderStats,
}

/// What the renderer asks of the edge next ([`Renderer::poll`]). The edge carries it out on
/// the sink, reports back ([`Renderer::started`], [`Renderer::reading`], [`Renderer::wrote`])
/// and polls again, until the renderer says to wait.
#[derive(Debug, PartialEq)]
pub enum Output<'a> {
    /// Open the sink ([`Sink::start`](crate::output::Sink::start)) and report the instant it
    /// was open with [`Renderer::started`].
    Start,
    /// Read the sink's status at this instant ([`Sink::status`](crate::output::Sink::status)
    /// and [`Sink::status_time`](crate::output::Sink::status_time), both given it) and report
    /// it with [`Renderer::reading`].
    Read(Instant),
    /// Write these frames (interleaved stereo, [`RATE`] Hz), dated `at` for timer-paced
    /// sinks, and report how many frames the sink took with [`Renderer::wrote`].
    Write { frames: &'a [i16], at: Instant },
    /// Set the sink's wakeup level to this many frames of room
    /// ([`Sink::set_wakeup`](crate::output::Sink::set_wakeup); a refusal is only logged),
    /// then poll again.
    SetWakeup(usize),
    /// Stop the sink ([`Sink::stop`](crate::output::Sink::stop)): the renderer has already
    /// forgotten what it held (a resync, or a stream moved later). Then as [`Output::Wait`].
    Stop(Option<Instant>),
    /// Nothing more to do now: poll again at this instant (or when the sink is ready, or a
    /// packet arrived), `None`: not before a packet arrives.
    Wait(Option<Instant>),
}

/// One reading of the sink, taken by the edge when the renderer asks ([`Output::Read`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SinkReading {
    /// Frames the sink can take now and frames queued in it.
    pub status: SinkStatus,
    /// When the reading holds ([`Sink::status_time`](crate::output::Sink::status_time)).
    pub at: Instant,
    /// The sink's buffer size, in frames.
    pub capacity: usize,
    /// Underruns the sink counted since it was created.
    pub underruns: u64,
    /// The sink's position moves in steps
    /// ([`Sink::position_steps`](crate::output::Sink::position_steps)).
    pub position_steps: bool,
}

/// The request outstanding with the edge, and what follows its answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// Nothing outstanding.
    Idle,
    /// [`Output::Start`] was asked.
    Starting,
    /// Prelude silence topping the sink up: after it, wait until `wake`.
    TopUp { wake: Instant },
    /// The prelude's last silence: `asked` frames now, `more` after them, `silence` frames
    /// in all (the start's padding) before the first frame, due at `due`; `took` is what the
    /// sink took.
    Padding {
        asked: usize,
        more: usize,
        silence: i64,
        due: Instant,
        took: usize,
    },
    /// What a short write left (`pending`) was written again.
    Pending,
    /// A period of audio was written: `delay` frames were queued before it, `took` of it
    /// taken, and the sink's fill target is `target` frames.
    Audio {
        delay: usize,
        target: usize,
        took: usize,
    },
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

fn frames_to_duration(frames: usize) -> Duration {
    Duration::from_nanos(frames as u64 * 1_000_000_000 / RATE as u64)
}

fn duration_to_frames(d: Duration) -> i64 {
    (d.as_nanos() * RATE as u128 / 1_000_000_000) as i64
}

impl Renderer {
    /// A renderer with no stream yet ([`Renderer::set_start`] gives it one).
    pub fn new() -> Self {
        Renderer {
            started: false,
            latency_frames: usize::MAX,
            start_ts: None,
            next_ts: 0,
            error_ns: None,
            readings: MinWindow::default(),
            logged_error_ns: 0,
            underruns_seen: 0,
            reading_at: Instant::now(),
            dither: 0x9e37_79b9,
            net_dropped: 0,
            prelude: false,
            base: Instant::now(),
            far: false,
            since_correction: 0,
            paced: true,
            pacing_checked: false,
            written_since_start: 0,
            late_run: 0,
            late_mark: 0,
            late_overlap_end: None,
            late_seen: 0,
            late_span: None,
            late_delay: Duration::ZERO,
            pending: 0..0,
            // One write's worth: the target fill plus an inserted frame.
            scratch: vec![0; (TARGET_FILL_MAX + 2) * 2].into_boxed_slice(),
            step: Step::Idle,
            reading: None,
            wake_fill: None,
            steps: false,
            stats: RenderStats::default(),
        }
    }

    /// FLUSH / new stream: the next frame to play will be scheduled afresh.
    pub fn reset(&mut self) {
        self.pending = 0..0;
        self.step = Step::Idle;
        self.reading = None;
        self.wake_fill = None;
        self.started = false;
        self.prelude = false;
        self.start_ts = None;
        self.error_ns = None;
        self.far = false;
        self.late_run = 0;
        self.late_overlap_end = None;
        self.late_seen = 0;
        self.late_span = None;
    }

    /// The RTP timestamp the stream starts at (RECORD's `rtptime`, or the first packet).
    pub fn set_start(&mut self, ts: u32) {
        if !self.started && self.start_ts.is_none() {
            self.start_ts = Some(ts);
        }
    }

    /// The sink is open and being fed (after [`Output::Start`], until a halt or a reset).
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// The RTP timestamp (frames) the next start begins at, if known.
    pub fn start_ts(&self) -> Option<u32> {
        self.start_ts
    }

    /// RTP timestamp of the next frame to be written.
    pub fn next_ts(&self) -> u32 {
        self.next_ts
    }

    /// The fill the sink is kept at, in frames: three quarters of its `capacity`, at most
    /// [`TARGET_FILL_MAX`], and at most half the stream's latency ([`Renderer::set_latency`]),
    /// so that at least half of it is left for packets (and resends) to arrive before their
    /// frames are committed: a real-time sender with 250 ms (PipeWire) gets 125 ms.
    fn target_fill(&self, capacity: usize) -> usize {
        (capacity * 3 / 4)
            .min(TARGET_FILL_MAX)
            .min(self.latency_frames / 2)
            .max(CHUNK)
    }

    /// The stream's latency in frames (from its clock), which bounds the fill kept in the
    /// sink ([`Renderer::lead`]); not bounded until set.
    pub fn set_latency(&mut self, frames: u32) {
        self.latency_frames = frames as usize;
    }

    /// Has the sink underrun since the last look? `underruns` is its count now.
    fn underran(&mut self, underruns: u64) -> bool {
        std::mem::replace(&mut self.underruns_seen, underruns) != underruns
    }

    /// The wakeup level ([`Output::SetWakeup`]) for a sink of `capacity` frames kept at
    /// `fill` frames: signal writable once it holds less than `fill` by [`WAKE_ROOM`] (or by
    /// half of `fill`, if that is less): a wakeup then means room for a useful write, where the
    /// device's default (a period free) would signal all the time while it is kept nearly
    /// full, and spin the loop (issue 13: 97 % of the emulated board's CPU).
    fn wakeup_level(capacity: usize, fill: usize) -> usize {
        let room = WAKE_ROOM.min(fill / 2);
        capacity.saturating_sub(fill) + room
    }

    /// The output failed (or must restart: a resync, a late stream): forgets what the sink
    /// held (the edge stops it). The stream's position is kept, so the next
    /// [`Renderer::poll`] opens the sink again through the normal start path, which places
    /// the next frame on its due instant (skipping what fell due meanwhile). Frames handed to
    /// the sink but not yet heard are lost with it.
    pub fn halt(&mut self) {
        if self.started {
            self.started = false;
            self.prelude = false;
            self.start_ts = Some(self.next_ts);
        }
        self.pending = 0..0;
        self.error_ns = None;
        self.far = false;
        self.step = Step::Idle;
        self.reading = None;
        self.wake_fill = None;
    }

    /// While the output is down (after [`Renderer::halt`]): drops the audio whose due instant
    /// has passed at `now`, as if it had been played, so that the jitter buffer keeps moving
    /// with the sender (and keeps asking for lost packets of what is still to come) instead
    /// of filling up. `due_of` as for [`Renderer::poll`]. Dropped frames count in
    /// [`RenderStats::skipped_frames`].
    pub fn discard_due(
        &mut self,
        now: Instant,
        buffer: &mut JitterBuffer,
        due_of: &dyn Fn(u32) -> Option<Instant>,
    ) {
        if self.started {
            return;
        }
        let Some(ts) = self.start_ts else { return };
        let Some(due) = due_of(ts).map(|t| t + self.late_delay) else {
            return;
        };
        if due >= now {
            return;
        }
        self.next_ts = ts;
        self.skip(duration_to_frames(now - due) as usize, buffer);
        self.start_ts = Some(self.next_ts);
    }

    /// How long before its due instant a frame is committed to a sink of `capacity` frames:
    /// a packet must be in the buffer by then.
    pub fn lead(&self, capacity: usize) -> Duration {
        frames_to_duration(self.target_fill(capacity)) + START_SLACK
    }

    /// The edge opened the sink as [`Output::Start`] asked; it was open at `base` (opening a
    /// sound card takes real time, tens of ms on a slow board: the prelude is measured from
    /// the moment it is open), and had counted `underruns` underruns since it was created.
    pub fn started(&mut self, base: Instant, underruns: u64) {
        if self.step != Step::Starting {
            return;
        }
        self.step = Step::Idle;
        let Some(start_ts) = self.start_ts else {
            return;
        };
        self.base = base;
        self.underruns_seen = underruns;
        self.wake_fill = Some(PRELUDE_FILL);
        self.next_ts = start_ts;
        self.started = true;
        self.prelude = true;
        self.paced = true;
        self.pacing_checked = false;
        self.written_since_start = 0;
        self.readings.clear();
        self.net_dropped = 0;
        self.error_ns = None;
    }

    /// The sink's reading, as [`Output::Read`] asked.
    pub fn reading(&mut self, r: SinkReading) {
        self.steps = r.position_steps;
        self.reading = Some(r);
    }

    /// The sink took `frames` of the last [`Output::Write`].
    pub fn wrote(&mut self, frames: usize) {
        match &mut self.step {
            Step::TopUp { .. } => {
                self.stats.silence_frames += frames as u64;
                self.written_since_start += frames as u64;
            }
            Step::Padding { took, .. } => {
                *took = frames;
                self.stats.silence_frames += frames as u64;
                self.written_since_start += frames as u64;
            }
            Step::Pending => {
                self.stats.frames_written += frames as u64;
                self.written_since_start += frames as u64;
                self.pending.start = (self.pending.start + frames).min(self.pending.end);
            }
            Step::Audio { took, .. } => {
                *took = frames;
                self.stats.frames_written += frames as u64;
                self.written_since_start += frames as u64;
                let total = self.pending.end;
                self.pending = if frames < total {
                    log::debug!("sink took {frames} of {total} frames; the rest goes next");
                    frames..total
                } else {
                    0..0
                };
            }
            Step::Idle | Step::Starting => {}
        }
    }

    /// Does whatever is due at `now` for a sink of `capacity` frames: says what the edge is to
    /// do with the sink next ([`Output`]). `due_of(ts)` gives the instant frame `ts` must
    /// sound, or `None` while the clock has no anchor. `apply` post-processes each period
    /// written (volume). Never touches the sink itself.
    pub fn poll(
        &mut self,
        now: Instant,
        capacity: usize,
        buffer: &mut JitterBuffer,
        due_of: &dyn Fn(u32) -> Option<Instant>,
        apply: &dyn Fn(&mut [i16]),
    ) -> Output<'_> {
        let late_delay = self.late_delay;
        let due_of = &|ts: u32| due_of(ts).map(|t| t + late_delay);
        // The answer to the last request, first.
        match std::mem::replace(&mut self.step, Step::Idle) {
            Step::Idle | Step::Starting => {}
            Step::TopUp { wake } => return Output::Wait(Some(wake)),
            Step::Padding {
                asked,
                more,
                silence,
                due,
                took,
            } => {
                if took < asked {
                    return Output::Wait(Some(now + Duration::from_millis(2)));
                }
                if more > 0 {
                    return self.padding(now, more, silence, due);
                }
                self.end_prelude(silence, due, capacity);
            }
            Step::Pending => {
                if !self.pending.is_empty() {
                    return Output::Wait(Some(now + Duration::from_millis(2)));
                }
                // Done: on to the reading below.
                self.reading = None;
            }
            Step::Audio {
                delay,
                target,
                took,
            } => {
                let now = now.max(self.base);
                return self.after_audio(now, delay + took, target, buffer, due_of);
            }
        }
        if let Some(fill) = self.wake_fill.take() {
            return Output::SetWakeup(Self::wakeup_level(capacity, fill));
        }
        if !self.started {
            self.reading = None;
            let Some(start_ts) = self.start_ts else {
                return Output::Wait(None);
            };
            let Some(due) = due_of(start_ts) else {
                return Output::Wait(None);
            };
            let lead = self.lead(capacity) + PRELUDE;
            if due > now + lead {
                return Output::Wait(Some(due - lead));
            }
            self.step = Step::Starting;
            return Output::Start;
        }
        if self.prelude {
            let Some(r) = self.reading.take() else {
                return Output::Read(now);
            };
            return self.prelude(now, r, buffer, due_of);
        }
        let now = now.max(self.base);
        if !self.pending.is_empty() {
            // What the sink did not take last time goes first, so nothing is lost.
            self.step = Step::Pending;
            return Output::Write {
                frames: &self.scratch[self.pending.start * 2..self.pending.end * 2],
                at: now,
            };
        }
        let Some(r) = self.reading.take() else {
            return Output::Read(now);
        };
        let target = self.target_fill(r.capacity);
        let st = r.status;
        if self.underran(r.underruns) {
            // The device restarted after a gap: what it said before is no longer true.
            self.readings.clear();
        }
        // Decided once per start, two chunks in: later, an empty device is an underrun,
        // not a device without delay.
        if !self.pacing_checked && self.written_since_start >= 2 * CHUNK as u64 {
            self.pacing_checked = true;
            if st.delay == 0 && st.avail >= r.capacity {
                log::info!("the output reports no playback delay: pacing it by the system clock");
                self.paced = false;
            }
        }
        let settled = self.written_since_start >= 2 * CHUNK as u64;
        let (delay, correction) = if self.paced {
            (
                st.delay,
                if settled {
                    self.measure(r.at, st.delay, due_of)
                } else {
                    Correction::None
                },
            )
        } else {
            // What is "queued" is what was written ahead of its due time.
            let ahead = due_of(self.next_ts).map_or(0, |due| {
                if due > now {
                    duration_to_frames(due - now) as usize
                } else {
                    0
                }
            });
            (ahead, Correction::None)
        };
        if correction == Correction::Resync {
            // Far off (a stalled sink, a jump in the sender's clock): start over at the
            // current stream position, exactly on time, rather than stuff frames.
            self.stats.resyncs += 1;
            log::warn!(
                "sync error {} ms: restarting output",
                self.stats.sync_error_us / 1000
            );
            self.halt();
            return Output::Stop(Some(now));
        }
        if correction == Correction::Hold {
            return Output::Wait(Some(now + Duration::from_millis(2)));
        }
        let mut correction = correction;
        // Fill up to the target in one write: chunk by chunk into `scratch`, then out.
        let room = target.saturating_sub(delay).min(st.avail);
        let mut total = 0;
        let mut idle_rounds = 0;
        while total < room {
            let want = (room - total).min(CHUNK);
            let mut n = self.produce(total, want, buffer);
            if n >= 2 && self.since_correction >= CORRECTION_SPACING {
                let end = total + n;
                match correction {
                    Correction::Insert => {
                        // Repeat the last frame: the stream sounds one frame later.
                        self.scratch.copy_within((end - 1) * 2..end * 2, end * 2);
                        n += 1;
                        self.stats.frames_inserted += 1;
                        self.net_dropped -= 1;
                        self.since_correction = 0;
                    }
                    Correction::Drop => {
                        // Leave out the last frame: the stream sounds one frame earlier.
                        n -= 1;
                        self.stats.frames_dropped += 1;
                        self.net_dropped += 1;
                        self.since_correction = 0;
                    }
                    Correction::None | Correction::Hold | Correction::Resync => {}
                }
                correction = Correction::None;
            }
            self.since_correction += n as u64;
            if n == 0 {
                // Frames were discarded to catch up; bounded so that no input can spin us.
                idle_rounds += 1;
                if idle_rounds > 256 {
                    break;
                }
                continue;
            }
            total += n;
        }
        if total == 0 {
            return self.after_audio(now, delay, target, buffer, due_of);
        }
        apply(&mut self.scratch[..total * 2]);
        // A short write leaves the rest pending (see `after_audio`).
        self.pending = 0..total;
        self.step = Step::Audio {
            delay,
            target,
            took: 0,
        };
        Output::Write {
            frames: &self.scratch[..total * 2],
            at: now,
        }
    }

    /// After a period was written (`fill` frames now queued in a sink filled to `target`):
    /// the late-audio check, and when to come back.
    fn after_audio(
        &mut self,
        now: Instant,
        fill: usize,
        target: usize,
        buffer: &mut JitterBuffer,
        due_of: &dyn Fn(u32) -> Option<Instant>,
    ) -> Output<'static> {
        // Packets the buffer refused as late count too: restart after the last of them.
        let fpp = buffer.frames_per_packet();
        let refused = buffer.stats.late.saturating_sub(self.late_mark);
        let late = self.late_run + refused * fpp as u64;
        if late > self.late_seen {
            self.late_seen = late;
            let first = self.late_span.map_or(now, |(first, _)| first);
            self.late_span = Some((first, now));
        }
        let restart_at = if !self.keeps_arriving_late() {
            None
        } else if let Some((seq, ts)) = buffer.last_late().filter(|_| refused > 0) {
            let (seq, ts) = (seq.wrapping_add(1), ts.wrapping_add(fpp as u32));
            buffer.flush(Some((seq, ts)));
            Some(ts)
        } else {
            self.late_overlap_end
        };
        if let Some(ts) = restart_at {
            self.clear_late_run(buffer.stats.late);
            self.move_later(now, ts, due_of(ts), target);
            return Output::Stop(Some(now));
        }
        // Come back when half of the target has drained (a quarter was 40 % more wakeups and
        // writes for nothing: the rest still covers any scheduling delay), or for the next
        // reading. One correction per write still allows 300 ppm at that pace.
        let slack = fill.saturating_sub(target / 2);
        let wake = now + frames_to_duration(slack).max(Duration::from_millis(2));
        Output::Wait(Some(wake.min(self.next_reading(now))))
    }

    /// When to read a stepping sink's position next (module docs, "Measuring a sound
    /// card"): a pseudo-random [`READING_SPACING`] after the last reading time, so readings
    /// fall at every phase of the device's steps. Far off for a sink with an exact position
    /// (as its last reading said).
    fn next_reading(&mut self, now: Instant) -> Instant {
        if !self.steps {
            return now + Duration::from_secs(3600);
        }
        if self.reading_at <= now {
            // xorshift32: any sequence that is not a multiple of the step will do.
            let mut x = self.dither;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.dither = x;
            let (lo, hi) = READING_SPACING;
            let span = (hi - lo).as_micros() as u32;
            self.reading_at = now + lo + Duration::from_micros(u64::from(x % span.max(1)));
        }
        self.reading_at
    }

    /// One step of the prelude (module docs), with the sink's reading `r`: tops its silence up
    /// to [`PRELUDE_FILL`], and once the first frame is close to due, writes the silence that
    /// places it on its instant by the smallest reading; then audio may follow.
    fn prelude(
        &mut self,
        now: Instant,
        r: SinkReading,
        buffer: &mut JitterBuffer,
        due_of: &dyn Fn(u32) -> Option<Instant>,
    ) -> Output<'_> {
        let st = r.status;
        if self.underran(r.underruns) {
            // The device ran dry and restarts at the next write: measure it afresh.
            self.base = now;
            self.written_since_start = 0;
            self.readings.clear();
        }
        let at = r.at.max(self.base);
        let written = self.written_since_start as i64;
        let Some(due) = due_of(self.next_ts) else {
            // The anchor is gone (a new sync is on its way): keep the silence going.
            let w = PRELUDE_FILL.saturating_sub(st.delay).min(st.avail);
            let wake = (now + Duration::from_millis(5)).min(self.next_reading(now));
            return self.top_up(now, w, wake);
        };
        // When frame 0 of the start sounds, by this reading, relative to `base`.
        let start_line =
            signed_ns(at, self.base) + frames_to_ns(st.delay as i64) - frames_to_ns(written);
        // Only a sink that has been written to runs (ALSA starts a PCM at its first write, the
        // timer-paced sinks start their clocks then): a reading before that says when frame 0
        // would sound had it been written at that instant, which is earlier than it will by
        // however long the first write takes. As the smallest reading, it placed the first
        // stream after the emulated board's boot up to 2 ms early (that write is slow there
        // while qemu translates alsa-lib's and the kernel's playback paths for the first time),
        // and the stream then dropped frames to catch up. It is a guess only while there is
        // no real reading.
        if written > 0 {
            self.readings.push(at, start_line);
        }
        let line = self.readings.min().unwrap_or(start_line);
        log::trace!(
            target: "raopd::readings",
            "prelude: at {} us, delay {}, avail {}, written {written}, start line {} us, min {} us",
            signed_ns(at, self.base) / 1000,
            st.delay,
            st.avail,
            start_line / 1000,
            line / 1000
        );
        // A sink that swallows frames at once (alsa-lib's `null`, `file`) has no position to
        // measure: it is fed by the clock from its start.
        let swallows = written > 0 && st.delay == 0 && st.avail >= r.capacity;
        let silence = if swallows {
            duration_to_frames(due.saturating_duration_since(self.base))
        } else {
            // Nearest frame (negative: the first frame is already late by that much).
            let ns = i128::from(signed_ns(due, self.base) - line) * i128::from(RATE);
            (if ns >= 0 {
                (ns + 500_000_000) / 1_000_000_000
            } else {
                (ns - 500_000_000) / 1_000_000_000
            }) as i64
        };
        let need = silence - written;
        if need > PRELUDE_FILL as i64 && !swallows {
            let w = PRELUDE_FILL
                .saturating_sub(st.delay)
                .min(need as usize - PRELUDE_FILL)
                .min(st.avail);
            let wake = (now + frames_to_duration(PRELUDE_FILL / 4)).min(self.next_reading(now));
            return self.top_up(now, w, wake);
        }
        if need > 0 {
            return self.padding(now, need as usize, silence, due);
        }
        if need < 0 {
            // Play from the first frame still in the future.
            let late = (-need) as usize;
            log::info!(
                "stream started {} ms late: skipping {late} frames",
                late * 1000 / RATE as usize
            );
            self.skip(late, buffer);
        }
        self.end_prelude(silence, due, r.capacity);
        if let Some(fill) = self.wake_fill.take() {
            return Output::SetWakeup(Self::wakeup_level(r.capacity, fill));
        }
        Output::Read(now.max(self.base))
    }

    /// Asks for `frames` of prelude silence, then a wait until `wake`.
    fn top_up(&mut self, now: Instant, frames: usize, wake: Instant) -> Output<'_> {
        let n = frames.min(self.scratch.len() / 2);
        if n == 0 {
            return Output::Wait(Some(wake));
        }
        self.step = Step::TopUp { wake };
        self.scratch[..n * 2].fill(0);
        Output::Write {
            frames: &self.scratch[..n * 2],
            at: now,
        }
    }

    /// Asks for the next part of the `frames` of silence that end the prelude (`silence`
    /// frames of padding in all before the first frame, due at `due`).
    fn padding(&mut self, now: Instant, frames: usize, silence: i64, due: Instant) -> Output<'_> {
        let n = frames.min(self.scratch.len() / 2);
        self.step = Step::Padding {
            asked: n,
            more: frames - n,
            silence,
            due,
            took: 0,
        };
        self.scratch[..n * 2].fill(0);
        Output::Write {
            frames: &self.scratch[..n * 2],
            at: now,
        }
    }

    /// The first frame, due at `due`, is placed after `silence` frames of padding: the
    /// prelude is over, and the sink of `capacity` frames is to wake the loop at the fill
    /// kept from now on.
    fn end_prelude(&mut self, silence: i64, due: Instant, capacity: usize) {
        self.prelude = false;
        self.wake_fill = Some(self.target_fill(capacity));
        // The prelude's readings, as sync errors of the stream from here on.
        self.readings
            .shift(signed_ns(self.base, due) + frames_to_ns(silence));
        log::debug!(
            "first frame {} scheduled after {silence} frames of silence",
            self.next_ts
        );
    }

    /// Whether the late run is a sender whose audio keeps arriving after it is due (module
    /// docs): [`LATE_RUN_FRAMES`] of late audio, arriving over [`LATE_RUN_SPAN`] at least,
    /// and not much faster than real time. A sender catching up after a stall delivers what
    /// it owes in a burst, many times faster than real time, and is on time again soon after:
    /// moving the stream later for it would put the rest of the stream (and other rooms)
    /// out of sync for good.
    fn keeps_arriving_late(&self) -> bool {
        let Some((first, last)) = self.late_span else {
            return false;
        };
        let span = last.saturating_duration_since(first);
        let audio = frames_to_duration(self.late_seen as usize);
        self.late_seen >= LATE_RUN_FRAMES && span >= LATE_RUN_SPAN && audio <= span * 5 / 4
    }

    /// Forgets the late run: audio was played, or the stream was moved later. `mark` is the
    /// buffer's count of late packets now.
    fn clear_late_run(&mut self, mark: u64) {
        self.late_run = 0;
        self.late_mark = mark;
        self.late_overlap_end = None;
        self.late_seen = 0;
        self.late_span = None;
    }

    /// Audio keeps arriving late: restart at `ts` (due at `due` so far) late enough that it
    /// is in time, plus [`LATE_MARGIN`]. The edge stops the sink.
    fn move_later(&mut self, now: Instant, ts: u32, due: Option<Instant>, target: usize) {
        let lead = frames_to_duration(target) + START_SLACK;
        let behind = due.map_or(Duration::ZERO, |d| {
            (now + lead).saturating_duration_since(d)
        });
        self.late_delay += behind + LATE_MARGIN;
        self.stats.late_restarts += 1;
        self.stats.late_delay_ms = self.late_delay.as_millis() as u64;
        log::warn!(
            "audio keeps arriving after it is due (the sender's latency is too short for this \
             path): playing the stream {} ms later than asked",
            self.late_delay.as_millis()
        );
        self.halt();
        self.start_ts = Some(ts);
    }

    /// Takes a reading of the sync error from the sink's delay (read at `at`), updates the
    /// estimate (module docs) and says what to do.
    fn measure(
        &mut self,
        at: Instant,
        delay: usize,
        due_of: &dyn Fn(u32) -> Option<Instant>,
    ) -> Correction {
        let Some(due) = due_of(self.next_ts) else {
            return Correction::None;
        };
        let err = signed_ns(at + frames_to_duration(delay), due);
        let shift = frames_to_ns(self.net_dropped);
        self.readings.push(at, err + shift);
        let e = self.readings.min().map_or(err, |m| m - shift);
        log::trace!(
            target: "raopd::readings",
            "reading: at {} us, delay {delay}, error {} us, min {} us",
            signed_ns(at, self.base) / 1000,
            err / 1000,
            e / 1000
        );
        if self.error_ns.is_none() {
            self.stats.start_error_us = e / 1000;
        }
        if self.error_ns.is_none() || (self.logged_error_ns - e).abs() >= 100_000 {
            self.logged_error_ns = e;
            log::trace!(
                "sync error {} us (this reading {} us, delay {delay} frames, {} slots)",
                e / 1000,
                err / 1000,
                self.readings.slots.iter().flatten().count()
            );
        }
        self.error_ns = Some(e);
        self.stats.sync_error_us = e / 1000;
        self.stats.max_sync_error_us = self.stats.max_sync_error_us.max((e / 1000).abs());
        // Two readings in a row beyond the limit (a stalled sink, a jump of the sender's
        // timeline) restart the output; after the first, nothing is written, so that no audio
        // goes out only to be discarded by the restart.
        let was_far = std::mem::replace(&mut self.far, err.abs() > RESYNC_NS);
        if self.far && (was_far || e.abs() > RESYNC_NS / 2) {
            Correction::Resync
        } else if self.far {
            Correction::Hold
        } else if e > TOLERANCE_NS {
            Correction::Drop
        } else if e < -TOLERANCE_NS {
            Correction::Insert
        } else {
            Correction::None
        }
    }

    /// Drops `frames` from the front of the stream (late start).
    fn skip(&mut self, mut frames: usize, buffer: &mut JitterBuffer) {
        while frames > 0 {
            let n = self.produce(0, frames.min(CHUNK), buffer);
            self.stats.skipped_frames += n as u64;
            frames = frames.saturating_sub(n.max(1));
        }
    }

    /// Fills `scratch` from frame `at` on with up to `want` frames of the stream at
    /// `next_ts`; returns how many (0 when frames were discarded to catch up with the
    /// buffer). `at + want` must leave room for one more frame in `scratch`.
    fn produce(&mut self, at: usize, want: usize, buffer: &mut JitterBuffer) -> usize {
        let out = &mut self.scratch[at * 2..];
        let n = match buffer.peek() {
            Next::Audio { ts } => {
                let d = ts.wrapping_sub(self.next_ts) as i32;
                if d == 0 {
                    let n = buffer.read(&mut out[..want * 2]);
                    if n > 0 {
                        self.clear_late_run(buffer.stats.late);
                    }
                    n
                } else if d > 0 && d < MAX_GAP {
                    // The sender skipped timestamps: fill the hole with silence.
                    let n = (d as usize).min(want);
                    out[..n * 2].fill(0);
                    self.stats.silence_frames += n as u64;
                    n
                } else if d < 0 && d > -MAX_GAP {
                    // Overlapping timestamps: drop what was already played (or is late).
                    let n = buffer.read(&mut out[..((-d) as usize).min(want) * 2]);
                    log::debug!("dropped {n} overlapping frames");
                    self.stats.late_frames += n as u64;
                    self.late_run += n as u64;
                    self.late_overlap_end = Some(ts.wrapping_add(n as u32));
                    return 0;
                } else {
                    log::info!("stream timeline jumped from {} to {ts}", self.next_ts);
                    self.next_ts = ts;
                    return 0;
                }
            }
            Next::Missing { frames, .. } | Next::Starved { frames } => {
                let n = frames.min(want);
                buffer.skip_missing(n);
                out[..n * 2].fill(0);
                self.stats.silence_frames += n as u64;
                n
            }
            Next::Empty => {
                out[..want * 2].fill(0);
                self.stats.silence_frames += want as u64;
                want
            }
        };
        self.next_ts = self.next_ts.wrapping_add(n as u32);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Insert;
    use crate::output::{Sink, SoftSink};

    /// The edge's part, as `player` plays it: carries out on a real sink what the renderer
    /// asks, until it says when to come back.
    pub(crate) fn pump(
        r: &mut Renderer,
        now: Instant,
        sink: &mut dyn Sink,
        buffer: &mut JitterBuffer,
        due_of: &dyn Fn(u32) -> Option<Instant>,
        apply: &dyn Fn(&mut [i16]),
    ) -> Option<Instant> {
        for _ in 0..64 {
            match r.poll(now, sink.capacity(), buffer, due_of, apply) {
                Output::Start => {
                    let opening = Instant::now();
                    sink.start().unwrap();
                    r.started(now + opening.elapsed(), sink.underruns());
                }
                Output::Read(at) => {
                    let status = sink.status(at).unwrap();
                    r.reading(SinkReading {
                        status,
                        at: sink.status_time(at),
                        capacity: sink.capacity(),
                        underruns: sink.underruns(),
                        position_steps: sink.position_steps(),
                    });
                }
                Output::Write { frames, at } => {
                    let n = sink.write(at, frames).unwrap();
                    r.wrote(n);
                }
                Output::SetWakeup(frames) => sink.set_wakeup(frames).unwrap(),
                Output::Stop(wake) => {
                    sink.stop();
                    return wake;
                }
                Output::Wait(wake) => return wake,
            }
        }
        panic!("the renderer kept asking");
    }

    /// Plays `seconds` of a stream through a simulated DAC running `ppm` off, with a fake
    /// clock, and returns the renderer's stats and the worst |sync error| seen after the
    /// first second (in µs).
    fn simulate(ppm: f64, seconds: u64) -> (RenderStats, i64, Vec<i16>, usize) {
        simulate_lead(ppm, seconds, 1500)
    }

    /// [`simulate`] with the sender putting each packet into the buffer `lead_ms` before
    /// it is due (negative: after).
    fn simulate_lead(ppm: f64, seconds: u64, lead_ms: i64) -> (RenderStats, i64, Vec<i16>, usize) {
        simulate_sender(ppm, seconds, lead_ms, None)
    }

    /// As [`simulate_lead`], with the sender frozen for `stall.1` from `stall.0` after the
    /// start, sending everything it owes at once when it goes on.
    fn simulate_sender(
        ppm: f64,
        seconds: u64,
        lead_ms: i64,
        stall: Option<(Duration, Duration)>,
    ) -> (RenderStats, i64, Vec<i16>, usize) {
        simulate_edge(ppm, seconds, lead_ms, stall, Duration::ZERO)
    }

    /// A sink whose first write is carried out `late` after the renderer asked for it, as
    /// the first write to a sound card is on a board that runs that code for the first time.
    struct LateFirstWrite {
        inner: SoftSink,
        late: Duration,
        written: bool,
    }

    impl Sink for LateFirstWrite {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn start(&mut self) -> std::io::Result<()> {
            self.inner.start()
        }
        fn stop(&mut self) {
            self.inner.stop()
        }
        fn status(&mut self, now: Instant) -> std::io::Result<SinkStatus> {
            self.inner.status(now)
        }
        fn status_time(&self, now: Instant) -> Instant {
            self.inner.status_time(now)
        }
        fn write(&mut self, now: Instant, frames: &[i16]) -> std::io::Result<usize> {
            let late = if std::mem::replace(&mut self.written, true) {
                Duration::ZERO
            } else {
                self.late
            };
            self.inner.write(now + late, frames)
        }
        fn poll_fds(&mut self) -> Vec<libc::pollfd> {
            self.inner.poll_fds()
        }
        fn ready(&mut self, fds: &mut [libc::pollfd]) -> std::io::Result<bool> {
            self.inner.ready(fds)
        }
        fn underruns(&self) -> u64 {
            self.inner.underruns()
        }
        fn capacity(&self) -> usize {
            self.inner.capacity()
        }
    }

    /// [`simulate_sender`] with the sink's first write carried out `first_write_late` after
    /// it was asked for ([`LateFirstWrite`]).
    fn simulate_edge(
        ppm: f64,
        seconds: u64,
        lead_ms: i64,
        stall: Option<(Duration, Duration)>,
        first_write_late: Duration,
    ) -> (RenderStats, i64, Vec<i16>, usize) {
        let dir = std::env::temp_dir().join(format!(
            "raopd-render-{}-{ppm}-{lead_ms}-{}",
            std::process::id(),
            stall.is_some()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.raw");
        let mut sink = LateFirstWrite {
            inner: SoftSink::sim(&path, ppm).unwrap(),
            late: first_write_late,
            written: false,
        };
        let mut buffer = JitterBuffer::with_capacity_frames(3 * 44100);
        buffer.reset(352);
        let mut r = Renderer::new();
        // A sender's latency is how far ahead of their instants it sends the frames.
        if lead_ms > 0 {
            r.set_latency((lead_ms * 441 / 10) as u32);
        }
        let t0 = Instant::now();
        let start_ts: u32 = u32::MAX - 352 * 100; // wraps during the run
        let due0 = t0 + Duration::from_millis(500);
        let due_of =
            move |ts: u32| Some(due0 + frames_to_duration(ts.wrapping_sub(start_ts) as usize));
        r.set_start(start_ts);
        buffer.start_at(1000);
        let mut next_seq: u16 = 1000;
        let mut sent: u32 = 0;
        let mut worst = 0i64;
        let mut pad = None;
        let mut now = t0;
        let end = t0 + Duration::from_secs(seconds);
        while now < end {
            // Frame f is due at due0 + f / 44100 s; the sender hands it over `lead_ms` before.
            let horizon_ms = (now - t0).as_millis() as i64 + lead_ms - 500;
            let stalled = stall.is_some_and(|(at, len)| now >= t0 + at && now < t0 + at + len);
            // Behind after a stall, the sender sends four packets per turn of its loop, a
            // turn every 2 ms (pyatv's catch-up).
            let mut turn = if stall.is_some() { 4 } else { usize::MAX };
            while !stalled && turn > 0 && i64::from(sent) < horizon_ms * 441 / 10 {
                turn -= 1;
                let ts = start_ts.wrapping_add(sent);
                if let Insert::Slot(i) = buffer.insert(next_seq, ts, 0) {
                    let pcm = buffer.slot_pcm(i);
                    for (k, s) in pcm.iter_mut().take(704).enumerate() {
                        *s = ((sent as usize + k / 2) % 30000 + 1) as i16;
                    }
                    buffer.commit(i, 352);
                }
                next_seq = next_seq.wrapping_add(1);
                sent += 352;
            }
            let wake = pump(&mut r, now, &mut sink, &mut buffer, &due_of, &|_| {});
            if r.is_started() && pad.is_none() && lead_ms > 0 {
                // Started at `now` on an empty DAC: the padding is exactly the time to due.
                pad = Some(duration_to_frames(due0 - now) as usize);
            }
            if r.is_started() && now > due0 + Duration::from_secs(1) {
                worst = worst.max(r.stats.sync_error_us.abs());
            }
            let behind = !stalled && i64::from(sent) < horizon_ms * 441 / 10;
            let next = wake
                .unwrap_or(now + Duration::from_millis(5))
                .max(now + Duration::from_millis(1));
            now = if behind {
                next.min(now + Duration::from_millis(2))
            } else {
                next
            };
        }
        sink.stop();
        let raw = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let pcm = raw
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        (r.stats, worst, pcm, pad.unwrap_or(0))
    }

    #[test]
    fn exact_rate_needs_no_correction_and_is_bit_exact() {
        let (st, worst, pcm, pad) = simulate(0.0, 20);
        assert_eq!(
            (st.frames_inserted, st.frames_dropped, st.resyncs),
            (0, 0, 0)
        );
        assert!(worst <= 1000, "sync error {worst} µs");
        // After the start padding, the stream comes out sample for sample.
        let first = pcm.iter().position(|&s| s != 0).unwrap() / 2;
        assert_eq!(first, pad, "first frame not at its due instant");
        assert!(pad > 1000);
        for (i, f) in pcm[first * 2..]
            .chunks_exact(2)
            .enumerate()
            .take(44100 * 10)
        {
            assert_eq!(f[0], (i % 30000 + 1) as i16, "frame {i}");
        }
    }

    #[test]
    fn a_slow_first_write_does_not_place_the_start_early() {
        // The sink runs from its first write, which is carried out 3 ms after the renderer's
        // first reading: the first frame still sounds on its due instant, and nothing is
        // dropped afterwards (a reading before the first write used to place it 3 ms early,
        // then 130 frames were dropped to catch up).
        let late = Duration::from_millis(3);
        let (st, worst, pcm, pad) = simulate_edge(0.0, 5, 1500, None, late);
        assert_eq!(
            (st.frames_inserted, st.frames_dropped, st.resyncs),
            (0, 0, 0),
            "{st:?}"
        );
        assert!(worst <= 100, "sync error {worst} µs");
        assert!(st.start_error_us.abs() <= 100, "{st:?}");
        let first = pcm.iter().position(|&s| s != 0).unwrap() / 2;
        let want = pad - duration_to_frames(late) as usize;
        assert!(
            first.abs_diff(want) <= 1,
            "first frame {first}, due at {want}"
        );
    }

    #[test]
    fn fast_and_slow_dacs_are_followed() {
        for ppm in [200.0, -200.0] {
            let seconds = 60;
            let (st, worst, _, _) = simulate(ppm, seconds);
            let expect = 44100.0 * (seconds as f64 - 0.5) * ppm.abs() / 1e6;
            let got = if ppm > 0.0 {
                st.frames_inserted
            } else {
                st.frames_dropped
            } as f64;
            assert!(
                (got - expect).abs() <= expect * 0.1,
                "{ppm} ppm: {got} corrections, expected {expect:.0}"
            );
            assert_eq!(
                if ppm > 0.0 {
                    st.frames_dropped
                } else {
                    st.frames_inserted
                },
                0
            );
            assert!(worst <= 2000, "{ppm} ppm: sync error reached {worst} µs");
            assert_eq!(st.resyncs, 0);
        }
    }

    #[test]
    fn audio_arriving_late_is_played_late_not_dropped() {
        // Every packet reaches the buffer 120 ms after it is due: the stream starts on
        // silence, then is moved later once and plays gaplessly from there on.
        let (st, _, pcm, _) = simulate_lead(0.0, 12, -120);
        assert_eq!(st.late_restarts, 1, "{st:?}");
        // By the lateness (120 ms), the lead (the 200 ms kept in the sink and 5 ms to start)
        // and LATE_MARGIN (100 ms): about 425 ms.
        assert!(
            (220..=460).contains(&st.late_delay_ms),
            "moved {} ms later",
            st.late_delay_ms
        );
        let first = pcm.iter().position(|&s| s != 0).unwrap() / 2;
        let frames: Vec<i16> = pcm[first * 2..].chunks_exact(2).map(|f| f[0]).collect();
        // From the first audible frame on, consecutive stream frames for 9 s.
        let start = i32::from(frames[0]) - 1;
        for (i, &v) in frames.iter().enumerate().take(44_100 * 9) {
            assert_eq!(
                i32::from(v),
                (start + i as i32) % 30000 + 1,
                "frame {i} after the first audible one"
            );
        }
        assert_eq!((st.frames_inserted, st.frames_dropped), (0, 0));
    }

    /// A sender 300 ms ahead stalls for 1.5 s and then sends what it owes at once: about
    /// 1.2 s of it comes late and plays as silence (plus the lead, 155 ms at this latency,
    /// and up to one wakeup's worth, 100 ms, of refill), and the stream goes on at the
    /// instant asked, not moved later (module docs).
    #[test]
    fn a_burst_of_late_audio_after_a_stall_is_not_moved_later() {
        let stall = (Duration::from_secs(3), Duration::from_millis(1500));
        let (st, worst, pcm, _) = simulate_sender(0.0, 10, 300, Some(stall));
        assert_eq!(st.late_restarts, 0, "{st:?}");
        assert_eq!(st.resyncs, 0, "{st:?}");
        assert!(worst <= 1000, "sync error reached {worst} µs");
        // Every audible frame at one offset from its stream position, before and after the
        // gap: stream frame k carries the value k % 30000 + 1.
        let frames: Vec<i16> = pcm.chunks_exact(2).map(|f| f[0]).collect();
        let first = frames.iter().position(|&v| v != 0).unwrap();
        let start = i64::from(frames[first]) - 1;
        let mut silent = 0;
        for (i, &v) in frames.iter().enumerate().skip(first) {
            if v == 0 {
                silent += 1;
            } else {
                assert_eq!(
                    i64::from(v),
                    (start + (i - first) as i64) % 30000 + 1,
                    "output frame {i}: the stream moved"
                );
            }
        }
        let gap = silent as f64 / 44100.0;
        assert!((1.0..=1.6).contains(&gap), "{gap:.3} s of silence");
    }

    #[test]
    fn audio_in_time_is_never_moved() {
        let (st, _, _, _) = simulate_lead(0.0, 10, 300);
        assert_eq!((st.late_restarts, st.late_frames), (0, 0), "{st:?}");
    }

    /// The output goes away for 3 s (halt, then only `discard_due`) 2 s into a stream and
    /// comes back: the audio after the gap is the audio due then, on time, and the stream
    /// plays on from there, frame after frame, although the buffer (3 s) would have
    /// overflowed had nothing been taken from it meanwhile.
    #[test]
    fn after_an_outage_the_stream_resumes_at_the_position_due() {
        let dir = std::env::temp_dir().join(format!("raopd-render-outage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.raw");
        let mut sink = SoftSink::pipe(&path).unwrap();
        let mut buffer = JitterBuffer::with_capacity_frames(3 * 44100);
        buffer.reset(352);
        let mut r = Renderer::new();
        let t0 = Instant::now();
        let due0 = t0 + Duration::from_millis(500);
        let due_of = move |ts: u32| Some(due0 + frames_to_duration(ts as usize));
        r.set_start(0);
        buffer.start_at(0);
        let (down, up) = (due0 + Duration::from_secs(2), due0 + Duration::from_secs(5));
        let mut sent: u32 = 0;
        let mut seq: u16 = 0;
        let mut now = t0;
        let mut resumed_at = None;
        while now < due0 + Duration::from_secs(8) {
            // The sender hands every frame over 1.5 s before it is due.
            while frames_to_duration(sent as usize) < (now + Duration::from_millis(1500)) - due0 {
                if let Insert::Slot(i) = buffer.insert(seq, sent, 0) {
                    for (k, s) in buffer.slot_pcm(i).iter_mut().take(704).enumerate() {
                        *s = ((sent as usize + k / 2) % 30000 + 1) as i16;
                    }
                    buffer.commit(i, 352);
                }
                seq = seq.wrapping_add(1);
                sent += 352;
            }
            let wake = if now >= down && now < up {
                if r.is_started() {
                    sink.stop();
                    r.halt();
                }
                r.discard_due(now, &mut buffer, &due_of);
                None
            } else {
                let wake = pump(&mut r, now, &mut sink, &mut buffer, &due_of, &|_| {});
                if now >= up && resumed_at.is_none() {
                    resumed_at = Some(now);
                }
                wake
            };
            now = wake
                .unwrap_or(now + Duration::from_millis(40))
                .max(now + Duration::from_millis(1));
        }
        sink.stop();
        let raw = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let frames: Vec<i16> = raw
            .chunks_exact(4)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        // The frame positions written, in order: one jump (the gap), no repeat.
        let pos: Vec<usize> = frames
            .iter()
            .filter(|&&s| s != 0)
            .map(|&s| s as usize - 1)
            .collect();
        let jumps: Vec<(usize, usize)> = pos
            .windows(2)
            .filter(|w| w[1] != (w[0] + 1) % 30000)
            .map(|w| (w[0], w[1]))
            .collect();
        assert_eq!(jumps.len(), 1, "{jumps:?}");
        // The first frame after the gap is the one due when the output came back.
        let due_then = duration_to_frames(resumed_at.unwrap() - due0) as usize % 30000;
        let resumed = jumps[0].1;
        assert!(
            resumed.abs_diff(due_then) <= 441,
            "resumed at frame {resumed}, due then: {due_then}"
        );
        assert_eq!(buffer.stats.resyncs, 0, "the buffer overflowed");
        // And it played on to the end: 3 s after the return.
        let after = pos.len()
            - 1
            - pos
                .windows(2)
                .position(|w| w[1] != (w[0] + 1) % 30000)
                .unwrap();
        assert!(after >= 3 * 44100, "{after} frames after the gap");
    }

    /// The emulated board's pattern (issue 13): about 70 readings a second, nearly all a
    /// tick (4 ms) late, the on-time one rarely. The window's minimum is the on-time reading
    /// for as long as it is in the window, however many late ones come after it.
    #[test]
    fn min_window_keeps_a_rare_low_reading_among_many_late_ones() {
        let mut w = MinWindow::default();
        let t0 = Instant::now();
        w.push(t0, 60_000);
        for i in 1..=75u64 {
            let at = t0 + Duration::from_millis(14 * i);
            w.push(at, 3_700_000 + (i as i64 % 7) * 30_000);
            if i * 14 < 900 {
                assert_eq!(w.min(), Some(60_000), "reading {i}");
            }
        }
        // A second on, the on-time reading has left the window.
        assert!(w.min().unwrap() >= 3_700_000);
        // Shifts apply to what is kept; a clear forgets it.
        w.shift(-100);
        assert!(w.min().unwrap() >= 3_699_900);
        w.clear();
        assert_eq!(w.min(), None);
    }

    /// A reading dated before the window is ignored; one within it counts in its own slot.
    #[test]
    fn min_window_ignores_readings_older_than_the_window() {
        let mut w = MinWindow::default();
        let t0 = Instant::now();
        w.push(t0, 500);
        w.push(t0 + Duration::from_secs(2), 900);
        w.push(t0 + Duration::from_millis(100), 1);
        assert_eq!(w.min(), Some(900));
        w.push(t0 + Duration::from_millis(1_950), 800);
        assert_eq!(w.min(), Some(800));
    }
}
