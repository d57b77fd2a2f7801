//! The one-thread reactor: epoll, timers and `block_on`, on the thread that calls
//! [`block_on`]. Everything the daemon waits for (sockets, the sound card's poll descriptors,
//! timers, signals) is waited for here, in one `epoll_wait`.
//!
//! Why by hand: async-io, smol's reactor, always runs a helper thread beside `block_on`, which
//! wakes up to every 10 ms and takes the reactor over whenever the main thread has waited longer
//! than that; measured on a PulseAudio stream, that thread made more system calls than the
//! daemon itself (≈ 12 per audio packet in all, two context switches per wakeup). Its epoll
//! backend also costs five system calls per wait (timerfd_settime, two epoll_ctl, epoll_wait,
//! an eventfd read) and a timer re-arm wakes the poller through its eventfd. No other library
//! offers a single-threaded reactor without helper thread within our design (one thread, small
//! flash), so this module does it in the smallest form that serves the daemon:
//!
//! - **Sources** are registered once with `EPOLLONESHOT` and re-armed (`epoll_ctl MOD`) only
//!   when a task waits on one after it fired, as async-io does, so readiness semantics are the
//!   same: `poll_readable` is ready when the descriptor signalled since the last time it was
//!   ready, and a descriptor that still has data fires again at once when re-armed.
//! - **Timers** live in an ordered map; `epoll_wait` gets the nearest deadline in milliseconds,
//!   rounded up (the audio path keeps 200 ms in the device; a millisecond is nothing to it).
//! - **`block_on`** polls its future when woken, then waits in `epoll_wait`. Wakers called on
//!   the reactor thread only set a flag; one called from another thread writes to an eventfd.
//! - **Signals** ([`signals`]) arrive through a self-pipe written by the signal handler.
//!
//! The API mirrors the parts of async-io the daemon uses ([`Async`], [`Timer`]), so the rest of
//! the code reads the same. Everything is thread-local: sources and timers belong to the thread
//! that created them, which must be the one running [`block_on`].

mod io;
mod signals;

pub use io::Async;
pub use signals::Signals;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::io as stdio;
use std::os::fd::RawFd;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

/// Events taken from the kernel per `epoll_wait`.
const EVENTS: usize = 64;
/// The token of the block_on eventfd (cross-thread wakeups).
const WAKE_TOKEN: u64 = u64::MAX;

/// What the reactor knows of one registered descriptor.
#[derive(Default)]
struct SourceState {
    /// Signalled since the last `poll_*` that returned ready.
    readable: bool,
    writable: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    /// The events the descriptor is armed for (0: disarmed, after it fired).
    armed: u32,
}

/// A registered descriptor.
pub(crate) struct Source {
    fd: RawFd,
    token: u64,
    state: RefCell<SourceState>,
}

struct Reactor {
    epoll: RawFd,
    /// Registered sources by token; a slot is `None` once its source is dropped.
    sources: RefCell<Vec<Option<Rc<Source>>>>,
    free: RefCell<Vec<u64>>,
    timers: RefCell<BTreeMap<(Instant, u64), Waker>>,
    next_timer: Cell<u64>,
}

thread_local! {
    static REACTOR: Reactor = Reactor::new().expect("cannot create the epoll reactor");
}

