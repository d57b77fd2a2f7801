//! Random UDP packet loss inside a test's namespace, with nftables.
//!
//! A rule drops PCT % of the UDP packets to a port (or port range) at random
//! (`numgen random mod 100 < PCT`). Each rule counts what it saw and what it dropped, so a test
//! can check the loss really happened before it credits the daemon for recovering from it. Loss
//! on the daemon's audio port alone exercises retransmission: resent packets arrive on the
//! control port.
//!
//! A network cut ([`cut_traffic`], [`restore_traffic`]) drops every packet to and from the
//! daemon's RTSP port and UDP ports, both directions, until it is lifted. The rules sit on the
//! input hook: on loopback every packet passes it once, and a packet dropped there is lost
//! silently, as on a dead link (a drop on the output hook would fail the sender's `send` with
//! `EPERM` instead).

use super::netns::Netns;

const TABLE: &str = "raopd_test_loss";
/// The table of [`cut_traffic`]'s rules.
const CUT_TABLE: &str = "raopd_test_cut";

/// Packets one rule saw and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossCounters {
    pub seen: u64,
    pub dropped: u64,
}

/// Drops `pct` % of UDP packets to `ports` (`"6003"` or `"6003-6005"`) arriving in `ns`.
/// Rules add up; [`clear_loss`] removes them all.
pub fn add_udp_loss(ns: &Netns, ports: &str, pct: u32) {
    assert!(pct <= 100, "loss percentage {pct} > 100");
    assert!(
        !ports.is_empty() && ports.chars().all(|c| c.is_ascii_digit() || c == '-'),
        "bad port spec {ports:?}"
    );
    ns.run_ok("nft", ["add", "table", "inet", TABLE]);
    ns.run_ok(
        "nft",
        [
            "add",
            "chain",
            "inet",
            TABLE,
            "input",
            "{ type filter hook input priority 0; }",
        ],
    );
    let rule = format!("udp dport {ports} counter numgen random mod 100 < {pct} counter drop");
    let mut args = vec!["add", "rule", "inet", TABLE, "input"];
    args.extend(rule.split(' '));
    ns.run_ok("nft", args);
}

/// The counters of each loss rule, in the order they were added.
pub fn loss_counters(ns: &Netns) -> Vec<LossCounters> {
    let out = ns.run("nft", ["list", "table", "inet", TABLE]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.contains("numgen random"))
        .map(|l| {
            // "... counter packets A bytes B numgen random mod 100 < P counter packets C bytes D drop"
            let packets: Vec<u64> = l
                .split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|w| w[0] == "packets")
                .filter_map(|w| w[1].parse().ok())
                .collect();
            LossCounters {
                seen: packets.first().copied().unwrap_or(0),
                dropped: packets.get(1).copied().unwrap_or(0),
            }
        })
        .collect()
}

/// Removes every loss rule from `ns`.
pub fn clear_loss(ns: &Netns) {
    let _ = ns.run("nft", ["delete", "table", "inet", TABLE]);
}

/// Packets a network cut dropped: RTSP (TCP) and stream (UDP), both directions together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutCounters {
    pub tcp: u64,
    pub udp: u64,
}

/// Cuts the network of the daemon in `ns`: every TCP packet from or to `tcp_port` (RTSP) and
/// every UDP packet from or to `udp_ports` (`"7030"` or `"7030-7039"`) is dropped until
/// [`restore_traffic`].
pub fn cut_traffic(ns: &Netns, tcp_port: u16, udp_ports: &str) {
    assert!(
        !udp_ports.is_empty() && udp_ports.chars().all(|c| c.is_ascii_digit() || c == '-'),
        "bad port spec {udp_ports:?}"
    );
    ns.run_ok("nft", ["add", "table", "inet", CUT_TABLE]);
    ns.run_ok(
        "nft",
        [
            "add",
            "chain",
            "inet",
            CUT_TABLE,
            "input",
            "{ type filter hook input priority -10; }",
        ],
    );
    let tcp = tcp_port.to_string();
    for (proto, dir, ports) in [
        ("tcp", "dport", tcp.as_str()),
        ("tcp", "sport", tcp.as_str()),
        ("udp", "dport", udp_ports),
        ("udp", "sport", udp_ports),
    ] {
        ns.run_ok(
            "nft",
            [
                "add", "rule", "inet", CUT_TABLE, "input", proto, dir, ports, "counter", "drop",
            ],
        );
    }
}

/// Lifts the cut of [`cut_traffic`]; returns what it dropped.
pub fn restore_traffic(ns: &Netns) -> CutCounters {
    let listed = ns.run_ok("nft", ["list", "table", "inet", CUT_TABLE]);
    ns.run_ok("nft", ["delete", "table", "inet", CUT_TABLE]);
    let mut c = CutCounters { tcp: 0, udp: 0 };
    for line in listed.lines() {
        // "tcp dport 5311 counter packets A bytes B drop"
        let words: Vec<&str> = line.split_whitespace().collect();
        let packets = words
            .windows(2)
            .find(|w| w[0] == "packets")
            .and_then(|w| w[1].parse::<u64>().ok());
        match (words.first(), packets) {
            (Some(&"tcp"), Some(n)) => c.tcp += n,
            (Some(&"udp"), Some(n)) => c.udp += n,
            _ => {}
        }
    }
    c
}
