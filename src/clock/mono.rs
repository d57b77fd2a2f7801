//! The one mapping between [`Instant`] and nanoseconds of `CLOCK_MONOTONIC` ([`LocalNs`]), the
//! unit of the clock model and of the simulated DAC's timing log.
//!
//! `Instant` has no public epoch, but on Linux it is read from `CLOCK_MONOTONIC`
//! (clock_gettime(2)), so one paired reading, taken the first time the mapping is used, fixes
//! the offset for the life of the process. Every part of raopd that turns an `Instant` into
//! nanoseconds or back goes through [`ns_of`] and [`instant_of`], so the values agree with
//! each other and with other programs reading `CLOCK_MONOTONIC` (the tests' capture tools).

use super::LocalNs;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Reads `CLOCK_MONOTONIC` directly, in nanoseconds since boot.
pub fn monotonic_ns() -> LocalNs {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// One paired reading of `Instant` and `CLOCK_MONOTONIC`.
#[derive(Clone, Copy)]
struct MonoRef {
    at: Instant,
    ns: LocalNs,
}

fn reference() -> MonoRef {
    static REF: OnceLock<MonoRef> = OnceLock::new();
    *REF.get_or_init(|| {
        let before = monotonic_ns();
        let at = Instant::now();
        let after = monotonic_ns();
        MonoRef {
            at,
            ns: before + (after - before) / 2,
        }
    })
}

/// `t` as `CLOCK_MONOTONIC` nanoseconds (saturating at 0 for instants before boot).
pub fn ns_of(t: Instant) -> LocalNs {
    let r = reference();
    match t.checked_duration_since(r.at) {
        Some(d) => r.ns.saturating_add(d.as_nanos() as u64),
        None => r.ns.saturating_sub((r.at - t).as_nanos() as u64),
    }
}

/// The `Instant` of `CLOCK_MONOTONIC` nanoseconds `ns`: the inverse of [`ns_of`].
pub fn instant_of(ns: LocalNs) -> Instant {
    let r = reference();
    if ns >= r.ns {
        r.at + Duration::from_nanos(ns - r.ns)
    } else {
        r.at.checked_sub(Duration::from_nanos(r.ns - ns))
            .unwrap_or(r.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_matches_the_clock_and_round_trips() {
        let now = monotonic_ns();
        let mapped = ns_of(Instant::now());
        assert!(mapped.abs_diff(now) < 5_000_000, "{mapped} vs {now}");
        let t = Instant::now();
        assert_eq!(ns_of(t + Duration::from_millis(3)) - ns_of(t), 3_000_000);
        assert_eq!(ns_of(t) - ns_of(t - Duration::from_millis(2)), 2_000_000);
        for t in [t, t + Duration::from_secs(7), t - Duration::from_millis(1)] {
            assert_eq!(instant_of(ns_of(t)), t);
        }
        assert_eq!(ns_of(instant_of(123_456_789_000)), 123_456_789_000);
    }
}
