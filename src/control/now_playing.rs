//! What the sender says is playing: track metadata, cover art and progress, collected from
//! `SET_PARAMETER` requests and shown on the control socket.
//!
//! The requests come off the network: no panic on input (issue 11).
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

use super::dmap::{self, DmapError};
use super::json::JsonWriter;
use std::time::{Duration, Instant};

/// Cover art larger than this is dropped. Senders scale artwork to a few hundred KiB at
/// most; anything bigger is a full-resolution scan that a router should not keep in RAM.
pub const MAX_ARTWORK_BYTES: usize = 512 * 1024;

/// RTP timestamps in `progress` count frames at this rate.
const RTP_RATE: f64 = crate::RATE as f64;

/// One cover image, as the sender sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artwork {
    /// `image/jpeg` or `image/png`.
    pub content_type: String,
    /// Size in bytes (the same as `data.len()`; kept for status output).
    pub len: usize,
    pub data: Vec<u8>,
}

/// The track the sender is playing, as far as it told us.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NowPlaying {
    pub title: Option<String>,
    pub artist: Option<String>,
    pub album: Option<String>,
    pub genre: Option<String>,
    pub composer: Option<String>,
    pub track: Option<u16>,
    pub duration_ms: Option<u32>,
    pub artwork: Option<Artwork>,
    /// RTP timestamps of the track's start, the current position and the end.
    pub progress: Option<(u32, u32, u32)>,
    /// When `progress` was set, so that the position can be advanced while playing.
    pub progress_at: Option<Instant>,
    /// DACP play status from `caps` (2 = stopped, 3 = paused, 4 = playing).
    pub play_status: Option<u8>,
}

