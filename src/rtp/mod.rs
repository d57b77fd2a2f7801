//! Wire views of the RAOP UDP packets, in the style of smoltcp's `wire`: a
//! `Packet<T: AsRef<[u8]>>` checks the length once and then reads fields straight out of
//! the buffer (no copies, no allocation); a `Repr` parses the fields into plain values
//! or emits them into a buffer. All integers are big-endian.
//!
//! No panic on input (issue 11): the field readers below use checked access, so a view can
//! never index out of its buffer even if `new_checked` were skipped.
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

mod audio;
mod control;
mod timing;

pub use audio::{AudioPacket, AudioRepr, RetransmitPacket};
pub use control::{ResendRequest, SyncPacket, SyncRepr, RESEND_LEN, SYNC_LEN};
pub use timing::{TimingPacket, TimingRepr, TIMING_LEN};

/// Payload types RAOP uses in byte 1 (without the marker bit).
pub mod payload_type {
    pub const TIMING_REQUEST: u8 = 0x52;
    pub const TIMING_REPLY: u8 = 0x53;
    pub const SYNC: u8 = 0x54;
    pub const RESEND_REQUEST: u8 = 0x55;
    pub const RETRANSMIT: u8 = 0x56;
    pub const AUDIO: u8 = 0x60;
}

/// Why a packet was not accepted. Garbage off the network is expected: callers count
/// these and move on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the fixed header of its type.
    Truncated,
    /// Not RTP version 2.
    Version,
    /// A payload type this socket does not expect.
    PayloadType(u8),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated packet"),
            Error::Version => f.write_str("not RTP version 2"),
            Error::PayloadType(pt) => write!(f, "unexpected payload type 0x{pt:02x}"),
        }
    }
}

/// Payload type of any RAOP packet (byte 1 without the marker bit), after checking the
/// RTP version. Used to route packets that share a socket (sync and retransmits).
pub fn classify(buf: &[u8]) -> Result<u8, Error> {
    let [b0, b1, _, _, ..] = *buf else {
        return Err(Error::Truncated);
    };
    if b0 >> 6 != 2 {
        return Err(Error::Version);
    }
    Ok(b1 & 0x7f)
}

/// The `N` bytes at `at`, or zeros past the end of `b`. The views' `new_checked` validated
/// the length, so their fields never read past the end; the zeros are never seen.
#[inline]
fn field<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b.get(at..)
        .and_then(<[u8]>::first_chunk)
        .copied()
        .unwrap_or([0; N])
}

#[inline]
fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(field(b, at))
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(field(b, at))
}

#[inline]
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(field(b, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_routes_and_rejects() {
        assert_eq!(classify(&[0x80, 0xd4, 0, 7]), Ok(payload_type::SYNC));
        assert_eq!(classify(&[0x90, 0xd4, 0, 7]), Ok(payload_type::SYNC));
        assert_eq!(classify(&[0x80, 0xe0, 0, 1]), Ok(payload_type::AUDIO));
        assert_eq!(classify(&[0x40, 0x60, 0, 1]), Err(Error::Version));
        assert_eq!(classify(&[0x80]), Err(Error::Truncated));
        assert_eq!(classify(&[]), Err(Error::Truncated));
    }
}
