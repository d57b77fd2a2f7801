//! ALSA playback backend.
//!
//! The PCM is opened non-blocking so `write` takes only what fits and the single reactor thread
//! never sleeps inside alsa-lib; the player waits on the PCM's poll descriptors through
//! [`super::wait::Waiter`] instead. The sample format is S16 in host byte order (`S16_BE` on the
//! big-endian MIPS boards), 2 channels, exactly 44100 Hz: the stream is never converted here, so a
//! device that cannot take that format must be reached through a `plug`-type PCM (`default` or
//! `plughw:...`).
//!
//! The device is opened in [`Sink::start`] and closed in [`Sink::stop`], so other programs can
//! use it between AirPlay sessions.
//!
//! # What the `null` and `file` plugins do (checked against alsa-lib 1.2.8)
//!
//! `null` and `file:FILE=...` (whose slave in alsa.conf is `null`) each give one poll descriptor:
//! an fd open on `/dev/null` with `events = POLLOUT | POLLERR | POLLNVAL`. poll(2) reports it
//! writable at once, always, and `snd_pcm_poll_descriptors_revents` says `POLLOUT` every time.
//! They do no pacing at all: after any write `avail` is the whole buffer and `delay` is 0, and the
//! PCM goes to RUNNING on the first write and stays there. Registering that descriptor with epoll
//! fails (`EPERM`: `/dev/null` has no poll support), so [`super::wait::Waiter`] falls back to its
//! timer for these PCMs. The `file` plugin buffers what it is given and writes to its file as
//! whole periods fill up; the rest reaches the file when the PCM is stopped or closed, which
//! [`Sink::stop`] does.

use std::ffi::CString;
use std::io;
use std::time::Instant;

use ::alsa::pcm::{Access, Format, HwParams, State, PCM};
use ::alsa::poll::{Descriptors, Flags};
use ::alsa::{Direction, ValueOr};

use super::{Sink, SinkStatus, CHANNELS, RATE};

pub use super::{PERIODS, PERIOD_FRAMES};

/// Plays through an ALSA PCM.
pub struct AlsaSink {
    device: String,
    c_device: CString,
    pcm: Option<PCM>,
    buffer_frames: usize,
    /// The `avail_min` set by [`Sink::set_wakeup`] (frames; 0: the period set at start).
    wakeup: usize,
    underruns: u64,
    warned_underrun: bool,
}

/// An alsa-lib call that failed, as an `io::Error` whose kind follows the errno. The message
/// does not repeat the device: callers prefix [`Sink::describe`] (`alsa:NAME: …`).
fn alsa_err(what: &'static str, _device: &str, e: ::alsa::Error) -> io::Error {
    let os = io::Error::from_raw_os_error(e.errno());
    io::Error::new(
        os.kind(),
        AlsaFailure {
            what,
            errno: e.errno(),
            func: e.func(),
        },
    )
}

/// Why opening or configuring a PCM failed: the step, alsa-lib's function and the errno.
/// Carried inside the `io::Error`s of this module so that [`super::probe`] can tell a missing
/// device from a busy one or one that cannot take the stream's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlsaFailure {
    /// The step that failed, e.g. `open` or `2 channels`.
    pub what: &'static str,
    /// The positive errno alsa-lib returned.
    pub errno: i32,
    /// The alsa-lib function, e.g. `snd_pcm_open`.
    pub func: &'static str,
}

impl AlsaFailure {
    /// The PCM exists but refused S16 / 2 channels / 44100 Hz / interleaved access.
    pub fn is_format(&self) -> bool {
        FORMAT_STEPS.contains(&self.what)
    }
}

impl std::fmt::Display for AlsaFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let os = io::Error::from_raw_os_error(self.errno);
        write!(f, "{}: {} failed: {os}", self.what, self.func)
    }
}

impl std::error::Error for AlsaFailure {}

/// The hw-params steps that fail when the device cannot take the stream's format.
const FORMAT_STEPS: [&str; 4] = [STEP_ACCESS, STEP_FORMAT, STEP_CHANNELS, STEP_RATE];
const STEP_ACCESS: &str = "interleaved access";
const STEP_FORMAT: &str = "format S16 (native endian)";
const STEP_CHANNELS: &str = "2 channels";
const STEP_RATE: &str = "rate 44100 Hz";

