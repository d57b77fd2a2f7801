//! Audio output: a small [`Sink`] trait with interchangeable backends, a software
//! [`volume::Mixer`], and [`wait::Waiter`], the glue that lets the player wait for a sink on the
//! single smol reactor thread.
//!
//! Every backend takes the same format: interleaved signed 16-bit stereo at [`RATE`] Hz, as
//! native-endian `i16` slices whose length is `CHANNELS * frames`. Keeping one format end to end
//! means no conversion step sits between the decoder and the device on a slow router CPU.
//!
//! Backends are non-blocking by contract: `write` takes what fits now and says how much, so the
//! one reactor thread never stalls on audio and can keep serving RTSP, RTP and timing packets.

#[cfg(feature = "alsa")]
pub mod alsa;
pub mod soft;
pub mod volume;
pub mod wait;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

pub use soft::SoftSink;
pub use volume::{Mixer, SoftMixer};
pub use wait::Waiter;

pub use crate::RATE;
/// Interleaved channels per frame.
pub const CHANNELS: usize = 2;
/// ALSA period raopd asks for, in frames (23 ms): long enough that a 400 MHz router is not
/// woken too often, short enough that refills stay small.
pub const PERIOD_FRAMES: usize = 1024;
/// ALSA periods per buffer raopd asks for: 12288 frames (279 ms), room for the 200 ms the
/// renderer keeps queued (a cushion for the moments when the one reactor thread is busy with
/// something slow: an RSA operation during a new connection) with a wakeup only every 100 ms.
/// The virtual DAC ([`soft::SOFT_CAPACITY`]) is the same size.
pub const PERIODS: usize = 12;

/// Largest rate error `sim:` accepts. Real crystals are off by tens to a few hundred ppm; a much
/// larger value is far more likely a typo than a test scenario, and it keeps the rate positive.
pub const MAX_SIM_PPM: f64 = 100_000.0;

/// How much a sink can take and how much it still holds, in frames.
///
/// The player needs both at once: `avail` to size the next write, `delay` to know when the next
/// frame written will be heard (its sync math is `now + delay / RATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkStatus {
    /// Frames that can be written right now without blocking.
    pub avail: usize,
    /// Frames written but not yet heard.
    pub delay: usize,
}

/// An audio output device.
///
/// Every method takes `&mut self` or returns `io::Result` so backends can keep counters and
/// recover from device errors without panicking; none of them blocks the calling thread.
pub trait Sink {
    /// Human-readable name for logs, e.g. `alsa:hw:0` or `pipe:out.raw`.
    fn describe(&self) -> String;
    /// Opens or prepares the device for a new stream. May be called again after [`Sink::stop`].
    fn start(&mut self) -> io::Result<()>;
    /// Drops queued audio and releases (or pauses) the device. Idempotent.
    fn stop(&mut self);
    /// Current headroom and queue depth. Recovers from underruns internally, counting them, so
    /// the caller only ever sees a usable device or a real error. `now` is the caller's clock
    /// reading, which timer-paced backends use instead of reading the clock themselves.
    fn status(&mut self, now: Instant) -> io::Result<SinkStatus>;
    /// When the last [`Sink::status`] reading holds, given the `now` it was called with.
    /// Timer-paced backends compute the reading at `now` (the default). A real device
    /// computes it when it is asked, after `now`: it answers with the clock read after the
    /// call, so its readings are never dated before the device computed them and their
    /// error is one-sided (the renderer takes the smallest of a window of them).
    fn status_time(&self, now: Instant) -> Instant {
        now
    }
    /// Writes as many whole frames of `frames` as fit without blocking and returns how many
    /// frames were taken (possibly 0). `frames.len()` must be a multiple of [`CHANNELS`].
    fn write(&mut self, now: Instant, frames: &[i16]) -> io::Result<usize>;
    /// After [`Sink::start`]: the descriptors to wait on before writing, each with its own
    /// `events`. Empty means the sink has nothing to wait on and the caller paces by timer.
    fn poll_fds(&mut self) -> Vec<libc::pollfd>;
    /// After a wakeup, with `revents` of the descriptors from [`Sink::poll_fds`] filled in:
    /// whether the sink can take frames now. Plugin devices translate their descriptors' raw
    /// events, so raw readiness alone is not enough to decide.
    fn ready(&mut self, fds: &mut [libc::pollfd]) -> io::Result<bool>;
    /// After [`Sink::start`]: asks the poll descriptors to signal only once at least `frames`
    /// frames can be written (ALSA's `avail_min`; clamped to the buffer). A caller that keeps
    /// the device filled to a level sets it so that a wakeup means room for a useful write:
    /// with the default of one period, a device filled to within a period of full signals
    /// writable all the time and the caller's loop spins. The default does nothing (sinks
    /// without descriptors).
    fn set_wakeup(&mut self, frames: usize) -> io::Result<()> {
        let _ = frames;
        Ok(())
    }
    /// Underruns seen since the sink was created.
    fn underruns(&self) -> u64;
    /// Device buffer size in frames.
    fn capacity(&self) -> usize;
    /// Whether the device's position moves in steps that a reading can fall between (a
    /// sound card: `snd-aloop` by kernel ticks, USB by transfers), so that one reading is
    /// late by anything up to a step and the readings' instants must not keep one phase
    /// against the steps. Timer-paced backends compute an exact position (the default).
    fn position_steps(&self) -> bool {
        false
    }
}

