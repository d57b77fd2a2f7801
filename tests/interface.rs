//! `--interface`: RTSP, the RTP/UDP sockets and mDNS exist on the named interface only.
//!
//! Three namespaces: the daemon's (`D`) holds two veth interfaces, `d0` (10.77.0.1/24) and
//! `d1` (10.77.1.1/24); their peers `p0` and `p1` sit in namespaces `A` and `B`, each with
//! its own avahi-daemon on that interface and a default route into `D` (so `B` can also try
//! `d0`'s address through `d1`, which Linux's weak host model would otherwise accept).
//!
//! 1. raopd "Kitchen" with `--interface d0`: `A` connects over TCP and streams with pyatv
//!    (the UDP sockets, as `ss` reports them, are tied to `d0` and audio comes out); `B`
//!    cannot connect to either address and its datagrams to the stream's UDP port are
//!    refused (ICMP port unreachable), while the same datagram from `A` is taken.
//! 2. raopd "Patio" with `--interface d1` joins on the same RTSP port: avahi-browse in `A`
//!    lists Kitchen and not Patio, in `B` Patio and not Kitchen.

mod common;

use std::time::Duration;

use common::audio;
use common::daemon::Daemon;
use common::netns::Netns;
use common::senders::{self, PyatvOpts};
use common::{wait_until, TestDir};

const D0: &str = "10.77.0.1";
const D1: &str = "10.77.1.1";
const PORT: u16 = 5000;

/// Connects a veth pair: `dev` in `d` with `addr`, `peer` in `p` with `peer_addr`, and
/// a default route from `p` into `d`.
fn link(d: &Netns, dev: &str, addr: &str, p: &Netns, peer: &str, peer_addr: &str) {
    d.run_ok(
        "ip",
        [
            "link",
            "add",
            dev,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            p.name(),
        ],
    );
    d.run_ok("ip", ["addr", "add", &format!("{addr}/24"), "dev", dev]);
    d.run_ok("ip", ["link", "set", dev, "up", "multicast", "on"]);
    p.run_ok(
        "ip",
        ["addr", "add", &format!("{peer_addr}/24"), "dev", peer],
    );
    p.run_ok("ip", ["link", "set", peer, "up", "multicast", "on"]);
    p.run_ok("ip", ["route", "add", "default", "via", addr]);
}

/// Whether a TCP connection from `ns` to `host:port` succeeds (bash's /dev/tcp).
fn tcp_connects(ns: &Netns, host: &str, port: u16) -> bool {
    ns.run(
        "timeout",
        [
            "5",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{host}/{port}"),
        ],
    )
    .status
    .success()
}

/// Sends one byte from `ns` to UDP `host:port` on a connected socket and reports what came
/// back: "refused" (ICMP port unreachable: no socket took it) or "taken" (nothing within 2 s).
fn udp_probe(ns: &Netns, host: &str, port: u16) -> String {
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.settimeout(2)\n\
         s.connect(('{host}', {port}))\n\
         s.send(b'x')\n\
         try:\n    s.recv(16)\n    print('answered')\n\
         except ConnectionRefusedError:\n    print('refused')\n\
         except socket.timeout:\n    print('taken')\n"
    );
    ns.run_ok("python3", ["-c", &script]).trim().to_string()
}

/// Instance names avahi-browse resolves for `_raop._tcp` in `ns`, with their addresses.
fn browse(ns: &Netns, bus: &str) -> Vec<(String, String)> {
    let out = ns
        .command("avahi-browse")
        .args(["-kprt", "_raop._tcp"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .output()
        .expect("run avahi-browse");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('='))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(';').collect();
            (f.len() > 7).then(|| (f[3].replace("\\064", "@"), f[7].to_string()))
        })
        .collect()
}

fn listed(list: &[(String, String)], name: &str) -> Option<String> {
    list.iter()
        .find(|(n, _)| n.ends_with(&format!("@{name}")))
        .map(|(_, a)| a.clone())
}

