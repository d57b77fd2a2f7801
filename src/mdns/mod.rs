//! mDNS / DNS-SD announcement of the speaker (RFC 6762, RFC 6763).
//!
//! Senders find an AirPlay 1 receiver by browsing `_raop._tcp.local`. This module publishes one
//! such service and nothing else, so it implements only the responder subset of Multicast DNS
//! that a single service needs: probing for a unique name, renaming on conflict, announcing,
//! answering queries (multicast, QU unicast and legacy unicast) and saying goodbye on exit.
//!
//! Multicast answers go out on the interface the query came in on, and each record at most
//! once a second per interface (RFC 6762 section 6; a quarter second when defending a name
//! against a probe): a flood of queries asking for multicast answers gets one answer per
//! record per second, not one per query. Unicast answers go to the asker alone and are not
//! limited.
//!
//! A full mDNS stack (or a system avahi) would be heavier than the rest of the daemon on a
//! router-class board, and the ready-made Rust responders start threads of their own, which
//! this single-reactor daemon does not allow. `simple-dns` is used for the wire format only.
//!
//! The code is split the same way as the rest of the daemon:
//! - [`Responder`] is a sans-IO state machine: packets and time go in, packets come out. All
//!   protocol behaviour lives there and is unit-tested with a fake clock.
//! - [`run`] is the thin async driver: one UDP socket on port 5353, joined to 224.0.0.251 on
//!   the chosen interfaces, serviced from the smol reactor thread.
//!
//! # Names
//! The service instance is `AABBCCDDEEFF@Name._raop._tcp.local`, where the hex digits are the
//! MAC address that the RTSP layer also uses in `Apple-Response`. On a conflict only the `Name`
//! part is renamed (`Name (2)`, `Name (3)`, …) because senders show that part to the user and
//! the MAC prefix must keep matching the RSA challenge response.
//!
//! The host name defaults to `raopd-<mac in lower-case hex>.local` (see [`default_hostname`]):
//! it is stable across restarts and renames, unique per board without probing luck, and a valid
//! DNS host label whatever the user typed as speaker name (spaces, punctuation, UTF-8).
//!
//! Packets come from anyone on the LAN: no panic on input (issue 11).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::unreachable
    )
)]

mod net;
mod responder;

pub use net::{
    interfaces, interfaces_named, local_ipv4_addrs, mac_of_default_interface, run, Interface,
};
pub use responder::{Responder, Transmit, MDNS_GROUP_V4, MDNS_PORT};

use std::net::IpAddr;

/// Bytes of UTF-8 the speaker name may take in the instance label `AABBCCDDEEFF@Name`: a DNS
/// label holds 63 bytes (RFC 1035 section 2.3.4; RFC 6763 section 4.1.1) and the MAC and `@`
/// take 13. 50 ASCII letters, 25 Cyrillic or Greek, 16 CJK.
pub const MAX_ANNOUNCED_NAME_BYTES: usize = 63 - 13;

/// What to publish: one `_raop._tcp` service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The user-visible speaker name, the part after `@` in the instance name.
    pub instance_name: String,
    /// MAC address used as the instance name prefix (12 upper-case hex digits).
    pub mac: [u8; 6],
    /// RTSP port.
    pub port: u16,
    /// TXT record key/value pairs, in order (see [`raop_txt`]).
    pub txt: Vec<(String, String)>,
    /// Host name the SRV record points at, with or without the `.local` suffix; empty means
    /// [`default_hostname`].
    pub hostname: String,
    /// Addresses published as A / AAAA records of the host name.
    pub addrs: Vec<IpAddr>,
}

/// The RAOP TXT record that raopd advertises.
///
/// It lists only what the daemon implements: PCM and ALAC (`cn=0,1`), no encryption or RSA/AES
/// (`et=0,1`), text/artwork/progress metadata (`md=0,1,2`), UDP transport, 44.1 kHz 16-bit
/// stereo. `pw` tells senders to ask for a password before they try to stream.
pub fn raop_txt(password: bool, version: &str) -> Vec<(String, String)> {
    let pw = if password { "true" } else { "false" };
    [
        ("txtvers", "1"),
        ("ch", "2"),
        ("cn", "0,1"),
        ("et", "0,1"),
        ("ek", "1"),
        ("md", "0,1,2"),
        ("pw", pw),
        ("sr", "44100"),
        ("ss", "16"),
        ("tp", "UDP"),
        ("vn", "3"),
        ("sv", "false"),
        ("sm", "false"),
        ("am", "raopd"),
        ("vs", version),
        ("da", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `raopd-<12 lower-case hex digits of the MAC>.local`: the default host name (see the module
/// docs for why it is derived from the MAC and not from the speaker name).
pub fn default_hostname(mac: [u8; 6]) -> String {
    format!("raopd-{}.local", hex_mac(mac, false))
}

/// The MAC as 12 hex digits without separators, as RAOP instance names and host names use it.
pub fn hex_mac(mac: [u8; 6], upper: bool) -> String {
    mac.iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_is_the_documented_set() {
        let txt = raop_txt(true, "0.1.0");
        let flat: Vec<String> = txt.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            flat.join(" "),
            "txtvers=1 ch=2 cn=0,1 et=0,1 ek=1 md=0,1,2 pw=true sr=44100 ss=16 tp=UDP vn=3 \
             sv=false sm=false am=raopd vs=0.1.0 da=true"
        );
        assert!(raop_txt(false, "x").contains(&("pw".into(), "false".into())));
    }

    #[test]
    fn hostname_from_mac() {
        let mac = [0x00, 0x1a, 0x2B, 0xc3, 0xd4, 0xe5];
        assert_eq!(default_hostname(mac), "raopd-001a2bc3d4e5.local");
        assert_eq!(hex_mac(mac, true), "001A2BC3D4E5");
    }
}
