//! DMAP-tagged metadata, as senders put it in `SET_PARAMETER` bodies of type
//! `application/x-dmap-tagged`.
//!
//! A DMAP element is a 4-byte ASCII tag, a 4-byte big-endian length and that many bytes of
//! value. Senders wrap one track's fields in an `mlit` container. Only the handful of fields a
//! speaker can show are decoded; everything else is skipped by its length, so new tags from
//! newer senders cost nothing. The body comes straight from the network, so every length is
//! checked against what is left and the nesting depth is bounded: garbage is an error, never a
//! panic or a deep recursion.
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

use std::fmt;

/// Containers nested deeper than this are rejected. Real senders use one level (`mlit`);
/// the bound only keeps a hostile body from recursing the stack away.
pub const MAX_DEPTH: usize = 8;

/// Tags whose value is a list of further elements.
const CONTAINERS: [&[u8; 4]; 3] = [b"mlit", b"mlcl", b"cmst"];

/// The fields of one DMAP item that raopd uses. `None`: the body did not carry the field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DmapItem {
    /// `minm`
    pub title: Option<String>,
    /// `asar`
    pub artist: Option<String>,
    /// `asal`
    pub album: Option<String>,
    /// `asgn`
    pub genre: Option<String>,
    /// `ascp`
    pub composer: Option<String>,
    /// `astm`: track length in milliseconds.
    pub duration_ms: Option<u32>,
    /// `astn`: track number.
    pub track: Option<u16>,
    /// `asdk`: song data kind (0 = a file, 1 = a stream URL).
    pub data_kind: Option<u8>,
    /// `caps`: play status as DACP reports it (2 = stopped, 3 = paused, 4 = playing).
    pub play_status: Option<u8>,
}

impl DmapItem {
    /// True when the body described a track (any of the text or number fields), as opposed
    /// to carrying only a play status.
    pub fn has_track_fields(&self) -> bool {
        self.title.is_some()
            || self.artist.is_some()
            || self.album.is_some()
            || self.genre.is_some()
            || self.composer.is_some()
            || self.duration_ms.is_some()
            || self.track.is_some()
    }
}

/// Why a body was rejected. `offset` is where in the body the problem starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmapError {
    pub offset: usize,
    pub kind: DmapErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmapErrorKind {
    /// An element header or value runs past the end of the body or of its container.
    Truncated,
    /// A tag that is not four printable ASCII characters: not DMAP at all.
    BadTag,
    /// Containers nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl fmt::Display for DmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            DmapErrorKind::Truncated => "truncated element",
            DmapErrorKind::BadTag => "not a DMAP tag",
            DmapErrorKind::TooDeep => "containers nested too deep",
        };
        write!(f, "DMAP: {what} at byte {}", self.offset)
    }
}

impl std::error::Error for DmapError {}

/// Decodes a DMAP body. Later occurrences of a field win over earlier ones.
pub fn parse(body: &[u8]) -> Result<DmapItem, DmapError> {
    let mut item = DmapItem::default();
    walk(body, 0, 0, &mut item)?;
    Ok(item)
}

/// Visits the elements of `data`, which starts at `base` in the whole body (for error offsets).
fn walk(data: &[u8], base: usize, depth: usize, item: &mut DmapItem) -> Result<(), DmapError> {
    if depth > MAX_DEPTH {
        return Err(DmapError {
            offset: base,
            kind: DmapErrorKind::TooDeep,
        });
    }
    let mut pos = 0;
    while pos < data.len() {
        let at = base + pos;
        let truncated = DmapError {
            offset: at,
            kind: DmapErrorKind::Truncated,
        };
        let &[t0, t1, t2, t3, l0, l1, l2, l3] = data
            .get(pos..)
            .and_then(<[u8]>::first_chunk)
            .ok_or(truncated)?;
        let tag = [t0, t1, t2, t3];
        if !tag.iter().all(|b| b.is_ascii_graphic()) {
            return Err(DmapError {
                offset: at,
                kind: DmapErrorKind::BadTag,
            });
        }
        let mut len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        let start = pos + 8;
        if STRING_TAGS.contains(&&tag) {
            len = string_len(data, start, len);
        }
        let value = start
            .checked_add(len)
            .and_then(|end| data.get(start..end))
            .ok_or(truncated)?;
        if CONTAINERS.contains(&&tag) {
            walk(value, base + start, depth + 1, item)?;
        } else {
            field(&tag, value, item);
        }
        pos = start + len;
    }
    Ok(())
}

/// The text fields.
const STRING_TAGS: [&[u8; 4]; 5] = [b"minm", b"asar", b"asal", b"asgn", b"ascp"];

