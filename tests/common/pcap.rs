//! Packet capture inside a test's namespace, and a reader for what it wrote.
//!
//! [`Capture::start`] runs Debian's `tcpdump` on the namespace's `lo` (every sender and the
//! daemon talk over it) and writes the classic pcap format with nanosecond timestamps.
//! Timestamps are the kernel's, taken on `CLOCK_REALTIME` when the packet passed the interface.
//!
//! [`read`] parses that file by hand: the classic pcap layout is a 24-byte file header and a
//! 16-byte header per record, and on Linux's loopback every frame is Ethernet (all-zero MACs)
//! carrying IPv4 or IPv6. Forty lines do it, so the tests carry no capture library, and the
//! parser refuses anything it does not understand instead of guessing.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use super::netns::{signal, Netns};
use super::{find_in_path, tail_of_file, wait_until};

/// A running `tcpdump` in a namespace. Stop it with [`Capture::stop`] (dropping it kills it).
pub struct Capture {
    child: Child,
    path: PathBuf,
    stderr: PathBuf,
}

impl Capture {
    /// Captures every TCP and UDP packet on the namespace's `lo` into `path` and returns once
    /// tcpdump says it is listening. Panics if tcpdump is missing (the test must not pass
    /// without its capture) or does not start.
    pub fn start(ns: &Netns, path: &Path) -> Capture {
        assert!(
            find_in_path("tcpdump").is_some(),
            "program `tcpdump` missing: run `sudo scripts/setup-test-deps.sh`"
        );
        let stderr = path.with_extension("tcpdump.log");
        let out = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        let err = File::create(&stderr).expect("create tcpdump log");
        let mut cmd = ns.command("tcpdump");
        // -w - to our file: tcpdump never opens a path itself, so neither its privilege drop
        // (-Z) nor an AppArmor profile can stop it writing. -U flushes every packet, so a stop
        // loses nothing; -B 16 MiB so a busy CPU does not make the kernel drop packets.
        cmd.args([
            "-i",
            "lo",
            "-n",
            "-U",
            "-B",
            "16384",
            "-s",
            "0",
            "--time-stamp-precision=nano",
            "-w",
            "-",
            "tcp or udp",
        ])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut cap = Capture {
            child,
            path: path.to_path_buf(),
            stderr,
        };
        let listening = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&cap.stderr).is_ok_and(|s| s.contains("listening on"))
                || !matches!(cap.child.try_wait(), Ok(None))
        });
        assert!(
            listening && matches!(cap.child.try_wait(), Ok(None)),
            "tcpdump did not start: {}",
            tail_of_file(&cap.stderr, 2000)
        );
        cap
    }

    /// Stops tcpdump (SIGINT, as at a terminal: it finishes the file) and returns its summary
    /// line(s). Panics if the kernel dropped packets: a capture with holes cannot be trusted.
    pub fn stop(mut self) -> String {
        signal(self.child.id() as i32, libc::SIGINT);
        let exited = wait_until(Duration::from_secs(5), || {
            !matches!(self.child.try_wait(), Ok(None))
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("tcpdump did not exit within 5 s of SIGINT");
        }
        let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let dropped = log
            .lines()
            .find_map(|l| l.strip_suffix(" packets dropped by kernel"))
            .and_then(|n| n.trim().parse::<u64>().ok());
        assert_eq!(
            dropped,
            Some(0),
            "the capture {} is incomplete or tcpdump's summary is missing:\n{log}",
            self.path.display()
        );
        log
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Transport protocol of a captured packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One captured TCP segment or UDP datagram.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Capture time, `CLOCK_REALTIME` in ns.
    pub ts_ns: i128,
    pub proto: Proto,
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP sequence number of the payload's first byte (0 for UDP).
    pub tcp_seq: u32,
    pub payload: Vec<u8>,
}

/// Reads a classic pcap file (LINKTYPE_ETHERNET, µs or ns timestamps) into its TCP and UDP
/// packets, in capture order. Panics on anything else.
pub fn read(path: &Path) -> Vec<Packet> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(data.len() >= 24, "{}: no pcap header", path.display());
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let frac_ns: i128 = match magic {
        0xa1b2_c3d4 => 1000,
        0xa1b2_3c4d => 1,
        _ => panic!(
            "{}: not a little-endian classic pcap file (magic {magic:#x})",
            path.display()
        ),
    };
    let linktype = u32::from_le_bytes(data[20..24].try_into().unwrap());
    assert_eq!(linktype, 1, "pcap link type {linktype}, expected Ethernet");
    let mut packets = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let word = |i: usize| u32::from_le_bytes(data[at + i..at + i + 4].try_into().unwrap());
        let ts_ns = i128::from(word(0)) * 1_000_000_000 + i128::from(word(4)) * frac_ns;
        let len = word(8) as usize;
        let start = at + 16;
        assert!(start + len <= data.len(), "pcap record cut short");
        if let Some(p) = parse_ethernet(ts_ns, &data[start..start + len]) {
            packets.push(p);
        }
        at = start + len;
    }
    packets
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// Ethernet → IPv4/IPv6 (no extension headers: loopback traffic carries none) → TCP/UDP.
fn parse_ethernet(ts_ns: i128, frame: &[u8]) -> Option<Packet> {
    if frame.len() < 14 {
        return None;
    }
    let ip = &frame[14..];
    let (proto, l4) = match be16(frame, 12) {
        0x0800 if ip.len() >= 20 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(be16(ip, 2)).min(ip.len());
            (ip[9], ip.get(ihl..total)?)
        }
        0x86dd if ip.len() >= 40 => {
            let total = (40 + usize::from(be16(ip, 4))).min(ip.len());
            (ip[6], ip.get(40..total)?)
        }
        _ => return None,
    };
    match proto {
        6 if l4.len() >= 20 => {
            let off = usize::from(l4[12] >> 4) * 4;
            Some(Packet {
                ts_ns,
                proto: Proto::Tcp,
                src_port: be16(l4, 0),
                dst_port: be16(l4, 2),
                tcp_seq: u32::from_be_bytes(l4[4..8].try_into().unwrap()),
                payload: l4.get(off..)?.to_vec(),
            })
        }
        17 if l4.len() >= 8 => Some(Packet {
            ts_ns,
            proto: Proto::Udp,
            src_port: be16(l4, 0),
            dst_port: be16(l4, 2),
            tcp_seq: 0,
            payload: l4[8..].to_vec(),
        }),
        _ => None,
    }
}

/// The bytes of one direction of a TCP conversation (segments from `src_port` to `dst_port`),
/// in sequence order, each byte once (retransmitted segments are skipped).
pub fn tcp_stream(packets: &[Packet], src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut segs: Vec<&Packet> = packets
        .iter()
        .filter(|p| {
            p.proto == Proto::Tcp
                && p.src_port == src_port
                && p.dst_port == dst_port
                && !p.payload.is_empty()
        })
        .collect();
    // Relative to the first segment captured: an RTSP conversation is far shorter than the
    // 2 GiB that would make wrapping arithmetic ambiguous.
    let Some(first) = segs.first().map(|p| p.tcp_seq) else {
        return Vec::new();
    };
    segs.sort_by_key(|p| p.tcp_seq.wrapping_sub(first));
    let mut out = Vec::new();
    for p in segs {
        let off = p.tcp_seq.wrapping_sub(first) as usize;
        if off + p.payload.len() > out.len() && off <= out.len() {
            out.extend_from_slice(&p.payload[out.len() - off..]);
        }
    }
    out
}
