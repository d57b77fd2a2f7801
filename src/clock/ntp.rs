//! Conversions between NTP 32.32 timestamps and nanoseconds.
//!
//! RAOP carries every sender time as NTP 32.32 (seconds since 1900 in the high word, binary
//! fraction in the low word), while the rest of raopd counts nanoseconds of our monotonic clock.
//! Keeping the conversions in one place makes the rounding rules explicit, which matters for
//! the round trip in [`local_to_ntp`] / [`ntp_to_ns`].

/// An instant on our monotonic clock, in nanoseconds from an arbitrary origin (e.g. boot).
///
/// The clock model never reads a clock itself; callers pass these in.
pub type LocalNs = u64;

pub(super) const NS_PER_SEC: u64 = 1_000_000_000;

/// Encodes a local instant as NTP 32.32, for the transmit field of a timing request.
///
/// The sender treats the value as opaque and only echoes it back as `origin`, so it need not
/// be wall-clock time: the high word is whole seconds of our monotonic clock, the low word the
/// sub-second part as a binary fraction (rounded down). The encoding is injective because a
/// nanosecond (1e-9 s) is wider than one fraction unit (2^-32 s ≈ 0.23 ns), so
/// `ntp_to_ns(local_to_ntp(x)) == x` for every `x` below 2^32 s (136 years of uptime); beyond
/// that the seconds wrap like NTP's own era does.
pub fn local_to_ntp(ns: LocalNs) -> u64 {
    let secs = ns / NS_PER_SEC;
    let rem = ns % NS_PER_SEC;
    // rem < 1e9, so the fraction is < 2^32 and fits the low word.
    let frac = ((u128::from(rem) << 32) / u128::from(NS_PER_SEC)) as u64;
    (secs << 32) | frac
}

/// Converts an NTP 32.32 timestamp to nanoseconds since its epoch, rounding to the nearest
/// nanosecond.
///
/// Rounding to nearest (rather than truncating) is what makes it the exact inverse of
/// [`local_to_ntp`]: the truncated fraction is less than 0.23 ns below the true value. The
/// result is at most about 4.3e18 (2^32 s), so it always fits.
pub fn ntp_to_ns(ntp: u64) -> u64 {
    let secs = ntp >> 32;
    let frac = ntp & 0xffff_ffff;
    let sub = (u128::from(frac) * u128::from(NS_PER_SEC) + (1 << 31)) >> 32;
    secs * NS_PER_SEC + sub as u64
}

/// Converts a signed difference of two NTP timestamps (in 2^-32 s units) to nanoseconds,
/// rounding to nearest.
///
/// Differences are taken with `wrapping_sub` and reinterpreted as `i64`, which stays correct
/// across the NTP era rollover in 2036 as long as the two times are within 68 years.
pub(super) fn ntp_delta_to_ns(delta: i64) -> i64 {
    ((i128::from(delta) * i128::from(NS_PER_SEC) + (1 << 31)) >> 32) as i64
}
