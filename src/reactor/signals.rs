//! Signals as a stream on the reactor: the handler (registered with signal-hook-registry, the
//! well-kept registry that chains handlers safely) writes the signal number to a self-pipe,
//! which the reactor watches like any descriptor.

use super::Async;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// Delivery of some signals to this thread's reactor.
pub struct Signals {
    rx: Async<UnixStream>,
    /// Kept so the write end stays open for the handlers; never used here.
    _tx: OwnedFd,
    ids: Vec<signal_hook_registry::SigId>,
}

impl Signals {
    /// Catches `signals` (e.g. `libc::SIGTERM`) from now on, until dropped.
    pub fn new(signals: &[libc::c_int]) -> io::Result<Signals> {
        let (rx, tx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        let tx: OwnedFd = tx.into();
        let raw = tx.as_raw_fd();
        let mut ids = Vec::new();
        for &sig in signals {
            // SAFETY: the action only calls write(2), which is async-signal-safe, on a
            // descriptor that outlives the registration (both are dropped together).
            let id = unsafe {
                signal_hook_registry::register(sig, move || {
                    let b = sig as u8;
                    libc::write(raw, (&b as *const u8).cast(), 1);
                })
            }?;
            ids.push(id);
        }
        Ok(Signals {
            rx: Async::new(rx)?,
            _tx: tx,
            ids,
        })
    }

    /// The next signal caught.
    pub async fn next(&mut self) -> io::Result<libc::c_int> {
        let mut b = [0u8; 1];
        let n = self
            .rx
            .read_with(|s| {
                let mut s: &UnixStream = s;
                std::io::Read::read(&mut s, &mut b)
            })
            .await?;
        if n == 0 {
            return Err(io::Error::other("signal pipe closed"));
        }
        Ok(libc::c_int::from(b[0]))
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook_registry::unregister(id);
        }
    }
}
