//! The per-period output path: decides which frames go to the sink and when. The first
//! frame of a stream is placed exactly on its due instant by padding with silence (or
//! skipping, if we are late); after that the sink is kept filled to a target depth from
//! the jitter buffer, with silence standing in for packets that never came.

use crate::buffer::{JitterBuffer, Next};
use crate::output::{Sink, RATE};
use std::io;
use std::time::{Duration, Instant};

/// Frames produced per write at most.
const CHUNK: usize = 352;
/// The sink is kept filled to this much audio at most; it is also how early frames are
/// committed, so a packet missing this close to its time is given up.
const TARGET_FILL_MAX: usize = 8820; // 200 ms
/// A timestamp jump larger than this is a new timeline, not a gap to fill.
const MAX_GAP: i32 = 44100;

/// Counters, exposed for logs and the status interface.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RenderStats {
    pub frames_written: u64,
    /// Silence written: start padding, missing packets, starvation.
    pub silence_frames: u64,
    /// Frames dropped because the stream started late.
    pub skipped_frames: u64,
    /// How far the first frame's start was from its due instant, in microseconds
    /// (positive: late), as the sink reported its delay at that moment.
    pub start_error_us: i64,
}

pub struct Renderer {
    started: bool,
    start_ts: Option<u32>,
    next_ts: u32,
    scratch: Box<[i16]>,
    pub stats: RenderStats,
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
    pub fn new() -> Self {
        Renderer {
            started: false,
            start_ts: None,
            next_ts: 0,
            scratch: vec![0; CHUNK * 2].into_boxed_slice(),
            stats: RenderStats::default(),
        }
    }

    /// FLUSH / new stream: the next frame to play will be scheduled afresh.
    pub fn reset(&mut self) {
        self.started = false;
        self.start_ts = None;
    }

    /// The RTP timestamp the stream starts at (RECORD's `rtptime`, or the first packet).
    pub fn set_start(&mut self, ts: u32) {
        if !self.started && self.start_ts.is_none() {
            self.start_ts = Some(ts);
        }
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    pub fn start_ts(&self) -> Option<u32> {
        self.start_ts
    }

    /// RTP timestamp of the next frame to be written.
    pub fn next_ts(&self) -> u32 {
        self.next_ts
    }

    fn target_fill(sink: &dyn Sink) -> usize {
        (sink.capacity() * 3 / 4).clamp(CHUNK, TARGET_FILL_MAX)
    }

    /// Does whatever is due at `now`. `due_of(ts)` gives the instant frame `ts` must
    /// sound, or `None` while the clock has no anchor. Returns when to call again (the
    /// sink may also signal readiness earlier), or `None` if nothing can happen until a
    /// packet arrives. `apply` post-processes each chunk (volume).
    pub fn pump(
        &mut self,
        now: Instant,
        sink: &mut dyn Sink,
        buffer: &mut JitterBuffer,
        due_of: &dyn Fn(u32) -> Option<Instant>,
        apply: &dyn Fn(&mut [i16]),
    ) -> io::Result<Option<Instant>> {
        let target = Self::target_fill(sink);
        if !self.started {
            let Some(start_ts) = self.start_ts else {
                return Ok(None);
            };
            let Some(due) = due_of(start_ts) else {
                return Ok(None);
            };
            let lead = frames_to_duration(target) + Duration::from_millis(5);
            if due > now + lead {
                return Ok(Some(due - lead));
            }
            sink.start()?;
            let st = sink.status(now)?;
            // The next frame written sounds after what is queued: pad or skip so that
            // frame `start_ts` sounds exactly at `due`.
            let sounds_at = now + frames_to_duration(st.delay);
            self.next_ts = start_ts;
            self.started = true;
            if due >= sounds_at {
                let pad = duration_to_frames(due - sounds_at) as usize;
                self.write_silence(now, sink, pad.min(st.avail))?;
                self.stats.start_error_us = 0;
            } else {
                let late = duration_to_frames(sounds_at - due) as usize;
                log::info!(
                    "stream started {} ms late: skipping",
                    late * 1000 / RATE as usize
                );
                self.skip(late, buffer);
                self.stats.start_error_us = 0;
            }
            log::debug!("first frame {start_ts} scheduled");
        }
        let st = sink.status(now)?;
        let (mut fill, mut avail) = (st.delay, st.avail);
        let mut idle_rounds = 0;
        while fill < target && avail > 0 {
            let want = (target - fill).min(avail).min(CHUNK);
            let n = self.produce(want, buffer);
            if n == 0 {
                // Frames were discarded to catch up; bounded so that no input can spin us.
                idle_rounds += 1;
                if idle_rounds > 256 {
                    break;
                }
                continue;
            }
            apply(&mut self.scratch[..n * 2]);
            let w = sink.write(now, &self.scratch[..n * 2])?;
            self.stats.frames_written += w as u64;
            if w < n {
                log::debug!("sink took {w} of {n} frames");
                fill += w;
                break;
            }
            fill += w;
            avail -= w;
        }
        // Come back when a quarter of the target has drained.
        let slack = fill.saturating_sub(target - target / 4);
        Ok(Some(
            now + frames_to_duration(slack).max(Duration::from_millis(2)),
        ))
    }

    fn write_silence(
        &mut self,
        now: Instant,
        sink: &mut dyn Sink,
        mut frames: usize,
    ) -> io::Result<()> {
        self.scratch.fill(0);
        while frames > 0 {
            let n = frames.min(CHUNK);
            let w = sink.write(now, &self.scratch[..n * 2])?;
            self.stats.silence_frames += w as u64;
            if w == 0 {
                break;
            }
            frames -= w;
        }
        Ok(())
    }

    /// Drops `frames` from the front of the stream (late start).
    fn skip(&mut self, mut frames: usize, buffer: &mut JitterBuffer) {
        while frames > 0 {
            let n = self.produce(frames.min(CHUNK), buffer);
            self.stats.skipped_frames += n as u64;
            frames = frames.saturating_sub(n.max(1));
        }
    }

    /// Fills `scratch` with up to `want` frames of the stream at `next_ts`; returns how
    /// many (0 when frames were discarded to catch up with the buffer).
    fn produce(&mut self, want: usize, buffer: &mut JitterBuffer) -> usize {
        let n = match buffer.peek() {
            Next::Audio { ts } => {
                let d = ts.wrapping_sub(self.next_ts) as i32;
                if d == 0 {
                    buffer.read(&mut self.scratch[..want * 2])
                } else if d > 0 && d < MAX_GAP {
                    // The sender skipped timestamps: fill the hole with silence.
                    let n = (d as usize).min(want);
                    self.scratch[..n * 2].fill(0);
                    self.stats.silence_frames += n as u64;
                    n
                } else if d < 0 && d > -MAX_GAP {
                    // Overlapping timestamps: drop what was already played.
                    let n = buffer.read(&mut self.scratch[..((-d) as usize).min(want) * 2]);
                    log::debug!("dropped {n} overlapping frames");
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
                self.scratch[..n * 2].fill(0);
                self.stats.silence_frames += n as u64;
                n
            }
            Next::Empty => {
                self.scratch[..want * 2].fill(0);
                self.stats.silence_frames += want as u64;
                want
            }
        };
        self.next_ts = self.next_ts.wrapping_add(n as u32);
        n
    }
}
