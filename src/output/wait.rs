//! Waiting for a sink on the smol reactor.
//!
//! The daemon runs one reactor thread, so it cannot block in `poll(2)` on the sound device the way
//! a dedicated audio thread would. Instead the sink's poll descriptors are registered with the
//! reactor, and [`Waiter::wait`] is an ordinary future that the player races against its socket
//! receives.
//!
//! Pacing falls back to a plain timer when the sink has no descriptors (the virtual-DAC outputs)
//! or when the reactor cannot watch one of them (epoll refuses `/dev/null`, which is what the ALSA
//! `null` and `file` plugins hand out). The caller's deadline is the backstop in every case: a
//! descriptor that never signals cannot stall playback.

use std::future::{poll_fn, Future as _};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::reactor::{Async, Timer};

use super::Sink;

/// After a wakeup the sink did not accept (its descriptor is ready at the OS level but the
/// device says no, which some plugins do), wait this long before watching the descriptors again.
/// A level-triggered descriptor that stays ready would otherwise spin the reactor thread until
/// the deadline; 2 ms is well below a period, so real readiness is barely delayed.
pub const SPURIOUS_BACKOFF: Duration = Duration::from_millis(2);

/// A descriptor owned by the sink, lent to the reactor. Dropping it does not close the fd: the
/// sink closes its own descriptors in `stop`.
#[derive(Debug)]
struct SinkFd(RawFd);

impl AsFd for SinkFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the sink keeps the descriptor open from `start` until `stop`, and the `Waiter`
        // holding this is documented to be dropped before `stop`.
        unsafe { BorrowedFd::borrow_raw(self.0) }
    }
}

impl AsRawFd for SinkFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

struct Source {
    io: Async<SinkFd>,
    readable: bool,
    writable: bool,
}

/// Waits until a started sink can take frames, on the reactor thread.
///
/// Create it after [`Sink::start`] and drop it before [`Sink::stop`]: it watches descriptors the
/// sink owns, and a descriptor number reused after `stop` must not stay registered.
pub struct Waiter {
    sources: Vec<Source>,
    /// The sink's descriptors, in its order, for filling in `revents`.
    fds: Vec<libc::pollfd>,
    timer: Timer,
}

impl Waiter {
    /// Registers the sink's poll descriptors with the reactor. If any cannot be registered the
    /// whole waiter uses timer pacing: waiting on only some of them could miss the one that
    /// matters.
    pub fn new(sink: &mut dyn Sink) -> Waiter {
        let fds = sink.poll_fds();
        let sources = match register(&fds) {
            Ok(sources) => sources,
            Err(e) => {
                log::debug!(
                    "{}: cannot watch poll descriptors ({e}); pacing by timer",
                    sink.describe()
                );
                Vec::new()
            }
        };
        if !sources.is_empty() {
            log::debug!(
                "{}: waiting on {} poll descriptor(s)",
                sink.describe(),
                fds.len()
            );
        }
        let fds = if sources.is_empty() { Vec::new() } else { fds };
        Waiter {
            sources,
            fds,
            timer: Timer::never(),
        }
    }

    /// Whether this waiter watches descriptors (false: it only sleeps until the deadline).
    pub fn has_fds(&self) -> bool {
        !self.sources.is_empty()
    }

