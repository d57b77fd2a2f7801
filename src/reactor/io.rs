//! [`Async<T>`]: a non-blocking descriptor registered with the reactor, with the async
//! operations the daemon uses (the same names as async-io's).

use super::Source;
use futures_lite::{AsyncRead, AsyncWrite};
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// An I/O object in non-blocking mode, registered with the reactor of this thread.
/// Dropping it deregisters the descriptor (then drops, and so closes, the object).
pub struct Async<T: AsFd> {
    source: Rc<Source>,
    io: Option<T>,
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl<T: AsFd> Async<T> {
    /// Puts `io` in non-blocking mode and registers it.
    pub fn new(io: T) -> io::Result<Async<T>> {
        set_nonblocking(io.as_fd().as_raw_fd())?;
        Self::new_nonblocking(io)
    }

    /// Registers `io`, which the caller has made non-blocking already (or which never
    /// blocks, such as a sound card's poll descriptor).
    pub fn new_nonblocking(io: T) -> io::Result<Async<T>> {
        let source = Source::new(io.as_fd().as_raw_fd())?;
        Ok(Async {
            source,
            io: Some(io),
        })
    }

    pub fn get_ref(&self) -> &T {
        self.io.as_ref().expect("present until drop")
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.io.as_mut().expect("present until drop")
    }

    /// Ready once the descriptor signalled readability since it was last ready.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.source.poll_readable(cx)
    }

    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.source.poll_writable(cx)
    }

    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_readable(cx)).await
    }

    pub async fn writable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_writable(cx)).await
    }

    /// Runs `op` until it does not report `WouldBlock`, waiting for readability in between.
    pub async fn read_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        loop {
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
            self.readable().await?;
        }
    }

    /// Runs `op` until it does not report `WouldBlock`, waiting for writability in between.
    pub async fn write_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        loop {
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
            self.writable().await?;
        }
    }
}

impl<T: AsFd + std::fmt::Debug> std::fmt::Debug for Async<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Async").field("io", &self.io).finish()
    }
}

impl<T: AsFd> Drop for Async<T> {
    fn drop(&mut self) {
        self.source.deregister();
        drop(self.io.take());
    }
}

impl<T: AsFd> AsRawFd for Async<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.source.fd
    }
}

impl Async<UdpSocket> {
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.read_with(|s| s.recv_from(buf)).await
    }

    pub async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.write_with(|s| s.send_to(buf, to)).await
    }
}

impl Async<TcpListener> {
    pub async fn accept(&self) -> io::Result<(Async<TcpStream>, SocketAddr)> {
        let (s, peer) = self.read_with(|l| l.accept()).await?;
        Ok((Async::new(s)?, peer))
    }
}

impl Async<UnixListener> {
    pub async fn accept(&self) -> io::Result<(Async<UnixStream>, std::os::unix::net::SocketAddr)> {
        let (s, peer) = self.read_with(|l| l.accept()).await?;
        Ok((Async::new(s)?, peer))
    }
}

impl Async<TcpStream> {
    /// Connects without blocking the reactor: a non-blocking `connect(2)`, then a wait for
    /// writability and `SO_ERROR`.
    pub async fn connect(addr: SocketAddr) -> io::Result<Async<TcpStream>> {
        let (family, storage, len) = sockaddr(addr);
        // SAFETY: plain system call; the descriptor is owned by the TcpStream below at once.
        let fd = unsafe {
            libc::socket(
                family,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh socket we own.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
        let r =
            unsafe { libc::connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        let stream = Async::new_nonblocking(stream)?;
        stream.writable().await?;
        if let Some(e) = stream.get_ref().take_error()? {
            return Err(e);
        }
        Ok(stream)
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::c_int, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                // SAFETY: zero padding.
                ..unsafe { std::mem::zeroed() }
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (
                libc::AF_INET,
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                libc::AF_INET6,
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

/// Byte streams (TCP, Unix) as futures-io readers and writers.
macro_rules! stream_io {
    ($t:ty) => {
        impl AsyncRead for Async<$t> {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                loop {
                    let mut s: &$t = self.get_ref();
                    match s.read(buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        r => return Poll::Ready(r),
                    }
                    if self.poll_readable(cx)?.is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }

        impl AsyncWrite for Async<$t> {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                loop {
                    let mut s: &$t = self.get_ref();
                    match s.write(buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        r => return Poll::Ready(r),
                    }
                    if self.poll_writable(cx)?.is_pending() {
                        return Poll::Pending;
                    }
                }
            }

            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }

            fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(self.get_ref().shutdown(std::net::Shutdown::Write))
            }
        }
    };
}

stream_io!(TcpStream);
stream_io!(UnixStream);
