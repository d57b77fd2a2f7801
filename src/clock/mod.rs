//! The sender clock model: when must each audio frame leave the DAC, on our clock?
//!
//! A RAOP sender stamps audio with RTP timestamps (frames at 44100 Hz, `u32`, wrapping) and
//! tells us, in sync packets, at which time on *its* NTP clock a given frame must sound. Timing
//! exchanges (NTP-style request/reply on the timing port) relate its clock to ours. This module
//! combines the two into a mapping from RTP timestamps to instants of our monotonic clock,
//! which the player uses to schedule output.
//!
//! It is sans-IO: it never touches a socket or reads a clock. The caller feeds it received
//! packets together with their arrival time, asks [`ClockModel::poll_timeout`] when it next
//! needs to act and [`ClockModel::poll_timing_request`] what to send, so the whole thing is
//! deterministic and testable with a fake clock.
//!
//! Internally:
//! * sender NTP times are converted to nanoseconds relative to the first sender time seen,
//!   with wrapping differences, so the huge 1900-epoch values and the 2036 NTP rollover never
//!   reach the arithmetic;
//! * RTP timestamps are unwrapped to an `i64` timeline relative to the current anchor (the
//!   nearest 2^32 neighbour), so mappings stay continuous across the 2^32 wrap and tolerate
//!   small backward steps;
//! * the offset/drift estimate lives in the private `estimator` module: per-leg minimum
//!   delay bounds over a window of about three minutes for the offset, the slope of their
//!   convex hulls (smoothed) for the drift, and a served model that is slewed, never stepped,
//!   once audio can be playing.
//!
//! # Latency: when the sender wants a frame to sound
//!
//! A sync packet says "frame `rtp_now` is being sent at sender time `ntp`" and states a
//! latency `L = rtp_now − rtp_minus_latency`. An AirPort Express does not play frame
//! `rtp_minus_latency` at `ntp`: it adds its own output latency, the 11025 frames (250 ms) it
//! announces as `Audio-Latency` in the RECORD reply ([`AUDIO_LATENCY`]), and senders schedule
//! for that: senders of the RAOP-Player lineage count their status as `L + 11025`, and
//! PipeWire's RAOP sink states `L = 0` and sends each packet in real time, relying on the
//! receiver's 11025 entirely. shairport-sync (`rtp.c`, the reference open receiver) adds the
//! 11025 when the sync packet's bytes 2–3 are 7 (iTunes, PulseAudio, PipeWire, pyatv and the
//! RAOP-Player lineage all send 7) or when the sender's `User-Agent` is `AirPlay/N` with
//! `N <= 353` or `N >= 371` (iOS versions it measured); then it clamps the total to the
//! SDP's `a=min-latency` and `a=max-latency`. raopd follows the same rule ([`LatencyRule`]):
//!
//! ```text
//! total = clamp(L + (adds ? 11025 : 0), a=min-latency, a=max-latency)
//! frame (rtp_now − total) sounds at sender time ntp, plus --latency-offset-ms
//! ```
//!
//! # Noisy sync statements
//!
//! Some senders stamp sync packets with jitter of tens of milliseconds (timers in a scripting
//! runtime fire late while the RTP timestamp stays exact). One statement must not move the
//! schedule, so only the first sync after RECORD/FLUSH (flagged `0x90`, or the first at all)
//! anchors the mapping. Each later statement is compared with the anchor's prediction: a
//! residual within ±5 ms slews the anchor by 1/32 of it, at most 0.1 ms (a sender whose RTP clock runs
//! slightly off its NTP clock is followed; so is a sender whose statements settle a few
//! milliseconds off its first one, as PulseAudio's do when its sink thread is scheduled late,
//! gradually rather than by a step); larger residuals are counted as outliers and move
//! nothing, unless [`CONSISTENT_SYNCS`] of them in a row agree — all on one side and within
//! 4 ms of each other (a real step), or all beyond 50 ms on one side (a jump even through
//! ±40 ms of jitter) — which re-anchors by their median.
//!
//! Before anything has played by the anchor (until [`FREE_MARGIN_NS`] before the stream's
//! first frame is due), a statement within the band that puts the stream *earlier* moves the
//! anchor all the way: a statement is stamped when the sender gets to send it, so it can only
//! be late, and the earliest is the best. PulseAudio's first statement after RECORD, sent in
//! its start-up burst, was 3–3.6 ms later than the ones after it on the emulated board; slewed
//! towards them after the start, the stream dropped frames within its first seconds.
//!
//! Timestamps come off the network: no panic on input (issue 11).
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