impl NowPlaying {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a DMAP body. A body describing a track replaces all track fields (senders
    /// send the complete set for each new track, so a field missing now belonged to the
    /// previous track); a body with only a play status updates just that. Artwork and
    /// progress arrive in requests of their own and are kept. Returns whether anything
    /// changed; malformed bodies change nothing.
    pub fn apply_dmap(&mut self, body: &[u8]) -> Result<bool, DmapError> {
        let item = dmap::parse(body)?;
        let before = self.clone();
        let track = item.has_track_fields();
        if track {
            self.title = item.title;
            self.artist = item.artist;
            self.album = item.album;
            self.genre = item.genre;
            self.composer = item.composer;
            self.track = item.track;
            self.duration_ms = item.duration_ms;
        }
        if item.play_status.is_some() {
            self.play_status = item.play_status;
        }
        let changed = *self != before;
        if changed && track {
            log::info!("now playing: {}", self.summary());
        }
        Ok(changed)
    }

    /// `Artist – Title (Album)`, leaving out what is unknown.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if let Some(a) = &self.artist {
            s.push_str(a);
            s.push_str(" – ");
        }
        s.push_str(self.title.as_deref().unwrap_or("(untitled)"));
        if let Some(a) = &self.album {
            s.push_str(" (");
            s.push_str(a);
            s.push(')');
        }
        s
    }

    /// Stores cover art. An empty body or `image/none` clears it (senders send that for
    /// tracks without art); art over [`MAX_ARTWORK_BYTES`] is dropped and clears the old
    /// art, which belongs to the previous track.
    pub fn set_artwork(&mut self, content_type: &str, data: &[u8]) {
        let content_type = content_type.trim();
        if data.is_empty() || content_type.eq_ignore_ascii_case("image/none") {
            if self.artwork.take().is_some() {
                log::info!("artwork cleared");
            }
            return;
        }
        if data.len() > MAX_ARTWORK_BYTES {
            log::info!(
                "artwork dropped: {} bytes is over the {} KiB limit",
                data.len(),
                MAX_ARTWORK_BYTES / 1024
            );
            self.artwork = None;
            return;
        }
        log::info!("artwork: {content_type}, {} bytes", data.len());
        self.artwork = Some(Artwork {
            content_type: content_type.to_string(),
            len: data.len(),
            data: data.to_vec(),
        });
    }

    /// Stores `progress: start/current/end` as received now.
    pub fn set_progress(&mut self, start: u32, current: u32, end: u32) {
        self.set_progress_at(start, current, end, Instant::now());
    }

    /// [`set_progress`](Self::set_progress) with the receive time given (for tests).
    pub fn set_progress_at(&mut self, start: u32, current: u32, end: u32, now: Instant) {
        log::debug!("progress: {start}/{current}/{end}");
        self.progress = Some((start, current, end));
        self.progress_at = Some(now);
    }

    /// Forgets everything: the sender went away.
    pub fn clear(&mut self) {
        if self.title.is_some() || self.artist.is_some() || self.artwork.is_some() {
            log::info!("now playing cleared");
        }
        *self = Self::default();
    }

    /// The position in seconds when `progress` was received. RTP timestamps wrap around
    /// at 2^32, so differences are taken modulo 2^32.
    pub fn position_s(&self) -> Option<f64> {
        let (start, current, _) = self.progress?;
        Some(f64::from(current.wrapping_sub(start)) / RTP_RATE)
    }

    /// The track length in seconds: from `progress` if the sender sent one, else from
    /// the DMAP `astm` field.
    pub fn duration_s(&self) -> Option<f64> {
        match self.progress {
            Some((start, _, end)) => Some(f64::from(end.wrapping_sub(start)) / RTP_RATE),
            None => self.duration_ms.map(|ms| f64::from(ms) / 1000.0),
        }
    }

    /// The position at `now`: the last `progress` advanced by the time since, if audio is
    /// `playing`, and never past the end of the track.
    pub fn position_at(&self, now: Instant, playing: bool) -> Option<f64> {
        let pos = self.position_s()?;
        let elapsed = match (playing, self.progress_at) {
            (true, Some(at)) => now.saturating_duration_since(at),
            _ => Duration::ZERO,
        };
        let pos = pos + elapsed.as_secs_f64();
        Some(match self.duration_s() {
            Some(d) => pos.min(d),
            None => pos,
        })
    }

    /// The play status as a word, if the sender reported one.
    pub fn play_status_name(&self) -> Option<&'static str> {
        self.play_status.map(|s| match s {
            2 => "stopped",
            3 => "paused",
            4 => "playing",
            _ => "unknown",
        })
    }

    /// Writes the `now_playing` object of the status reply. The artwork itself is not
    /// included (a status line is meant to be small), only its type and size.
    pub fn write_json(&self, w: &mut JsonWriter, now: Instant, playing: bool) {
        w.begin_object();
        w.key("title").opt_string(self.title.as_deref());
        w.key("artist").opt_string(self.artist.as_deref());
        w.key("album").opt_string(self.album.as_deref());
        w.key("genre").opt_string(self.genre.as_deref());
        w.key("composer").opt_string(self.composer.as_deref());
        w.key("track").opt_u64(self.track.map(u64::from));
        w.key("play_status").opt_string(self.play_status_name());
        w.key("position_s");
        match self.position_at(now, playing) {
            Some(p) => w.f64(p, 1),
            None => w.null(),
        };
        w.key("duration_s");
        match self.duration_s() {
            Some(d) => w.f64(d, 1),
            None => w.null(),
        };
        w.key("artwork");
        match &self.artwork {
            Some(a) => w
                .begin_object()
                .key("content_type")
                .string(&a.content_type)
                .key("bytes")
                .u64(a.len as u64)
                .end_object(),
            None => w.null(),
        };
        w.end_object();
    }
}

#[cfg(test)]
mod tests {
    use super::super::dmap::{element, track_body};
    use super::super::json::check::valid;
    use super::*;