/// Which output to use, as given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputSpec {
    /// An ALSA PCM name (`default`, `hw:0`, `plughw:1,0`, ...).
    Alsa(String),
    /// Raw S16LE stereo to a file or an existing FIFO.
    Pipe(PathBuf),
    /// Raw S16LE stereo to standard output.
    Stdout,
    /// Like `Pipe`, with a virtual DAC whose clock is off by `ppm` parts per million, plus a
    /// timing log at `path + ".timing"` (see [`soft`]). For testing clock-drift handling.
    Sim { path: PathBuf, ppm: f64 },
}

const SPEC_HELP: &str = "expected alsa[:PCM], pipe:PATH, stdout or sim:PATH[:+Nppm|:-Nppm]";

impl FromStr for OutputSpec {
    type Err = String;

    /// Parses `alsa` / `alsa:PCM`, `pipe:PATH`, `stdout`, `sim:PATH` and `sim:PATH:±Nppm`.
    ///
    /// For `sim` the rate error is taken from the last `:`-separated field only when it ends in
    /// `ppm`, so paths containing `:` still work.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, rest) = match s.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (s, None),
        };
        match (kind, rest) {
            ("alsa", None) => Ok(OutputSpec::Alsa("default".to_string())),
            ("alsa", Some("")) => Err(format!("output {s:?}: empty ALSA device name")),
            ("alsa", Some(dev)) => Ok(OutputSpec::Alsa(dev.to_string())),
            ("stdout", None) => Ok(OutputSpec::Stdout),
            ("stdout", Some(_)) => Err(format!("output {s:?}: stdout takes no argument")),
            ("pipe", None) | ("pipe", Some("")) => {
                Err(format!("output {s:?}: pipe needs a path (pipe:PATH)"))
            }
            ("pipe", Some(path)) => Ok(OutputSpec::Pipe(PathBuf::from(path))),
            ("sim", None) | ("sim", Some("")) => {
                Err(format!("output {s:?}: sim needs a path (sim:PATH[:+Nppm])"))
            }
            ("sim", Some(rest)) => parse_sim(s, rest),
            _ => Err(format!("unknown output {s:?}: {SPEC_HELP}")),
        }
    }
}

fn parse_sim(whole: &str, rest: &str) -> Result<OutputSpec, String> {
    let (path, ppm) = match rest.rsplit_once(':') {
        Some((path, last)) if last.ends_with("ppm") => (path, parse_ppm(whole, last)?),
        _ => (rest, 0.0),
    };
    if path.is_empty() {
        return Err(format!(
            "output {whole:?}: sim needs a path (sim:PATH[:+Nppm])"
        ));
    }
    Ok(OutputSpec::Sim {
        path: PathBuf::from(path),
        ppm,
    })
}

fn parse_ppm(whole: &str, field: &str) -> Result<f64, String> {
    let num = field.strip_suffix("ppm").unwrap_or(field);
    let num = num.strip_prefix('+').unwrap_or(num);
    let ppm: f64 = num.parse().map_err(|_| {
        format!("output {whole:?}: bad rate error {field:?} (expected e.g. +150ppm or -200ppm)")
    })?;
    if !ppm.is_finite() || ppm.abs() > MAX_SIM_PPM {
        return Err(format!(
            "output {whole:?}: rate error {field:?} out of range (at most ±{MAX_SIM_PPM}ppm)"
        ));
    }
    Ok(ppm)
}

impl fmt::Display for OutputSpec {
    /// The same syntax `from_str` accepts, so a spec can be logged and pasted back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputSpec::Alsa(dev) => write!(f, "alsa:{dev}"),
            OutputSpec::Pipe(path) => write!(f, "pipe:{}", path.display()),
            OutputSpec::Stdout => f.write_str("stdout"),
            OutputSpec::Sim { path, ppm } => write!(f, "sim:{}:{ppm:+}ppm", path.display()),
        }
    }
}

