//! One line on stderr when the daemon dies of a fatal signal.
//!
//! The firmware builds (`scripts/build-mips.sh`) compile raopd and std with
//! `panic = "immediate-abort"`: std's panic machinery (message formatting, the panic hook,
//! backtrace capture and the unwinder it links) is left out, 113 KiB of the static mipsel
//! binary, and a panic is a trap instruction: `break` (SIGTRAP) on MIPS, `ud2` (SIGILL) on
//! x86. A panic is a bug (nothing raopd runs on network input may panic, README "No
//! unwinding"), but it must not end the daemon without a word: procd logs a single crash only
//! at its debug level. So [`install`] catches the signals a bug ends a process with (SIGTRAP,
//! SIGILL, SIGSEGV, SIGBUS, SIGFPE, SIGABRT) and writes one fixed line naming the signal to
//! stderr, which procd passes to the system log; then the signal's default action ends the
//! process as before (exit status and core dump unchanged), and procd restarts it.
//!
//! The handler runs on an alternate signal stack (std's where it set one up, else one of
//! [`ALT_STACK_BYTES`] allocated here), so a stack overflow, a SIGSEGV on the guard page,
//! leaves its line too. In host builds that line takes the place of std's own "has
//! overflowed its stack" message.
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
        "raopd: fatal signal SIGSEGV (invalid memory access, or a stack overflow): a bug; stopping\n",
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
        "raopd: fatal signal SIGABRT (aborted: a panic in a build that prints it first, or abort()): a bug; stopping\n",
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

/// Bytes of the alternate signal stack set up when the thread has none (std sets one up for
/// the main thread only in builds that report stack overflows themselves).
pub const ALT_STACK_BYTES: usize = 16 * 1024;

/// Installs the handler for every signal in the table, on an alternate stack. Called once at
/// the daemon's start, on the thread that runs it; a failure to install is ignored (the
/// signal then ends the process silently, as without this module).
pub fn install() {
    // SAFETY: sigaltstack(2) with a null new stack only reads the current one into `old`.
    let has_alt_stack = unsafe {
        let mut old: libc::stack_t = std::mem::zeroed();
        libc::sigaltstack(std::ptr::null(), &mut old) == 0 && old.ss_flags & libc::SS_DISABLE == 0
    };
    if !has_alt_stack {
        // Lives as long as the process: the kernel may switch to it at any signal.
        let stack: &'static mut [u8] = Box::leak(vec![0u8; ALT_STACK_BYTES].into_boxed_slice());
        // SAFETY: the stack is valid, writable and never freed.
        unsafe {
            let mut st: libc::stack_t = std::mem::zeroed();
            st.ss_sp = stack.as_mut_ptr().cast();
            st.ss_size = stack.len();
            libc::sigaltstack(&st, std::ptr::null_mut());
        }
    }
    for (sig, _) in FATAL {
        // SAFETY: a zeroed sigaction is valid (empty mask); the handler is an
        // `extern "C" fn(c_int)` as sa_handler requires without SA_SIGINFO.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_fatal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            act.sa_flags = libc::SA_ONSTACK;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}