    /// Waits until the sink can take frames or `deadline` passes, whichever is first. Returns
    /// true if the sink reported ready (possibly right away, or at the deadline), false on a plain
    /// timeout. Without descriptors it sleeps until the deadline and returns false.
    ///
    /// Cancel-safe: it holds no state between polls that a drop could lose, so it can be raced
    /// against socket receives.
    pub async fn wait(&mut self, sink: &mut dyn Sink, deadline: Instant) -> io::Result<bool> {
        if self.sources.is_empty() {
            self.sleep_until(deadline).await;
            return Ok(false);
        }
        loop {
            if self.check(sink)? {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            if !self.watch(deadline).await? {
                return self.check(sink);
            }
            if self.check(sink)? {
                return Ok(true);
            }
            // Woken, but the sink says no: back off before watching again.
            log::trace!("{}: spurious wakeup", sink.describe());
            self.sleep_until(deadline.min(Instant::now() + SPURIOUS_BACKOFF))
                .await;
        }
    }

    async fn sleep_until(&mut self, at: Instant) {
        if at <= Instant::now() {
            return;
        }
        self.timer.set_at(at);
        (&mut self.timer).await;
    }

    /// For a caller that waits on many sources at once: registers interest in the sink's
    /// descriptors with `cx` and returns `Ready` when one of them signalled since the last
    /// call; then [`Waiter::check`] tells whether the sink really takes frames. Always
    /// `Pending` without descriptors.
    pub fn poll_event(&self, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        for s in &self.sources {
            if s.readable {
                if let Poll::Ready(r) = s.io.poll_readable(cx) {
                    return Poll::Ready(r);
                }
            }
            if s.writable {
                if let Poll::Ready(r) = s.io.poll_writable(cx) {
                    return Poll::Ready(r);
                }
            }
        }
        Poll::Pending
    }

    /// Waits for an event on any descriptor (true) or the deadline (false).
    async fn watch(&mut self, deadline: Instant) -> io::Result<bool> {
        self.timer.set_at(deadline);
        let sources = &self.sources;
        let timer = &mut self.timer;
        poll_fn(|cx| {
            for s in sources {
                if s.readable {
                    if let Poll::Ready(r) = s.io.poll_readable(cx) {
                        return Poll::Ready(r.map(|()| true));
                    }
                }
                if s.writable {
                    if let Poll::Ready(r) = s.io.poll_writable(cx) {
                        return Poll::Ready(r.map(|()| true));
                    }
                }
            }
            match std::pin::Pin::new(&mut *timer).poll(cx) {
                Poll::Ready(_) => Poll::Ready(Ok(false)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Fills in `revents` with a zero-timeout poll(2) and asks the sink whether it can take
    /// frames now.
    pub fn check(&mut self, sink: &mut dyn Sink) -> io::Result<bool> {
        for fd in &mut self.fds {
            fd.revents = 0;
        }
        loop {
            // SAFETY: `fds` is a valid, exclusively borrowed pollfd array of the given length.
            let r = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, 0) };
            if r >= 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        sink.ready(&mut self.fds)
    }
}

/// Registers each distinct descriptor once, with the union of the directions asked for it (epoll
/// refuses a second registration of the same fd).
fn register(fds: &[libc::pollfd]) -> io::Result<Vec<Source>> {
    let mut sources: Vec<Source> = Vec::with_capacity(fds.len());
    for pfd in fds {
        let readable = pfd.events & (libc::POLLIN | libc::POLLPRI) != 0;
        let writable = pfd.events & libc::POLLOUT != 0;
        if let Some(s) = sources.iter_mut().find(|s| s.io.as_raw_fd() == pfd.fd) {
            s.readable |= readable;
            s.writable |= writable;
            continue;
        }
        let io = Async::new_nonblocking(SinkFd(pfd.fd))?;
        sources.push(Source {
            io,
            // Errors and hang-ups wake either direction; watch one so they are not missed.
            readable: readable || !writable,
            writable,
        });
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{SinkStatus, SoftSink};
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// A sink whose readiness is a real socket: ready when the peer has sent something. No ALSA
    /// plugin available without sound hardware gives a descriptor that ever changes state, so this
    /// is what exercises the reactor path for real.
    struct SocketSink {
        rx: UnixStream,
        accept: bool,
        ready_calls: usize,
    }

    impl Sink for SocketSink {
        fn describe(&self) -> String {
            "socket".into()
        }
        fn start(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn stop(&mut self) {}
        fn status(&mut self, _: Instant) -> io::Result<SinkStatus> {
            Ok(SinkStatus::default())
        }
        fn write(&mut self, _: Instant, _: &[i16]) -> io::Result<usize> {
            Ok(0)
        }
        fn poll_fds(&mut self) -> Vec<libc::pollfd> {
            vec![libc::pollfd {
                fd: self.rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }]
        }
        fn ready(&mut self, fds: &mut [libc::pollfd]) -> io::Result<bool> {
            self.ready_calls += 1;
            Ok(self.accept && fds[0].revents & libc::POLLIN != 0)
        }
        fn underruns(&self) -> u64 {
            0
        }
        fn capacity(&self) -> usize {
            0
        }
    }

    fn socket_sink(accept: bool) -> (SocketSink, UnixStream) {
        let (rx, tx) = UnixStream::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        let sink = SocketSink {
            rx,
            accept,
            ready_calls: 0,
        };
        (sink, tx)
    }

    #[test]
    fn soft_sink_sleeps_until_deadline() {
        let dir = std::env::temp_dir().join(format!("raopd-wait-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sink = SoftSink::pipe(&dir.join("w.raw")).unwrap();
        sink.start().unwrap();
        let mut w = Waiter::new(&mut sink);
        assert!(!w.has_fds());
        crate::reactor::block_on(async {
            let t = Instant::now();
            let r = w
                .wait(&mut sink, t + Duration::from_millis(30))
                .await
                .unwrap();
            let took = t.elapsed();
            assert!(!r);
            assert!(took >= Duration::from_millis(30), "{took:?}");
            assert!(took < Duration::from_millis(500), "{took:?}");
            // A deadline in the past returns at once.
            let t = Instant::now();
            assert!(!w
                .wait(&mut sink, t - Duration::from_millis(5))
                .await
                .unwrap());
            assert!(t.elapsed() < Duration::from_secs(1));
        });
    }

    #[cfg(feature = "alsa")]
    #[test]
    fn alsa_file_pcm_falls_back_to_timer() {
        use crate::output::alsa::AlsaSink;
        let dir = std::env::temp_dir().join(format!("raopd-wait-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("alsa.raw");
        let mut sink = AlsaSink::new(&format!("file:FILE={},FORMAT=raw", path.display())).unwrap();
        sink.start().unwrap();
        assert_eq!(
            sink.poll_fds().len(),
            1,
            "the plugin does give a descriptor"
        );
        let mut w = Waiter::new(&mut sink);
        assert!(!w.has_fds(), "epoll cannot watch /dev/null");
        let data = vec![0x1234i16; 2 * 4000];
        let mut written = 0;
        crate::reactor::block_on(async {
            let t = Instant::now();
            // Paced by the 20 ms deadline, never hanging on the descriptor.
            for _ in 0..3 {
                let deadline = Instant::now() + Duration::from_millis(20);
                assert!(!w.wait(&mut sink, deadline).await.unwrap());
                assert!(Instant::now() >= deadline);
                let st = sink.status(Instant::now()).unwrap();
                let n = st.avail.min(4000 - written);
                written += sink.write(Instant::now(), &data[..n * 2]).unwrap();
            }
            assert!(t.elapsed() < Duration::from_secs(2));
        });
        drop(w);
        sink.stop();
        assert_eq!(written, 4000);
        assert_eq!(std::fs::read(&path).unwrap().len(), 4000 * 4);
    }

    #[test]
    fn descriptor_wakes_before_deadline() {
        let (mut sink, mut tx) = socket_sink(true);
        let mut w = Waiter::new(&mut sink);
        assert!(w.has_fds());
        crate::reactor::block_on(async {
            let t = Instant::now();
            let poke = async {
                Timer::after(Duration::from_millis(20)).await;
                tx.write_all(b"x").unwrap();
                std::future::pending::<io::Result<bool>>().await
            };
            let waiting = w.wait(&mut sink, t + Duration::from_secs(5));
            let r = futures_lite::future::or(waiting, poke).await.unwrap();
            assert!(r);
            let took = t.elapsed();
            assert!(took >= Duration::from_millis(20), "{took:?}");
            assert!(took < Duration::from_secs(1), "{took:?}");
        });
        // Already ready: returns at once.
        crate::reactor::block_on(async {
            let t = Instant::now();
            assert!(w.wait(&mut sink, t + Duration::from_secs(5)).await.unwrap());
            assert!(t.elapsed() < Duration::from_secs(1));
        });
        let mut b = [0u8; 1];
        sink.rx.read_exact(&mut b).unwrap();
        // Nothing pending: times out at the deadline.
        crate::reactor::block_on(async {
            let t = Instant::now();
            let r = w
                .wait(&mut sink, t + Duration::from_millis(30))
                .await
                .unwrap();
            assert!(!r);
            assert!(t.elapsed() >= Duration::from_millis(30));
        });
    }

    #[test]
    fn cancelled_wait_leaves_waiter_usable() {
        let (mut sink, mut tx) = socket_sink(true);
        let mut w = Waiter::new(&mut sink);
        crate::reactor::block_on(async {
            // Lose the race against a short timer, as against a socket receive.
            let t = Instant::now();
            let lost = futures_lite::future::or(
                async { Some(w.wait(&mut sink, t + Duration::from_secs(5)).await) },
                async {
                    Timer::after(Duration::from_millis(10)).await;
                    None
                },
            )
            .await;
            assert!(lost.is_none());
            tx.write_all(b"x").unwrap();
            let t = Instant::now();
            assert!(w.wait(&mut sink, t + Duration::from_secs(5)).await.unwrap());
            assert!(t.elapsed() < Duration::from_secs(1));
        });
    }

    #[test]
    fn spurious_readiness_does_not_spin() {
        let (mut sink, mut tx) = socket_sink(false);
        tx.write_all(b"always readable").unwrap();
        let mut w = Waiter::new(&mut sink);
        crate::reactor::block_on(async {
            let t = Instant::now();
            let r = w
                .wait(&mut sink, t + Duration::from_millis(60))
                .await
                .unwrap();
            assert!(!r);
            assert!(t.elapsed() >= Duration::from_millis(60));
        });
        // About one check per SPURIOUS_BACKOFF, not thousands.
        assert!(sink.ready_calls >= 2, "{}", sink.ready_calls);
        assert!(sink.ready_calls <= 80, "{}", sink.ready_calls);
    }

    #[test]
    fn duplicate_and_unwatchable_descriptors() {
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            },
        ];
        let sources = register(&fds).unwrap();
        assert_eq!(sources.len(), 1);
        assert!(sources[0].readable && sources[0].writable);
        drop(sources);
        // The descriptor is still open after the waiter let go of it.
        let mut a = a;
        a.write_all(b"ok").unwrap();
        let null = File::options().write(true).open("/dev/null").unwrap();
        let fds = [libc::pollfd {
            fd: null.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        }];
        assert!(register(&fds).is_err());
    }
}