#[test]
fn interface_option_limits_rtsp_udp_and_mdns() {
    common::require_env();
    for tool in ["avahi-daemon", "avahi-browse", "dbus-daemon", "python3"] {
        assert!(
            common::find_in_path(tool).is_some(),
            "{tool} missing: run scripts/setup-test-deps.sh"
        );
    }
    let _serial = common::serial();
    let dir = TestDir::new("interface");
    let d = Netns::new();
    let a = Netns::new();
    let b = Netns::new();
    // Multicast goes out of the veth interfaces, not the harness's loopback route.
    for ns in [&d, &a, &b] {
        ns.run_ok("ip", ["route", "del", "224.0.0.0/4", "dev", "lo"]);
    }
    link(&d, "d0", D0, &a, "p0", "10.77.0.2");
    link(&d, "d1", D1, &b, "p1", "10.77.1.2");
    let bus_a = a.start_avahi_on("p0");
    let bus_b = b.start_avahi_on("p1");

    let out = dir.join("kitchen.raw");
    let kitchen_dir = dir.join("kitchen");
    std::fs::create_dir_all(&kitchen_dir).unwrap();
    let sock = dir.join("kitchen.sock");
    let _kitchen = Daemon::start(
        &d,
        &kitchen_dir,
        PORT,
        &[
            "--name",
            "Kitchen",
            "--interface",
            "d0",
            "--mac",
            "02:00:00:00:00:01",
            "--output",
            &format!("pipe:{}", out.display()),
            "--control-socket",
            &sock.to_string_lossy(),
        ],
    );

    // RTSP: reachable from A, from B neither on d1's address nor on d0's through d1.
    assert!(tcp_connects(&a, D0, PORT), "A cannot reach {D0}:{PORT}");
    assert!(!tcp_connects(&b, D1, PORT), "B reached {D1}:{PORT}");
    assert!(
        !tcp_connects(&b, D0, PORT),
        "B reached {D0}:{PORT} through d1"
    );

    // UDP: a pyatv stream from A; its sockets are tied to d0.
    let wav = dir.join("noise.wav");
    audio::make_noise_wav(&wav, 4.0, 1.0);
    let sender_dir = dir.join("pyatv");
    std::fs::create_dir_all(&sender_dir).unwrap();
    let mut sender = senders::pyatv_spawn(&a, D0, PORT, &wav, &sender_dir, &PyatvOpts::unity());
    let stream_sockets = || -> Vec<String> {
        d.udp_sockets()
            .lines()
            .filter(|l| l.contains("\"raopd\"") && !l.contains(":5353"))
            .map(str::to_string)
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || stream_sockets().len() >= 3),
        "no stream sockets; sender: {}\nsockets:\n{}",
        sender.is_running(),
        d.udp_sockets()
    );
    let socks = stream_sockets();
    for l in &socks {
        assert!(l.contains("%d0:"), "a UDP socket not tied to d0: {l}");
    }
    let port: u16 = socks[0]
        .split_whitespace()
        .find_map(|f| f.strip_prefix("0.0.0.0%d0:"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {}", socks[0]));
    assert_eq!(udp_probe(&b, D1, port), "refused", "UDP {D1}:{port} from B");
    assert_eq!(udp_probe(&b, D0, port), "refused", "UDP {D0}:{port} via d1");
    assert_eq!(udp_probe(&a, D0, port), "taken", "UDP {D0}:{port} from A");
    let result = sender.wait();
    result.assert_ok();
    let frames = audio::read_raw(&out);
    let audible = frames.iter().filter(|[l, r]| *l != 0 || *r != 0).count();
    assert!(
        audible > 44100 * 3,
        "only {audible} audible frames came out of the stream from A"
    );

    // mDNS: a second daemon on d1, same RTSP port; each side sees only its own.
    let patio_dir = dir.join("patio");
    std::fs::create_dir_all(&patio_dir).unwrap();
    let sock = dir.join("patio.sock");
    let _patio = Daemon::start(
        &d,
        &patio_dir,
        PORT,
        &[
            "--name",
            "Patio",
            "--interface",
            "d1",
            "--mac",
            "02:00:00:00:00:02",
            "--output",
            "pipe:/dev/null",
            "--control-socket",
            &sock.to_string_lossy(),
        ],
    );
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    let both = wait_until(Duration::from_secs(20), || {
        seen_a = browse(&a, &bus_a);
        seen_b = browse(&b, &bus_b);
        listed(&seen_a, "Kitchen").is_some() && listed(&seen_b, "Patio").is_some()
    });
    assert!(both, "A lists {seen_a:?}, B lists {seen_b:?}");
    assert_eq!(listed(&seen_a, "Kitchen").as_deref(), Some(D0));
    assert_eq!(listed(&seen_b, "Patio").as_deref(), Some(D1));
    // Both announced by now; browse once more after a query round on each side.
    std::thread::sleep(Duration::from_secs(2));
    let (seen_a, seen_b) = (browse(&a, &bus_a), browse(&b, &bus_b));
    assert_eq!(
        listed(&seen_a, "Patio"),
        None,
        "Patio leaked to A: {seen_a:?}"
    );
    assert_eq!(
        listed(&seen_b, "Kitchen"),
        None,
        "Kitchen leaked to B: {seen_b:?}"
    );
}
