//! The network edge of the responder: interface discovery, the port 5353 socket and the async
//! loop that feeds [`Responder`] from the smol reactor thread.
//!
//! IPv4 only: every AirPlay 1 sender browses over IPv4, and one socket keeps the footprint small.

use super::responder::{Responder, Transmit, MDNS_GROUP_V4, MDNS_PORT};
use super::Service;
use crate::bind::setsockopt;
use crate::reactor::{Async, Timer};
use futures_lite::future;
use std::ffi::CStr;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::time::{Duration, Instant};

/// How often the interface list is read again when the interfaces were chosen automatically:
/// a router's LAN or a client's DHCP address may come up after the daemon.
const RESCAN_INTERVAL: Duration = Duration::from_secs(30);

/// Biggest mDNS message we accept (RFC 6762 section 17 allows up to 9000 bytes).
const MAX_PACKET: usize = 9000;

/// Packets handled back to back before the loop yields to the other tasks on the reactor
/// thread (RTSP, audio): a flood of queries costs them at most this many packets' work.
const BATCH: usize = 16;

/// The subnet list is read again at most this often when a packet's source is in none of
/// them (an address added since the last read).
const SUBNET_REFRESH: Duration = Duration::from_secs(1);

/// One IPv4 address of an interface with its netmask: the subnet it is on-link for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// Kernel interface index.
    pub index: u32,
    pub addr: Ipv4Addr,
    pub mask: Ipv4Addr,
}

/// RFC 6762 section 11: a packet is taken only from a source on the local link of the
/// interface it arrived on, i.e. in the subnet of one of that interface's addresses (or
/// IPv4 link-local, 169.254/16). Queries from elsewhere are not answered (no reply ~5x the
/// query's size to a forged far-away source) and responses from elsewhere are no conflicts.
pub fn on_link(src: Ipv4Addr, ifindex: u32, subnets: &[Subnet]) -> bool {
    src.is_link_local()
        || subnets.iter().any(|s| {
            let m = u32::from(s.mask);
            s.index == ifindex && u32::from(src) & m == u32::from(s.addr) & m
        })
}

/// Every IPv4 address of every interface, with its netmask.
pub fn subnets() -> io::Result<Vec<Subnet>> {
    let mut list = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that is freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list returned by getifaddrs, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of at least sa_family.
        if unsafe { (*ifa.ifa_addr).sa_family } as libc::c_int != libc::AF_INET {
            continue;
        }
        // SAFETY: family is AF_INET, so address and netmask are sockaddr_in.
        let (sin, mask) = unsafe {
            (
                &*(ifa.ifa_addr as *const libc::sockaddr_in),
                &*(ifa.ifa_netmask as *const libc::sockaddr_in),
            )
        };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let index = unsafe { libc::if_nametoindex(ifa.ifa_name) };
        if index == 0 {
            continue;
        }
        list.push(Subnet {
            index,
            addr: Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            mask: Ipv4Addr::from(u32::from_be(mask.sin_addr.s_addr)),
        });
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(list)
}

/// An IPv4 interface that mDNS runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Kernel name, e.g. `br-lan`.
    pub name: String,
    /// Kernel interface index (used for the multicast membership and outgoing interface).
    pub index: u32,
    /// Its (first) IPv4 address.
    pub addr: Ipv4Addr,
}

/// IPv4 interfaces that are up and multicast-capable, one entry per interface (its first
/// address). Loopback is included only when nothing else qualifies, so that a speaker on a
/// real network never publishes 127.0.0.1, while a loopback-only test namespace still works.
pub fn interfaces() -> io::Result<Vec<Interface>> {
    let list = all_interfaces()?;
    let any_real = list.iter().any(|(_, lo)| !lo);
    Ok(list
        .into_iter()
        .filter(|(_, lo)| !any_real || !lo)
        .map(|(i, _)| i)
        .collect())
}

