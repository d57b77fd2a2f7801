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