mod estimator;
pub mod mono;
mod ntp;
#[cfg(test)]
mod tests;

pub use mono::{instant_of, ns_of};
pub use ntp::{local_to_ntp, ntp_to_ns, LocalNs};

use crate::rtp::SyncRepr;
use estimator::{Estimator, Outcome, SHORT_WINDOW, WINDOW};
use ntp::{ntp_delta_to_ns, NS_PER_SEC};

/// Timing requests are sent this often until a handful of samples exist, so the first
/// estimate is good before the first frame is due (the default latency is 2 s).
const FAST_INTERVAL_NS: u64 = 200_000_000;
/// Then this often until the estimator's window is full, so the drift is measured within a
/// minute rather than after several.
const MEDIUM_INTERVAL_NS: u64 = 1_000_000_000;
/// Fast requests stop after this many even if the sender does not answer (falling back to the
/// 1 s rate), so an unresponsive sender is not polled at 5 Hz forever.
const FAST_REQUEST_LIMIT: u32 = 30;
/// Replies arriving later than this after their request are useless for timing (the offset
/// error is up to half the round trip) and more likely a stale or duplicated packet.
const MAX_RTT_NS: u64 = 1_000_000_000;
/// Outstanding timing requests remembered for matching replies.
const PENDING: usize = 8;
/// A later sync statement within this of the anchor's prediction slews the anchor (by at
/// most `estimator::MAX_SLEW_NS`); beyond it, it is an outlier. Wider than shairport-sync's
/// 2 ms drift tolerance: PulseAudio's statements, stamped when its sink thread gets to send,
/// sit 2 ms or more off its first one on a loaded machine, and a step of that size would
/// cost dropped frames where a slew costs none for the first seconds.
const SLEW_BAND_NS: i64 = 5_000_000;
/// A statement within the band moves the anchor by this fraction of its residual (at most
/// `estimator::MAX_SLEW_NS`): a steady offset is followed with a time constant of 32
/// statements (about 30 s), so statement noise averages out instead of walking the anchor.
const SLEW_DIVISOR: i64 = 32;
/// Until this long before the stream's first frame is due, nothing has been played by the
/// anchor, so a statement that puts the stream earlier (within [`SLEW_BAND_NS`]) moves it all
/// the way at once: statements are stamped when sent and only ever late, so the earliest is
/// the best. 0.5 s leaves the renderer's lead (200 ms) and its final start measurement clear.
const FREE_MARGIN_NS: u64 = 500_000_000;
/// Consecutive outliers that must agree before the anchor moves to them.
pub const CONSISTENT_SYNCS: usize = 4;
/// Outliers agreeing within this (max − min) are a real step of the sender's timeline.
const CONSISTENT_SPREAD_NS: i64 = 4_000_000;
/// Outliers all beyond this on one side are a jump, whatever their spread.
const JUMP_NS: i64 = 50_000_000;
/// Sync packets (and SDP `a=min-latency`/`a=max-latency`) claiming more latency than this, in
/// frames (10 s), are treated as garbage.
pub const MAX_LATENCY_FRAMES: u32 = 10 * crate::RATE;

/// Frames the receiver adds to the latency stated in sync packets, announced in RECORD's reply
/// as `Audio-Latency` (the value AirPort Express and shairport-sync use): 250 ms.
pub const AUDIO_LATENCY: u32 = 11025;

/// How the total latency of a stream is worked out from what its sync packets state. See the
/// module docs for the rule and its sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyRule {
    /// Frames added when the sender expects it: [`AUDIO_LATENCY`].
    pub audio_latency: u32,
    /// The sender's AirPlay version, from a `User-Agent: AirPlay/N[.M]` header.
    pub airplay_version: Option<u32>,
    /// SDP `a=min-latency`, in frames.
    pub min_frames: Option<u32>,
    /// SDP `a=max-latency`, in frames.
    pub max_frames: Option<u32>,
}