/// Creates the sink for `spec`. Files and FIFOs are opened here so a bad path fails at startup;
/// an ALSA device is only opened by [`Sink::start`], so a device that is busy now (another
/// program playing) does not stop the daemon from starting.
pub fn open(spec: &OutputSpec) -> io::Result<Box<dyn Sink>> {
    match spec {
        OutputSpec::Alsa(dev) => open_alsa(dev),
        OutputSpec::Pipe(path) => Ok(Box::new(SoftSink::pipe(path)?)),
        OutputSpec::Stdout => Ok(Box::new(SoftSink::stdout()?)),
        OutputSpec::Sim { path, ppm } => Ok(Box::new(SoftSink::sim(path, *ppm)?)),
    }
}

/// Why an output cannot be used now: [`probe`]'s verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeError {
    /// The device exists but another program holds it (`EBUSY`). Not fatal: it is opened
    /// again when a sender plays.
    pub busy: bool,
    /// What is wrong, naming the output, e.g. `output alsa:x: no such ALSA device`. Short
    /// enough for an RTSP reason phrase.
    pub cause: String,
    /// What to try, e.g. which command lists the devices.
    pub hint: String,
}

impl ProbeError {
    fn new(busy: bool, cause: String, hint: &str) -> Self {
        ProbeError {
            busy,
            cause,
            hint: hint.to_string(),
        }
    }
}

impl fmt::Display for ProbeError {
    /// One line: the cause, then the hint.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.cause, self.hint)
    }
}

/// strerror's text for `errno`, without std's ` (os error N)` tail.
#[cfg_attr(not(feature = "alsa"), allow(dead_code))]
fn errno_text(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Opens and closes the output once, the way a stream will, so that a wrong device is
/// reported when the daemon starts instead of when someone presses play. Files, FIFOs and
/// stdout were opened by [`open`] already; for them this checks nothing more.
///
/// An ALSA device is opened with the stream's parameters (S16, 2 channels, 44100 Hz,
/// interleaved), given one buffer and one period of silence (at most `PROBE_FRAMES`, about
/// 300 ms, as much as it takes without waiting) and closed again at once, so that other
/// programs can use it until a sender plays (the design of [`alsa`]). The silence catches
/// PCMs that open fine but fail when played: alsa-lib 1.2.8's `file` plugin reports a file
/// it cannot create only when its first buffer is written out.
pub fn probe(spec: &OutputSpec) -> Result<(), ProbeError> {
    match spec {
        OutputSpec::Alsa(dev) => probe_alsa(dev),
        _ => Ok(()),
    }
}

/// Most silence [`probe`] writes to an ALSA device, in frames: the buffer raopd asks for
/// plus one period (13,312 frames, 302 ms).
#[cfg(feature = "alsa")]
pub const PROBE_FRAMES: usize = (PERIODS + 1) * PERIOD_FRAMES;

#[cfg(feature = "alsa")]
fn probe_alsa(dev: &str) -> Result<(), ProbeError> {
    let mut sink = alsa::AlsaSink::new(dev)
        .map_err(|e| ProbeError::new(false, format!("output alsa:{dev}: {e}"), LIST_HINT))?;
    let result = sink.start().and_then(|()| probe_write(&mut sink));
    sink.stop();
    let Err(e) = result else {
        return Ok(());
    };
    Err(alsa_verdict(dev, &e, alsa_failure(&e)))
}

/// Writes up to [`PROBE_FRAMES`] of silence, as much as `sink` takes without waiting.
#[cfg(feature = "alsa")]
fn probe_write(sink: &mut dyn Sink) -> io::Result<()> {
    let silence = [0i16; PERIOD_FRAMES * CHANNELS];
    let mut left = PROBE_FRAMES;
    // Bounded: a device that takes nothing (or keeps taking a little) ends it too.
    for _ in 0..32 {
        let st = sink.status(Instant::now())?;
        let n = left.min(st.avail).min(PERIOD_FRAMES);
        if n == 0 {
            break;
        }
        let w = sink.write(Instant::now(), &silence[..n * CHANNELS])?;
        if w == 0 {
            break;
        }
        left -= w.min(left);
    }
    Ok(())
}

#[cfg(feature = "alsa")]
fn alsa_failure(e: &io::Error) -> Option<alsa::AlsaFailure> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<alsa::AlsaFailure>())
        .copied()
}

