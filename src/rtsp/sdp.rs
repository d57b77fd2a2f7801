//! ANNOUNCE bodies: which codec, which key. Anything we cannot play is refused here,
//! with a reason, rather than failing later on the audio path.

use crate::clock::MAX_LATENCY_FRAMES;
use crate::codec::alac::{AlacParams, FmtpError};
use crate::codec::{Codec, StreamFormat, MAX_FRAMES_PER_PACKET};
use crate::RATE;

/// What an ANNOUNCE asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub format: StreamFormat,
    /// `a=rsaaeskey` (base64, RSA-OAEP wrapped AES key); `None` = unencrypted stream.
    pub rsaaeskey: Option<String>,
    /// `a=aesiv` (base64, 16 bytes).
    pub aesiv: Option<String>,
    /// `a=min-latency` in frames, if given (at most 10 s).
    pub min_latency: Option<u32>,
    /// `a=max-latency` in frames, if given (at most 10 s).
    pub max_latency: Option<u32>,
}

/// A refused ANNOUNCE: the RTSP status and a reason naming what was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpError {
    pub status: u16,
    pub reason: String,
}

fn refuse(status: u16, reason: impl Into<String>) -> SdpError {
    SdpError {
        status,
        reason: reason.into(),
    }
}

pub fn parse_announce(body: &[u8]) -> Result<Announce, SdpError> {
    // sdp-types 0.1.8 panics (an `assert_eq!` on the line key) when a line that is not
    // `x=value` is followed by one other than `m=`: refuse such bodies before it sees them,
    // with the same line rules (lines split at LF, a trailing CR dropped, blank lines skipped).
    if let Some(n) = body.split(|&b| b == b'\n').position(|l| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        !l.is_empty() && l.iter().position(|&b| b == b'=') != Some(1)
    }) {
        return Err(refuse(
            400,
            format!("malformed SDP: line {} is not key=value", n + 1),
        ));
    }
    let sdp =
        sdp_types::Session::parse(body).map_err(|e| refuse(400, format!("malformed SDP: {e}")))?;
    let mut audio = sdp.medias.iter().filter(|m| m.media == "audio");
    let media = audio
        .next()
        .ok_or_else(|| refuse(415, "SDP has no audio media"))?;
    if audio.next().is_some() {
        return Err(refuse(415, "SDP has more than one audio media"));
    }
    if !media.proto.eq_ignore_ascii_case("RTP/AVP") {
        return Err(refuse(
            415,
            format!("unsupported transport {}", media.proto),
        ));
    }
    let pt = media
        .fmt
        .split_whitespace()
        .next()
        .ok_or_else(|| refuse(400, "m= line has no payload type"))?;
    let attr = |name: &str| -> Option<&str> {
        media
            .attributes
            .iter()
            .chain(sdp.attributes.iter())
            .find(|a| a.attribute.eq_ignore_ascii_case(name))
            .and_then(|a| a.value.as_deref())
    };
    let rtpmap = attr("rtpmap").ok_or_else(|| refuse(400, "SDP has no rtpmap"))?;
    let (map_pt, encoding) = rtpmap
        .split_once(' ')
        .ok_or_else(|| refuse(400, "malformed rtpmap"))?;
    if map_pt.trim() != pt {
        return Err(refuse(
            400,
            format!("rtpmap payload type {map_pt} does not match m= payload type {pt}"),
        ));
    }
    let fmtp = match attr("fmtp") {
        Some(f) => {
            let (fmtp_pt, params) = f.split_once(' ').unwrap_or((f, ""));
            if fmtp_pt.trim() != pt {
                return Err(refuse(
                    400,
                    format!("fmtp payload type {fmtp_pt} does not match m= payload type {pt}"),
                ));
            }
            Some(params.trim())
        }
        None => None,
    };
    let encoding = encoding.trim();
    let mut enc_parts = encoding.split('/');
    let name = enc_parts.next().unwrap_or("");
    // rtpmap decides the codec; an fmtp line next to L16 (pyatv sends one) is ignored.
    let format = if name.eq_ignore_ascii_case("AppleLossless") {
        let params = fmtp.ok_or_else(|| refuse(400, "AppleLossless without fmtp"))?;
        alac_format(params)?
    } else if name.eq_ignore_ascii_case("L16") {
        // No rate given: RAOP's only one.
        let rate = enc_parts.next();
        let channels = enc_parts.next().unwrap_or("1");
        if rate.is_some_and(|r| r.parse::<u32>().ok() != Some(RATE)) || channels != "2" {
            return Err(refuse(
                415,
                format!("unsupported PCM format {encoding} (only L16/44100/2)"),
            ));
        }
        let frames = fmtp
            .and_then(|p| p.split_whitespace().next())
            .and_then(|f| f.parse::<u32>().ok())
            .unwrap_or(MAX_FRAMES_PER_PACKET);
        StreamFormat {
            codec: Codec::L16,
            frames_per_packet: frames.clamp(1, MAX_FRAMES_PER_PACKET),
        }
    } else {
        return Err(refuse(415, format!("unsupported codec {encoding}")));
    };
    if attr("fpaeskey").is_some() {
        return Err(refuse(
            415,
            "FairPlay encryption (fpaeskey) is not supported",
        ));
    }
    let rsaaeskey = attr("rsaaeskey").map(str::to_string);
    let aesiv = attr("aesiv").map(str::to_string);
    if rsaaeskey.is_some() != aesiv.is_some() {
        return Err(refuse(400, "rsaaeskey and aesiv must come together"));
    }
    // Latencies beyond 10 s are garbage (a sync packet stating more is ignored too).
    let latency = |name| {
        attr(name)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|&f| f <= MAX_LATENCY_FRAMES)
    };
    let min_latency = latency("min-latency");
    let max_latency = latency("max-latency");
    Ok(Announce {
        format,
        rsaaeskey,
        aesiv,
        min_latency,
        max_latency,
    })
}

