//! Timing packets (0x52 request from us, 0x53 reply from the sender): an NTP-like
//! exchange of three timestamps.

use super::{be64, byte, classify, payload_type, Error};

pub const TIMING_LEN: usize = 32;

#[derive(Debug, Clone, Copy)]
pub struct TimingPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TimingPacket<T> {
    /// Accepts requests and replies; check [`TimingPacket::is_reply`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        let pt = classify(b)?;
        if pt != payload_type::TIMING_REPLY && pt != payload_type::TIMING_REQUEST {
            return Err(Error::PayloadType(pt));
        }
        if b.len() < TIMING_LEN {
            return Err(Error::Truncated);
        }
        Ok(TimingPacket { buffer })
    }

    pub fn is_reply(&self) -> bool {
        byte(self.buffer.as_ref(), 1) & 0x7f == payload_type::TIMING_REPLY
    }

    /// The requester's transmit time, echoed.
    pub fn origin(&self) -> u64 {
        be64(self.buffer.as_ref(), 8)
    }

    /// When the responder received the request.
    pub fn receive(&self) -> u64 {
        be64(self.buffer.as_ref(), 16)
    }

    /// When the responder sent this packet.
    pub fn transmit(&self) -> u64 {
        be64(self.buffer.as_ref(), 24)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimingRepr {
    pub reply: bool,
    pub origin: u64,
    pub receive: u64,
    pub transmit: u64,
}

impl TimingRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &TimingPacket<T>) -> Self {
        TimingRepr {
            reply: p.is_reply(),
            origin: p.origin(),
            receive: p.receive(),
            transmit: p.transmit(),
        }
    }

    pub fn emit(&self, buf: &mut [u8; TIMING_LEN]) {
        buf[0] = 0x80;
        buf[1] = 0x80
            | if self.reply {
                payload_type::TIMING_REPLY
            } else {
                payload_type::TIMING_REQUEST
            };
        buf[2..4].copy_from_slice(&7u16.to_be_bytes());
        buf[4..8].fill(0);
        buf[8..16].copy_from_slice(&self.origin.to_be_bytes());
        buf[16..24].copy_from_slice(&self.receive.to_be_bytes());
        buf[24..32].copy_from_slice(&self.transmit.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_roundtrip() {
        let r = TimingRepr {
            reply: true,
            origin: 1,
            receive: 2 << 32,
            transmit: u64::MAX,
        };
        let mut buf = [0u8; TIMING_LEN];
        r.emit(&mut buf);
        assert_eq!(&buf[..4], &[0x80, 0xd3, 0, 7]);
        let p = TimingPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(TimingRepr::parse(&p), r);
        assert!(TimingPacket::new_checked(&buf[..31]).is_err());
    }
}