impl Default for LatencyRule {
    fn default() -> Self {
        Self {
            audio_latency: AUDIO_LATENCY,
            airplay_version: None,
            min_frames: None,
            max_frames: None,
        }
    }
}

impl LatencyRule {
    /// Whether a sync packet with these `flags` (bytes 2–3) asks for [`Self::audio_latency`]
    /// on top of its stated latency: flags 7, or an AirPlay version up to 353 or from 371 on
    /// (as shairport-sync measured).
    pub fn adds_audio_latency(&self, flags: u16) -> bool {
        flags == 7 || self.airplay_version.is_some_and(|v| v <= 353 || v >= 371)
    }

    /// The total latency in frames for a sync packet stating `stated` frames with `flags`:
    /// the stated latency, plus the audio latency where expected, clamped to the SDP's
    /// minimum and maximum (a maximum below the minimum is ignored).
    pub fn total(&self, stated: u32, flags: u16) -> u32 {
        let mut total = stated;
        if self.adds_audio_latency(flags) {
            total = total.saturating_add(self.audio_latency);
        }
        if let Some(max) = self
            .max_frames
            .filter(|&m| m >= self.min_frames.unwrap_or(0))
        {
            total = total.min(max);
        }
        total.max(self.min_frames.unwrap_or(0))
    }
}

/// Parameters of a [`ClockModel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockConfig {
    /// RTP clock rate in frames per second (44100 for RAOP).
    pub sample_rate: u32,
    /// Steady-state interval between timing requests, in ns.
    pub timing_interval_ns: u64,
    /// Added to every mapped time, in ns, to compensate for the output path (DAC, amplifier,
    /// speakers) or deliberate alignment with other rooms. May be negative.
    pub output_offset_ns: i64,
    /// Total latency in frames assumed until a sync packet states one.
    pub default_latency_frames: u32,
    /// How sync packets' latency becomes the total.
    pub latency: LatencyRule,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            sample_rate: crate::RATE,
            timing_interval_ns: 3 * NS_PER_SEC,
            output_offset_ns: 0,
            default_latency_frames: 2 * crate::RATE,
            latency: LatencyRule::default(),
        }
    }
}

/// A snapshot for logs and the control interface.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockStats {
    /// Sender clock minus ours as of the last update: the sender's NTP time in ns since 1900
    /// minus our monotonic ns. `None` before any timing reply or sync packet.
    pub offset_ns: Option<i64>,
    /// Smallest round trip among the recent timing exchanges.
    pub rtt_ns: Option<u64>,
    /// How much faster the sender's clock runs than ours, in parts per million.
    pub drift_ppm: f64,
    /// Timing exchanges in the short window.
    pub samples: usize,
    /// Whether RTP timestamps can be mapped.
    pub anchored: bool,
    /// Total latency in frames (see [`LatencyRule`]): from the last sync packet, else the
    /// configured default.
    pub latency_frames: u32,
    /// Later sync statements too far from the anchor to be believed (sender jitter).
    pub sync_outliers: u64,
    /// Times the anchor moved to a consistent run of outliers.
    pub reanchors: u64,
}

/// A timing request we sent and have not yet seen answered.
#[derive(Clone, Copy, Debug)]
struct Pending {
    /// The transmit field we sent, echoed back as `origin`.
    ntp: u64,
    sent: LocalNs,
}

/// What a given RTP frame is tied to.
#[derive(Clone, Copy, Debug)]
enum AnchorTime {
    /// Sender time (ns from the sender epoch) at which the frame sounds: from a sync packet.
    Sender(i64),
    /// Local time at which the frame sounds: the first-packet fallback, no sender time known.
    Local(LocalNs),
}

#[derive(Clone, Copy, Debug)]
struct Anchor {
    /// The anchor frame as sent (wrapped), the reference for unwrapping.
    rtp: u32,
    /// The same frame on the extended timeline.
    ext: i64,
    at: AnchorTime,
}

impl Anchor {
    /// Extends `rtp` to the timeline, choosing the value nearest the anchor.
    fn extend(&self, rtp: u32) -> i64 {
        self.ext + i64::from(rtp.wrapping_sub(self.rtp) as i32)
    }
}

