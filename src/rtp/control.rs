//! Control-channel packets: sync (0x54, sender → us) and resend requests (0x55, us →
//! sender).

use super::{be16, be32, be64, byte, classify, payload_type, Error};

/// A sync packet: "the frame `rtp_minus_latency` sounds at sender time `ntp`; the sender
/// is now sending frame `rtp_now`".
#[derive(Debug, Clone, Copy)]
pub struct SyncPacket<T: AsRef<[u8]>> {
    buffer: T,
}

pub const SYNC_LEN: usize = 20;

impl<T: AsRef<[u8]>> SyncPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        let pt = classify(b)?;
        if pt != payload_type::SYNC {
            return Err(Error::PayloadType(pt));
        }
        if b.len() < SYNC_LEN {
            return Err(Error::Truncated);
        }
        Ok(SyncPacket { buffer })
    }

    /// The extension bit (0x90 instead of 0x80) marks the first sync after RECORD/FLUSH.
    pub fn first(&self) -> bool {
        byte(self.buffer.as_ref(), 0) & 0x10 != 0
    }

    pub fn rtp_minus_latency(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }

    pub fn ntp(&self) -> u64 {
        be64(self.buffer.as_ref(), 8)
    }

    pub fn rtp_now(&self) -> u32 {
        be32(self.buffer.as_ref(), 16)
    }

    /// Bytes 2–3: 7 from iTunes-style senders (and PulseAudio, PipeWire, pyatv), 4 from
    /// others. Tells whether the sender expects the receiver to add its `Audio-Latency` (see
    /// [`crate::clock::LatencyRule`]).
    pub fn flags(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRepr {
    pub first: bool,
    /// Bytes 2–3 (see [`SyncPacket::flags`]).
    pub flags: u16,
    pub rtp_minus_latency: u32,
    pub ntp: u64,
    pub rtp_now: u32,
}

impl SyncRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &SyncPacket<T>) -> Self {
        SyncRepr {
            first: p.first(),
            flags: p.flags(),
            rtp_minus_latency: p.rtp_minus_latency(),
            ntp: p.ntp(),
            rtp_now: p.rtp_now(),
        }
    }

    /// Emits the packet; used by tests.
    pub fn emit(&self, buf: &mut [u8; SYNC_LEN]) {
        buf[0] = if self.first { 0x90 } else { 0x80 };
        buf[1] = 0x80 | payload_type::SYNC;
        buf[2..4].copy_from_slice(&self.flags.to_be_bytes());
        buf[4..8].copy_from_slice(&self.rtp_minus_latency.to_be_bytes());
        buf[8..16].copy_from_slice(&self.ntp.to_be_bytes());
        buf[16..20].copy_from_slice(&self.rtp_now.to_be_bytes());
    }

    /// Latency the sender states, in frames: `rtp_now − rtp_minus_latency`. What the receiver
    /// plays at is worked out from it by [`crate::clock::LatencyRule`].
    pub fn latency(&self) -> u32 {
        self.rtp_now.wrapping_sub(self.rtp_minus_latency)
    }
}

/// A resend request: "please send `count` packets starting at sequence `first` again".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResendRequest {
    /// Our own sequence number for requests (senders ignore it).
    pub request_seq: u16,
    pub first: u16,
    pub count: u16,
}

pub const RESEND_LEN: usize = 8;

impl ResendRequest {
    pub fn emit(&self, buf: &mut [u8; RESEND_LEN]) {
        buf[0] = 0x80;
        buf[1] = 0x80 | payload_type::RESEND_REQUEST;
        buf[2..4].copy_from_slice(&self.request_seq.to_be_bytes());
        buf[4..6].copy_from_slice(&self.first.to_be_bytes());
        buf[6..8].copy_from_slice(&self.count.to_be_bytes());
    }

    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        let pt = classify(buf)?;
        if pt != payload_type::RESEND_REQUEST {
            return Err(Error::PayloadType(pt));
        }
        if buf.len() < RESEND_LEN {
            return Err(Error::Truncated);
        }
        Ok(ResendRequest {
            request_seq: be16(buf, 2),
            first: be16(buf, 4),
            count: be16(buf, 6),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_roundtrip() {
        let r = SyncRepr {
            first: true,
            flags: 7,
            rtp_minus_latency: 1000,
            ntp: 0x1122_3344_5566_7788,
            rtp_now: 1000 + 88200,
        };
        let mut buf = [0u8; SYNC_LEN];
        r.emit(&mut buf);
        assert_eq!(&buf[..2], &[0x90, 0xd4]);
        let p = SyncPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(SyncRepr::parse(&p), r);
        assert_eq!(r.latency(), 88200);
        assert!(SyncPacket::new_checked(&buf[..19]).is_err());
    }

    #[test]
    fn latency_across_wrap() {
        let r = SyncRepr {
            first: false,
            flags: 4,
            rtp_minus_latency: u32::MAX - 100,
            ntp: 0,
            rtp_now: 88099,
        };
        assert_eq!(r.latency(), 88200);
    }

    #[test]
    fn resend_roundtrip() {
        let r = ResendRequest {
            request_seq: 3,
            first: 65534,
            count: 4,
        };
        let mut buf = [0u8; RESEND_LEN];
        r.emit(&mut buf);
        assert_eq!(&buf[..2], &[0x80, 0xd5]);
        assert_eq!(ResendRequest::parse(&buf).unwrap(), r);
    }
}
