//! What a RAOP sender said on the wire, read from a packet capture ([`super::pcap`]) without
//! any of raopd's code: the RTSP conversation (SDP, transports, `Audio-Latency`), the sync
//! packets, the timing exchanges and the audio itself, decrypted and decoded here.
//!
//! Packet layouts follow the RAOP descriptions every open receiver implements (the "Unofficial
//! AirPlay Protocol Specification", shairport-sync's rtp.c): sync `80/90 D4` to the receiver's
//! control port, timing request `80 D2` from the receiver and reply `80 D3`, audio `80 60`/`80 E0`
//! to the receiver's server port and retransmissions `80 D6` (the original packet after a 4-byte
//! header) to its control port.
//!
//! Audio is read for two encodings only, which is all the test senders use: L16 (big-endian
//! PCM, RFC 3551) and the uncompressed ("escape") form of ALAC that PulseAudio, PipeWire and the
//! RAOP-Player lineage send: a 23-bit frame header (element tag 1 = channel pair, 4 + 12 bits
//! unused, has-size, 2 bits shift, escape flag 1), an optional 32-bit frame count, then each
//! frame's left and right sample as 16-bit big-endian values at whatever bit offset that leaves.
//! RSA-wrapped AES keys are unwrapped with the AirPort Express key every open receiver ships
//! (RSA-OAEP with SHA-1); each packet's first `len & !15` payload bytes are AES-128-CBC with the
//! SDP's IV, the tail is clear.

use std::collections::BTreeMap;

use aes::cipher::{BlockDecryptMut, KeyIvInit};
use base64::Engine;
use rsa::{pkcs1::DecodeRsaPrivateKey, Oaep, RsaPrivateKey};

use super::audio::Frame;
use super::pcap::{tcp_stream, Packet, Proto};

/// One RTSP request or response.
#[derive(Debug, Clone)]
pub struct RtspMessage {
    /// `ANNOUNCE rtsp://… RTSP/1.0` or `RTSP/1.0 200 OK`.
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RtspMessage {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn method(&self) -> &str {
        self.start.split_whitespace().next().unwrap_or("")
    }

    /// `key=value` from a `Transport` header.
    pub fn transport_param(&self, key: &str) -> Option<u16> {
        self.header("Transport")?.split(';').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k.trim() == key).then(|| v.trim().parse().ok()).flatten()
        })
    }
}

/// Splits one direction of an RTSP connection into messages (headers, then `Content-Length`
/// bytes of body).
pub fn rtsp_messages(stream: &[u8]) -> Vec<RtspMessage> {
    let mut out = Vec::new();
    let mut rest = stream;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let start = lines.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut msg = RtspMessage {
            start,
            headers,
            body: Vec::new(),
        };
        let len: usize = msg
            .header("Content-Length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body_end = (end + 4 + len).min(rest.len());
        msg.body = rest[end + 4..body_end].to_vec();
        out.push(msg);
        rest = &rest[body_end..];
    }
    out
}

/// A sync packet (`80 D4`, or `90 D4` for the first after RECORD/FLUSH).
#[derive(Debug, Clone, Copy)]
pub struct Sync {
    /// Capture time, `CLOCK_REALTIME` ns.
    pub captured_ns: i128,
    /// Byte 0 is `0x90`: the first sync of a stream or after a FLUSH.
    pub first: bool,
    /// Bytes 2–3: 7 from iTunes-style senders, PulseAudio, PipeWire and pyatv.
    pub flags: u16,
    /// Bytes 4–7: the RTP timestamp of "now" minus the sender's latency.
    pub rtp_minus_latency: u32,
    /// Bytes 8–15: the sender's "now", NTP 32.32, converted to ns on the sender's clock.
    pub ntp_ns: i128,
    /// Bytes 16–19: the RTP timestamp of "now".
    pub rtp_now: u32,
}

impl Sync {
    /// The latency the packet states, in frames.
    pub fn stated_latency(&self) -> u32 {
        self.rtp_now.wrapping_sub(self.rtp_minus_latency)
    }
}

/// One timing exchange: the receiver's request (`80 D2`) and the sender's reply (`80 D3`).
#[derive(Debug, Clone, Copy)]
pub struct TimingExchange {
    /// Capture time of the request, `CLOCK_REALTIME` ns.
    pub request_captured_ns: i128,
    /// The reply's receive (bytes 16–23) and transmit (24–31) times, sender clock, ns.
    pub sender_receive_ns: i128,
    pub sender_transmit_ns: i128,
    /// Capture time of the reply, `CLOCK_REALTIME` ns.
    pub reply_captured_ns: i128,
}

/// An audio packet's RTP timestamp and frames, decoded.
#[derive(Debug, Clone)]
pub struct AudioPacket {
    pub captured_ns: i128,
    pub rtp: u32,
    pub frames: Vec<Frame>,
    /// Arrived as a retransmission (`80 D6` on the control port).
    pub resent: bool,
}

