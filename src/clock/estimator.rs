//! Offset and drift estimation from NTP-style timing exchanges.
//!
//! Offsets here are "sender time minus local time" in nanoseconds, where sender time is
//! measured from an arbitrary sender epoch chosen by the caller (so the numbers stay small and
//! fit `i64` whatever the sender's NTP clock reads).
//!
//! # Method
//!
//! Each exchange bounds the true offset from both sides. The outbound leg gives
//! `receive - send = offset + d_out` and the return leg `transmit - arrival = offset - d_back`,
//! with both delays positive. The classic estimate is their midpoint, whose error is half the
//! delay *asymmetry*; NTP therefore trusts the sample with the smallest round trip. That needs
//! both legs to be quick in the same exchange, which on a jittery network (Wi-Fi, queues) is
//! rare. This estimator treats the two legs separately instead:
//!
//! * The last [`WINDOW`] exchanges are kept (about three minutes at the normal interval).
//!   Each gives an upper bound `U = offset + d_out` and a lower bound `L = offset - d_back`.
//! * **Drift** is the slope of the lower convex hull of the `U` points and of the upper hull of
//!   the `L` points (the edge of each hull over the window's mean time, which is the line
//!   hugging the points most closely overall), averaged. Each hull rests on the exchanges
//!   whose *one* leg was quickest, so queueing on the other leg does not matter. The slope
//!   is smoothed (running mean over the first fits, then exponential with weight
//!   [`DRIFT_SMOOTHING`]) because a hull edge can be short and jumpy, and real oscillators
//!   drift only slowly. It is only fitted once the window spans [`MIN_DRIFT_SPAN_NS`]; before
//!   that (and for a new session) the drift is taken as zero.
//! * **Offset** now is the midpoint of the tightest bounds: the smallest `U` and the largest
//!   `L` over the window, each carried forward to now with the drift. This is the minimum-RTT
//!   rule applied per leg; with symmetric path floors it is exact up to the smallest queueing
//!   delay seen on each leg.
//! * What callers see is a separate *served* line. Its offset moves towards the estimate by
//!   at most [`MAX_SLEW_NS`] per update, so the RTP → local mapping never steps audibly while
//!   audio plays. Whatever error remains is removed by tilting the served slope (at most
//!   [`MAX_CORRECTION_PPM`], over about [`CORRECTION_HORIZON_S`]), like `adjtime` slewing a
//!   system clock: the mapping stays continuous and the player merely runs a few hundred ppm
//!   fast or slow for a while. Without that, an early error (drift not yet measured) would
//!   take minutes to remove at 0.1 ms per update. The exceptions are the first
//!   [`LOCK_SAMPLES`] samples (nothing can be in sync yet, so snapping converges fastest) and
//!   a confirmed clock jump.
//! * A sample far from the served line is an outlier; [`JUMP_CONFIRM`] of them in a row mean
//!   the sender's clock really jumped, and the window restarts from there.
//!
//! Limits: a path whose floor delays differ per direction biases the offset by half the
//! difference (no timing protocol can see that), and a sender reporting times *earlier* than
//! physically possible moves the bounds until that exchange leaves the window.

use heapless::HistoryBuffer;

use super::LocalNs;

/// Recent samples considered for the reported best round trip, and the size of the fast
/// start.
pub(super) const SHORT_WINDOW: usize = 8;
/// Samples kept for the estimate.
pub(super) const WINDOW: usize = 64;
/// Samples needed before the offset is slewed instead of snapped.
pub(super) const LOCK_SAMPLES: usize = 4;
/// The largest change of the served offset per update once locked.
pub(super) const MAX_SLEW_NS: i64 = 100_000;
/// Offset error left after the step is corrected through the slope over about this long...
const CORRECTION_HORIZON_S: f64 = 10.0;
/// ...but never by more than this rate: a pitch change far below audibility.
const MAX_CORRECTION_PPM: f64 = 500.0;
/// The window must span this long before a drift is fitted: over shorter spans a hull edge
/// is too short for a meaningful slope.
const MIN_DRIFT_SPAN_NS: u64 = 10_000_000_000;
/// Weight of a new drift fit once the running mean has this many fits behind it.
const DRIFT_SMOOTHING: f64 = 0.1;
/// Real oscillators are within ~100 ppm; anything past this is a fitting artefact.
const MAX_DRIFT_PPM: f64 = 1000.0;
/// A sample further than this (plus half its round trip) from the served line is an outlier.
const JUMP_NS: i64 = 20_000_000;
/// Consecutive outliers that mean the sender's clock jumped.
const JUMP_CONFIRM: u8 = 3;

/// Fixed-point scale of [`Line::drift`]: drift is stored as a ratio times 2^32 so the hot path
/// (one mapping per audio packet) stays in integer arithmetic.
const DRIFT_ONE: f64 = 4_294_967_296.0;

/// One accepted timing exchange.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Local midpoint of the exchange.
    t: LocalNs,
    /// Midpoint estimate, `(U + L) / 2`.
    offset: i64,
    /// `U - L`.
    rtt: u64,
}