/// alsa-lib prints its own errors to stderr (`ALSA lib pcm.c:…: Unknown PCM …`) by default;
/// raopd reports errors itself, in one line, so this thread's alsa-lib messages go to the
/// debug log instead. `snd_lib_error_set_local` (alsa-lib ≥ 1.1.6, error.h) sets a per-thread
/// handler that takes a `va_list`, which Rust can receive as an opaque pointer.
fn quiet_alsa_lib() {
    type LocalHandler = unsafe extern "C" fn(
        file: *const libc::c_char,
        line: libc::c_int,
        func: *const libc::c_char,
        err: libc::c_int,
        fmt: *const libc::c_char,
        args: *mut libc::c_void,
    );
    extern "C" {
        fn snd_lib_error_set_local(func: Option<LocalHandler>) -> Option<LocalHandler>;
    }
    unsafe extern "C" fn to_debug_log(
        file: *const libc::c_char,
        line: libc::c_int,
        func: *const libc::c_char,
        err: libc::c_int,
        fmt: *const libc::c_char,
        _args: *mut libc::c_void,
    ) {
        let text = |p: *const libc::c_char| {
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: alsa-lib passes NUL-terminated strings (or null, checked above).
                unsafe { std::ffi::CStr::from_ptr(p) }
                    .to_string_lossy()
                    .into_owned()
            }
        };
        log::debug!(
            "alsa-lib {}:{line} {}: {} (error {err})",
            text(file),
            text(func),
            text(fmt)
        );
    }
    // SAFETY: the handler only reads the strings alsa-lib hands it, for the duration of the call.
    unsafe {
        snd_lib_error_set_local(Some(to_debug_log));
    }
}

impl AlsaSink {
    /// Prepares to play on PCM `device`; nothing is opened until [`Sink::start`].
    pub fn new(device: &str) -> io::Result<AlsaSink> {
        quiet_alsa_lib();
        let c_device = CString::new(device).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("alsa:{device:?}: device name contains a NUL byte"),
            )
        })?;
        Ok(AlsaSink {
            device: device.to_string(),
            c_device,
            pcm: None,
            buffer_frames: PERIOD_FRAMES * PERIODS,
            wakeup: 0,
            underruns: 0,
            warned_underrun: false,
        })
    }

    fn open_pcm(&self) -> io::Result<(PCM, usize, usize)> {
        let err = |what: &'static str, e| alsa_err(what, &self.device, e);
        let pcm =
            PCM::open(&self.c_device, Direction::Playback, true).map_err(|e| err("open", e))?;
        let (period, buffer) = {
            let hw = HwParams::any(&pcm).map_err(|e| err("hw params", e))?;
            hw.set_access(Access::RWInterleaved)
                .map_err(|e| err(STEP_ACCESS, e))?;
            hw.set_format(Format::s16())
                .map_err(|e| err(STEP_FORMAT, e))?;
            hw.set_channels(CHANNELS as u32)
                .map_err(|e| err(STEP_CHANNELS, e))?;
            // snd_pcm_hw_params_set_rate sets exactly RATE (dir 0 = no sub-unit rounding).
            hw.set_rate(RATE, ValueOr::Nearest)
                .map_err(|e| err(STEP_RATE, e))?;
            let period = hw
                .set_period_size_near(PERIOD_FRAMES as _, ValueOr::Nearest)
                .map_err(|e| err("period size", e))?;
            let buffer = hw
                .set_buffer_size_near(period * PERIODS as ::alsa::pcm::Frames)
                .map_err(|e| err("buffer size", e))?;
            pcm.hw_params(&hw).map_err(|e| err("apply hw params", e))?;
            (period as usize, buffer as usize)
        };
        {
            // The write path uses an unchecked IO object to avoid alsa-lib's per-call format
            // query (which allocates); this is the one check that makes it sound.
            let hw = pcm
                .hw_params_current()
                .map_err(|e| err("read back hw params", e))?;
            let format = hw.get_format().map_err(|e| err("read back format", e))?;
            if format != Format::s16() {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    AlsaFailure {
                        what: STEP_FORMAT,
                        errno: libc::EINVAL,
                        func: "snd_pcm_hw_params_get_format",
                    },
                ));
            }
        }
        {
            let sw = pcm.sw_params_current().map_err(|e| err("sw params", e))?;
            // Wake the poller once a whole period fits; start on the first write, like the
            // virtual DAC of the other outputs, so the player's timing is the same on both.
            sw.set_avail_min(period as _)
                .map_err(|e| err("avail min", e))?;
            sw.set_start_threshold(1)
                .map_err(|e| err("start threshold", e))?;
            pcm.sw_params(&sw).map_err(|e| err("apply sw params", e))?;
        }
        pcm.prepare().map_err(|e| err("prepare", e))?;
        Ok((pcm, period, buffer))
    }

    /// Handles `EPIPE` (underrun) and `ESTRPIPE` (suspend) by re-preparing or resuming. Any other
    /// error, or a failed recovery, is returned.
    fn recover(&mut self, what: &'static str, e: ::alsa::Error) -> io::Result<()> {
        let Some(pcm) = &self.pcm else {
            return Err(not_started());
        };
        match e.errno() {
            libc::EPIPE => {
                self.underruns += 1;
                if self.warned_underrun {
                    log::debug!("alsa:{}: underrun", self.device);
                } else {
                    log::warn!(
                        "alsa:{}: underrun (later ones logged at debug)",
                        self.device
                    );
                    self.warned_underrun = true;
                }
            }
            libc::ESTRPIPE => log::info!("alsa:{}: resuming after suspend", self.device),
            _ => return Err(alsa_err(what, &self.device, e)),
        }
        pcm.try_recover(e, true)
            .map_err(|e| alsa_err("recover", &self.device, e))
    }

    fn avail_delay(&self) -> io::Result<Result<SinkStatus, ::alsa::Error>> {
        let pcm = self.pcm.as_ref().ok_or_else(not_started)?;
        Ok(pcm.avail_delay().map(|(avail, delay)| SinkStatus {
            avail: (avail.max(0) as usize).min(self.buffer_frames),
            delay: delay.max(0) as usize,
        }))
    }

    fn writei(&self, frames: &[i16]) -> io::Result<Result<usize, ::alsa::Error>> {
        let pcm = self.pcm.as_ref().ok_or_else(not_started)?;
        // SAFETY: the format was checked to be S16 (native endian, the layout of i16) in
        // `open_pcm`, and this temporary is the only IO object on the PCM.
        let io = unsafe { pcm.io_unchecked::<i16>() };
        Ok(io.writei(frames))
    }
}