/// Everything the test reads from one RAOP session on the wire.
#[derive(Debug, Clone)]
pub struct Session {
    pub requests: Vec<RtspMessage>,
    pub responses: Vec<RtspMessage>,
    /// The ANNOUNCE body.
    pub sdp: String,
    /// `User-Agent` of the sender's requests, if any.
    pub user_agent: Option<String>,
    /// `Audio-Latency` of the receiver's RECORD reply, frames.
    pub audio_latency: Option<u32>,
    /// SDP `a=min-latency` / `a=max-latency`, frames.
    pub min_latency: Option<u32>,
    pub max_latency: Option<u32>,
    /// The receiver's UDP ports from its SETUP reply.
    pub server_port: u16,
    pub control_port: u16,
    pub timing_port: u16,
    pub syncs: Vec<Sync>,
    pub timing: Vec<TimingExchange>,
    pub audio: Vec<AudioPacket>,
}

/// NTP 32.32 (8 big-endian bytes) as ns on the same clock (seconds since its own epoch).
pub fn ntp_to_ns(b: &[u8]) -> i128 {
    let secs = u32::from_be_bytes(b[0..4].try_into().unwrap());
    let frac = u32::from_be_bytes(b[4..8].try_into().unwrap());
    i128::from(secs) * 1_000_000_000 + ((i128::from(frac) * 1_000_000_000) >> 32)
}

fn sdp_attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines().find_map(|l| {
        l.trim()
            .strip_prefix("a=")?
            .strip_prefix(name)?
            .strip_prefix(':')
            .map(str::trim)
    })
}

fn b64(s: &str) -> Vec<u8> {
    let cfg = base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent);
    base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, cfg)
        .decode(s.trim())
        .unwrap_or_else(|e| panic!("bad base64 {s:?} in the SDP: {e}"))
}

const AIRPORT_KEY_PEM: &str = include_str!("../../src/crypto/airport_key.pem");

/// How the audio payload is encoded, from the SDP.
#[derive(Debug, Clone)]
struct Codec {
    alac: bool,
    /// ALAC frames per packet (fmtp field 1), used when a frame has no size field.
    frame_length: usize,
    aes: Option<([u8; 16], [u8; 16])>,
}

impl Codec {
    fn from_sdp(sdp: &str) -> Codec {
        let rtpmap = sdp_attr(sdp, "rtpmap").unwrap_or_else(|| panic!("no a=rtpmap in {sdp:?}"));
        let alac = rtpmap.contains("AppleLossless");
        assert!(
            alac || rtpmap.contains("L16"),
            "the test reads L16 and ALAC only, not {rtpmap:?}"
        );
        let frame_length = sdp_attr(sdp, "fmtp")
            .and_then(|f| f.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(352);
        let aes = sdp_attr(sdp, "rsaaeskey").map(|k| {
            let key = RsaPrivateKey::from_pkcs1_pem(AIRPORT_KEY_PEM).expect("AirPort key");
            let aes_key = key
                .decrypt(Oaep::new::<sha1::Sha1>(), &b64(k))
                .expect("rsaaeskey does not decrypt with the AirPort key");
            let iv = b64(sdp_attr(sdp, "aesiv").expect("a=rsaaeskey without a=aesiv"));
            (
                aes_key.try_into().expect("16-byte AES key"),
                iv.try_into().expect("16-byte IV"),
            )
        });
        Codec {
            alac,
            frame_length,
            aes,
        }
    }

    fn decode(&self, payload: &[u8]) -> Vec<Frame> {
        let mut data = payload.to_vec();
        if let Some((key, iv)) = &self.aes {
            let n = data.len() & !15;
            let mut dec = cbc::Decryptor::<aes::Aes128>::new(key.into(), iv.into());
            for block in data[..n].chunks_exact_mut(16) {
                dec.decrypt_block_mut(block.into());
            }
        }
        if self.alac {
            alac_verbatim(&data, self.frame_length).unwrap_or_else(|| {
                panic!(
                    "an ALAC packet is not in the uncompressed form this test reads: {:02x?}",
                    &data[..data.len().min(8)]
                )
            })
        } else {
            data.chunks_exact(4)
                .map(|b| {
                    [
                        i16::from_be_bytes([b[0], b[1]]),
                        i16::from_be_bytes([b[2], b[3]]),
                    ]
                })
                .collect()
        }
    }
}

/// Reads bits most significant first.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Some(v)
    }
}

/// Decodes an uncompressed stereo 16-bit ALAC frame (see the module doc); `None` for anything
/// else (a compressed frame, another element).
pub fn alac_verbatim(data: &[u8], frame_length: usize) -> Option<Vec<Frame>> {
    let mut b = Bits { data, pos: 0 };
    if b.read(3)? != 1 {
        return None; // not a channel pair element
    }
    b.read(4 + 12)?;
    let has_size = b.read(1)? == 1;
    let shift = b.read(2)?;
    let escape = b.read(1)?;
    if escape != 1 || shift != 0 {
        return None;
    }
    let n = if has_size {
        b.read(32)? as usize
    } else {
        frame_length
    };
    (0..n)
        .map(|_| Some([b.read(16)? as u16 as i16, b.read(16)? as u16 as i16]))
        .collect()
}

