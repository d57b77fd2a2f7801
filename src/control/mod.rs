//! Everything around playback that is not audio: what is playing ([`now_playing`], from the
//! sender's DMAP metadata, artwork and progress), remote control of the sender ([`dacp`]),
//! a local control socket for scripts and the command line ([`socket`]), and shell hooks
//! when audio starts and stops ([`hooks`]).
//!
//! The pieces follow the daemon's pattern: parsers and state machines are sans-IO and
//! unit-tested; the socket, the HTTP client and the hook processes are thin edges that run
//! on the single reactor thread without threads of their own.

pub mod dacp;
pub mod dmap;
pub mod hooks;
pub mod json;
pub mod now_playing;
pub mod socket;

pub use crate::config::ctl::{ControlConfig, USAGE};
pub use dacp::{DacpError, Remote, RemoteCommand};
pub use hooks::{HookConfig, Hooks};
pub use json::JsonWriter;
pub use now_playing::{Artwork, NowPlaying};
pub use socket::{client_main, client_request, ControlHandler, ControlSocket, DEFAULT_SOCKET};

use crate::stream::StreamStats;
use std::net::IpAddr;
use std::time::Instant;

/// The daemon state the `status` reply shows.
#[derive(Debug, Clone, Copy)]
pub struct Status<'a> {
    /// The speaker name.
    pub name: &'a str,
    /// RTSP port.
    pub port: u16,
    pub version: &'a str,
    /// A stream is set up and receiving.
    pub playing: bool,
    /// The sender holding the speaker.
    pub sender: Option<IpAddr>,
    /// AirPlay volume in dB (-30..0, -144 = mute).
    pub volume_db: f32,
    /// The sender can be remote-controlled (it sent `DACP-ID` and `Active-Remote`).
    pub remote_control: bool,
    pub now_playing: &'a NowPlaying,
    /// The current stream's statistics; `None` without a stream.
    pub stats: Option<&'a StreamStats>,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
}

/// The `status` reply: one JSON object, e.g.
/// `{"name":"Kitchen","port":5000,"version":"0.1.0","state":"playing","sender":"192.168.1.5",
/// "volume_db":-12.5,"remote_control":true,"uptime_s":3600,"now_playing":{…},"stats":{…}}`.
pub fn status_json(s: &Status<'_>, now: Instant) -> String {
    let mut w = JsonWriter::new();
    w.begin_object();
    w.key("name").string(s.name);
    w.key("port").u64(u64::from(s.port));
    w.key("version").string(s.version);
    w.key("state")
        .string(if s.playing { "playing" } else { "idle" });
    w.key("sender")
        .opt_string(s.sender.map(|ip| ip.to_string()).as_deref());
    w.key("volume_db").f64(f64::from(s.volume_db), 2);
    w.key("remote_control").bool(s.remote_control);
    w.key("uptime_s").u64(s.uptime_s);
    w.key("now_playing");
    s.now_playing.write_json(&mut w, now, s.playing);
    w.key("stats");
    match s.stats {
        Some(st) => write_stats(&mut w, st),
        None => {
            w.null();
        }
    }
    w.end_object();
    w.finish()
}

fn write_stats(w: &mut JsonWriter, st: &StreamStats) {
    let b = &st.buffer;
    let r = &st.render;
    w.begin_object();
    w.key("buffer").begin_object();
    for (k, v) in [
        ("received", b.received),
        ("duplicates", b.duplicates),
        ("late", b.late),
        ("lost", b.lost),
        ("resend_requests", b.resend_requests),
        ("requested", b.requested),
        ("recovered", b.recovered),
        ("resyncs", b.resyncs),
        ("flushed", b.flushed),
    ] {
        w.key(k).u64(v);
    }
    w.end_object();
    w.key("render").begin_object();
    w.key("frames_written").u64(r.frames_written);
    w.key("silence_frames").u64(r.silence_frames);
    w.key("skipped_frames").u64(r.skipped_frames);
    w.key("late_restarts").u64(r.late_restarts);
    w.key("late_delay_ms").u64(r.late_delay_ms);
    w.key("start_error_us").i64(r.start_error_us);
    w.key("sync_error_us").i64(r.sync_error_us);
    w.key("max_sync_error_us").i64(r.max_sync_error_us);
    w.key("frames_inserted").u64(r.frames_inserted);
    w.key("frames_dropped").u64(r.frames_dropped);
    w.key("resyncs").u64(r.resyncs);
    w.end_object();
    w.key("clock");
    match &st.clock {
        Some(c) => {
            w.begin_object();
            w.key("offset_ns");
            match c.offset_ns {
                Some(o) => w.i64(o),
                None => w.null(),
            };
            w.key("rtt_ns").opt_u64(c.rtt_ns);
            w.key("drift_ppm").f64(c.drift_ppm, 2);
            w.key("samples").u64(c.samples as u64);
            w.key("anchored").bool(c.anchored);
            w.key("latency_frames").u64(u64::from(c.latency_frames));
            w.key("sync_outliers").u64(c.sync_outliers);
            w.key("reanchors").u64(c.reanchors);
            w.end_object();
        }
        None => {
            w.null();
        }
    }
    for (k, v) in [
        ("garbage_packets", st.garbage_packets),
        ("foreign_packets", st.foreign_packets),
        ("decode_errors", st.decode_errors),
        ("underruns", st.underruns),
    ] {
        w.key(k).u64(v);
    }
    w.end_object();
}

#[cfg(test)]
mod tests {
    use super::json::check::valid;
    use super::*;
    use crate::clock::ClockStats;

    #[test]
    fn status_object() {
        let mut np = NowPlaying::new();
        np.title = Some("Song \"1\"".into());
        let idle = Status {
            name: "Kitchen",
            port: 5000,
            version: "0.1.0",
            playing: false,
            sender: None,
            volume_db: -144.0,
            remote_control: false,
            now_playing: &np,
            stats: None,
            uptime_s: 42,
        };
        let s = status_json(&idle, Instant::now());
        assert!(valid(&s), "{s}");
        assert!(s.starts_with(
            r#"{"name":"Kitchen","port":5000,"version":"0.1.0","state":"idle","sender":null,"volume_db":-144,"remote_control":false,"uptime_s":42,"now_playing":{"title":"Song \"1\"","#
        ));
        assert!(s.ends_with(r#""stats":null}"#), "{s}");

        let mut stats = StreamStats::default();
        stats.buffer.lost = 3;
        stats.clock = Some(ClockStats {
            offset_ns: Some(-5),
            rtt_ns: None,
            drift_ppm: 1.234,
            samples: 4,
            anchored: true,
            latency_frames: 99_225,
            sync_outliers: 0,
            reanchors: 0,
        });
        let playing = Status {
            playing: true,
            sender: Some("192.168.1.5".parse().unwrap()),
            volume_db: -12.5,
            remote_control: true,
            stats: Some(&stats),
            ..idle
        };
        let s = status_json(&playing, Instant::now());
        assert!(valid(&s), "{s}");
        for part in [
            r#""state":"playing","sender":"192.168.1.5","volume_db":-12.5"#,
            r#""lost":3"#,
            r#""clock":{"offset_ns":-5,"rtt_ns":null,"drift_ppm":1.23,"samples":4,"anchored":true,"latency_frames":99225,"sync_outliers":0,"reanchors":0}"#,
            r#""underruns":0}}"#,
        ] {
            assert!(s.contains(part), "{part} in {s}");
        }
    }
}