/// What to tell senders about an output that failed under a stream with `e` (the sink's
/// error): the same shape as [`probe`]'s verdict, e.g. `output alsa:usb: playing failed
/// (No such device)`.
pub fn failure(spec: &OutputSpec, e: &io::Error) -> ProbeError {
    match spec {
        #[cfg(feature = "alsa")]
        OutputSpec::Alsa(dev) => alsa_verdict(dev, e, alsa_failure(e)),
        _ => ProbeError::new(
            false,
            format!("output {spec}: {e}"),
            "check where the output goes (a full disk, a removed file system)",
        ),
    }
}

#[cfg_attr(not(feature = "alsa"), allow(dead_code))]
const LIST_HINT: &str = "`aplay -L` lists the ALSA device names, `aplay -l` the cards";

/// The verdict for a failed ALSA open, with the hint that fits the failure.
#[cfg(feature = "alsa")]
fn alsa_verdict(dev: &str, e: &io::Error, failure: Option<alsa::AlsaFailure>) -> ProbeError {
    let Some(f) = failure else {
        return ProbeError::new(false, format!("output alsa:{dev}: {e}"), LIST_HINT);
    };
    let cause = errno_text(f.errno);
    if f.is_format() {
        // hw: devices take only what the hardware does (many USB DACs: 48 kHz only, or
        // 24/32-bit only); plughw: (or plug: in front of any PCM) converts on the way.
        let plug = match dev.strip_prefix("hw:") {
            Some(rest) => format!("alsa:plughw:{rest}"),
            None => format!("alsa:plug:{dev}"),
        };
        return ProbeError::new(
            false,
            format!(
                "output alsa:{dev}: the device cannot play 16-bit stereo at 44100 Hz ({}: {cause})",
                f.what
            ),
            &format!("use {plug}, which converts, or alsa:default"),
        );
    }
    if matches!(f.what, "write" | "status" | "recover") {
        // Opened and configured, then failed when played: a USB DAC unplugged (ENODEV), a
        // `file` PCM whose file or pipe cannot be written (EIO).
        return ProbeError::new(
            false,
            format!("output alsa:{dev}: playing failed ({cause})"),
            "the device went away or cannot be written (for a `file` PCM: its file or pipe)",
        );
    }
    if f.what != "open" {
        return ProbeError::new(false, format!("output alsa:{dev}: {f}"), LIST_HINT);
    }
    match f.errno {
        libc::EBUSY => ProbeError::new(
            true,
            format!("output alsa:{dev}: busy, another program is playing on it"),
            "raopd opens it again when a sender plays (`fuser -v /dev/snd/*` shows who holds it)",
        ),
        libc::ENOENT | libc::ENODEV | libc::ENXIO => ProbeError::new(
            false,
            format!("output alsa:{dev}: no such ALSA device ({cause})"),
            &format!(
                "{LIST_HINT}; give one as alsa:NAME, e.g. alsa:plughw:CARD=Device,DEV=0 \
                 (--wait-for-output waits for a USB DAC that appears later)"
            ),
        ),
        libc::EACCES | libc::EPERM => ProbeError::new(
            false,
            format!("output alsa:{dev}: {cause}"),
            "run raopd as root or as a member of the audio group",
        ),
        _ => ProbeError::new(
            false,
            format!("output alsa:{dev}: cannot open: {cause}"),
            LIST_HINT,
        ),
    }
}

#[cfg(not(feature = "alsa"))]
fn probe_alsa(dev: &str) -> Result<(), ProbeError> {
    open_alsa(dev)
        .map(|_| ())
        .map_err(|e| ProbeError::new(false, e.to_string(), "use pipe:PATH, stdout or sim:PATH"))
}

#[cfg(feature = "alsa")]
fn open_alsa(dev: &str) -> io::Result<Box<dyn Sink>> {
    Ok(Box::new(alsa::AlsaSink::new(dev)?))
}