    #[test]
    fn dmap_fills_and_replaces_track_fields() {
        let mut np = NowPlaying::new();
        assert_eq!(np.apply_dmap(&track_body()), Ok(true));
        assert_eq!(np.title.as_deref(), Some("Blåbær"));
        assert_eq!(np.track, Some(7));
        assert_eq!(np.duration_ms, Some(215_000));
        assert_eq!(np.play_status_name(), Some("playing"));
        assert_eq!(np.summary(), "Artist – Blåbær (Album)");
        assert_eq!(np.apply_dmap(&track_body()), Ok(false), "same track again");

        // A status-only body keeps the track.
        assert_eq!(np.apply_dmap(&element(b"caps", &[3])), Ok(true));
        assert_eq!(np.title.as_deref(), Some("Blåbær"));
        assert_eq!(np.play_status_name(), Some("paused"));

        // A new track replaces every track field, also those it leaves out.
        let next = element(b"mlit", &element(b"minm", b"Next"));
        assert_eq!(np.apply_dmap(&next), Ok(true));
        assert_eq!(np.title.as_deref(), Some("Next"));
        assert_eq!(np.artist, None);
        assert_eq!(np.track, None);
        assert_eq!(np.summary(), "Next");

        // Garbage changes nothing.
        let before = np.clone();
        assert!(np.apply_dmap(b"mlit\0\0\0\x09abc").is_err());
        assert_eq!(np, before);
    }

    #[test]
    fn artwork_cap_and_clearing() {
        let mut np = NowPlaying::new();
        np.set_artwork("image/jpeg", &[1, 2, 3]);
        let a = np.artwork.clone().unwrap();
        assert_eq!(
            (a.content_type.as_str(), a.len, a.data),
            ("image/jpeg", 3, vec![1, 2, 3])
        );
        np.set_artwork("image/none", &[]);
        assert_eq!(np.artwork, None);
        np.set_artwork("image/png", &vec![0; MAX_ARTWORK_BYTES]);
        assert_eq!(np.artwork.as_ref().map(|a| a.len), Some(MAX_ARTWORK_BYTES));
        np.set_artwork("image/png", &vec![0; MAX_ARTWORK_BYTES + 1]);
        assert_eq!(
            np.artwork, None,
            "too big: dropped, and the old art is gone"
        );
        np.set_artwork("image/jpeg", &[1]);
        np.set_artwork("image/jpeg", &[]);
        assert_eq!(np.artwork, None);
    }

    #[test]
    fn progress_gives_position_and_duration() {
        let t0 = Instant::now();
        let mut np = NowPlaying::new();
        assert_eq!(np.position_s(), None);
        np.duration_ms = Some(90_500);
        assert_eq!(np.duration_s(), Some(90.5));
        np.set_progress_at(1000, 1000 + 44100 * 10, 1000 + 44100 * 60, t0);
        assert_eq!(np.position_s(), Some(10.0));
        assert_eq!(np.duration_s(), Some(60.0));
        let later = t0 + Duration::from_secs(5);
        assert_eq!(np.position_at(later, true), Some(15.0));
        assert_eq!(np.position_at(later, false), Some(10.0));
        assert_eq!(
            np.position_at(t0 + Duration::from_secs(500), true),
            Some(60.0)
        );
        // Across the 2^32 wrap of RTP timestamps.
        let start = u32::MAX - 44100;
        np.set_progress_at(
            start,
            start.wrapping_add(88200),
            start.wrapping_add(441000),
            t0,
        );
        assert_eq!(np.position_s(), Some(2.0));
        assert_eq!(np.duration_s(), Some(10.0));
    }

    #[test]
    fn json_and_clear() {
        let t0 = Instant::now();
        let mut np = NowPlaying::new();
        np.apply_dmap(&track_body()).unwrap();
        np.set_artwork("image/png", &[0; 10]);
        np.set_progress_at(0, 44100, 441000, t0);
        let mut w = JsonWriter::new();
        np.write_json(&mut w, t0, true);
        let s = w.finish();
        assert!(valid(&s), "{s}");
        assert_eq!(
            s,
            r#"{"title":"Blåbær","artist":"Artist","album":"Album","genre":"Jazz","composer":null,"track":7,"play_status":"playing","position_s":1,"duration_s":10,"artwork":{"content_type":"image/png","bytes":10}}"#
        );
        np.clear();
        assert_eq!(np, NowPlaying::default());
        let mut w = JsonWriter::new();
        np.write_json(&mut w, t0, false);
        assert!(valid(&w.finish()));
    }
}
