//! mDNS input from a hostile or misconfigured LAN.
//!
//! Off-link queries: two namespaces joined by a veth pair: the daemon's (`D`, `d0` =
//! 10.78.0.1/24, and a route to 10.79.0.0/24 over `d0` so that a reply to that subnet could
//! leave) and a querier's (`P`, `p0` with two addresses: 10.78.0.2/24 on the daemon's subnet
//! and 10.79.0.2/24 on another). The same legacy unicast query for `_raop._tcp.local` is sent
//! to 224.0.0.251 from each address: RFC 6762 section 11 says only the on-link one is answered.
//!
//! Amplification: a flood of queries asking for multicast answers gets at most one multicast
//! copy of each record per second (RFC 6762 section 6), while avahi and python-zeroconf,
//! starting to browse in the middle of it, still resolve the speaker.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

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

/// A flood of large mDNS queries for the speaker's own names (the field case: ~1000
/// questions in 8.8 KB, and queries of 64 questions, the most that are parsed) while a real
/// sender plays: RTSP `OPTIONS` on another connection stays answered and the stream stays
/// bit-exact. The measured figures are printed; the only bound asserted is functional.
#[test]
fn query_flood_starves_neither_rtsp_nor_audio() {
    use common::audio;
    use common::compare::assert_bit_exact;
    use common::daemon::FifoCapture;
    use common::senders::{self, PyatvOpts};
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    common::require_env();
    let _serial = common::serial();
    let dir = TestDir::new("mdns_flood");
    let ns = Netns::new();
    let port = 5413;
    let fifo = FifoCapture::create(&dir.join("out.fifo"));
    let output = format!("pipe:{}", fifo.path().display());
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        port,
        &["--name", "Flood", "--output", &output],
    );
    std::thread::sleep(Duration::from_secs(3)); // probing and announcing
    let flood = "import socket, struct, time, sys\n\
         def name(n):\n    return b''.join(bytes([len(l)]) + l.encode() for l in n.split('.')) + b'\\x00'\n\
         qs = [name('_raop._tcp.local') + struct.pack('>HH', 12, 1), name('_services._dns-sd._udp.local') + struct.pack('>HH', 12, 1)]\n\
         def pkt(n):\n    return struct.pack('>HHHHHH', 0, 0, n, 0, 0, 0) + b''.join(qs[i % 2] for i in range(n))\n\
         big, cap = pkt(310), pkt(64)\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)\n\
         end = time.monotonic() + float(sys.argv[1]); n = 0; size = 0\n\
         while time.monotonic() < end:\n    for p in (big, cap):\n        try:\n            s.sendto(p, ('127.0.0.1', 5353)); n += 1; size += len(p)\n        except OSError:\n            pass\n    time.sleep(0.002)\n\
         print(f'flood: {n} queries, {size // 1024} KiB, {len(big)} B big')\n";
    let flooder = ns
        .command("python3")
        .args(["-c", flood, "9"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the flooder");
    let wav = dir.join("noise.wav");
    let input = audio::make_noise_wav(&wav, 5.0, 2.0);
    let sender = senders::pyatv_spawn(
        &ns,
        "127.0.0.1",
        port,
        &wav,
        dir.path(),
        &PyatvOpts::unity(),
    );
    let path = format!("/var/run/netns/{}", ns.name());
    let latencies: Vec<Duration> = std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on this thread only; the fd is valid for the call.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let mut out = Vec::new();
        for _ in 0..25 {
            std::thread::sleep(Duration::from_millis(250));
            let t = Instant::now();
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
                .unwrap();
            let mut b = [0u8; 512];
            let n = s.read(&mut b).unwrap();
            assert!(b[..n].starts_with(b"RTSP/1.0 200"));
            out.push(t.elapsed());
        }
        out
    })
    .join()
    .unwrap();
    let sent = sender.wait();
    let flood_out = flooder.wait_with_output().unwrap();
    let mut sorted = latencies.clone();
    sorted.sort();
    println!(
        "{}OPTIONS during the flood: median {:.2} ms, max {:.2} ms",
        String::from_utf8_lossy(&flood_out.stdout),
        sorted[sorted.len() / 2].as_secs_f64() * 1e3,
        sorted[sorted.len() - 1].as_secs_f64() * 1e3
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(raopd.is_running(), "raopd died:\n{}", raopd.log_tail());
    raopd.stop();
    sent.assert_ok();
    assert!(
        sorted[sorted.len() - 1] < Duration::from_secs(2),
        "OPTIONS stalled during the flood: {sorted:?}"
    );
    let out = audio::raw_to_frames(&fifo.finish(&dir.join("out.raw")));
    assert_bit_exact(&input, &out, "pyatv during an mDNS query flood");
}