/// Maps the sender's RTP timestamps to instants of our monotonic clock. See the module docs.
pub struct ClockModel {
    cfg: ClockConfig,
    est: Estimator,
    /// First sender NTP time seen; all sender times are kept relative to it.
    sender_epoch: Option<u64>,
    pending: [Option<Pending>; PENDING],
    pending_next: usize,
    next_request: LocalNs,
    /// Requests sent in the current fast phase.
    fast_requests: u32,
    anchor: Option<Anchor>,
    /// Until when (local ns) the anchor may move to an earlier statement at once: the stream's
    /// first frame due less [`FREE_MARGIN_NS`]. `None` once anchored from a guess.
    free_until: Option<LocalNs>,
    /// The sender-stated anchor before the last reset, for the first packet after a FLUSH
    /// (see [`ClockModel::handle_first_packet`]).
    before_reset: Option<Anchor>,
    /// Total latency from the last sync packet.
    latency: Option<u32>,
    /// A flagged (`0x90`) sync has anchored since the last reset: later flags are ordinary
    /// statements.
    flagged: bool,
    /// Residuals (ns) of the outliers in a row since the last believed statement.
    outliers: [i64; CONSISTENT_SYNCS],
    outlier_run: usize,
    sync_outliers: u64,
    reanchors: u64,
}

impl ClockModel {
    /// Starts a model at `now`; the first timing request is due immediately.
    pub fn new(cfg: ClockConfig, now: LocalNs) -> Self {
        let cfg = ClockConfig {
            // A zero rate would divide by zero; RAOP is always 44100.
            sample_rate: if cfg.sample_rate == 0 {
                crate::RATE
            } else {
                cfg.sample_rate
            },
            ..cfg
        };
        Self {
            cfg,
            est: Estimator::new(),
            sender_epoch: None,
            pending: [None; PENDING],
            pending_next: 0,
            next_request: now,
            fast_requests: 0,
            anchor: None,
            free_until: None,
            before_reset: None,
            latency: None,
            flagged: false,
            outliers: [0; CONSISTENT_SYNCS],
            outlier_run: 0,
            sync_outliers: 0,
            reanchors: 0,
        }
    }

    /// When the next timing request is due. Always `Some`: requests continue for the whole
    /// session to track drift; the `Option` lets callers merge it with other timeouts.
    pub fn poll_timeout(&self) -> Option<LocalNs> {
        Some(self.next_request)
    }

    /// If a timing request is due at `now`, records it and returns the value for its transmit
    /// field (bytes 24..32 of the `0x52` packet): `now` encoded by [`local_to_ntp`]. The sender
    /// echoes it as `origin`, which is how the reply is matched to its send time.
    ///
    /// Schedule: every 200 ms while fewer than 8 exchanges have succeeded (at most 30 such
    /// requests), then every second until the estimator's window of 64 is full, then every
    /// `timing_interval_ns` (never below 200 ms). A confirmed sender clock jump restarts it.
    pub fn poll_timing_request(&mut self, now: LocalNs) -> Option<u64> {
        if now < self.next_request {
            return None;
        }
        let ntp = local_to_ntp(now);
        if let Some(p) = self.pending.get_mut(self.pending_next) {
            *p = Some(Pending { ntp, sent: now });
        }
        self.pending_next = (self.pending_next + 1) % PENDING;
        let fast = self.est.samples() < SHORT_WINDOW && self.fast_requests < FAST_REQUEST_LIMIT;
        let interval = if fast {
            self.fast_requests += 1;
            FAST_INTERVAL_NS
        } else if self.est.samples() < WINDOW {
            MEDIUM_INTERVAL_NS
                .min(self.cfg.timing_interval_ns)
                .max(FAST_INTERVAL_NS)
        } else {
            // Never poll faster than the fast rate, whatever the configuration says.
            self.cfg.timing_interval_ns.max(FAST_INTERVAL_NS)
        };
        self.next_request = now.saturating_add(interval);
        Some(ntp)
    }

