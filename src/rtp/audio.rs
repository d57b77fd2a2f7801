//! Audio packets (payload type 0x60) and their retransmitted form (0x56).

use super::{be16, be32, byte, classify, payload_type, Error};

/// RTP header length of an audio packet (no CSRCs or extensions in RAOP).
pub const HEADER_LEN: usize = 12;

/// A view of an RTP audio packet.
#[derive(Debug, Clone, Copy)]
pub struct AudioPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> AudioPacket<T> {
    /// Checks version, type and length; afterwards the accessors cannot go out of bounds.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        let pt = classify(b)?;
        if pt != payload_type::AUDIO {
            return Err(Error::PayloadType(pt));
        }
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(AudioPacket { buffer })
    }

    /// The marker bit flags the first packet after RECORD or FLUSH.
    pub fn marker(&self) -> bool {
        byte(self.buffer.as_ref(), 1) & 0x80 != 0
    }

    pub fn sequence(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    pub fn timestamp(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }

    pub fn ssrc(&self) -> u32 {
        be32(self.buffer.as_ref(), 8)
    }

    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> AudioPacket<T> {
    /// The payload, writable: decryption happens in place.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..)
            .unwrap_or_default()
    }
}

/// The header fields of an audio packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioRepr {
    pub marker: bool,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

impl AudioRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &AudioPacket<T>) -> Self {
        AudioRepr {
            marker: p.marker(),
            sequence: p.sequence(),
            timestamp: p.timestamp(),
            ssrc: p.ssrc(),
        }
    }

    /// Writes the 12-byte header into `buf` (the first [`HEADER_LEN`] bytes of a packet:
    /// `packet.first_chunk_mut()`).
    pub fn emit(&self, buf: &mut [u8; HEADER_LEN]) {
        buf[0] = 0x80;
        buf[1] = payload_type::AUDIO | if self.marker { 0x80 } else { 0 };
        buf[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        buf[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
    }
}

/// A retransmitted audio packet (0x56, on the control socket): a 4-byte header
/// followed by the original audio packet, its RTP header included.
#[derive(Debug, Clone, Copy)]
pub struct RetransmitPacket<T: AsRef<[u8]>> {
    buffer: T,
}

/// Bytes before the embedded audio packet.
pub const RETRANSMIT_HEADER_LEN: usize = 4;

impl<T: AsRef<[u8]>> RetransmitPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        let pt = classify(b)?;
        if pt != payload_type::RETRANSMIT {
            return Err(Error::PayloadType(pt));
        }
        if b.len() < RETRANSMIT_HEADER_LEN + HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(RetransmitPacket { buffer })
    }

    /// Where the embedded audio packet starts in the buffer.
    pub fn inner_range(&self) -> core::ops::Range<usize> {
        RETRANSMIT_HEADER_LEN..self.buffer.as_ref().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_roundtrip() {
        let repr = AudioRepr {
            marker: true,
            sequence: 0xfffe,
            timestamp: 0xdead_beef,
            ssrc: 42,
        };
        let mut buf = [0u8; 20];
        repr.emit(buf.first_chunk_mut().unwrap());
        buf[12..].copy_from_slice(b"payload!");
        let p = AudioPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(AudioRepr::parse(&p), repr);
        assert_eq!(p.payload(), b"payload!");
        assert_eq!(&buf[..2], &[0x80, 0xe0]);
    }

    #[test]
    fn audio_rejects_bad() {
        assert_eq!(
            AudioPacket::new_checked(&[0x80u8, 0x60, 0, 1][..]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            AudioPacket::new_checked(&[0x80u8, 0x54, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0][..])
                .unwrap_err(),
            Error::PayloadType(0x54)
        );
    }

    #[test]
    fn retransmit_wraps_audio() {
        let mut buf = vec![0x80, 0xd6, 0x00, 0x01];
        let mut inner = [0u8; 16];
        AudioRepr {
            marker: false,
            sequence: 7,
            timestamp: 352 * 7,
            ssrc: 1,
        }
        .emit(inner.first_chunk_mut().unwrap());
        buf.extend_from_slice(&inner);
        let r = RetransmitPacket::new_checked(&buf[..]).unwrap();
        let a = AudioPacket::new_checked(&buf[r.inner_range()]).unwrap();
        assert_eq!(a.sequence(), 7);
        assert_eq!(a.payload().len(), 4);
        assert!(RetransmitPacket::new_checked(&buf[..10]).is_err());
    }
}