/// Validates ALAC parameters (frameLength compatibleVersion bitDepth pb mb kb
/// numChannels maxRun maxFrameBytes avgBitRate sampleRate) with the decoder's own check
/// ([`AlacParams::from_fmtp`]): `400` when malformed, `415` for a format RAOP does not carry.
fn alac_format(params: &str) -> Result<StreamFormat, SdpError> {
    let p = AlacParams::from_fmtp(params).map_err(|e| match e {
        FmtpError::Malformed(m) => refuse(400, m),
        FmtpError::Unsupported(m) => refuse(415, m),
    })?;
    Ok(StreamFormat {
        codec: Codec::Alac {
            fmtp: params.to_string(),
        },
        frames_per_packet: p.frame_length(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "v=0\r\no=iTunes 1 0 IN IP4 127.0.0.1\r\ns=iTunes\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n";

    fn sdp(lines: &str) -> Vec<u8> {
        format!("{HEAD}{lines}").into_bytes()
    }

    /// Found by the `sdp` fuzz target: a line that is not `key=value` before a line other
    /// than `m=` made sdp-types panic.
    #[test]
    fn fuzz_line_without_key_is_refused_not_a_panic() {
        let crash = b"v=0\r\n\x01\x00\x00\x00\x00\x00\x00\x00o=ienuT s3414657590 0 IN IP4 127.0.0.1\r\ns=iTunes\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 96\x0c\na=rtpmap:96 L16/44100/2\r\na=fmtp:96 352 0 16 40 10 14 2 25\xc9 0 0\ns=iTunes\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 0 RTP/AVP\xd7 96\r\na=rtpmap:#6 L16/44100/2\r\na=fmtp:96 3 44100\r\n";
        let e = parse_announce(crash).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.reason.contains("line 2"), "{}", e.reason);
        let e = parse_announce(&sdp("garbage\r\nm=audio 0 RTP/AVP 96\r\n")).unwrap_err();
        assert_eq!(e.status, 400);
        let e = parse_announce(&sdp(
            "m=audio 0 RTP/AVP 96\r\nab=c\r\na=rtpmap:96 L16/44100/2\r\n",
        ))
        .unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn pyatv_l16_with_fmtp_is_l16() {
        let a = parse_announce(&sdp("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 L16/44100/2\r\na=fmtp:96 352 0 16 40 10 14 2 255 0 0 44100\r\n")).unwrap();
        assert_eq!(a.format.codec, Codec::L16);
        assert_eq!(a.format.frames_per_packet, 352);
        assert_eq!(a.rsaaeskey, None);
    }

    #[test]
    fn alac_with_keys() {
        let a = parse_announce(&sdp("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 AppleLossless\r\na=fmtp:96 352 0 16 40 10 14 2 255 0 0 44100\r\na=rsaaeskey:AAAA\r\na=aesiv:BBBB\r\na=min-latency:11025\r\n")).unwrap();
        assert_eq!(
            a.format.codec,
            Codec::Alac {
                fmtp: "352 0 16 40 10 14 2 255 0 0 44100".into()
            }
        );
        assert_eq!(a.rsaaeskey.as_deref(), Some("AAAA"));
        assert_eq!(a.min_latency, Some(11025));
        assert_eq!(a.max_latency, None);
    }

    #[test]
    fn latency_bounds_are_normalised() {
        let base = "m=audio 0 RTP/AVP 96\r\na=rtpmap:96 L16/44100/2\r\n";
        let a = parse_announce(&sdp(&format!(
            "{base}a=min-latency:4410\r\na=max-latency: 88200 \r\n"
        )))
        .unwrap();
        assert_eq!((a.min_latency, a.max_latency), (Some(4410), Some(88200)));
        // Garbage and more than 10 s are ignored, not refused.
        let a = parse_announce(&sdp(&format!(
            "{base}a=min-latency:-1\r\na=max-latency:441001\r\n"
        )))
        .unwrap();
        assert_eq!((a.min_latency, a.max_latency), (None, None));
    }

    #[test]
    fn refusals() {
        let cases: &[(&str, u16, &str)] = &[
            ("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 mpeg4-generic/44100/2\r\n", 415, "mpeg4-generic"),
            ("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 AAC-eld/44100/2\r\n", 415, "AAC-eld"),
            ("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 L16/48000/2\r\n", 415, "L16/48000/2"),
            ("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 AppleLossless\r\na=fmtp:96 352 0 24 40 10 14 2 255 0 0 44100\r\n", 415, "24-bit"),
            ("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 AppleLossless\r\na=fmtp:96 4096 0 16 40 10 14 2 255 0 0 44100\r\n", 415, "frame length"),
            ("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 AppleLossless\r\na=fmtp:96 352 0 16 40 10 14 2 255 0 0 44100\r\na=fpaeskey:AAAA\r\na=aesiv:AA\r\n", 415, "FairPlay"),
            ("m=audio 0 RTP/AVP 96\r\na=rtpmap:97 L16/44100/2\r\n", 400, "does not match"),
            ("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 AppleLossless\r\na=fmtp:97 352 0 16 40 10 14 2 255 0 0 44100\r\n", 400, "does not match"),
            ("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 AppleLossless\r\n", 400, "without fmtp"),
            ("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 AppleLossless\r\na=fmtp:96 352 0 16\r\n", 400, "11 parameters"),
            ("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 L16/44100/2\r\na=rsaaeskey:AAAA\r\n", 400, "together"),
            ("m=video 0 RTP/AVP 96\r\n", 415, "no audio"),
            ("", 415, "no audio"),
        ];
        for (lines, status, needle) in cases {
            let e = parse_announce(&sdp(lines)).unwrap_err();
            assert_eq!(e.status, *status, "{lines}: {e:?}");
            assert!(e.reason.contains(needle), "{lines}: {e:?}");
        }
        assert_eq!(parse_announce(b"garbage").unwrap_err().status, 400);
        assert_eq!(parse_announce(b"").unwrap_err().status, 400);
    }
}