    /// Feeds a timing reply (`0x53`): `origin` is our transmit value echoed, `receive` and
    /// `transmit` the sender's NTP times, `arrival` our local time when the reply arrived.
    ///
    /// Replies that match no outstanding request (never sent, already answered, or pushed out
    /// by newer requests), that took longer than a second, or whose times are inconsistent
    /// (sender transmit before receive, negative round trip) are ignored.
    pub fn handle_timing_reply(
        &mut self,
        origin: u64,
        receive: u64,
        transmit: u64,
        arrival: LocalNs,
    ) {
        let Some(slot) = self
            .pending
            .iter_mut()
            .find(|p| p.is_some_and(|p| p.ntp == origin))
        else {
            log::debug!("clock: timing reply for unknown origin {origin:#x}, ignored");
            return;
        };
        let Some(Pending { sent, .. }) = slot.take() else {
            return;
        };
        if arrival < sent || arrival - sent > MAX_RTT_NS {
            log::debug!(
                "clock: timing reply after {} ns, ignored",
                arrival.wrapping_sub(sent)
            );
            return;
        }
        let receive = i128::from(self.sender_ns(receive));
        let transmit = i128::from(self.sender_ns(transmit));
        let (sent_i, arrival_i) = (i128::from(sent), i128::from(arrival));
        let rtt = (arrival_i - sent_i) - (transmit - receive);
        if transmit < receive || rtt < 0 {
            log::debug!("clock: inconsistent timing reply (rtt {rtt} ns), ignored");
            return;
        }
        let offset = ((receive - sent_i) + (transmit - arrival_i)).div_euclid(2);
        let Ok(offset) = i64::try_from(offset) else {
            return;
        };
        let mid = sent + (arrival - sent) / 2;
        if self.est.add(mid, offset, rtt as u64, arrival) == Outcome::Jump {
            // Rebuild the sample window quickly.
            self.fast_requests = 0;
            self.next_request = self
                .next_request
                .min(arrival.saturating_add(FAST_INTERVAL_NS));
        }
    }

    /// Feeds a sync packet (`0x54`) that arrived at `arrival`. Its stated latency becomes the
    /// total by [`LatencyRule::total`], and frame `rtp_now − total` sounds at its NTP time.
    ///
    /// The first sync after RECORD/FLUSH (the first flagged `0x90`, or the first at all)
    /// anchors the mapping; later ones are judged against it (module docs: one noisy
    /// statement never moves the schedule). Before any timing reply, the sender's clock is
    /// assumed to read `ntp` at `arrival` (the sender stamps sync packets as it sends them, so
    /// this is off only by the one-way delay); timing replies then refine it. A stated latency
    /// over 10 s is garbage and the packet is ignored.
    pub fn handle_sync(&mut self, sync: &SyncRepr, arrival: LocalNs) {
        let stated = sync.latency();
        if stated > MAX_LATENCY_FRAMES {
            log::warn!("clock: sync packet with latency {stated} frames, ignored");
            return;
        }
        let total = self.cfg.latency.total(stated, sync.flags);
        if self.latency != Some(total) {
            log::debug!(
                "clock: latency {total} frames (stated {stated}, flags {})",
                sync.flags
            );
        }
        self.latency = Some(total);
        let sender = self.sender_ns(sync.ntp);
        self.est.seed(
            sender.saturating_sub(i64::try_from(arrival).unwrap_or(i64::MAX)),
            arrival,
        );
        // The statement: frame `rtp` sounds at sender time `sender`.
        let rtp = sync.rtp_now.wrapping_sub(total);
        let anchors = sync.first && !self.flagged;
        self.flagged |= sync.first;
        let at = match self.anchor {
            Some(
                a @ Anchor {
                    at: AnchorTime::Sender(a_sender),
                    ..
                },
            ) if !anchors => {
                let ext = a.extend(rtp);
                let predicted = i128::from(a_sender)
                    + self.frames_to_ns(i128::from(ext - a.ext), Rounding::Nearest);
                let residual = i64::try_from(i128::from(sender) - predicted).unwrap_or(i64::MAX);
                let early = (-SLEW_BAND_NS..0).contains(&residual)
                    && self.free_until.is_some_and(|f| arrival < f);
                let moved = if early {
                    // Nothing played yet: the earliest statement is the best (FREE_MARGIN_NS).
                    i128::from(residual)
                } else {
                    i128::from(self.judge(residual))
                };
                log::trace!("clock: sync statement {residual} ns off the anchor, moved {moved} ns");
                // Move the anchor to this frame (keeps unwrapping local), on the predicted
                // line plus whatever the judgement allows.
                self.anchor = Some(Anchor {
                    rtp,
                    ext,
                    at: AnchorTime::Sender(i64::try_from(predicted + moved).unwrap_or(sender)),
                });
                return;
            }
            _ => sender,
        };
        let fresh = self.anchor.is_none();
        let ext = self.anchor.map_or(i64::from(rtp), |a| a.extend(rtp));
        self.outlier_run = 0;
        self.anchor = Some(Anchor {
            rtp,
            ext,
            at: AnchorTime::Sender(at),
        });
        // Only a first anchor marks the stream's start: its first frames are the ones being
        // sent now (`rtp_now`). One replacing a guess may come with audio already playing.
        self.free_until = if fresh {
            self.first_due(sync.rtp_now)
        } else {
            None
        };
    }

