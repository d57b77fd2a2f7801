//! The host's two clocks the timing tests relate: packet captures are stamped on
//! `CLOCK_REALTIME`, the simulated DAC's log on `CLOCK_MONOTONIC`.

/// One clock's reading in ns.
fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own; both clocks always exist on Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// `CLOCK_REALTIME - CLOCK_MONOTONIC` in ns, from the tightest of 2000 monotonic/realtime/
/// monotonic sandwiches (the realtime reading against the midpoint of the two monotonic ones).
/// The two clocks run at the same rate (NTP slewing adjusts both); only a step of the wall clock
/// changes the difference, so a test reads it before and after and compares.
pub fn realtime_minus_monotonic_ns() -> i128 {
    let mut best: Option<(i128, i128)> = None;
    for _ in 0..2000 {
        let m1 = now_ns(libc::CLOCK_MONOTONIC);
        let r = now_ns(libc::CLOCK_REALTIME);
        let m2 = now_ns(libc::CLOCK_MONOTONIC);
        let width = m2 - m1;
        if best.is_none_or(|(w, _)| width < w) {
            best = Some((width, r - (m1 + m2) / 2));
        }
    }
    best.expect("samples").1
}