/// Joins `ns`'s network namespace on the calling thread.
fn enter(ns_name: &str) {
    let file = std::fs::File::open(format!("/var/run/netns/{ns_name}")).expect("open netns");
    // SAFETY: setns on this thread only; the fd is valid for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// A UDP socket on port 5353 beside the daemon's (SO_REUSEADDR/SO_REUSEPORT, as mDNS stacks
/// share the port), joined to 224.0.0.251 on loopback: it sees every multicast response, and
/// queries sent from it are multicast queries (source port 5353), not legacy unicast ones.
fn mdns_socket() -> UdpSocket {
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: `one` is a live c_int and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                opt,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
    }
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 5353u16.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: `sin` is a valid sockaddr_in and its size is passed.
    let rc = unsafe {
        libc::bind(
            raw,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "bind 5353: {}", std::io::Error::last_os_error());
    // Out of loopback from 127.0.0.1: without this the source address would be 0.0.0.0,
    // which is on no link (RFC 6762 section 11) and ignored.
    let lo = libc::in_addr {
        s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
    };
    // SAFETY: `lo` is a live in_addr and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            raw,
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            &lo as *const libc::in_addr as *const libc::c_void,
            std::mem::size_of::<libc::in_addr>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "IP_MULTICAST_IF: {}",
        std::io::Error::last_os_error()
    );
    let s = UdpSocket::from(fd);
    s.join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 251), &Ipv4Addr::LOCALHOST)
        .expect("join 224.0.0.251");
    s.set_multicast_ttl_v4(255).unwrap();
    s.set_multicast_loop_v4(true).unwrap();
    s
}

/// A PTR query for `name` with message id `id` (0 for mDNS queries; legacy ones echo theirs).
fn ptr_query(name: &str, id: u16) -> Vec<u8> {
    let mut p = simple_dns::Packet::new_query(id);
    p.questions.push(simple_dns::Question::new(
        simple_dns::Name::new_unchecked(name),
        simple_dns::QTYPE::TYPE(simple_dns::TYPE::PTR),
        simple_dns::QCLASS::CLASS(simple_dns::CLASS::IN),
        false,
    ));
    p.build_bytes_vec().unwrap()
}

/// The speaker's records in an mDNS response, as `name TYPE` (lower-case), or nothing when it
/// is not a response or none of its records is the speaker's (`mac` in lower-case hex). Other
/// responders in the namespace (avahi) publish nothing of the speaker's.
fn speaker_records(packet: &[u8], mac: &str) -> Vec<String> {
    let Ok(p) = simple_dns::Packet::parse(packet) else {
        return Vec::new();
    };
    if !p.has_flags(simple_dns::PacketFlag::RESPONSE) {
        return Vec::new();
    }
    p.answers
        .iter()
        .chain(p.additional_records.iter())
        .filter(|rr| {
            let name = rr.name.to_string().to_lowercase();
            let target = match &rr.rdata {
                simple_dns::rdata::RData::PTR(t) => t.0.to_string().to_lowercase(),
                _ => String::new(),
            };
            name.contains(mac)
                || target.contains(mac)
                || (name == "_services._dns-sd._udp.local" && target == "_raop._tcp.local")
        })
        .map(|rr| {
            format!(
                "{} {:?}",
                rr.name.to_string().to_lowercase(),
                rr.rdata.type_code()
            )
        })
        .collect()
}

/// The speaker's answer to a legacy unicast query sent from an ephemeral port, within 1 s.
fn legacy_answered(mac: &str) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.send_to(&ptr_query("_raop._tcp.local", 0x4242), "224.0.0.251:5353")
        .unwrap();
    let mut buf = [0u8; 9000];
    while let Ok(n) = s.recv(&mut buf) {
        if !speaker_records(&buf[..n], mac).is_empty() {
            return true;
        }
    }
    false
}