fn not_started() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "output used before start()")
}

impl Sink for AlsaSink {
    fn describe(&self) -> String {
        format!("alsa:{}", self.device)
    }

    fn start(&mut self) -> io::Result<()> {
        self.stop();
        let (pcm, period, buffer) = self.open_pcm()?;
        log::info!(
            "alsa:{}: S16 {}ch {} Hz, period {period} frames, buffer {buffer} frames",
            self.device,
            CHANNELS,
            RATE
        );
        self.pcm = Some(pcm);
        self.buffer_frames = buffer;
        self.wakeup = 0;
        self.warned_underrun = false;
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(pcm) = self.pcm.take() {
            if let Err(e) = pcm.drop() {
                log::debug!("alsa:{}: drop: {e}", self.device);
            }
            log::debug!("alsa:{}: closed", self.device);
        }
    }

    fn status(&mut self, _now: Instant) -> io::Result<SinkStatus> {
        if self.pcm.is_none() {
            return Ok(SinkStatus::default());
        }
        match self.avail_delay()? {
            Ok(st) => Ok(st),
            Err(e) => {
                self.recover("status", e)?;
                self.avail_delay()?
                    .map_err(|e| alsa_err("status", &self.device, e))
            }
        }
    }

    fn status_time(&self, _now: Instant) -> Instant {
        Instant::now()
    }