/// The interfaces of [`interfaces`] named in `only` (loopback too, when named); all of
/// [`interfaces`] when `only` is empty. Named interfaces that are down or have no IPv4
/// address yet are left out until they have one.
pub fn interfaces_named(only: &[String]) -> io::Result<Vec<Interface>> {
    if only.is_empty() {
        return interfaces();
    }
    let all = all_interfaces()?;
    Ok(only
        .iter()
        .filter_map(|n| {
            all.iter()
                .find(|(i, _)| &i.name == n)
                .map(|(i, _)| i.clone())
        })
        .collect())
}

/// Every IPv4 interface that is up and multicast-capable, with whether it is loopback.
fn all_interfaces() -> io::Result<Vec<(Interface, bool)>> {
    let mut list: Vec<(Interface, bool)> = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that is freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list returned by getifaddrs, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of at least sa_family.
        let family = unsafe { (*ifa.ifa_addr).sa_family } as libc::c_int;
        if family != libc::AF_INET {
            continue;
        }
        let flags = ifa.ifa_flags;
        if flags & libc::IFF_UP as u32 == 0 || flags & libc::IFF_MULTICAST as u32 == 0 {
            continue;
        }
        // SAFETY: family is AF_INET, so the address is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let cname = unsafe { CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: cname is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if index == 0 {
            continue;
        }
        let name = cname.to_string_lossy().into_owned();
        if list.iter().any(|(i, _)| i.index == index) {
            continue;
        }
        let loopback = flags & libc::IFF_LOOPBACK as u32 != 0;
        list.push((Interface { name, index, addr }, loopback));
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(list)
}

/// The IPv4 addresses of [`interfaces`], ready for [`Service::addrs`].
pub fn local_ipv4_addrs() -> io::Result<Vec<IpAddr>> {
    Ok(interfaces()?
        .into_iter()
        .map(|i| IpAddr::V4(i.addr))
        .collect())
}

/// The MAC address to publish and to use in the RAOP `Apple-Response`.
///
/// Taken from the interface of the IPv4 default route when there is one (that is the board's
/// "own" address as the network sees it), otherwise from the first interface, by name, that is
/// up and not loopback. Returns `None` when no interface has a non-zero MAC (for example in a
/// loopback-only network namespace); callers then pick a fixed locally administered address.
pub fn mac_of_default_interface() -> Option<[u8; 6]> {
    let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let default_if = route.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace();
        let name = f.next()?;
        (f.next()? == "00000000").then(|| name.to_string())
    });
    if let Some(mac) = default_if.as_deref().and_then(read_mac) {
        return Some(mac);
    }
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().find_map(|n| {
        let flags = std::fs::read_to_string(format!("/sys/class/net/{n}/flags")).ok()?;
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
        let up = flags & libc::IFF_UP as u32 != 0;
        let lo = flags & libc::IFF_LOOPBACK as u32 != 0;
        if up && !lo {
            read_mac(&n)
        } else {
            None
        }
    })
}

fn read_mac(ifname: &str) -> Option<[u8; 6]> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address")).ok()?;
    parse_mac(s.trim()).filter(|m| *m != [0; 6])
}