/// A linear offset model: `offset(t) = off + drift * (t - t_ref)`, drift in units of 2^-32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Line {
    pub t_ref: LocalNs,
    pub off: i64,
    pub drift: i64,
}

impl Line {
    /// The offset at local time `t` (which may lie before `t_ref` or even before zero).
    pub fn at(&self, t: i128) -> i128 {
        let dt = t - i128::from(self.t_ref);
        // `>>` floors, so the function stays monotone for negative `dt` too.
        i128::from(self.off) + ((i128::from(self.drift) * dt) >> 32)
    }

    /// Sender time at local time `t`.
    pub fn sender_at(&self, t: i128) -> i128 {
        t + self.at(t)
    }

    /// The earliest local time whose sender time is at least `s`: the exact inverse of
    /// [`Line::sender_at`] in the sense that `sender_at(local_of(s)) >= s >
    /// sender_at(local_of(s) - 1)`, so forward and inverse RTP mappings agree to the frame.
    pub fn local_of(&self, s: i128) -> i128 {
        let t_ref = i128::from(self.t_ref);
        let drift = i128::from(self.drift);
        // Solve u * (1 + drift / 2^32) = w in closed form, then fix the rounding.
        let w = s - i128::from(self.off) - t_ref;
        let f = |u: i128| u + ((drift * u) >> 32);
        let mut u = (w << 32).div_euclid((1i128 << 32) + drift);
        // |drift| < 2^32, so `f` is monotone and the closed form is within a couple of ns.
        for _ in 0..8 {
            if f(u) >= w {
                break;
            }
            u += 1;
        }
        for _ in 0..8 {
            if f(u - 1) < w {
                break;
            }
            u -= 1;
        }
        t_ref + u
    }
}

/// What became of a timing sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Accepted,
    /// Far from the model; dropped unless it turns out to be a jump.
    Outlier,
    /// The sender's clock jumped; the window restarted from this sample.
    Jump,
}

pub(super) struct Estimator {
    window: HistoryBuffer<Sample, WINDOW>,
    served: Option<Line>,
    /// Smoothed drift in 2^-32 units, without the served line's correction.
    drift: i64,
    /// Drift fits averaged so far (caps the running mean).
    drift_fits: u32,
    /// The served line came from a sync packet's arrival time, not from timing exchanges.
    provisional: bool,
    outliers: u8,
}

impl Estimator {
    pub fn new() -> Self {
        Self {
            window: HistoryBuffer::new(),
            served: None,
            drift: 0,
            drift_fits: 0,
            provisional: false,
            outliers: 0,
        }
    }

    /// The model the mapping uses, if any.
    pub fn line(&self) -> Option<&Line> {
        self.served.as_ref()
    }

    /// The measured drift (without any slewing correction), in ppm.
    pub fn drift_ppm(&self) -> f64 {
        self.drift as f64 / DRIFT_ONE * 1e6
    }

    pub fn samples(&self) -> usize {
        self.window.len()
    }

    /// The smallest round trip among the last [`SHORT_WINDOW`] samples.
    pub fn best_rtt(&self) -> Option<u64> {
        let skip = self.window.len().saturating_sub(SHORT_WINDOW);
        self.window.oldest_ordered().skip(skip).map(|s| s.rtt).min()
    }

    /// Seeds a model from a sync packet when no timing exchange has produced one yet.
    pub fn seed(&mut self, offset: i64, at: LocalNs) {
        if self.served.is_none() {
            self.served = Some(Line {
                t_ref: at,
                off: offset,
                drift: 0,
            });
            self.provisional = true;
        }
    }

    fn locked(&self) -> bool {
        !self.provisional && self.window.len() >= LOCK_SAMPLES
    }

