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
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
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
}
