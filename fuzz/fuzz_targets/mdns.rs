//! mDNS packet handling: arbitrary datagrams into the responder (while probing and once
//! announced, from port 5353 and from an ephemeral port), every packet it emits in reply
//! must parse as DNS; the same datagram goes to the DACP lookup's response parser.
//!
//! Input: first byte picks the responder phase and the source port and address.
#![no_main]
use libfuzzer_sys::fuzz_target;
use raopd::control::dacp::parse_browse_response;
use raopd::mdns::{raop_txt, Responder, Service, MDNS_PORT};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn service() -> Service {
    Service {
        instance_name: "Kitchen".into(),
        mac: [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff],
        port: 5000,
        txt: raop_txt(false, "0.1.0"),
        hostname: String::new(),
        addrs: vec![
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10)),
            IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x10)),
        ],
    }
}

/// A responder still probing and one announced, built once; every input starts from a
/// copy of one of them.
struct Start {
    probing: Responder,
    announced: Responder,
    t0: Instant,
    announced_at: Instant,
}

fn start() -> &'static Start {
    static START: OnceLock<Start> = OnceLock::new();
    START.get_or_init(|| {
        let t0 = Instant::now();
        let probing = Responder::with_seed(service(), t0, 1);
        let mut announced = Responder::with_seed(service(), t0, 1);
        let mut now = t0;
        // Run the timers until the records are announced.
        for _ in 0..20 {
            match announced.poll_timeout() {
                Some(t) => {
                    now = now.max(t);
                    while announced.poll_output(now).is_some() {}
                }
                None => break,
            }
        }
        assert!(announced.is_announced());
        Start {
            probing,
            announced,
            t0,
            announced_at: now,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, packet)) = data.split_first() else {
        return;
    };
    let s = start();
    let (mut r, now) = if mode & 1 == 1 {
        (s.announced.clone(), s.announced_at)
    } else {
        (s.probing.clone(), s.t0)
    };
    let port = if mode & 2 == 2 { MDNS_PORT } else { 49152 };
    let ip = if mode & 4 == 4 {
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x20))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20))
    };
    r.handle_input(now, SocketAddr::new(ip, port), packet);
    // Replies are delayed (RFC 6762 section 6) and a conflict restarts probing: run the clock.
    for ms in [200, 1000, 3000] {
        let at = now + Duration::from_millis(ms);
        while let Some(t) = r.poll_output(at) {
            simple_dns::Packet::parse(&t.payload).expect("responder emitted an unparsable packet");
        }
    }
    let _ = parse_browse_response(packet, "ABCDEF0123456789", ip);
});