    /// When frame `rtp`, among the stream's first, is due, less [`FREE_MARGIN_NS`].
    fn first_due(&self, rtp: u32) -> Option<LocalNs> {
        self.local_time_of(rtp)
            .map(|t| t.saturating_sub(FREE_MARGIN_NS))
    }

    /// How far (ns) a later sync statement `residual` ns off the anchor moves it.
    fn judge(&mut self, residual: i64) -> i64 {
        if residual.abs() <= SLEW_BAND_NS {
            self.outlier_run = 0;
            return (residual / SLEW_DIVISOR)
                .clamp(-estimator::MAX_SLEW_NS, estimator::MAX_SLEW_NS);
        }
        self.sync_outliers += 1;
        if let Some(o) = self.outliers.get_mut(self.outlier_run % CONSISTENT_SYNCS) {
            *o = residual;
        }
        self.outlier_run += 1;
        log::debug!("clock: sync statement {residual} ns off the anchor, not believed alone");
        if self.outlier_run < CONSISTENT_SYNCS {
            return 0;
        }
        let mut run = self.outliers;
        run.sort_unstable();
        let (lo, hi) = (run[0], run[CONSISTENT_SYNCS - 1]);
        let one_side = lo > 0 || hi < 0;
        let consistent = hi - lo <= CONSISTENT_SPREAD_NS;
        let jump = lo > JUMP_NS || hi < -JUMP_NS;
        if !(one_side && (consistent || jump)) {
            return 0;
        }
        let median = (run[CONSISTENT_SYNCS / 2 - 1] + run[CONSISTENT_SYNCS / 2]) / 2;
        self.outlier_run = 0;
        self.reanchors += 1;
        log::info!(
            "clock: {CONSISTENT_SYNCS} sync packets agree on {} ms off the anchor: re-anchoring",
            median as f64 / 1e6
        );
        median
    }

    /// Fallback anchor when audio arrives before any sync packet: frame `rtp` arrived at
    /// `arrival` and sounds one latency later (the last sync's latency, else the configured
    /// default). Ignored if already anchored; the next sync packet replaces it.
    ///
    /// After a FLUSH, the sender's last statement is tried first: a FLUSH does not always
    /// move the sender's timeline (pyatv flushes right after its first sync, before any
    /// audio, and then sends only unflagged syncs, one a second). If that statement puts the
    /// frame between its arrival and a second past the fallback's guess, it is kept, and
    /// later statements are judged against it as usual. Otherwise (a pause: the old line puts
    /// the frame in the past) the fallback is used. Without this, the guess (off by however
    /// late the sender sent the packet, tens of ms for pyatv) was replaced by the next sync
    /// only after the stream had started when that sync was lost or late: a step of that
    /// size in the middle of playback.
    pub fn handle_first_packet(&mut self, rtp: u32, arrival: LocalNs) {
        if self.anchor.is_some() {
            return;
        }
        let latency = self.frames_to_ns(i128::from(self.latency_frames()), Rounding::Up);
        let guess = i128::from(arrival) + latency;
        if let Some(before) = self.before_reset.take() {
            self.anchor = Some(before);
            let offset = i128::from(self.cfg.output_offset_ns);
            let kept = self.local_time_of(rtp).map(|t| i128::from(t) - offset);
            if kept.is_some_and(|t| t >= i128::from(arrival) && t <= guess + i128::from(NS_PER_SEC))
            {
                log::debug!("clock: first packet after FLUSH placed by the sender's last sync");
                self.free_until = self.first_due(rtp);
                return;
            }
            self.anchor = None;
        }
        let at = u64::try_from(guess).unwrap_or(u64::MAX);
        self.anchor = Some(Anchor {
            rtp,
            ext: i64::from(rtp),
            at: AnchorTime::Local(at),
        });
        self.free_until = None;
    }

