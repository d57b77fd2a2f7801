//! Sockets tied to one network interface (`--interface IFACE`).
//!
//! A router must not offer its speaker on the WAN side. Binding to an interface's address is
//! not enough for that: Linux follows the weak host model and accepts a packet for any local
//! address on any interface. `SO_BINDTODEVICE` (socket(7)) ties a socket to the device
//! itself, so a connection or datagram that arrives on another interface never reaches it,
//! whatever address it was sent to; the interface may also get its address (DHCP, a bridge
//! coming up) after the daemon started. Several TCP listeners on the same port, each bound to
//! a different device, do not conflict.
//!
//! Needs `CAP_NET_RAW` on kernels before 5.7 (procd runs raopd as root on OpenWrt).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `setsockopt(2)` with option value `val` (an int, `ip_mreqn`, ...), its size taken from `T`.
pub fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` points to a live T whose exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            val as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ties socket `fd` to the interface named `iface` (`SO_BINDTODEVICE`).
pub fn bind_to_device(fd: RawFd, iface: &str) -> io::Result<()> {
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ || iface.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {iface:?}"),
        ));
    }
    // SAFETY: `iface` is a valid buffer of `iface.len()` bytes; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            iface.as_ptr() as *const libc::c_void,
            iface.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("interface {iface}: {e}")))
    }
}

/// `recvmsg(2)` of one datagram into `buf`, with a control buffer for ancillary data
/// (cmsg(3)): the one place raopd walks control messages. Each control message the kernel
/// attached is handed to `on_cmsg` as (level, type, data), e.g. (`SOL_SOCKET`,
/// `SCM_TIMESTAMPNS`, a `timespec`) or (`IPPROTO_IP`, `IP_PKTINFO`, an `in_pktinfo`); read
/// the data with [`cmsg_value`]. `flags` as for recvmsg (`MSG_DONTWAIT`, or 0 on a
/// non-blocking socket). Returns the datagram's length in bytes and its source address
/// (`None` for a family other than IPv4/IPv6).
pub fn recvmsg(
    fd: RawFd,
    buf: &mut [u8],
    flags: libc::c_int,
    on_cmsg: &mut dyn FnMut(libc::c_int, libc::c_int, &[u8]),
) -> io::Result<(usize, Option<SocketAddr>)> {
    // SAFETY: all-zero is a valid sockaddr_storage / msghdr.
    let mut src: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64s keep the control buffer aligned for cmsghdr; 128 bytes hold a timestamp or a
    // pktinfo with room to spare.
    let mut control = [0u64; 16];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut src as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` points to a live buffer of the stated size.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within
    // msg_controllen; each message's data lies within its cmsg_len.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let head = libc::CMSG_LEN(0) as usize;
            let len = ((*c).cmsg_len as usize).saturating_sub(head);
            let data = std::slice::from_raw_parts(libc::CMSG_DATA(c), len);
            on_cmsg((*c).cmsg_level, (*c).cmsg_type, data);
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, sockaddr_to_std(&src)))
}

/// Datagrams [`recv_batch`] takes in one system call.
pub const BATCH: usize = 8;

/// One datagram of a [`recv_batch`]: its length in bytes (at most the slot's) and source
/// address (`None` for a family other than IPv4/IPv6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Datagram {
    pub len: usize,
    pub from: Option<SocketAddr>,
}

/// `recvmmsg(2)` without waiting (`MSG_DONTWAIT`): up to [`BATCH`] datagrams, the i-th into
/// the i-th `slot`-byte piece of `buf` (a longer datagram is cut to `slot`, as recvfrom
/// cuts it), described in `got[i]`. Returns how many came (at least 1); `WouldBlock` when
/// none was waiting. Fewer than `buf.len() / slot` (or [`BATCH`]) means the socket is
/// drained. One call where a recvfrom per datagram would take as many, plus the one that
/// finds the socket empty (issue 10: system calls per packet).
pub fn recv_batch(
    fd: RawFd,
    buf: &mut [u8],
    slot: usize,
    got: &mut [Datagram; BATCH],
) -> io::Result<usize> {
    // SAFETY: all-zero is a valid sockaddr_storage / iovec / mmsghdr.
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut n = 0;
    for ((piece, iov), (msg, name)) in buf
        .chunks_exact_mut(slot.max(1))
        .zip(iovs.iter_mut())
        .zip(msgs.iter_mut().zip(names.iter_mut()))
    {
        iov.iov_base = piece.as_mut_ptr().cast();
        iov.iov_len = piece.len();
        msg.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
        msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
        n += 1;
    }
    // SAFETY: the first `n` headers point to live, distinct name and data buffers of the
    // stated sizes; the kernel writes at most `n` of them.
    let r = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            n as _,
            libc::MSG_DONTWAIT as _,
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let r = (r as usize).min(n);
    for ((g, msg), name) in got.iter_mut().zip(&msgs).zip(&names).take(r) {
        *g = Datagram {
            len: (msg.msg_len as usize).min(slot),
            from: sockaddr_to_std(name),
        };
    }
    Ok(r)
}

/// A control message's data as a `T` (`timespec`, `in_pktinfo`), if it is long enough.
/// `T` must be a plain C struct for which any bytes are a valid value.
pub fn cmsg_value<T: Copy>(data: &[u8]) -> Option<T> {
    // SAFETY: the length is checked; the read is unaligned; callers use plain C structs.
    (data.len() >= std::mem::size_of::<T>())
        .then(|| unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<T>()) })
}

