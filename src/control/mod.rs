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

pub use dacp::{DacpError, Remote, RemoteCommand};
pub use hooks::{HookConfig, Hooks};
pub use json::JsonWriter;
pub use now_playing::{Artwork, NowPlaying};
pub use socket::{client_main, client_request, ControlHandler, ControlSocket, DEFAULT_SOCKET};

use crate::player::StreamStats;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

/// The control settings from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// The control socket; `None` disables it.
    pub socket: Option<PathBuf>,
    pub hooks: HookConfig,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: Some(PathBuf::from(DEFAULT_SOCKET)),
            hooks: HookConfig::default(),
        }
    }
}

/// Usage lines for the flags [`ControlConfig::parse_flag`] takes.
pub const USAGE: &str = "\
  --control-socket PATH       local control socket (default /var/run/raopd.sock)
  --no-control-socket         do not open the control socket
  --on-start CMD              run CMD with /bin/sh when audio starts
  --on-stop CMD               run CMD when audio has been idle for --idle-timeout
  --idle-timeout SECONDS      idle time before --on-stop, 0 to 86400 (default 10)";

impl ControlConfig {
    /// Takes one command-line flag if it is one of [`USAGE`]'s; `value` fetches the flag's
    /// argument (with the flag's name for the error message). `Ok(false)`: not ours.
    pub fn parse_flag(
        &mut self,
        flag: &str,
        value: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<bool, String> {
        match flag {
            "--control-socket" => {
                let p = value(flag)?;
                if p.is_empty() {
                    return Err(crate::config::invalid(flag, &p, "a path"));
                }
                self.socket = Some(PathBuf::from(p));
            }
            "--no-control-socket" => self.socket = None,
            "--on-start" => self.hooks.on_start = Some(value(flag)?).filter(|c| !c.is_empty()),
            "--on-stop" => self.hooks.on_stop = Some(value(flag)?).filter(|c| !c.is_empty()),
            "--idle-timeout" => {
                let v = value(flag)?;
                let s = crate::config::number(flag, &v, 0, 86_400, "seconds")?;
                self.hooks.idle = Duration::from_secs(s as u64);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
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

    #[test]
    fn flags() {
        let mut c = ControlConfig::default();
        assert_eq!(
            c.socket.as_deref(),
            Some(std::path::Path::new(DEFAULT_SOCKET))
        );
        assert_eq!(c.hooks.idle, hooks::DEFAULT_IDLE);
        let mut args = vec!["run/x.sock", "amp on", "amp off", "30"].into_iter();
        let mut value = |name: &str| -> Result<String, String> {
            args.next()
                .map(String::from)
                .ok_or(format!("{name} needs a value"))
        };
        assert_eq!(c.parse_flag("--control-socket", &mut value), Ok(true));
        assert_eq!(c.parse_flag("--on-start", &mut value), Ok(true));
        assert_eq!(c.parse_flag("--on-stop", &mut value), Ok(true));
        assert_eq!(c.parse_flag("--idle-timeout", &mut value), Ok(true));
        assert_eq!(c.parse_flag("--port", &mut value), Ok(false));
        assert!(c.parse_flag("--on-stop", &mut value).is_err());
        assert_eq!(
            c.socket.as_deref(),
            Some(std::path::Path::new("run/x.sock"))
        );
        assert_eq!(c.hooks.on_start.as_deref(), Some("amp on"));
        assert_eq!(c.hooks.on_stop.as_deref(), Some("amp off"));
        assert_eq!(c.hooks.idle, Duration::from_secs(30));
        assert_eq!(c.parse_flag("--no-control-socket", &mut value), Ok(true));
        assert_eq!(c.socket, None);
        let mut bad = |_: &str| -> Result<String, String> { Ok("x".into()) };
        assert!(c.parse_flag("--idle-timeout", &mut bad).is_err());
    }
}