impl Session {
    /// Reads the session a sender held with the receiver whose RTSP port is `rtsp_port`. Panics
    /// when the capture lacks a part the test needs (no ANNOUNCE, no SETUP reply, …).
    pub fn from_capture(packets: &[Packet], rtsp_port: u16) -> Session {
        // Every connection to the RTSP port (PulseAudio opens one to authenticate, then another).
        let mut clients: Vec<u16> = packets
            .iter()
            .filter(|p| p.proto == Proto::Tcp && p.dst_port == rtsp_port)
            .map(|p| p.src_port)
            .collect();
        clients.dedup();
        clients.sort_unstable();
        clients.dedup();
        let mut requests = Vec::new();
        let mut responses = Vec::new();
        for c in clients {
            requests.extend(rtsp_messages(&tcp_stream(packets, c, rtsp_port)));
            responses.extend(rtsp_messages(&tcp_stream(packets, rtsp_port, c)));
        }
        let announce = requests
            .iter()
            .find(|m| m.method() == "ANNOUNCE")
            .expect("no RTSP ANNOUNCE in the capture");
        let sdp = String::from_utf8_lossy(&announce.body).into_owned();
        let user_agent = requests
            .iter()
            .find_map(|m| m.header("User-Agent"))
            .map(String::from);
        let setup_reply = responses
            .iter()
            .find(|m| m.transport_param("server_port").is_some())
            .expect("no SETUP reply with server_port in the capture");
        let port = |k| {
            setup_reply
                .transport_param(k)
                .unwrap_or_else(|| panic!("SETUP reply without {k}"))
        };
        let (server_port, control_port, timing_port) = (
            port("server_port"),
            port("control_port"),
            port("timing_port"),
        );
        let audio_latency = responses
            .iter()
            .find_map(|m| m.header("Audio-Latency"))
            .and_then(|v| v.parse().ok());
        let latency_attr = |name| sdp_attr(&sdp, name).and_then(|v| v.parse().ok());
        let (min_latency, max_latency) = (latency_attr("min-latency"), latency_attr("max-latency"));
        let codec = Codec::from_sdp(&sdp);

        let mut syncs = Vec::new();
        let mut requests_out: BTreeMap<[u8; 8], i128> = BTreeMap::new();
        let mut timing = Vec::new();
        let mut audio = Vec::new();
        for p in packets.iter().filter(|p| p.proto == Proto::Udp) {
            let d = &p.payload;
            if d.len() < 4 {
                continue;
            }
            match (d[1], p.src_port, p.dst_port) {
                (0xd4, _, dst) if dst == control_port && d.len() >= 20 => syncs.push(Sync {
                    captured_ns: p.ts_ns,
                    first: d[0] == 0x90,
                    flags: u16::from_be_bytes([d[2], d[3]]),
                    rtp_minus_latency: u32::from_be_bytes(d[4..8].try_into().unwrap()),
                    ntp_ns: ntp_to_ns(&d[8..16]),
                    rtp_now: u32::from_be_bytes(d[16..20].try_into().unwrap()),
                }),
                (0xd2, src, _) if src == timing_port && d.len() >= 32 => {
                    requests_out.insert(d[24..32].try_into().unwrap(), p.ts_ns);
                }
                (0xd3, _, dst) if dst == timing_port && d.len() >= 32 => {
                    // The reply echoes the request's transmit time as its origin.
                    let origin: [u8; 8] = d[8..16].try_into().unwrap();
                    if let Some(&req) = requests_out.get(&origin) {
                        timing.push(TimingExchange {
                            request_captured_ns: req,
                            sender_receive_ns: ntp_to_ns(&d[16..24]),
                            sender_transmit_ns: ntp_to_ns(&d[24..32]),
                            reply_captured_ns: p.ts_ns,
                        });
                    }
                }
                (0x60 | 0xe0, _, dst) if dst == server_port && d.len() > 12 => {
                    audio.push(AudioPacket {
                        captured_ns: p.ts_ns,
                        rtp: u32::from_be_bytes(d[4..8].try_into().unwrap()),
                        frames: codec.decode(&d[12..]),
                        resent: false,
                    })
                }
                (0xd6, _, dst) if dst == control_port && d.len() > 16 => audio.push(AudioPacket {
                    captured_ns: p.ts_ns,
                    rtp: u32::from_be_bytes(d[8..12].try_into().unwrap()),
                    frames: codec.decode(&d[16..]),
                    resent: true,
                }),
                _ => {}
            }
        }
        Session {
            requests,
            responses,
            sdp,
            user_agent,
            audio_latency,
            min_latency,
            max_latency,
            server_port,
            control_port,
            timing_port,
            syncs,
            timing,
            audio,
        }
    }
}