    fn write(&mut self, _now: Instant, frames: &[i16]) -> io::Result<usize> {
        if frames.len() % CHANNELS != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "sample count is not a whole number of frames",
            ));
        }
        if frames.is_empty() {
            return Ok(0);
        }
        for _ in 0..2 {
            match self.writei(frames)? {
                Ok(n) => {
                    log::trace!("alsa:{}: wrote {n} frames", self.device);
                    return Ok(n);
                }
                Err(e) if e.errno() == libc::EAGAIN => return Ok(0),
                Err(e) => self.recover("write", e)?,
            }
        }
        // Recovered twice in one call: report nothing written and let the next call retry.
        Ok(0)
    }

    fn poll_fds(&mut self) -> Vec<libc::pollfd> {
        let Some(pcm) = &self.pcm else {
            return Vec::new();
        };
        match pcm.get() {
            Ok(fds) => fds,
            Err(e) => {
                log::debug!(
                    "alsa:{}: no poll descriptors ({e}); timer pacing",
                    self.device
                );
                Vec::new()
            }
        }
    }

    /// `POLLOUT` means a period fits. `POLLERR` is reported as ready too: the device is in an
    /// error state (underrun, suspend) that the following `status`/`write` recovers from.
    fn ready(&mut self, fds: &mut [libc::pollfd]) -> io::Result<bool> {
        let Some(pcm) = &self.pcm else {
            return Ok(false);
        };
        let flags = pcm
            .revents(fds)
            .map_err(|e| alsa_err("poll revents", &self.device, e))?;
        Ok(flags.intersects(Flags::OUT | Flags::ERR))
    }

    fn set_wakeup(&mut self, frames: usize) -> io::Result<()> {
        let pcm = self.pcm.as_ref().ok_or_else(not_started)?;
        let frames = frames.clamp(1, self.buffer_frames.max(1));
        if frames == self.wakeup {
            return Ok(());
        }
        let sw = pcm
            .sw_params_current()
            .map_err(|e| alsa_err("sw params", &self.device, e))?;
        sw.set_avail_min(frames as _)
            .map_err(|e| alsa_err("avail min", &self.device, e))?;
        pcm.sw_params(&sw)
            .map_err(|e| alsa_err("apply sw params", &self.device, e))?;
        self.wakeup = frames;
        Ok(())
    }

    fn underruns(&self) -> u64 {
        self.underruns
    }

    fn capacity(&self) -> usize {
        self.buffer_frames
    }

    fn position_steps(&self) -> bool {
        true
    }
}

impl Drop for AlsaSink {
    fn drop(&mut self) {
        self.stop();
    }
}