/// 50 queries a second for 3 s, from port 5353 and asking for multicast answers (the
/// speaker's PTR and the service type enumeration, alternately): each of the speaker's records
/// is multicast at most once a second (4 times in the 3.5 s counted: the flood, and the half
/// second after it), not once per query (150 times). python-zeroconf, started with the flood,
/// and avahi-browse after it still resolve the speaker.
#[test]
fn multicast_answer_flood_is_not_amplified() {
    common::require_env();
    let _serial = common::serial();
    const PORT: u16 = 5414;
    const MAC: &str = "aabbccddee02";
    const FLOOD: Duration = Duration::from_secs(3);
    const RATE: u32 = 50;
    let dir = TestDir::new("mdns_amplifier");
    let ns = Netns::new();
    let bus = ns.start_avahi();
    let mut raopd = Daemon::start(
        &ns,
        dir.path(),
        PORT,
        &[
            "--name",
            "Flood",
            "--mac",
            "AA:BB:CC:DD:EE:02",
            "--output",
            "pipe:/dev/null",
        ],
    );
    let script = common::repo_dir().join("tests/senders/zeroconf_resolve.py");
    let instance = "AABBCCDDEE02@Flood";

    let name = ns.name().to_string();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let counter = std::thread::spawn(move || {
        enter(&name);
        // Probing and the two announcements, 1 s apart, come first: wait until the speaker
        // answers, then past its second announcement.
        let ready = (0..20).any(|_| legacy_answered(MAC));
        assert!(ready, "the speaker never answered a legacy query");
        std::thread::sleep(Duration::from_millis(1500));
        let s = mdns_socket();
        s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let queries = [
            ptr_query("_raop._tcp.local", 0),
            ptr_query("_services._dns-sd._udp.local", 0),
        ];
        let group: SocketAddr = "224.0.0.251:5353".parse().unwrap();
        tx.send(()).unwrap();
        let start = Instant::now();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let (mut sent, mut responses) = (0u32, 0usize);
        let mut buf = [0u8; 9000];
        while start.elapsed() < FLOOD + Duration::from_millis(500) {
            if start.elapsed() < FLOOD && start.elapsed() >= FLOOD * sent / (RATE * 3) {
                s.send_to(&queries[sent as usize % 2], group).unwrap();
                sent += 1;
            }
            if let Ok(n) = s.recv(&mut buf) {
                let recs = speaker_records(&buf[..n], MAC);
                if !recs.is_empty() {
                    responses += 1;
                }
                for r in recs {
                    *counts.entry(r).or_default() += 1;
                }
            }
        }
        (sent, responses, counts)
    });
    rx.recv()
        .expect("the counter thread failed before the flood");
    // A fresh browser that starts while the flood goes on.
    let zeroconf = ns
        .command(common::venv_python())
        .arg(&script)
        .arg(format!("{instance}._raop._tcp.local."))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start python-zeroconf");
    let (sent, responses, counts) = counter.join().expect("counter thread");
    println!(
        "{sent} queries; {responses} multicast responses from the speaker; per record: {counts:?}"
    );

    // avahi, which has seen only the flood's answers, resolves too.
    let mut resolved = String::new();
    let found = common::wait_until(Duration::from_secs(15), || {
        let out = ns
            .command("avahi-browse")
            .args(["-kprt", "_raop._tcp"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus)
            .output()
            .expect("avahi-browse");
        resolved = String::from_utf8_lossy(&out.stdout).into_owned();
        resolved
            .lines()
            .any(|l| l.starts_with("=;") && l.contains(&format!(";{PORT};")))
    });
    let zc = zeroconf.wait_with_output().expect("python-zeroconf");
    let zc_json = String::from_utf8_lossy(&zc.stdout);
    assert!(raopd.is_running(), "raopd died:\n{}", raopd.log_tail());
    raopd.stop();

    assert!(sent >= RATE * 3 - 5, "the flood sent only {sent} queries");
    let ptr = "_raop._tcp.local PTR";
    assert!(
        counts.get(ptr).is_some_and(|&n| n >= 1),
        "the speaker never answered the flood: {counts:?}"
    );
    for (record, n) in &counts {
        assert!(
            *n <= 4,
            "{record} multicast {n} times in 3.5 s of a {RATE}/s query flood: {counts:?}"
        );
    }
    assert!(
        found,
        "avahi-browse did not resolve the speaker:\n{resolved}"
    );
    assert!(
        zc_json.contains(&format!("\"seen\": [\"{instance}._raop._tcp.local.\"]"))
            && zc_json.contains(&format!("\"port\": {PORT}")),
        "python-zeroconf did not resolve the speaker during the flood: {zc_json}{}",
        String::from_utf8_lossy(&zc.stderr)
    );
}
