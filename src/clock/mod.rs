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

mod estimator;
mod ntp;
#[cfg(test)]
mod tests;

pub use ntp::{local_to_ntp, ntp_to_ns, LocalNs};

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
/// A non-first sync packet disagreeing with the current anchor by more than this is taken as
/// a new timeline (a jump) rather than slewed into.
const ANCHOR_JUMP_NS: i64 = 20_000_000;
/// Sync packets claiming more latency than this many seconds are treated as garbage.
const MAX_LATENCY_SECS: u32 = 10;

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
    /// Latency in frames assumed until a sync packet states one (e.g. from `Audio-Latency`).
    pub default_latency_frames: u32,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            sample_rate: 44_100,
            timing_interval_ns: 3 * NS_PER_SEC,
            output_offset_ns: 0,
            default_latency_frames: 88_200,
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
    /// Latency from the last sync packet.
    latency: Option<u32>,
}

impl ClockModel {
    /// Starts a model at `now`; the first timing request is due immediately.
    pub fn new(cfg: ClockConfig, now: LocalNs) -> Self {
        let cfg = ClockConfig {
            // A zero rate would divide by zero; RAOP is always 44100.
            sample_rate: if cfg.sample_rate == 0 {
                44_100
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
            latency: None,
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
        self.pending[self.pending_next] = Some(Pending { ntp, sent: now });
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

    /// Feeds a sync packet (`0x54`): frame `rtp_minus_latency` sounds at sender time `ntp`,
    /// and `rtp_now - rtp_minus_latency` is the latency. `first` is the `0x90` flag (first
    /// after RECORD/FLUSH), which always re-anchors.
    ///
    /// Before any timing reply, the sender's clock is assumed to read `ntp` at `arrival`
    /// (the sender stamps sync packets as it sends them, so this is off only by the one-way
    /// delay); timing replies then refine it. Later sync packets that agree with the anchor
    /// within 20 ms move it by at most 0.1 ms each, so sender-side jitter in their stamps does
    /// not make the output jump; larger disagreements re-anchor at once.
    pub fn handle_sync(
        &mut self,
        rtp_minus_latency: u32,
        ntp: u64,
        rtp_now: u32,
        first: bool,
        arrival: LocalNs,
    ) {
        let latency = rtp_now.wrapping_sub(rtp_minus_latency);
        if latency > MAX_LATENCY_SECS * self.cfg.sample_rate {
            log::warn!("clock: sync packet with latency {latency} frames, ignored");
            return;
        }
        let sender = self.sender_ns(ntp);
        self.est.seed(
            sender.saturating_sub(i64::try_from(arrival).unwrap_or(i64::MAX)),
            arrival,
        );
        self.latency = Some(latency);

        let ext = self.anchor.map_or(i64::from(rtp_minus_latency), |a| {
            a.extend(rtp_minus_latency)
        });
        let at = match self.anchor {
            Some(Anchor {
                ext: a_ext,
                at: AnchorTime::Sender(a_sender),
                ..
            }) if !first => {
                let predicted = i128::from(a_sender)
                    + self.frames_to_ns(i128::from(ext - a_ext), Rounding::Nearest);
                let diff = i128::from(sender) - predicted;
                if diff.abs() <= i128::from(ANCHOR_JUMP_NS) {
                    let step = diff.clamp(
                        -i128::from(estimator::MAX_SLEW_NS),
                        i128::from(estimator::MAX_SLEW_NS),
                    );
                    i64::try_from(predicted + step).unwrap_or(sender)
                } else {
                    log::info!("clock: sync packet {diff} ns off the anchor, re-anchoring");
                    sender
                }
            }
            _ => sender,
        };
        self.anchor = Some(Anchor {
            rtp: rtp_minus_latency,
            ext,
            at: AnchorTime::Sender(at),
        });
    }

    /// Fallback anchor when audio arrives before any sync packet: frame `rtp` arrived at
    /// `arrival` and sounds one latency later (the last sync's latency, else the configured
    /// default). Ignored if already anchored; the next sync packet replaces it.
    pub fn handle_first_packet(&mut self, rtp: u32, arrival: LocalNs) {
        if self.anchor.is_some() {
            return;
        }
        let latency = self.frames_to_ns(i128::from(self.latency_frames()), Rounding::Up);
        let at = u64::try_from(i128::from(arrival) + latency).unwrap_or(u64::MAX);
        self.anchor = Some(Anchor {
            rtp,
            ext: i64::from(rtp),
            at: AnchorTime::Local(at),
        });
    }

    /// Forgets the anchor (FLUSH, new stream) but keeps the clock estimate, which describes
    /// the sender's clock rather than the stream.
    pub fn reset_anchor(&mut self) {
        self.anchor = None;
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

    /// The sender's latency in frames: from the last sync packet, else the configured default.
    pub fn latency_frames(&self) -> u32 {
        self.latency.unwrap_or(self.cfg.default_latency_frames)
    }

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