    /// Forgets the anchor (FLUSH, new stream) but keeps the clock estimate, which describes
    /// the sender's clock rather than the stream.
    pub fn reset_anchor(&mut self) {
        self.before_reset = self
            .anchor
            .filter(|a| matches!(a.at, AnchorTime::Sender(_)));
        self.anchor = None;
        self.free_until = None;
        self.flagged = false;
        self.outlier_run = 0;
    }

    /// When the frame with RTP timestamp `rtp` must sound on our clock, output offset
    /// included: the first nanosecond at which it is due. `None` if not anchored.
    pub fn local_time_of(&self, rtp: u32) -> Option<LocalNs> {
        let anchor = self.anchor?;
        let frames = i128::from(anchor.extend(rtp) - anchor.ext);
        let since = self.frames_to_ns(frames, Rounding::Up);
        let local = match anchor.at {
            AnchorTime::Local(at) => i128::from(at) + since,
            AnchorTime::Sender(at) => self.est.line()?.local_of(i128::from(at) + since),
        };
        let local = local + i128::from(self.cfg.output_offset_ns);
        Some(local.clamp(0, i128::from(u64::MAX)) as u64)
    }

    /// The inverse of [`ClockModel::local_time_of`]: the latest frame due at or before `t`,
    /// wrapped back to an RTP timestamp. `None` if not anchored.
    pub fn rtp_at(&self, t: LocalNs) -> Option<u32> {
        let anchor = self.anchor?;
        let t = i128::from(t) - i128::from(self.cfg.output_offset_ns);
        let since = match anchor.at {
            AnchorTime::Local(at) => t - i128::from(at),
            AnchorTime::Sender(at) => self.est.line()?.sender_at(t) - i128::from(at),
        };
        let frames = (since * i128::from(self.cfg.sample_rate)).div_euclid(i128::from(NS_PER_SEC));
        // Truncation to u32 is the RTP wrap.
        Some((i128::from(anchor.ext) + frames) as u32)
    }

    /// The total latency in frames ([`LatencyRule::total`] of the last sync packet), else the
    /// configured default.
    pub fn latency_frames(&self) -> u32 {
        self.latency.unwrap_or(self.cfg.default_latency_frames)
    }

    /// A snapshot of the estimate and the sync statistics.
    pub fn stats(&self) -> ClockStats {
        let line = self.est.line();
        let offset_ns = line.zip(self.sender_epoch).map(|(line, epoch)| {
            // ntp_to_ns is below 2^62, so the cast is lossless.
            (ntp_to_ns(epoch) as i64).saturating_add(line.off)
        });
        ClockStats {
            offset_ns,
            rtt_ns: self.est.best_rtt(),
            drift_ppm: self.est.drift_ppm(),
            samples: self.est.samples(),
            anchored: self.anchor.is_some(),
            latency_frames: self.latency_frames(),
            sync_outliers: self.sync_outliers,
            reanchors: self.reanchors,
        }
    }

    /// A sender NTP time as ns from the sender epoch (set by the first call).
    fn sender_ns(&mut self, ntp: u64) -> i64 {
        let epoch = *self.sender_epoch.get_or_insert(ntp);
        ntp_delta_to_ns(ntp.wrapping_sub(epoch) as i64)
    }

    fn frames_to_ns(&self, frames: i128, rounding: Rounding) -> i128 {
        let num = frames * i128::from(NS_PER_SEC);
        let den = i128::from(self.cfg.sample_rate);
        match rounding {
            Rounding::Up => -(-num).div_euclid(den),
            Rounding::Nearest => (num + den / 2).div_euclid(den),
        }
    }
}

#[derive(Clone, Copy)]
enum Rounding {
    Up,
    Nearest,
}
