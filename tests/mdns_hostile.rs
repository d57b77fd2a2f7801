//! mDNS input from a hostile or misconfigured LAN.
//!
//! Two namespaces joined by a veth pair: the daemon's (`D`, `d0` = 10.78.0.1/24, and a route
//! to 10.79.0.0/24 over `d0` so that a reply to that subnet could leave) and a querier's
//! (`P`, `p0` with two addresses: 10.78.0.2/24 on the daemon's subnet and 10.79.0.2/24 on
//! another). The same legacy unicast query for `_raop._tcp.local` is sent to 224.0.0.251
//! from each address: RFC 6762 section 11 says only the on-link one is answered.

mod common;

use std::time::Duration;

use common::daemon::Daemon;
use common::netns::Netns;
use common::TestDir;

/// Sends a legacy unicast PTR query for `_raop._tcp.local` from `src` (ephemeral port) to
/// 224.0.0.251:5353 out of the interface holding `src`; prints `answered N` with the size of
/// the first reply within 1.5 s, or `silent`.
fn query_from(ns: &Netns, src: &str) -> String {
    let script = format!(
        "import socket, struct\n\
         q = struct.pack('>HHHHHH', 0x4242, 0, 1, 0, 0, 0)\n\
         for l in ('_raop', '_tcp', 'local'):\n    q += bytes([len(l)]) + l.encode()\n\
         q += b'\\x00' + struct.pack('>HH', 12, 1)\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('{src}', 0))\n\
         s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton('{src}'))\n\
         s.settimeout(1.5)\n\
         s.sendto(q, ('224.0.0.251', 5353))\n\
         try:\n    d, a = s.recvfrom(9000)\n    print('answered', len(d))\n\
         except socket.timeout:\n    print('silent')\n"
    );
    ns.run_ok("python3", ["-c", &script]).trim().to_string()
}

#[test]
fn queries_from_off_link_sources_are_not_answered() {
    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new("mdns_off_link");
    let d = Netns::new();
    let p = Netns::new();
    d.run_ok(
        "ip",
        [
            "link",
            "add",
            "d0",
            "type",
            "veth",
            "peer",
            "name",
            "p0",
            "netns",
            p.name(),
        ],
    );
    d.run_ok("ip", ["addr", "add", "10.78.0.1/24", "dev", "d0"]);
    d.run_ok("ip", ["link", "set", "d0", "up", "multicast", "on"]);
    d.run_ok("ip", ["route", "add", "10.79.0.0/24", "dev", "d0"]);
    p.run_ok("ip", ["addr", "add", "10.78.0.2/24", "dev", "p0"]);
    p.run_ok("ip", ["addr", "add", "10.79.0.2/24", "dev", "p0"]);
    p.run_ok("ip", ["link", "set", "p0", "up", "multicast", "on"]);
    let mut raopd = Daemon::start(
        &d,
        dir.path(),
        5000,
        &["--name", "Edge", "--output", "pipe:/dev/null"],
    );
    // The responder probes and announces first (a few seconds): wait for its first answer.
    let mut on_link = String::new();
    for _ in 0..10 {
        on_link = query_from(&p, "10.78.0.2");
        if on_link.starts_with("answered") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let off_link: Vec<String> = (0..3).map(|_| query_from(&p, "10.79.0.2")).collect();
    let again = query_from(&p, "10.78.0.2");
    println!("on-link: {on_link}, off-link: {off_link:?}, on-link again: {again}");
    assert!(raopd.is_running(), "raopd died:\n{}", raopd.log_tail());
    raopd.stop();
    assert!(
        on_link.starts_with("answered") && again.starts_with("answered"),
        "the on-link query is answered: {on_link} / {again}\n{}",
        raopd.log_tail()
    );
    assert!(
        off_link.iter().all(|r| r == "silent"),
        "a query from another subnet got an answer: {off_link:?}"
    );
}