/// Parses `aa:bb:cc:dd:ee:ff`.
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Publishes `service` until `shutdown` resolves, then sends the goodbye and returns.
///
/// `only` names the interfaces to run on (`--interface`); empty means all of [`interfaces`].
/// The list is read again every 30 s, so an interface that gets its address later is joined
/// then. When `service.addrs` is empty the published addresses follow those interfaces;
/// otherwise they are published as given.
///
/// With `only` set, packets that arrive on any other interface are dropped (their interface
/// is read with `IP_PKTINFO`, and `IP_MULTICAST_ALL` is off so that groups other sockets
/// joined elsewhere are not delivered here): the speaker neither answers nor is seen there.
///
/// Every on-link mDNS response (QR bit set) is also handed to `on_response` with its
/// source: other tasks learn from answers the responder receives anyway, such as a sender's
/// DACP service announced by multicast only (RFC 6762 section 6 lets responders answer that
/// way).
///
/// Multicast answers go out only on the interface their query arrived on (see
/// [`Responder::handle_input_on`]); probes, announcements and the goodbye on all of them.
///
/// A message on `reload` (the daemon's SIGHUP) re-reads the interfaces at once instead of at
/// the next 30 s rescan, and re-announces if they changed.
///
/// Errors only when the socket cannot be set up; per-packet errors are logged and survived.
pub async fn run(
    mut service: Service,
    only: Vec<String>,
    shutdown: impl Future<Output = ()>,
    mut on_response: impl FnMut(SocketAddr, &[u8]),
    reload: Option<async_channel::Receiver<()>>,
) -> io::Result<()> {
    let restricted = !only.is_empty();
    let auto_addrs = service.addrs.is_empty();
    let mut joined = interfaces_named(&only)?;
    if auto_addrs {
        service.addrs = joined.iter().map(|i| IpAddr::V4(i.addr)).collect();
    }
    let sock = open_socket()?;
    if restricted {
        let zero: libc::c_int = 0;
        setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_ALL,
            &zero,
        )?;
    }
    // The arrival interface of every packet, for the on-link check.
    let one: libc::c_int = 1;
    setsockopt(sock.as_raw_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, &one)?;
    let mut nets = subnets().unwrap_or_default();
    let mut nets_read = Instant::now();
    let mut batch = 0usize;
    for i in &joined {
        join(sock.as_raw_fd(), i, true);
    }
    if joined.is_empty() {
        log::warn!("mdns: no multicast-capable IPv4 interface yet");
    }
    let mut responder = Responder::new(service, Instant::now());
    let mut shutdown = pin!(shutdown);
    let mut buf = vec![0u8; MAX_PACKET];
    let mut next_scan = Some(Instant::now() + RESCAN_INTERVAL);

    enum Event {
        Recv(io::Result<(usize, SocketAddr, Option<u32>)>),
        Timer,
        Rescan(bool),
        Shutdown,
    }
    let mut reload_rx = reload;
    loop {
        flush(&sock, &joined, &mut responder).await;
        let deadline = match (responder.poll_timeout(), next_scan) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let stop = async {
            shutdown.as_mut().await;
            Event::Shutdown
        };
        let recv = async {
            Event::Recv(
                sock.read_with(|s| recv_pktinfo(s.as_raw_fd(), &mut buf))
                    .await,
            )
        };
        let timer = async {
            match deadline {
                Some(t) => {
                    Timer::at(t).await;
                }
                None => future::pending::<()>().await,
            }
            Event::Timer
        };
        let reload = async {
            match &reload_rx {
                Some(r) => Event::Rescan(r.recv().await.is_ok()),
                None => future::pending().await,
            }
        };
        let event = future::or(stop, future::or(recv, future::or(timer, reload))).await;
        // A socket that always has a packet ready never makes the loop wait: give the
        // other tasks their turn after a bounded batch.
        batch += 1;
        if batch >= BATCH {
            batch = 0;
            future::yield_now().await;
        }
        match event {
            Event::Shutdown => break,
            Event::Recv(Ok((_, src, Some(ifindex))))
                if restricted && !joined.iter().any(|i| i.index == ifindex) =>
            {
                log::trace!("mdns: ignored a packet from {src} on interface {ifindex}");
            }
            Event::Recv(Ok((n, src, ifindex))) => {
                let IpAddr::V4(ip) = src.ip() else { continue };
                let ifindex = ifindex.unwrap_or(0);
                if !on_link(ip, ifindex, &nets) && nets_read.elapsed() >= SUBNET_REFRESH {
                    nets = subnets().unwrap_or_default();
                    nets_read = Instant::now();
                }
                if on_link(ip, ifindex, &nets) {
                    let packet = buf.get(..n).unwrap_or_default();
                    // Header flags, RFC 1035 section 4.1.1: QR is the top bit of byte 2.
                    if packet.get(2).is_some_and(|f| f & 0x80 != 0) {
                        on_response(src, packet);
                    }
                    // Answered on the arrival interface; on all of them when it is not one
                    // joined (a host's own query looped back through `lo`, say).
                    let arrived = joined.iter().any(|i| i.index == ifindex).then_some(ifindex);
                    responder.handle_input_on(Instant::now(), arrived, src, packet);
                } else {
                    log::trace!("mdns: ignored a packet from off-link {src}");
                }
            }
            Event::Recv(Err(e)) => {
                log::debug!("mdns: receive failed: {e}");
                // A persistent error must not turn the loop into a busy spin.
                Timer::after(Duration::from_millis(100)).await;
            }
            Event::Rescan(false) => reload_rx = None,
            Event::Rescan(true) => {
                log::info!("mdns: re-reading interfaces");
                let now = Instant::now();
                nets = subnets().unwrap_or_default();
                nets_read = now;
                rescan(&sock, &only, &mut joined, &mut responder, auto_addrs, now);
            }
            Event::Timer => {
                let now = Instant::now();
                responder.handle_timeout(now);
                if next_scan.is_some_and(|t| t <= now) {
                    next_scan = Some(now + RESCAN_INTERVAL);
                    rescan(&sock, &only, &mut joined, &mut responder, auto_addrs, now);
                }
            }
        }
    }
    responder.shutdown();
    flush(&sock, &joined, &mut responder).await;
    Ok(())
}

