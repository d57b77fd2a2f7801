//! One line on stderr when the daemon dies of a fatal signal.
//!
//! The firmware builds (`scripts/build-mips.sh`) compile raopd and std with
//! `panic = "immediate-abort"`: std's panic machinery (message formatting, the panic hook,
//! backtrace capture and the unwinder it links) is left out, 116 KiB of the static mipsel
//! binary, and a panic is a trap instruction: `break` (SIGTRAP) on MIPS, `ud2` (SIGILL) on
//! x86. A panic is a bug (nothing raopd runs on network input may panic, README "No
//! unwinding"), but it must not end the daemon without a word: procd logs a single crash only
//! at its debug level. So [`install`] catches the signals a bug ends a process with (SIGTRAP,
//! SIGILL, SIGSEGV, SIGBUS, SIGFPE, SIGABRT) and writes one fixed line naming the signal to
//! stderr, which procd passes to the system log; then the signal's default action ends the
//! process as before (exit status and core dump unchanged), and procd restarts it.
//!
//! By hand with `sigaction(2)`: signal-hook-registry, which the daemon uses for SIGTERM/SIGHUP,
//! refuses SIGSEGV, SIGBUS, SIGILL and SIGFPE by design. The handler only calls `write(2)`,
//! `signal(2)` and `raise(3)`, which are async-signal-safe, on a message chosen from a static
//! table: nothing is formatted or allocated.

/// The signals a bug ends a process with, and the line written for each (one `write`).
const FATAL: [(libc::c_int, &str); 6] = [
    (
        libc::SIGTRAP,
        "raopd: fatal signal SIGTRAP (a panic in a firmware build, or a trap): a bug; stopping\n",
    ),
    (
        libc::SIGILL,
        "raopd: fatal signal SIGILL (a panic in an x86 firmware build, or a bad instruction): a bug; stopping\n",
    ),
    (
        libc::SIGSEGV,
        "raopd: fatal signal SIGSEGV (invalid memory access): a bug; stopping\n",
    ),
    (
        libc::SIGBUS,
        "raopd: fatal signal SIGBUS (bad memory access): a bug; stopping\n",
    ),
    (
        libc::SIGFPE,
        "raopd: fatal signal SIGFPE (arithmetic fault): a bug; stopping\n",
    ),
    (
        libc::SIGABRT,
        "raopd: fatal signal SIGABRT (aborted, after a panic in a host build): a bug; stopping\n",
    ),
];

extern "C" fn on_fatal(sig: libc::c_int) {
    if let Some((_, line)) = FATAL.iter().find(|(s, _)| *s == sig) {
        // SAFETY: write(2) on stderr with a valid static buffer; async-signal-safe. A short
        // or failed write has nothing better to fall back to.
        unsafe {
            libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), line.len());
        }
    }
    // SAFETY: signal(2) and raise(3) are async-signal-safe. With the default action back,
    // the signal raised here (sent by another process, or `abort`'s) is delivered as soon as
    // the handler returns, and a fault's instruction faults again on return: either way the
    // process ends by this signal as it would have without the handler.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Installs the handler for every signal in the table. Called once at the daemon's start;
/// a failure to install one is ignored (the signal then ends the process silently, as
/// without this module).
pub fn install() {
    for (sig, _) in FATAL {
        // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the handler is an
        // `extern "C" fn(c_int)` as sa_handler requires without SA_SIGINFO.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_fatal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}