fn cvt(r: libc::c_int) -> stdio::Result<libc::c_int> {
    if r < 0 {
        Err(stdio::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Reactor {
    fn new() -> stdio::Result<Reactor> {
        // SAFETY: plain system call.
        let epoll = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Reactor {
            epoll,
            sources: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            timers: RefCell::new(BTreeMap::new()),
            next_timer: Cell::new(0),
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> stdio::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.epoll, op, fd, &mut ev) }).map(|_| ())
    }

    fn register(&self, fd: RawFd) -> stdio::Result<Rc<Source>> {
        let token = self
            .free
            .borrow_mut()
            .pop()
            .unwrap_or(self.sources.borrow().len() as u64);
        // Disarmed until a task waits on it.
        self.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLONESHOT as u32, token)?;
        let source = Rc::new(Source {
            fd,
            token,
            state: RefCell::new(SourceState::default()),
        });
        let mut sources = self.sources.borrow_mut();
        let slot = token as usize;
        if slot == sources.len() {
            sources.push(Some(source.clone()));
        } else {
            sources[slot] = Some(source.clone());
        }
        Ok(source)
    }

    fn deregister(&self, source: &Source) {
        // The descriptor may be closed already by its owner; the error does not matter then.
        let _ = self.ctl(libc::EPOLL_CTL_DEL, source.fd, 0, 0);
        if let Some(slot) = self.sources.borrow_mut().get_mut(source.token as usize) {
            *slot = None;
            self.free.borrow_mut().push(source.token);
        }
    }

    /// Arms `source` for what its wakers wait for, if that changed.
    fn rearm(&self, source: &Source) -> stdio::Result<()> {
        let mut st = source.state.borrow_mut();
        let mut want = 0u32;
        if st.read_waker.is_some() {
            want |= (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLPRI) as u32;
        }
        if st.write_waker.is_some() {
            want |= libc::EPOLLOUT as u32;
        }
        if want == st.armed {
            return Ok(());
        }
        st.armed = want;
        drop(st);
        self.ctl(
            libc::EPOLL_CTL_MOD,
            source.fd,
            want | libc::EPOLLONESHOT as u32,
            source.token,
        )
    }

    fn add_timer(&self, when: Instant, waker: Waker) -> u64 {
        let id = self.next_timer.get();
        self.next_timer.set(id + 1);
        self.timers.borrow_mut().insert((when, id), waker);
        id
    }

    fn remove_timer(&self, when: Instant, id: u64) {
        self.timers.borrow_mut().remove(&(when, id));
    }

    /// Wakes due timers; returns the nearest remaining deadline.
    fn fire_timers(&self, now: Instant) -> Option<Instant> {
        // One at a time, without holding the borrow across `wake` (a waker may touch the
        // timers) and without collecting them into a fresh `Vec` at every wakeup.
        loop {
            let due = {
                let mut timers = self.timers.borrow_mut();
                match timers.first_entry() {
                    Some(entry) if entry.key().0 <= now => Some(entry.remove()),
                    _ => None,
                }
            };
            match due {
                Some(w) => w.wake(),
                None => break,
            }
        }
        self.timers.borrow().keys().next().map(|k| k.0)
    }

    /// Waits for events until `deadline` (or forever) and dispatches them.
    fn wait(&self, deadline: Option<Instant>, wake_fd: RawFd) -> stdio::Result<()> {
        let timeout = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up: waking a little late is fine, waking early spins.
                let ms = left.as_nanos().div_ceil(1_000_000);
                ms.min(i32::MAX as u128) as libc::c_int
            }
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        // SAFETY: `events` is a valid buffer of EVENTS entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll,
                events.as_mut_ptr(),
                EVENTS as libc::c_int,
                timeout,
            )
        };
        if n < 0 {
            let e = stdio::Error::last_os_error();
            return if e.kind() == stdio::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        for ev in &events[..n as usize] {
            let (bits, token) = (ev.events, ev.u64);
            if token == WAKE_TOKEN {
                drain_eventfd(wake_fd);
                continue;
            }
            let source = self
                .sources
                .borrow()
                .get(token as usize)
                .and_then(|s| s.clone());
            let Some(source) = source else { continue };
            let mut st = source.state.borrow_mut();
            // Oneshot: the descriptor is disarmed now.
            st.armed = 0;
            let err = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
            // Woken after the borrow ends (a waker may poll this source again); no
            // allocation per event.
            let mut wake: [Option<Waker>; 2] = [None, None];
            if bits & ((libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLPRI) as u32 | err) != 0 {
                st.readable = true;
                wake[0] = st.read_waker.take();
            }
            if bits & (libc::EPOLLOUT as u32 | err) != 0 {
                st.writable = true;
                wake[1] = st.write_waker.take();
            }
            let rest = st.read_waker.is_some() || st.write_waker.is_some();
            drop(st);
            if rest {
                // Interest in the other direction is still there.
                let _ = self.rearm(&source);
            }
            for w in wake.into_iter().flatten() {
                w.wake();
            }
        }
        Ok(())
    }
}

impl Source {
    fn with_reactor<R>(f: impl FnOnce(&Reactor) -> R) -> R {
        REACTOR.with(f)
    }

    pub(crate) fn new(fd: RawFd) -> stdio::Result<Rc<Source>> {
        Self::with_reactor(|r| r.register(fd))
    }

    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<stdio::Result<()>> {
        {
            let mut st = self.state.borrow_mut();
            if st.readable {
                st.readable = false;
                return Poll::Ready(Ok(()));
            }
            match &st.read_waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => st.read_waker = Some(cx.waker().clone()),
            }
        }
        Self::with_reactor(|r| r.rearm(self))?;
        Poll::Pending
    }

    pub(crate) fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<stdio::Result<()>> {
        {
            let mut st = self.state.borrow_mut();
            if st.writable {
                st.writable = false;
                return Poll::Ready(Ok(()));
            }
            match &st.write_waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => st.write_waker = Some(cx.waker().clone()),
            }
        }
        Self::with_reactor(|r| r.rearm(self))?;
        Poll::Pending
    }

    pub(crate) fn deregister(&self) {
        Self::with_reactor(|r| r.deregister(self));
    }
}