#[cfg(not(feature = "alsa"))]
fn open_alsa(dev: &str) -> io::Result<Box<dyn Sink>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "output alsa:{dev}: this build has no ALSA support (built without the \"alsa\" \
             feature); use pipe:PATH, stdout or sim:PATH"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<OutputSpec, String> {
        s.parse()
    }

    #[test]
    fn parses_alsa() {
        assert_eq!(parse("alsa"), Ok(OutputSpec::Alsa("default".into())));
        assert_eq!(parse("alsa:hw:0"), Ok(OutputSpec::Alsa("hw:0".into())));
        assert_eq!(
            parse("alsa:plughw:CARD=Device,DEV=0"),
            Ok(OutputSpec::Alsa("plughw:CARD=Device,DEV=0".into()))
        );
        assert!(parse("alsa:").unwrap_err().contains("empty ALSA device"));
    }

    #[test]
    fn parses_pipe_and_stdout() {
        assert_eq!(
            parse("pipe:/tmp/x.raw"),
            Ok(OutputSpec::Pipe("/tmp/x.raw".into()))
        );
        assert_eq!(parse("pipe:a:b"), Ok(OutputSpec::Pipe("a:b".into())));
        assert_eq!(parse("stdout"), Ok(OutputSpec::Stdout));
        assert!(parse("pipe").unwrap_err().contains("needs a path"));
        assert!(parse("pipe:").unwrap_err().contains("needs a path"));
        assert!(parse("stdout:x").unwrap_err().contains("no argument"));
    }

    #[test]
    fn parses_sim() {
        let sim = |p: &str, ppm: f64| OutputSpec::Sim {
            path: p.into(),
            ppm,
        };
        assert_eq!(parse("sim:/tmp/s.raw"), Ok(sim("/tmp/s.raw", 0.0)));
        assert_eq!(
            parse("sim:/tmp/s.raw:+150ppm"),
            Ok(sim("/tmp/s.raw", 150.0))
        );
        assert_eq!(
            parse("sim:/tmp/s.raw:-200ppm"),
            Ok(sim("/tmp/s.raw", -200.0))
        );
        assert_eq!(parse("sim:s.raw:12.5ppm"), Ok(sim("s.raw", 12.5)));
        assert_eq!(parse("sim:a:b.raw"), Ok(sim("a:b.raw", 0.0)));
        assert_eq!(parse("sim:a:b.raw:-1ppm"), Ok(sim("a:b.raw", -1.0)));
        assert!(parse("sim:/x:fastppm")
            .unwrap_err()
            .contains("bad rate error"));
        assert!(parse("sim:/x:+1e9ppm")
            .unwrap_err()
            .contains("out of range"));
        assert!(parse("sim:/x:NaNppm").unwrap_err().contains("out of range"));
        assert!(parse("sim::+5ppm").unwrap_err().contains("needs a path"));
        assert!(parse("sim").unwrap_err().contains("needs a path"));
    }

    #[test]
    fn rejects_unknown_and_round_trips() {
        let err = parse("jack:foo").unwrap_err();
        assert!(
            err.contains("unknown output") && err.contains("alsa[:PCM]"),
            "{err}"
        );
        assert!(parse("").unwrap_err().contains("unknown output"));
        for s in [
            "alsa:hw:0",
            "pipe:/a/b",
            "stdout",
            "sim:/a/b:+150ppm",
            "sim:/a:-0.5ppm",
        ] {
            let spec = parse(s).unwrap();
            assert_eq!(parse(&spec.to_string()), Ok(spec));
        }
    }

    #[cfg(feature = "alsa")]
    #[test]
    fn probe_says_what_is_wrong() {
        assert_eq!(probe(&OutputSpec::Alsa("null".into())), Ok(()));
        assert_eq!(probe(&OutputSpec::Stdout), Ok(()));
        let e = probe(&OutputSpec::Alsa("doesnotexist".into())).unwrap_err();
        assert!(!e.busy);
        assert_eq!(
            e.cause,
            "output alsa:doesnotexist: no such ALSA device (No such file or directory)"
        );
        let line = e.to_string();
        assert!(line.contains("aplay -L") && !line.contains('\n'), "{line}");
        // The format hint, from the verdict alone (no such hardware on a build machine).
        let f = alsa::AlsaFailure {
            what: "rate 44100 Hz",
            errno: libc::EINVAL,
            func: "snd_pcm_hw_params_set_rate",
        };
        let err = io::Error::new(io::ErrorKind::InvalidInput, f);
        let v = alsa_verdict("hw:1,0", &err, Some(f));
        assert_eq!(
            v.cause,
            "output alsa:hw:1,0: the device cannot play 16-bit stereo at 44100 Hz \
             (rate 44100 Hz: Invalid argument)"
        );
        assert_eq!(
            v.hint,
            "use alsa:plughw:1,0, which converts, or alsa:default"
        );
        let busy = alsa::AlsaFailure {
            what: "open",
            errno: libc::EBUSY,
            func: "snd_pcm_open",
        };
        assert!(alsa_verdict("hw:0", &err, Some(busy)).busy);
    }

    #[cfg(not(feature = "alsa"))]
    #[test]
    fn alsa_without_feature_is_a_clear_error() {
        let err = open(&OutputSpec::Alsa("default".into())).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        assert!(err.to_string().contains("\"alsa\" feature"));
    }
}