/// The source address `recvmsg` filled in, for IPv4 and IPv6 sockets.
fn sockaddr_to_std(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::from((
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
            )))
        }
        _ => None,
    }
}

fn socket(kind: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn bind_any(fd: RawFd, port: u16) -> io::Result<()> {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: `sin` is a valid sockaddr_in and its size is passed along.
    let rc = unsafe {
        libc::bind(
            fd,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A TCP listener on `0.0.0.0:port`, on interface `iface` only when given (else on all).
pub fn tcp_listener(iface: Option<&str>, port: u16) -> io::Result<TcpListener> {
    let Some(iface) = iface else {
        return TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    };
    let fd = socket(libc::SOCK_STREAM)?;
    let one: libc::c_int = 1;
    let _ = setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, &one);
    bind_to_device(fd.as_raw_fd(), iface)?;
    bind_any(fd.as_raw_fd(), port)?;
    // SAFETY: listen(2) on a socket we own.
    if unsafe { libc::listen(fd.as_raw_fd(), 16) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(fd))
}

/// A UDP socket on `0.0.0.0:port` (0 = ephemeral), on interface `iface` only when given.
pub fn udp_socket(iface: Option<&str>, port: u16) -> io::Result<UdpSocket> {
    let Some(iface) = iface else {
        return UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    };
    let fd = socket(libc::SOCK_DGRAM)?;
    bind_to_device(fd.as_raw_fd(), iface)?;
    bind_any(fd.as_raw_fd(), port)?;
    Ok(UdpSocket::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_binding_and_bad_names() {
        // Binding to a device needs CAP_NET_RAW before Linux 5.7 (or root).
        let l = tcp_listener(Some("lo"), 0).expect("listener on lo");
        let port = l.local_addr().unwrap().port();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(tcp_listener(Some("no-such-if0"), 0).is_err());
        assert!(udp_socket(Some(""), 0).is_err());
        assert!(udp_socket(Some("abcdefghijklmnopq"), 0).is_err());
        let u = udp_socket(None, 0).unwrap();
        assert_ne!(u.local_addr().unwrap().port(), 0);
    }

    /// Datagrams over loopback: a full batch, then the rest (one cut to its slot), each with
    /// its bytes and source; an empty socket says `WouldBlock`; a buffer of fewer slots takes
    /// no more than it holds.
    #[test]
    fn recv_batch_takes_what_is_waiting_in_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut buf = vec![0u8; BATCH * 16];
        let mut got = [Datagram::default(); BATCH];
        let err = recv_batch(rx.as_raw_fd(), &mut buf, 16, &mut got).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // 11 datagrams: a full batch, then the other 3 (the last one cut to the slot).
        for i in 0..10u8 {
            tx.send_to(&[i; 5], to).unwrap();
        }
        tx.send_to(&[0xaa; 40], to).unwrap();
        assert_eq!(
            recv_batch(rx.as_raw_fd(), &mut buf, 16, &mut got).unwrap(),
            BATCH
        );
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.len, 5);
            assert_eq!(g.from, Some(tx.local_addr().unwrap()));
            assert_eq!(&buf[i * 16..i * 16 + 5], &[i as u8; 5]);
        }
        assert_eq!(
            recv_batch(rx.as_raw_fd(), &mut buf, 16, &mut got).unwrap(),
            3
        );
        assert_eq!((got[0].len, buf[0]), (5, 8));
        assert_eq!((got[2].len, &buf[32..48]), (16, &[0xaa; 16][..]));
        // A buffer of fewer slots than BATCH takes no more than it holds.
        tx.send_to(b"x", to).unwrap();
        tx.send_to(b"y", to).unwrap();
        let mut one = [0u8; 16];
        assert_eq!(
            recv_batch(rx.as_raw_fd(), &mut one, 16, &mut got).unwrap(),
            1
        );
        assert_eq!(
            recv_batch(rx.as_raw_fd(), &mut one, 16, &mut got).unwrap(),
            1
        );
        assert_eq!(one[0], b'y');
    }

    /// A real datagram over loopback with `SO_TIMESTAMPNS` on: its bytes, its source and the
    /// kernel's stamp come back; an empty socket says `WouldBlock`.
    #[test]
    fn recvmsg_returns_source_and_control_messages() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let on: libc::c_int = 1;
        setsockopt(rx.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &on).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 64];
        let mut stamps = Vec::new();
        let mut on_cmsg = |level, kind, data: &[u8]| {
            if (level, kind) == (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) {
                stamps.push(cmsg_value::<libc::timespec>(data).unwrap());
            }
        };
        let (n, from) = recvmsg(rx.as_raw_fd(), &mut buf, 0, &mut on_cmsg).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from, Some(tx.local_addr().unwrap()));
        assert_eq!(stamps.len(), 1);
        assert!(stamps[0].tv_sec > 0);
        let e = recvmsg(
            rx.as_raw_fd(),
            &mut buf,
            libc::MSG_DONTWAIT,
            &mut |_, _, _| {},
        );
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(cmsg_value::<u64>(&[1, 2, 3]), None);
    }
}