/// The length of a string element. pyatv (0.18) writes it as a count of characters, not
/// bytes, which mis-frames every non-ASCII title. When the declared length does not end
/// on an element boundary but the same number of UTF-8 characters does, the character
/// count is taken.
fn string_len(data: &[u8], start: usize, len: usize) -> usize {
    // An element boundary: the end of the data, or a whole element header whose value fits.
    let lands = |end: usize| {
        end == data.len()
            || matches!(data.get(end..), Some(&[t0, t1, t2, t3, l0, l1, l2, l3, ref value @ ..])
                if [t0, t1, t2, t3].iter().all(|b| b.is_ascii_alphabetic())
                    && u32::from_be_bytes([l0, l1, l2, l3]) as usize <= value.len())
    };
    if start.checked_add(len).is_none_or(lands) {
        return len;
    }
    let mut end = start;
    for _ in 0..len {
        let Some(&b) = data.get(end) else { return len };
        end += match b {
            0xf0.. => 4,
            0xe0.. => 3,
            0xc0.. => 2,
            _ => 1,
        };
    }
    if end <= data.len() && lands(end) {
        end - start
    } else {
        len
    }
}

/// Stores one leaf element if it is a field raopd uses.
fn field(tag: &[u8; 4], value: &[u8], item: &mut DmapItem) {
    match tag {
        b"minm" => item.title = text(value),
        b"asar" => item.artist = text(value),
        b"asal" => item.album = text(value),
        b"asgn" => item.genre = text(value),
        b"ascp" => item.composer = text(value),
        b"astm" => item.duration_ms = uint(value).and_then(|v| u32::try_from(v).ok()),
        b"astn" => item.track = uint(value).and_then(|v| u16::try_from(v).ok()),
        b"asdk" => item.data_kind = uint(value).and_then(|v| u8::try_from(v).ok()),
        b"caps" => item.play_status = uint(value).and_then(|v| u8::try_from(v).ok()),
        _ => log::trace!("DMAP: skipped {}", String::from_utf8_lossy(tag)),
    }
}

/// A string field. Senders send empty strings for fields they do not know: those are
/// `None`, so that "no composer" does not show up as an empty composer.
fn text(value: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(value);
    let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!s.is_empty()).then(|| s.to_string())
}