/// A timer on the reactor, like async-io's: a future that completes at its deadline (with the
/// deadline), re-armable with [`Timer::set_at`] without allocating.
#[derive(Debug)]
pub struct Timer {
    when: Option<Instant>,
    /// The registration in the reactor's timer map.
    id: Option<(Instant, u64)>,
}

impl Timer {
    /// A timer that never fires (until [`Timer::set_at`]).
    pub fn never() -> Timer {
        Timer {
            when: None,
            id: None,
        }
    }

    /// Fires at `when`.
    pub fn at(when: Instant) -> Timer {
        Timer {
            when: Some(when),
            id: None,
        }
    }

    /// Fires `d` from now.
    pub fn after(d: Duration) -> Timer {
        Timer::at(Instant::now() + d)
    }

    /// Moves the deadline; the timer can fire again.
    pub fn set_at(&mut self, when: Instant) {
        self.unregister();
        self.when = Some(when);
    }

    /// Moves the deadline to `d` from now.
    pub fn set_after(&mut self, d: Duration) {
        self.set_at(Instant::now() + d);
    }

    fn unregister(&mut self) {
        if let Some((when, id)) = self.id.take() {
            REACTOR.with(|r| r.remove_timer(when, id));
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl Future for Timer {
    type Output = Instant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Instant> {
        let Some(when) = self.when else {
            return Poll::Pending;
        };
        if Instant::now() >= when {
            self.unregister();
            return Poll::Ready(when);
        }
        // Registered for this deadline already: only a new waker needs storing.
        if let Some(key) = self.id.filter(|k| k.0 == when) {
            let still = REACTOR.with(|r| match r.timers.borrow_mut().get_mut(&key) {
                Some(w) => {
                    if !w.will_wake(cx.waker()) {
                        *w = cx.waker().clone();
                    }
                    true
                }
                // Fired meanwhile (removed from the map): register again below.
                None => false,
            });
            if still {
                return Poll::Pending;
            }
        }
        self.unregister();
        let id = REACTOR.with(|r| r.add_timer(when, cx.waker().clone()));
        self.id = Some((when, id));
        Poll::Pending
    }
}

/// The waker of [`block_on`]: a flag, plus an eventfd for wakeups from other threads.
struct BlockOnWaker {
    woken: AtomicBool,
    eventfd: RawFd,
    owner: ThreadId,
}

impl Wake for BlockOnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::AcqRel) && thread::current().id() != self.owner {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
            unsafe { libc::write(self.eventfd, (&one as *const u64).cast(), 8) };
        }
    }
}

fn drain_eventfd(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
}

/// Runs `future` to completion on this thread, driving the reactor whenever it waits.
/// Errors of the reactor itself (epoll failing) are fatal: they panic with the reason.
pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    // SAFETY: plain system call.
    let eventfd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    assert!(eventfd >= 0, "eventfd: {}", stdio::Error::last_os_error());
    struct CloseFd(RawFd);
    impl Drop for CloseFd {
        fn drop(&mut self) {
            // SAFETY: we own the descriptor.
            unsafe { libc::close(self.0) };
        }
    }
    let _close = CloseFd(eventfd);
    REACTOR.with(|r| {
        r.ctl(
            libc::EPOLL_CTL_ADD,
            eventfd,
            libc::EPOLLIN as u32,
            WAKE_TOKEN,
        )
        .expect("register the wake eventfd")
    });
    let inner = Arc::new(BlockOnWaker {
        woken: AtomicBool::new(true),
        eventfd,
        owner: thread::current().id(),
    });
    let waker = Waker::from(inner.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let result = loop {
        if inner.woken.swap(false, Ordering::AcqRel) {
            if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
                break v;
            }
        }
        let deadline = REACTOR.with(|r| r.fire_timers(Instant::now()));
        if inner.woken.load(Ordering::Acquire) {
            continue;
        }
        REACTOR
            .with(|r| r.wait(deadline, eventfd))
            .unwrap_or_else(|e| panic!("epoll_wait: {e}"));
        REACTOR.with(|r| r.fire_timers(Instant::now()));
    };
    REACTOR.with(|r| {
        let _ = r.ctl(libc::EPOLL_CTL_DEL, eventfd, 0, 0);
    });
    result
}