/// Follows interfaces coming and going: joins the group on new ones, leaves vanished ones and,
/// when the addresses are automatic, republishes them.
fn rescan(
    sock: &Async<UdpSocket>,
    only: &[String],
    joined: &mut Vec<Interface>,
    responder: &mut Responder,
    auto_addrs: bool,
    now: Instant,
) {
    let current = match interfaces_named(only) {
        Ok(c) => c,
        Err(e) => {
            log::debug!("mdns: cannot list interfaces: {e}");
            return;
        }
    };
    if current == *joined {
        return;
    }
    let fd = sock.as_raw_fd();
    for old in joined.iter().filter(|i| !current.contains(i)) {
        join(fd, old, false);
    }
    for new in current.iter().filter(|i| !joined.contains(i)) {
        join(fd, new, true);
    }
    *joined = current;
    if auto_addrs {
        responder.set_addresses(now, joined.iter().map(|i| IpAddr::V4(i.addr)).collect());
    }
}

async fn flush(sock: &Async<UdpSocket>, joined: &[Interface], responder: &mut Responder) {
    while let Some(Transmit {
        dst,
        interface,
        payload,
    }) = responder.poll_output(Instant::now())
    {
        if dst == MDNS_GROUP_V4 && !joined.is_empty() {
            // One copy per interface (or only on the one a query came in on): the kernel
            // would otherwise send multicast out of the default-route interface only. An
            // answer for an interface left since is dropped.
            for i in joined
                .iter()
                .filter(|i| interface.is_none_or(|n| n == i.index))
            {
                set_multicast_if(sock.as_raw_fd(), i);
                send(sock, &payload, dst).await;
            }
        } else {
            send(sock, &payload, dst).await;
        }
    }
}

async fn send(sock: &Async<UdpSocket>, payload: &[u8], dst: SocketAddr) {
    if let Err(e) = sock.send_to(payload, dst).await {
        log::debug!("mdns: send to {dst} failed: {e}");
    }
}

/// The shared port 5353 socket: SO_REUSEADDR/SO_REUSEPORT before bind so that a system mDNS
/// daemon or a browser on the same host can bind it too; TTL 255 as RFC 6762 section 11
/// requires; multicast loopback on so that local browsers and responders see our packets.
fn open_socket() -> io::Result<Async<UdpSocket>> {
    // SAFETY: plain socket(2) call; the result is checked and owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    setsockopt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one)?;
    if let Err(e) = setsockopt(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, &one) {
        log::debug!("mdns: SO_REUSEPORT unavailable: {e}");
    }
    let ttl: libc::c_int = 255;
    setsockopt(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, &ttl)?;
    setsockopt(raw, libc::IPPROTO_IP, libc::IP_TTL, &ttl)?;
    setsockopt(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &one)?;
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: MDNS_PORT.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: `sin` is a valid sockaddr_in and its size is passed along.
    let rc = unsafe {
        libc::bind(
            raw,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Async::new(UdpSocket::from(fd))
}

/// `recvfrom` that also returns the index of the interface the packet arrived on
/// (`IP_PKTINFO`, ip(7)), through [`crate::bind::recvmsg`].
fn recv_pktinfo(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<u32>)> {
    let mut ifindex = None;
    let mut on_cmsg = |level, kind, data: &[u8]| {
        if (level, kind) == (libc::IPPROTO_IP, libc::IP_PKTINFO) {
            ifindex =
                crate::bind::cmsg_value::<libc::in_pktinfo>(data).map(|i| i.ipi_ifindex as u32);
        }
    };
    let (n, from) = crate::bind::recvmsg(fd, buf, 0, &mut on_cmsg)?;
    let from = from.unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    Ok((n, from, ifindex))
}

fn mreqn(i: &Interface) -> libc::ip_mreqn {
    libc::ip_mreqn {
        imr_multiaddr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::new(224, 0, 0, 251)).to_be(),
        },
        imr_address: libc::in_addr {
            s_addr: u32::from(i.addr).to_be(),
        },
        imr_ifindex: i.index as libc::c_int,
    }
}