/// A big-endian unsigned integer of 1 to 8 bytes. Senders are not consistent about widths
/// (a track number in 2 or 4 bytes), so the value, not the width, decides whether it fits.
fn uint(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 8 {
        return None;
    }
    Some(value.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
}

/// Builds DMAP elements for tests of this module and its users.
#[cfg(test)]
pub(crate) fn element(tag: &[u8; 4], value: &[u8]) -> Vec<u8> {
    let mut v = tag.to_vec();
    v.extend_from_slice(&(value.len() as u32).to_be_bytes());
    v.extend_from_slice(value);
    v
}

/// The body iTunes-style senders send for one track, for tests.
#[cfg(test)]
pub(crate) fn track_body() -> Vec<u8> {
    track_body_with_title("Blåbær".as_bytes())
}

#[cfg(test)]
fn track_body_with_title(title: &[u8]) -> Vec<u8> {
    let mut inner = Vec::new();
    inner.extend(element(b"mikd", &[2]));
    inner.extend(element(b"minm", title));
    inner.extend(element(b"asar", b"Artist"));
    inner.extend(element(b"asal", b"Album"));
    inner.extend(element(b"asgn", b"Jazz"));
    inner.extend(element(b"ascp", b""));
    inner.extend(element(b"astm", &215_000u32.to_be_bytes()));
    inner.extend(element(b"astn", &7u16.to_be_bytes()));
    inner.extend(element(b"asdk", &[0]));
    inner.extend(element(b"caps", &[4]));
    inner.extend(element(b"mper", &[1, 2, 3, 4, 5, 6, 7, 8]));
    element(b"mlit", &inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_lengths_counted_in_characters_are_understood() {
        // As pyatv 0.18 writes them: the length of "Ørkestra" as 8 (characters), not 9.
        let mut inner = element(b"minm", b"Song");
        let mut artist = b"asar".to_vec();
        artist.extend_from_slice(&8u32.to_be_bytes());
        artist.extend_from_slice("Ørkestra".as_bytes());
        inner.extend_from_slice(&artist);
        inner.extend_from_slice(&element(b"asal", "Ålbum".as_bytes()));
        let item = parse(&element(b"mlit", &inner)).unwrap();
        assert_eq!(item.artist.as_deref(), Some("Ørkestra"));
        assert_eq!(item.album.as_deref(), Some("Ålbum"));
        assert_eq!(item.title.as_deref(), Some("Song"));
    }

    #[test]
    fn a_whole_track() {
        let item = parse(&track_body()).unwrap();
        assert_eq!(item.title.as_deref(), Some("Blåbær"));
        assert_eq!(item.artist.as_deref(), Some("Artist"));
        assert_eq!(item.album.as_deref(), Some("Album"));
        assert_eq!(item.genre.as_deref(), Some("Jazz"));
        assert_eq!(item.composer, None, "empty strings are absent");
        assert_eq!(item.duration_ms, Some(215_000));
        assert_eq!(item.track, Some(7));
        assert_eq!(item.data_kind, Some(0));
        assert_eq!(item.play_status, Some(4));
        assert!(item.has_track_fields());
    }

    #[test]
    fn empty_body_is_an_empty_item() {
        assert_eq!(parse(&[]), Ok(DmapItem::default()));
        assert!(!DmapItem::default().has_track_fields());
    }

    #[test]
    fn fields_without_a_container_and_nested_containers() {
        let flat = element(b"minm", b"Flat");
        assert_eq!(parse(&flat).unwrap().title.as_deref(), Some("Flat"));
        let nested = element(
            b"mlcl",
            &element(
                b"mlit",
                &[element(b"asar", b"Deep"), element(b"unkn", b"x")].concat(),
            ),
        );
        assert_eq!(parse(&nested).unwrap().artist.as_deref(), Some("Deep"));
    }

    #[test]
    fn unknown_tags_are_skipped_even_when_they_look_like_containers() {
        // An unknown tag whose value happens to hold a valid element must not be entered.
        let body = [
            element(b"zzzz", &element(b"minm", b"Hidden")),
            element(b"minm", b"Shown"),
        ]
        .concat();
        assert_eq!(parse(&body).unwrap().title.as_deref(), Some("Shown"));
    }

    #[test]
    fn later_fields_win_and_odd_widths_are_read_by_value() {
        let body = [
            element(b"minm", b"One"),
            element(b"minm", b"Two"),
            element(b"astn", &3u32.to_be_bytes()),
            element(b"astm", &[0x01, 0x00]),
        ]
        .concat();
        let item = parse(&body).unwrap();
        assert_eq!(item.title.as_deref(), Some("Two"));
        assert_eq!(item.track, Some(3));
        assert_eq!(item.duration_ms, Some(256));
        // Values that do not fit the field are dropped, not wrapped.
        let body = element(b"astn", &70_000u32.to_be_bytes());
        assert_eq!(parse(&body).unwrap().track, None);
        let body = element(b"astm", &[]);
        assert_eq!(parse(&body).unwrap().duration_ms, None);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let body = element(b"minm", &[b'a', 0xff, b'b']);
        assert_eq!(parse(&body).unwrap().title.as_deref(), Some("a\u{fffd}b"));
    }

    #[test]
    fn truncation_at_every_offset_is_an_error() {
        let body = track_body();
        for cut in 1..body.len() {
            let e = parse(&body[..cut]).unwrap_err();
            assert_eq!(e.kind, DmapErrorKind::Truncated, "cut at {cut}");
            assert!(e.offset < cut, "cut at {cut}: {e}");
        }
        // The same inside a container whose length is right but whose contents are cut:
        // a cut between two fields is a valid shorter item, any other cut is an error.
        // (ASCII text only: non-ASCII strings are framed leniently, see `string_len`.)
        let ascii = track_body_with_title(b"Blabaer");
        let inner = &ascii[8..];
        let mut boundaries = vec![0];
        while let Some(&last) = boundaries.last() {
            if last >= inner.len() {
                break;
            }
            let len = u32::from_be_bytes(inner[last + 4..last + 8].try_into().unwrap());
            boundaries.push(last + 8 + len as usize);
        }
        for cut in 1..inner.len() {
            let r = parse(&element(b"mlit", &inner[..cut]));
            assert_eq!(r.is_ok(), boundaries.contains(&cut), "inner cut at {cut}");
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(
            parse(b"\0\0\0\0\0\0\0\0").unwrap_err().kind,
            DmapErrorKind::BadTag
        );
        let huge = [b"minm".as_slice(), &[0xff, 0xff, 0xff, 0xff], b"abc"].concat();
        assert_eq!(parse(&huge).unwrap_err().kind, DmapErrorKind::Truncated);
        // A pseudo-random stream of bytes never panics.
        let mut x = 0x1234_5678u32;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x >> 24) as u8
                })
                .collect();
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut body = element(b"minm", b"Bottom");
        for _ in 0..MAX_DEPTH {
            body = element(b"mlit", &body);
        }
        assert_eq!(parse(&body).unwrap().title.as_deref(), Some("Bottom"));
        let deeper = element(b"mlit", &body);
        let e = parse(&deeper).unwrap_err();
        assert_eq!(e.kind, DmapErrorKind::TooDeep);
        assert_eq!(e.offset, 8 * (MAX_DEPTH + 1));
    }
}
