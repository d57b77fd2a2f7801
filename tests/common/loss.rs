//! Random UDP packet loss inside a test's namespace, with nftables.
//!
//! A rule drops PCT % of the UDP packets to a port (or port range) at random
//! (`numgen random mod 100 < PCT`). Each rule counts what it saw and what it dropped, so a test
//! can check the loss really happened before it credits the daemon for recovering from it. Loss
//! on the daemon's audio port alone exercises retransmission: resent packets arrive on the
//! control port.

use super::netns::Netns;

const TABLE: &str = "raopd_test_loss";

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