impl AlsaSink {
    /// Current PCM state, for tests and diagnostics; `None` before `start`.
    pub fn state(&self) -> Option<State> {
        let pcm = self.pcm.as_ref()?;
        // `PCM::state` panics on values it does not know; map by hand instead.
        Some(match pcm.state_raw() {
            0 => State::Open,
            1 => State::Setup,
            2 => State::Prepared,
            3 => State::Running,
            4 => State::XRun,
            5 => State::Draining,
            6 => State::Paused,
            7 => State::Suspended,
            _ => State::Disconnected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("raopd-alsa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        p
    }

    fn pattern(frames: usize, seed: i16) -> Vec<i16> {
        (0..frames * CHANNELS)
            .map(|i| (i as i16).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Drives a sink the way the player does: status, then write what fits.
    fn play(sink: &mut AlsaSink, data: &[i16]) {
        let mut off = 0;
        let mut spins = 0;
        while off < data.len() {
            let st = sink.status(Instant::now()).unwrap();
            let want = (data.len() - off)
                .min(st.avail * CHANNELS)
                .min(3000 * CHANNELS);
            let n = sink.write(Instant::now(), &data[off..off + want]).unwrap();
            off += n * CHANNELS;
            spins += 1;
            assert!(spins < 10_000, "no progress writing to {}", sink.describe());
        }
    }

    fn native_bytes(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_ne_bytes()).collect()
    }

    #[test]
    fn file_plugin_gets_exactly_the_frames_written() {
        let path = tmp("out.raw");
        let mut sink = AlsaSink::new(&format!("file:FILE={},FORMAT=raw", path.display())).unwrap();
        assert!(sink.poll_fds().is_empty(), "no descriptors before start");
        assert_eq!(sink.status(Instant::now()).unwrap(), SinkStatus::default());
        assert!(sink.write(Instant::now(), &[0, 0]).is_err());
        let mut expect = Vec::new();
        for round in 0..2 {
            sink.start().unwrap();
            assert_eq!(sink.state(), Some(State::Prepared));
            let cap = sink.capacity();
            assert!((4096..=16384).contains(&cap), "buffer {cap}");
            let st = sink.status(Instant::now()).unwrap();
            assert_eq!(
                st,
                SinkStatus {
                    avail: cap,
                    delay: 0
                }
            );
            // Not a multiple of the period, so the file plugin's last partial period matters.
            let data = pattern(10_000 + round * 123, round as i16);
            play(&mut sink, &data);
            assert_eq!(sink.state(), Some(State::Running));
            expect.extend(native_bytes(&data));
            sink.stop();
            sink.stop();
            assert_eq!(sink.state(), None);
            // Each start re-opens the PCM, and the file plugin truncates its file on open.
            assert_eq!(std::fs::read(&path).unwrap(), native_bytes(&data));
        }
        assert_eq!(sink.underruns(), 0);
        sink.start().unwrap();
        let err = sink.write(Instant::now(), &[1, 2, 3]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn null_plugin_descriptors_and_pacing() {
        let mut sink = AlsaSink::new("null").unwrap();
        assert_eq!(sink.describe(), "alsa:null");
        sink.start().unwrap();
        let mut fds = sink.poll_fds();
        assert_eq!(fds.len(), 1);
        assert_ne!(fds[0].events & libc::POLLOUT, 0);
        let target = std::fs::read_link(format!("/proc/self/fd/{}", fds[0].fd)).unwrap();
        assert_eq!(target, PathBuf::from("/dev/null"));
        // Always writable, and revents agrees.
        // SAFETY: fds is a valid pollfd array of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, 0) };
        assert_eq!(n, 1);
        assert!(sink.ready(&mut fds).unwrap());
        // No pacing: every write is consumed immediately.
        play(&mut sink, &pattern(50_000, 1));
        let st = sink.status(Instant::now()).unwrap();
        assert_eq!(
            st,
            SinkStatus {
                avail: sink.capacity(),
                delay: 0
            }
        );
        assert_eq!(sink.write(Instant::now(), &[]).unwrap(), 0);
        sink.stop();
        assert!(sink.poll_fds().is_empty());
        assert!(!sink.ready(&mut fds).unwrap());
    }

    /// `set_wakeup` is the device's `avail_min`, read back from alsa-lib: clamped to the
    /// buffer, and back to one period when the device is started again.
    #[test]
    fn wakeup_level_is_the_devices_avail_min() {
        let mut sink = AlsaSink::new("null").unwrap();
        assert!(sink.set_wakeup(100).is_err(), "before start");
        sink.start().unwrap();
        let avail_min = |s: &AlsaSink| {
            let sw = s.pcm.as_ref().unwrap().sw_params_current().unwrap();
            sw.get_avail_min().unwrap() as usize
        };
        let period = avail_min(&sink);
        assert!(period > 0 && period < sink.capacity());
        sink.set_wakeup(sink.capacity() / 2 + 7).unwrap();
        assert_eq!(avail_min(&sink), sink.capacity() / 2 + 7);
        sink.set_wakeup(usize::MAX).unwrap();
        assert_eq!(avail_min(&sink), sink.capacity());
        sink.start().unwrap();
        assert_eq!(avail_min(&sink), period);
        sink.stop();
    }

    #[test]
    fn bad_devices_are_errors_not_panics() {
        assert_eq!(
            AlsaSink::new("a\0b").err().unwrap().kind(),
            io::ErrorKind::InvalidInput
        );
        let mut sink = AlsaSink::new("no_such_pcm_raopd").unwrap();
        let err = sink.start().unwrap_err();
        let failure = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<AlsaFailure>())
            .copied()
            .expect("an AlsaFailure inside");
        assert_eq!(failure.what, "open");
        assert_eq!(failure.func, "snd_pcm_open");
        assert_eq!(failure.errno, libc::ENOENT);
        assert!(!failure.is_format());
        assert_eq!(sink.status(Instant::now()).unwrap(), SinkStatus::default());
    }

    #[test]
    fn open_uses_this_backend() {
        let spec: super::super::OutputSpec = "alsa:null".parse().unwrap();
        let mut sink = super::super::open(&spec).unwrap();
        assert_eq!(sink.describe(), "alsa:null");
        sink.start().unwrap();
        assert_eq!(sink.write(Instant::now(), &pattern(100, 0)).unwrap(), 100);
        sink.stop();
    }
}