    /// Adds one exchange: `t` is its local midpoint, `now` the local arrival time of the reply.
    pub fn add(&mut self, t: LocalNs, offset: i64, rtt: u64, now: LocalNs) -> Outcome {
        let mut outcome = Outcome::Accepted;
        if let (Some(line), true) = (self.served, self.locked()) {
            let err = i128::from(offset) - line.at(i128::from(t));
            let limit = i128::from(JUMP_NS) + i128::from(rtt / 2);
            if err.abs() > limit {
                self.outliers += 1;
                if self.outliers < JUMP_CONFIRM {
                    log::debug!("clock: timing sample {err} ns off the model, dropped");
                    return Outcome::Outlier;
                }
                log::warn!("clock: sender clock jumped by about {err} ns, re-synchronising");
                self.window.clear();
                // The oscillator did not change, only the reading: keep the drift.
                self.drift_fits = self.drift_fits.min(1);
                outcome = Outcome::Jump;
            }
        }
        self.outliers = 0;
        let locked = self.locked();
        self.window.write(Sample { t, offset, rtt });

        if let Some(fit) = self.fit_drift() {
            self.drift_fits = self.drift_fits.saturating_add(1);
            let weight = (1.0 / f64::from(self.drift_fits)).max(DRIFT_SMOOTHING);
            let drift = self.drift as f64;
            self.drift = (drift + weight * (fit - drift)).round() as i64;
        }
        let Some(target) = self.offset_at(now) else {
            return outcome;
        };
        let before = self.served.map(|line| clamp_i64(line.at(i128::from(now))));
        let (off, correction) = match self.served {
            Some(line) if locked => {
                let current = clamp_i64(line.at(i128::from(now)));
                let error = target.saturating_sub(current);
                let step = error.clamp(-MAX_SLEW_NS, MAX_SLEW_NS);
                // Remaining error in ns over the horizon in s is ppb; scale to 2^-32 units.
                let limit = MAX_CORRECTION_PPM * 1e3;
                let ppb = ((error - step) as f64 / CORRECTION_HORIZON_S).clamp(-limit, limit);
                (current + step, (ppb * 1e-9 * DRIFT_ONE).round() as i64)
            }
            _ => (target, 0),
        };
        self.served = Some(Line {
            t_ref: now,
            off,
            drift: self.drift + correction,
        });
        log::trace!(
            "clock: sample rtt={rtt} ns, estimate {} ns from the served line, served moved {} ns, drift {:.1} ppm, correction {:.1} ppm",
            before.map_or(0, |b| target.saturating_sub(b)),
            before.map_or(0, |b| off.saturating_sub(b)),
            self.drift as f64 / DRIFT_ONE * 1e6,
            correction as f64 / DRIFT_ONE * 1e6,
        );
        self.provisional = false;
        outcome
    }

    /// The window's coordinates for the fits: x in seconds and the bounds `U`, `L` in ns,
    /// relative to the newest sample so floating point loses nothing.
    fn bounds(&self) -> Option<(Sample, impl Iterator<Item = (f64, f64, f64)> + '_)> {
        let newest = *self.window.recent()?;
        let points = self.window.as_slice().iter().map(move |s| {
            let x = (i128::from(s.t) - i128::from(newest.t)) as f64 * 1e-9;
            let y = (i128::from(s.offset) - i128::from(newest.offset)) as f64;
            let half = s.rtt as f64 / 2.0;
            (x, y + half, y - half)
        });
        Some((newest, points))
    }

    /// The offset at `now`: midpoint of the tightest upper and lower bounds, each carried
    /// forward with the current drift.
    ///
    /// Floating point is fine here and in the fit: they run once per timing reply (every few
    /// seconds), never per audio packet.
    fn offset_at(&self, now: LocalNs) -> Option<i64> {
        let (newest, points) = self.bounds()?;
        let slope = self.drift as f64 / DRIFT_ONE * 1e9;
        let x_now = (i128::from(now) - i128::from(newest.t)) as f64 * 1e-9;
        let (upper, lower) = points.fold(
            (f64::INFINITY, f64::NEG_INFINITY),
            |(upper, lower), (x, u, l)| {
                let carry = slope * (x_now - x);
                (upper.min(u + carry), lower.max(l + carry))
            },
        );
        Some((newest.offset as f64 + (upper + lower) / 2.0).round() as i64)
    }

    /// The drift (in 2^-32 units) from the hulls of the bounds, or `None` while the window is
    /// too short.
    fn fit_drift(&self) -> Option<f64> {
        let n = self.window.len();
        let oldest = self.window.oldest_ordered().map(|s| s.t).min()?;
        let newest = self.window.oldest_ordered().map(|s| s.t).max()?;
        if newest - oldest < MIN_DRIFT_SPAN_NS {
            return None;
        }
        // Replies may arrive out of order; the hull needs the points sorted by time.
        let mut points = [(0.0, 0.0, 0.0); WINDOW];
        for (slot, p) in points.iter_mut().zip(self.bounds()?.1) {
            *slot = p;
        }
        let points = points.get_mut(..n)?;
        points.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n as f64;
        let upper = hull_slope(points.iter().map(|p| (p.0, p.1)), mean_x)?;
        // The upper hull of L is the lower hull of -L.
        let lower = -hull_slope(points.iter().map(|p| (p.0, -p.2)), mean_x)?;
        let limit = MAX_DRIFT_PPM * 1e3;
        Some(((upper + lower) / 2.0).clamp(-limit, limit) * 1e-9 * DRIFT_ONE)
    }
}

/// Slope of the edge of the lower convex hull of `points` (sorted by x) that spans `at`.
fn hull_slope(points: impl Iterator<Item = (f64, f64)>, at: f64) -> Option<f64> {
    let mut hull = [(0.0, 0.0); WINDOW];
    let mut len = 0usize;
    for p in points {
        // Monotone chain: drop points that would make the chain turn clockwise.
        while let Some(&[a, b]) = hull.get(len.saturating_sub(2)..len) {
            let cross: f64 = (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0);
            if cross > 0.0 {
                break;
            }
            len -= 1;
        }
        // At most WINDOW points come in, so there is always room.
        *hull.get_mut(len)? = p;
        len += 1;
    }
    hull.get(..len)?.windows(2).find_map(|w| match *w {
        [a, b] if b.0 >= at && b.0 > a.0 => Some((b.1 - a.1) / (b.0 - a.0)),
        _ => None,
    })
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}