fn join(fd: RawFd, i: &Interface, add: bool) {
    let opt = if add {
        libc::IP_ADD_MEMBERSHIP
    } else {
        libc::IP_DROP_MEMBERSHIP
    };
    match setsockopt(fd, libc::IPPROTO_IP, opt, &mreqn(i)) {
        Ok(()) => log::debug!(
            "mdns: {} 224.0.0.251 on {}",
            if add { "joined" } else { "left" },
            i.name
        ),
        // Already a member (or already gone): nothing to do.
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {}
        Err(e) => log::warn!("mdns: membership change on {} failed: {e}", i.name),
    }
}

fn set_multicast_if(fd: RawFd, i: &Interface) {
    if let Err(e) = setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreqn(i)) {
        log::debug!("mdns: cannot select {} for sending: {e}", i.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("00:1a:2b:3c:4d:5e"),
            Some([0, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e])
        );
        assert_eq!(parse_mac("00:1a:2b:3c:4d"), None);
        assert_eq!(parse_mac("00:1a:2b:3c:4d:5e:6f"), None);
        assert_eq!(parse_mac("zz:1a:2b:3c:4d:5e"), None);
        assert_eq!(parse_mac(""), None);
    }

    #[test]
    fn on_link_is_the_arrival_interfaces_subnets() {
        let nets = [
            Subnet {
                index: 2,
                addr: Ipv4Addr::new(192, 168, 1, 1),
                mask: Ipv4Addr::new(255, 255, 255, 0),
            },
            Subnet {
                index: 2,
                addr: Ipv4Addr::new(10, 0, 0, 1),
                mask: Ipv4Addr::new(255, 0, 0, 0),
            },
            Subnet {
                index: 3,
                addr: Ipv4Addr::new(203, 0, 113, 7),
                mask: Ipv4Addr::new(255, 255, 255, 252),
            },
        ];
        assert!(on_link(Ipv4Addr::new(192, 168, 1, 77), 2, &nets));
        assert!(on_link(Ipv4Addr::new(10, 200, 3, 4), 2, &nets));
        assert!(on_link(Ipv4Addr::new(169, 254, 9, 9), 2, &nets));
        // Off the subnet, or on another interface's subnet (a WAN address seen on the LAN).
        assert!(!on_link(Ipv4Addr::new(192, 168, 2, 77), 2, &nets));
        assert!(!on_link(Ipv4Addr::new(203, 0, 113, 5), 2, &nets));
        assert!(!on_link(Ipv4Addr::new(192, 168, 1, 77), 3, &nets));
        assert!(!on_link(Ipv4Addr::new(8, 8, 8, 8), 3, &nets));
        assert!(!on_link(Ipv4Addr::new(192, 168, 1, 77), 0, &nets));
        assert!(!subnets().unwrap().is_empty() || cfg!(not(target_os = "linux")));
    }

    #[test]
    fn interface_listing_does_not_fail() {
        let list = interfaces().expect("getifaddrs");
        for i in &list {
            assert!(i.index > 0);
            assert!(!i.name.is_empty());
        }
        let addrs = local_ipv4_addrs().expect("addresses");
        assert_eq!(addrs.len(), list.len());
    }
}
