//! Time-paced virtual DAC behind the `pipe`, `stdout` and `sim` outputs.
//!
//! A file or a pipe swallows data as fast as it is written, so on its own it would give the player
//! no notion of "when is this frame heard". `SoftSink` supplies one: a virtual DAC with a fixed
//! buffer of [`SOFT_CAPACITY`] frames that consumes frames at `RATE * (1 + ppm / 1e6)` frames per
//! second against the `now` the caller passes in (the monotonic clock in the daemon, constructed
//! instants in tests). It behaves like an ALSA device with a start threshold of one frame:
//!
//! * The clock starts at the first write after [`Sink::start`]; before that nothing is consumed.
//! * `delay` = frames written - frames consumed so far; `avail` = capacity - delay, and `write`
//!   takes at most `avail` frames.
//! * If the DAC runs dry (delay would go negative) that is an underrun: it is counted, the clock
//!   stops, and it restarts at the next write. Nothing is inserted into the output for the gap:
//!   the file only ever contains frames that were actually written.
//! * [`Sink::stop`] forgets the queue (delay becomes 0). Those frames were already handed to the
//!   file or pipe and stay there; for `sim` the timing log says they were never heard.
//!
//! Frames are written through to the destination as raw interleaved S16LE stereo, always little
//! endian whatever the host's byte order (the product runs on big-endian MIPS, the tools reading
//! the stream expect S16LE).
//!
//! # Destinations and their non-blocking policy
//!
//! * A regular file (or a character device such as `/dev/null`) is written with ordinary writes;
//!   these do not wait on anyone, and a real error (disk full) is returned from `write`.
//! * A FIFO (the path exists and is a named pipe) is opened `O_WRONLY | O_NONBLOCK`. Opening fails
//!   with `ENXIO` while nobody has it open for reading; that is not an error: the sink keeps
//!   pacing, discards what it is given (counted in [`SoftSink::dropped_frames`]) and retries the
//!   open at [`Sink::start`] and then at most once per [`REOPEN_INTERVAL`] from `write`. When the
//!   reader goes away (`EPIPE`) the FIFO is closed and the same retry applies.
//!   When the FIFO is full (the reader is slower than real time) the rest of that write is dropped
//!   and counted rather than queued, because waiting would stall the reactor thread and queueing
//!   would only add latency the player does not know about. A frame cut in half by a short write
//!   keeps its remaining bytes (at most three) in a fixed stash that is sent first next time, so
//!   the reader never loses frame alignment.
//! * `stdout`: if fd 1 is a pipe it is reopened through `/proc/self/fd/1` with `O_NONBLOCK`, which
//!   gives this process its own open file description, so the flag does not leak to the shell or
//!   the reading process. If that fails, or fd 1 is a socket, a duplicate of fd 1 is switched to
//!   non-blocking (this does change the shared description). Anything else (file, terminal) is
//!   written as is. A reader that goes away makes the sink discard from then on.
//!
//! # The `sim` timing log
//!
//! `sim:PATH[:±Nppm]` writes the audio to `PATH` exactly as `pipe:` would and, for every write,
//! appends one line to `PATH.timing` (the path with `.timing` appended):
//!
//! ```text
//! <index> <ns>
//! ```
//!
//! `index` is the output frame index of the first frame of that write: the number of frames the
//! virtual DAC accepted before it since the sink was created, which for a regular file is that
//! frame's position in `PATH` (byte offset / 4). `ns` is the `CLOCK_MONOTONIC` time in nanoseconds
//! at which that frame sounds; the frames after it in the same write follow at the DAC's rate.
//! When [`Sink::stop`] discards queued frames it appends `# stop <index> <ns>`: frames from
//! `index` on, up to the next record, were written to the file but never heard, and `ns` is when
//! the stop happened. Lines starting with `#` are annotations; parsers should skip them.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Sink, SinkStatus, CHANNELS, MAX_SIM_PPM, PERIODS, PERIOD_FRAMES, RATE};

/// Virtual DAC buffer size in frames (12288, 279 ms): the buffer the ALSA backend asks for, so
/// the player behaves the same on both.
pub const SOFT_CAPACITY: usize = PERIODS * PERIOD_FRAMES;
/// Least time between attempts to open a FIFO that has no reader.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

const FRAME_BYTES: usize = CHANNELS * 2;
/// Frames converted to S16LE per `write(2)` on a big-endian machine (a little-endian one writes
/// the samples as they are); the scratch buffer lives in the sink, so the write path never
/// allocates.
const CHUNK_FRAMES: usize = 2048;
const PICOS_PER_SEC: u128 = 1_000_000_000_000;

/// Where the bytes go, and how a full or vanished reader is handled.
struct Dest {
    file: Option<File>,
    /// Set for a named FIFO: the path to reopen when no reader is connected.
    fifo: Option<PathBuf>,
    next_open: Option<Instant>,
    /// Tail of a frame cut by a short write; sent before anything else.
    stash: [u8; FRAME_BYTES],
    stash_len: usize,
    dropped: u64,
    warned: bool,
}

impl Dest {
    fn new(file: Option<File>, fifo: Option<PathBuf>) -> Dest {
        Dest {
            file,
            fifo,
            next_open: None,
            stash: [0; FRAME_BYTES],
            stash_len: 0,
            dropped: 0,
            warned: false,
        }
    }

    /// Opens the FIFO if it has no writer end yet and a retry is due.
    fn try_open_fifo(&mut self, now: Instant) {
        let Some(path) = &self.fifo else { return };
        if self.file.is_some() || self.next_open.is_some_and(|t| now < t) {
            return;
        }
        match open_fifo(path) {
            Ok(file) => {
                log::info!("pipe {}: reader connected", path.display());
                self.file = Some(file);
                self.next_open = None;
            }
            Err(e) => {
                log::debug!("pipe {}: not open yet: {e}", path.display());
                self.next_open = Some(now + REOPEN_INTERVAL);
            }
        }
    }

    fn disconnect(&mut self, now: Instant) {
        log::info!("output reader went away; discarding audio until one returns");
        self.file = None;
        self.stash_len = 0;
        self.next_open = Some(now);
    }

    fn drop_frames(&mut self, frames: usize, why: &str) {
        self.dropped += frames as u64;
        if !self.warned {
            log::warn!("output: dropping audio ({why}); further drops are logged at debug");
            self.warned = true;
        } else {
            log::debug!("output: dropped {frames} frames ({why})");
        }
    }

    /// Writes `samples` as S16LE, never waiting on a reader (see the module docs).
    fn emit(
        &mut self,
        now: Instant,
        samples: &[i16],
        scratch: &mut [u8; CHUNK_FRAMES * FRAME_BYTES],
    ) -> io::Result<()> {
        let frames = samples.len() / CHANNELS;
        self.try_open_fifo(now);
        if self.file.is_none() {
            self.drop_frames(frames, "no reader");
            return Ok(());
        }
        if self.stash_len > 0 {
            let stash = self.stash;
            match self.send(&stash[..self.stash_len]) {
                Ok(n) if n == self.stash_len => self.stash_len = 0,
                Ok(n) => {
                    self.stash.copy_within(n..self.stash_len, 0);
                    self.stash_len -= n;
                    self.drop_frames(frames, "reader too slow");
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    self.disconnect(now);
                    self.drop_frames(frames, "no reader");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        let total = samples.len() * 2;
        let mut sent = 0;
        // A little-endian machine's samples are S16LE already: written as they are, in one
        // write(2). Big-endian ones are converted a scratch buffer at a time.
        let per_write = if cfg!(target_endian = "little") {
            samples.len().max(1)
        } else {
            CHUNK_FRAMES * CHANNELS
        };
        for chunk in samples.chunks(per_write) {
            let bytes = match le_bytes(chunk) {
                Some(bytes) => bytes,
                None => {
                    let bytes = &mut scratch[..chunk.len() * 2];
                    for (dst, s) in bytes.chunks_exact_mut(2).zip(chunk) {
                        // Byte by byte: a two-byte `copy_from_slice` is a call to `memcpy`
                        // per sample at the release profile's `opt-level = "z"`.
                        if let [lo, hi] = dst {
                            [*lo, *hi] = s.to_le_bytes();
                        }
                    }
                    &scratch[..chunk.len() * 2]
                }
            };
            let result = self.send(bytes);
            let n = match result {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    self.disconnect(now);
                    0
                }
                Err(e) => return Err(e),
            };
            sent += n;
            if n < bytes.len() {
                // Keep the rest of a frame that was cut in half, so the reader stays aligned.
                let cut = n % FRAME_BYTES;
                if cut != 0 && self.file.is_some() {
                    let tail = &bytes[n..n - cut + FRAME_BYTES];
                    self.stash[..tail.len()].copy_from_slice(tail);
                    self.stash_len = tail.len();
                    sent += tail.len();
                }
                let lost = (total - sent) / FRAME_BYTES;
                let why = if self.file.is_some() {
                    "reader too slow"
                } else {
                    "no reader"
                };
                self.drop_frames(lost, why);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Writes as much of `bytes` as the destination takes without waiting. Returns the count;
    /// `Ok(n < len)` means the destination is full.
    fn send(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let Some(file) = self.file.as_mut() else {
            return Ok(0);
        };
        let mut off = 0;
        while off < bytes.len() {
            match file.write(&bytes[off..]) {
                Ok(0) => break,
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(off)
    }
}

/// `samples` as S16LE bytes without a copy, on a little-endian machine; `None` on a big-endian
/// one, where the bytes must be swapped.
fn le_bytes(samples: &[i16]) -> Option<&[u8]> {
    // SAFETY: an i16 slice is `2 * len` initialised bytes with no padding, and u8 needs no
    // alignment; the bytes borrow `samples`.
    cfg!(target_endian = "little").then(|| unsafe {
        std::slice::from_raw_parts(
            samples.as_ptr().cast::<u8>(),
            std::mem::size_of_val(samples),
        )
    })
}

fn open_fifo(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Opens a `pipe:`/`sim:` path: an existing FIFO is opened non-blocking (a missing reader is
/// fine), anything else is created or truncated as a regular file.
fn open_path(path: &Path) -> io::Result<Dest> {
    let is_fifo = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo());
    if is_fifo {
        match open_fifo(path) {
            Ok(file) => Ok(Dest::new(Some(file), Some(path.to_path_buf()))),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                log::info!("pipe {}: no reader yet; will retry", path.display());
                Ok(Dest::new(None, Some(path.to_path_buf())))
            }
            Err(e) => Err(with_path(e, path)),
        }
    } else {
        let file = File::create(path).map_err(|e| with_path(e, path))?;
        Ok(Dest::new(Some(file), None))
    }
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Duplicates fd 1 and makes the copy non-blocking when it is a pipe or socket (see module docs).
fn open_stdout() -> io::Result<Dest> {
    let dup = File::from(io::stdout().as_fd().try_clone_to_owned()?);
    let ft = dup.metadata()?.file_type();
    if ft.is_fifo() {
        if let Ok(own) = open_fifo(Path::new("/proc/self/fd/1")) {
            return Ok(Dest::new(Some(own), None));
        }
    }
    if ft.is_fifo() || ft.is_socket() {
        set_nonblocking(&dup)?;
    }
    Ok(Dest::new(Some(dup), None))
}

fn set_nonblocking(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with no pointer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The running virtual DAC clock: frame `w0` started sounding at `t0`.
#[derive(Clone, Copy, Debug)]
struct Clock {
    t0: Instant,
    w0: u64,
}

enum Flavor {
    Pipe(PathBuf),
    Stdout,
    Sim {
        path: PathBuf,
        ppm: f64,
        timing: File,
    },
}

/// The virtual DAC sink (see the module docs).
pub struct SoftSink {
    flavor: Flavor,
    dest: Dest,
    /// Consumption rate in frames per 1000 s, so integer math keeps sub-ppm resolution.
    rate_milli: u64,
    started: bool,
    /// Frames accepted since creation: the output frame index of the next frame.
    written: u64,
    clock: Option<Clock>,
    underruns: u64,
    warned_underrun: bool,
    /// Latest `now` seen; `stop` has no clock argument and uses this when it is ahead of the
    /// real clock, so runs with constructed instants stay consistent.
    last_now: Option<Instant>,
    /// The instant the position of the last [`Sink::status`] was reached exactly (the clock
    /// counts whole frames): [`Sink::status_time`].
    position_at: Option<Instant>,
    scratch: [u8; CHUNK_FRAMES * FRAME_BYTES],
}

impl SoftSink {
    fn with(flavor: Flavor, dest: Dest, ppm: f64) -> SoftSink {
        let rate_milli = (f64::from(RATE) * 1000.0 * (1.0 + ppm / 1e6)).round() as u64;
        SoftSink {
            flavor,
            dest,
            rate_milli,
            started: false,
            written: 0,
            clock: None,
            underruns: 0,
            warned_underrun: false,
            last_now: None,
            position_at: None,
            scratch: [0; CHUNK_FRAMES * FRAME_BYTES],
        }
    }

    /// `pipe:PATH`: raw S16LE to a regular file (created or truncated) or an existing FIFO.
    pub fn pipe(path: &Path) -> io::Result<SoftSink> {
        let dest = open_path(path)?;
        Ok(Self::with(Flavor::Pipe(path.to_path_buf()), dest, 0.0))
    }

    /// `stdout`: raw S16LE to standard output.
    pub fn stdout() -> io::Result<SoftSink> {
        Ok(Self::with(Flavor::Stdout, open_stdout()?, 0.0))
    }

    /// `sim:PATH:±Nppm`: like `pipe`, with the DAC clock off by `ppm` and a timing log at
    /// `PATH.timing` (created or truncated).
    pub fn sim(path: &Path, ppm: f64) -> io::Result<SoftSink> {
        if !ppm.is_finite() || ppm.abs() > MAX_SIM_PPM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("sim rate error {ppm} ppm out of range (at most ±{MAX_SIM_PPM})"),
            ));
        }
        let dest = open_path(path)?;
        let timing_path = timing_path(path);
        let timing = File::create(&timing_path).map_err(|e| with_path(e, &timing_path))?;
        let flavor = Flavor::Sim {
            path: path.to_path_buf(),
            ppm,
            timing,
        };
        Ok(Self::with(flavor, dest, ppm))
    }

    /// Frames given to `write` that never reached the destination (no reader, reader too slow).
    pub fn dropped_frames(&self) -> u64 {
        self.dest.dropped
    }

    /// Frames accepted since the sink was created.
    pub fn frames_written(&self) -> u64 {
        self.written
    }

    /// Frames consumed at `at`, with `clock` running; may exceed `written` (ran dry).
    fn consumed_at(&self, clock: Clock, at: Instant) -> u64 {
        let elapsed = at.saturating_duration_since(clock.t0).as_nanos();
        clock.w0 + (elapsed * u128::from(self.rate_milli) / PICOS_PER_SEC) as u64
    }

    /// Time from the clock start until `frames` frames have been consumed.
    fn duration_of(&self, frames: u64) -> Duration {
        let rate = u128::from(self.rate_milli);
        // Rounded up, so that at the returned time the frame count has really been reached.
        let ns = (u128::from(frames) * PICOS_PER_SEC).div_ceil(rate);
        Duration::from_nanos(ns as u64)
    }

    /// Advances the virtual DAC to `now` and returns the delay, handling running dry.
    fn advance(&mut self, now: Instant) -> usize {
        self.last_now = Some(self.last_now.map_or(now, |t| t.max(now)));
        self.position_at = None;
        let Some(clock) = self.clock else { return 0 };
        let consumed = self.consumed_at(clock, now);
        if consumed > self.written {
            self.underruns += 1;
            self.clock = None;
            if self.warned_underrun {
                log::debug!("{}: underrun", self.describe());
            } else {
                log::warn!("{}: underrun (later ones logged at debug)", self.describe());
                self.warned_underrun = true;
            }
            return 0;
        }
        self.position_at = Some(clock.t0 + self.duration_of(consumed - clock.w0));
        (self.written - consumed) as usize
    }

    fn log_timing(&mut self, line: core::fmt::Arguments<'_>) -> io::Result<()> {
        let Flavor::Sim { timing, .. } = &mut self.flavor else {
            return Ok(());
        };
        let mut buf: heapless::String<64> = heapless::String::new();
        buf.write_fmt(line)
            .map_err(|_| io::Error::other("timing record too long"))?;
        timing.write_all(buf.as_bytes())
    }
}

fn timing_path(path: &Path) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(".timing");
    PathBuf::from(s)
}

impl Sink for SoftSink {
    fn describe(&self) -> String {
        match &self.flavor {
            Flavor::Pipe(path) => format!("pipe:{}", path.display()),
            Flavor::Stdout => "stdout".to_string(),
            Flavor::Sim { path, ppm, .. } => format!("sim:{}:{ppm:+}ppm", path.display()),
        }
    }

    fn start(&mut self) -> io::Result<()> {
        if self.started {
            self.stop();
        }
        self.started = true;
        self.clock = None;
        self.warned_underrun = false;
        self.dest.warned = false;
        self.dest.next_open = None;
        let now = Instant::now().max(self.last_now.unwrap_or(Instant::now()));
        self.dest.try_open_fifo(now);
        Ok(())
    }

    fn stop(&mut self) {
        self.position_at = None;
        if !self.started {
            return;
        }
        let now = Instant::now().max(self.last_now.unwrap_or(Instant::now()));
        if let Some(clock) = self.clock {
            let heard = self.consumed_at(clock, now).min(self.written);
            if heard < self.written {
                let ns = crate::clock::ns_of(now);
                if let Err(e) = self.log_timing(format_args!("# stop {heard} {ns}\n")) {
                    log::debug!("{}: timing log: {e}", self.describe());
                }
            }
        }
        self.started = false;
        self.clock = None;
    }

    fn status(&mut self, now: Instant) -> io::Result<SinkStatus> {
        if !self.started {
            return Ok(SinkStatus::default());
        }
        let delay = self.advance(now);
        Ok(SinkStatus {
            avail: SOFT_CAPACITY - delay,
            delay,
        })
    }

    /// The instant the position just read was reached: the clock counts whole frames, so
    /// `now` would date a reading up to a frame late.
    fn status_time(&self, now: Instant) -> Instant {
        self.position_at.map_or(now, |t| t.min(now))
    }

    fn write(&mut self, now: Instant, frames: &[i16]) -> io::Result<usize> {
        if frames.len() % CHANNELS != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "sample count is not a whole number of frames",
            ));
        }
        if !self.started {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "output written before start()",
            ));
        }
        let delay = self.advance(now);
        let n = (SOFT_CAPACITY - delay).min(frames.len() / CHANNELS);
        if n == 0 {
            return Ok(0);
        }
        self.dest
            .emit(now, &frames[..n * CHANNELS], &mut self.scratch)?;
        let clock = *self.clock.get_or_insert(Clock {
            t0: now,
            w0: self.written,
        });
        let index = self.written;
        let sounds_at = clock.t0 + self.duration_of(index - clock.w0);
        let ns = crate::clock::ns_of(sounds_at);
        self.written += n as u64;
        self.log_timing(format_args!("{index} {ns}\n"))?;
        log::trace!("{}: wrote {n} frames, delay {}", self.describe(), delay + n);
        Ok(n)
    }

    fn poll_fds(&mut self) -> Vec<libc::pollfd> {
        Vec::new()
    }

    /// Timer-paced: there is nothing to consult, so "started" is the answer and `status` says how
    /// much fits.
    fn ready(&mut self, _fds: &mut [libc::pollfd]) -> io::Result<bool> {
        Ok(self.started)
    }

    fn underruns(&self) -> u64 {
        self.underruns
    }

    fn capacity(&self) -> usize {
        SOFT_CAPACITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("raopd-soft-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        p
    }

    fn pattern(frames: usize, seed: i16) -> Vec<i16> {
        (0..frames * CHANNELS)
            .map(|i| (i as i16).wrapping_mul(7).wrapping_add(seed) ^ 0x5a5a)
            .collect()
    }

    fn le_bytes(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    fn ms(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn delay_and_avail_follow_the_clock() {
        let path = tmp("clock.raw");
        let mut s = SoftSink::pipe(&path).unwrap();
        assert_eq!(s.describe(), format!("pipe:{}", path.display()));
        assert_eq!(s.capacity(), SOFT_CAPACITY);
        assert!(s.poll_fds().is_empty());
        let t = Instant::now();
        s.start().unwrap();
        // Nothing is consumed before the first write.
        let st = s.status(ms(t, 500)).unwrap();
        assert_eq!(
            st,
            SinkStatus {
                avail: SOFT_CAPACITY,
                delay: 0
            }
        );
        assert_eq!(s.write(ms(t, 1000), &pattern(4410, 0)).unwrap(), 4410);
        let st = s.status(ms(t, 1000)).unwrap();
        assert_eq!(
            st,
            SinkStatus {
                avail: SOFT_CAPACITY - 4410,
                delay: 4410
            }
        );
        // 50 ms later 2205 frames were heard.
        let st = s.status(ms(t, 1050)).unwrap();
        assert_eq!(
            st,
            SinkStatus {
                avail: SOFT_CAPACITY - 2205,
                delay: 2205
            }
        );
        // Writes are capped at avail.
        assert_eq!(
            s.write(ms(t, 1050), &pattern(SOFT_CAPACITY, 1)).unwrap(),
            SOFT_CAPACITY - 2205
        );
        assert_eq!(s.status(ms(t, 1050)).unwrap().avail, 0);
        assert_eq!(s.write(ms(t, 1050), &pattern(10, 2)).unwrap(), 0);
        // Drains exactly to zero at the right moment, without an underrun.
        let drained = ms(t, 1000) + s.duration_of((4410 + SOFT_CAPACITY - 2205) as u64);
        assert_eq!(s.status(drained).unwrap().delay, 0);
        assert_eq!(s.underruns(), 0);
        s.stop();
        s.stop();
        assert_eq!(s.status(ms(t, 1100)).unwrap(), SinkStatus::default());
        assert!(s.write(ms(t, 1100), &pattern(1, 0)).is_err());
        assert!(s.write(ms(t, 1100), &[1, 2, 3]).is_err());
    }

    /// Feeds the sink like the player would for `secs` of constructed time and returns the frames
    /// consumed (written - delay), which only the DAC rate decides.
    fn consumed_after(ppm: f64, secs: u64) -> u64 {
        let path = tmp(&format!("rate{ppm}.raw"));
        let mut s = SoftSink::sim(&path, ppm).unwrap();
        s.start().unwrap();
        let t = Instant::now();
        let buf = vec![0i16; SOFT_CAPACITY * CHANNELS];
        let mut now = t;
        while now < t + Duration::from_secs(secs) {
            let st = s.status(now).unwrap();
            let n = s.write(now, &buf[..st.avail * CHANNELS]).unwrap();
            assert_eq!(n, st.avail);
            now += Duration::from_millis(50);
        }
        let end = t + Duration::from_secs(secs);
        let st = s.status(end).unwrap();
        assert_eq!(s.underruns(), 0);
        s.frames_written() - st.delay as u64
    }

    #[test]
    fn ppm_changes_consumption_rate() {
        assert_eq!(consumed_after(0.0, 60), 44_100 * 60);
        // 44100 * 60 * (1 + 150e-6) = 2646396.9
        assert_eq!(consumed_after(150.0, 60), 2_646_396);
        // 44100 * 60 * (1 - 200e-6) = 2645470.8
        assert_eq!(consumed_after(-200.0, 60), 2_645_470);
    }

    #[test]
    fn underruns_are_counted_and_the_clock_restarts() {
        let path = tmp("underrun.raw");
        let mut s = SoftSink::pipe(&path).unwrap();
        s.start().unwrap();
        let t = Instant::now();
        assert_eq!(s.write(t, &pattern(441, 0)).unwrap(), 441); // 10 ms
        assert_eq!(s.status(ms(t, 5)).unwrap().delay, 441 - 220);
        assert_eq!(s.underruns(), 0);
        // At 20 ms it ran dry.
        assert_eq!(
            s.status(ms(t, 20)).unwrap(),
            SinkStatus {
                avail: SOFT_CAPACITY,
                delay: 0
            }
        );
        assert_eq!(s.underruns(), 1);
        // Still idle: no second underrun, nothing consumed, until the next write restarts it.
        assert_eq!(s.status(ms(t, 500)).unwrap().delay, 0);
        assert_eq!(s.underruns(), 1);
        assert_eq!(s.write(ms(t, 1000), &pattern(882, 1)).unwrap(), 882);
        assert_eq!(s.status(ms(t, 1010)).unwrap().delay, 441);
        assert_eq!(s.status(ms(t, 1030)).unwrap().delay, 0);
        assert_eq!(s.underruns(), 2);
        // A restart after stop starts from idle too.
        s.stop();
        s.start().unwrap();
        assert_eq!(s.status(ms(t, 2000)).unwrap().delay, 0);
        assert_eq!(s.underruns(), 2);
    }

    #[test]
    fn file_holds_exactly_what_was_written_as_s16le() {
        let path = tmp("exact.raw");
        let mut s = SoftSink::pipe(&path).unwrap();
        let t = Instant::now();
        let mut expect = Vec::new();
        for round in 0..3u64 {
            s.start().unwrap();
            let base = ms(t, round * 10_000);
            let a = pattern(5000, round as i16);
            let b = pattern(SOFT_CAPACITY, 100 + round as i16);
            let na = s.write(base, &a).unwrap();
            let nb = s.write(ms(base, 100), &b).unwrap();
            assert_eq!(na, 5000);
            assert_eq!(nb, SOFT_CAPACITY - 5000 + 4410);
            expect.extend(le_bytes(&a[..na * 2]));
            expect.extend(le_bytes(&b[..nb * 2]));
            s.stop();
        }
        assert_eq!(std::fs::read(&path).unwrap(), expect);
        // Spot-check the byte order independently of to_le_bytes.
        let mut s = SoftSink::pipe(&path).unwrap();
        s.start().unwrap();
        s.write(t, &[0x1234, -2]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), [0x34, 0x12, 0xfe, 0xff]);
    }

    fn read_timing(path: &Path) -> Vec<String> {
        std::fs::read_to_string(timing_path(path))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn sim_timing_records() {
        let path = tmp("timing.raw");
        let mut s = SoftSink::sim(&path, 0.0).unwrap();
        assert_eq!(s.describe(), format!("sim:{}:+0ppm", path.display()));
        let t = Instant::now() + Duration::from_secs(10);
        let ns = crate::clock::ns_of;
        s.start().unwrap();
        s.write(t, &pattern(4410, 0)).unwrap(); // sounds at t
        s.write(ms(t, 20), &pattern(441, 0)).unwrap(); // queued behind 100 ms
        s.write(ms(t, 500), &pattern(441, 0)).unwrap(); // after an underrun: sounds at once
        s.write(ms(t, 505), &pattern(441, 0)).unwrap(); // 5 ms = 220.5 frames in: 5 ms left
        s.stop(); // 441 + 220 frames unheard at stop (real clock is behind t)
        s.start().unwrap();
        s.write(ms(t, 900), &pattern(100, 0)).unwrap();
        let expect = [
            format!("0 {}", ns(t)),
            format!("4410 {}", ns(ms(t, 100))),
            format!("4851 {}", ns(ms(t, 500))),
            format!("5292 {}", ns(ms(t, 510))),
            format!("# stop {} {}", 4851 + 220, ns(ms(t, 505))),
            format!("5733 {}", ns(ms(t, 900))),
        ];
        assert_eq!(read_timing(&path), expect);
        assert_eq!(s.underruns(), 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 5833 * 4);
    }

    #[test]
    fn sim_timing_follows_ppm() {
        let path = tmp("timing-ppm.raw");
        let mut s = SoftSink::sim(&path, 1000.0).unwrap();
        let t = Instant::now();
        s.start().unwrap();
        s.write(t, &pattern(8000, 0)).unwrap();
        s.write(ms(t, 100), &pattern(100, 0)).unwrap();
        let lines = read_timing(&path);
        let first: Vec<u64> = lines[1].split(' ').map(|f| f.parse().unwrap()).collect();
        assert_eq!(first[0], 8000);
        // 8000 frames at 44144.1 Hz = 181.2247 ms (vs 181.4059 ms at 0 ppm).
        let start_ns: u64 = lines[0].split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(first[1] - start_ns, 181_224_672);
        assert!(SoftSink::sim(&path, f64::NAN).is_err());
        assert!(SoftSink::sim(&path, 2e5).is_err());
    }

    fn mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    fn open_reader(path: &Path) -> File {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap()
    }

    #[test]
    fn fifo_without_reader_then_with_one() {
        let path = tmp("late.fifo");
        mkfifo(&path);
        let mut s = SoftSink::pipe(&path).unwrap();
        let t = Instant::now();
        s.start().unwrap();
        // No reader: paced and counted as dropped, never blocking.
        assert_eq!(s.write(t, &pattern(1000, 0)).unwrap(), 1000);
        assert_eq!(s.dropped_frames(), 1000);
        let mut reader = open_reader(&path);
        // Retry is rate-limited: not yet.
        assert_eq!(s.write(ms(t, 100), &pattern(100, 0)).unwrap(), 100);
        assert_eq!(s.dropped_frames(), 1100);
        let data = pattern(1000, 3);
        assert_eq!(s.write(ms(t, 1100), &data).unwrap(), 1000);
        assert_eq!(s.dropped_frames(), 1100);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).ok();
        assert_eq!(got, le_bytes(&data));
        // Reader gone: EPIPE is absorbed, the DAC keeps pacing.
        drop(reader);
        assert_eq!(s.write(ms(t, 1200), &pattern(10, 0)).unwrap(), 10);
        assert_eq!(s.dropped_frames(), 1110);
    }

    /// A stream socket splits a large non-blocking write wherever its buffer runs out, often
    /// inside a frame: the rest of that frame must go out before any later frame.
    #[test]
    fn split_frames_are_completed_before_new_data() {
        use std::os::fd::{AsRawFd, OwnedFd};
        use std::os::unix::net::UnixStream;
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        // Linux doubles this and sends in pieces of half of it less 64 bytes: 2937, not a
        // multiple of the frame size.
        let size: libc::c_int = 3001;
        // SAFETY: setsockopt on an open socket with a pointer to a c_int of the given size.
        let r = unsafe {
            libc::setsockopt(
                a.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        let mut dest = Dest::new(Some(File::from(OwnedFd::from(a))), None);
        let mut scratch = [0u8; CHUNK_FRAMES * FRAME_BYTES];
        let now = Instant::now();
        let mut next = 0i16;
        let mut got = Vec::new();
        let mut saw_split = false;
        let mut buf = vec![0u8; 1001];
        for _ in 0..400 {
            let frames: Vec<i16> = (0..777)
                .flat_map(|_| {
                    next = next.wrapping_add(1);
                    [next, !next]
                })
                .collect();
            dest.emit(now, &frames, &mut scratch).unwrap();
            saw_split |= dest.stash_len > 0;
            if let Ok(n) = b.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        // Drain, letting the sink finish any cut frame in between.
        for _ in 0..100 {
            while let Ok(n) = b.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            dest.emit(now, &[], &mut scratch).unwrap();
        }
        assert_eq!(dest.stash_len, 0);
        assert!(
            saw_split,
            "the socket never cut a frame; the test proves nothing"
        );
        assert!(dest.dropped > 0);
        assert_eq!(got.len() % FRAME_BYTES, 0);
        for f in got.chunks_exact(FRAME_BYTES) {
            let l = i16::from_le_bytes([f[0], f[1]]);
            let r = i16::from_le_bytes([f[2], f[3]]);
            assert_eq!(r, !l, "misaligned frame {f:?}");
        }
    }

    #[test]
    fn full_fifo_drops_without_blocking_and_keeps_alignment() {
        let path = tmp("full.fifo");
        mkfifo(&path);
        let mut reader = open_reader(&path);
        let mut s = SoftSink::pipe(&path).unwrap();
        s.start().unwrap();
        let t = Instant::now();
        // The reader takes 3 bytes early on: whatever it reads later must still line up.
        let mut all = Vec::new();
        let mut now = t;
        let mut i = 0;
        while s.dropped_frames() == 0 {
            let st = s.status(now).unwrap();
            let data = pattern(st.avail.min(1000), i);
            s.write(now, &data).unwrap();
            if i == 0 {
                let mut three = [0u8; 3];
                reader.read_exact(&mut three).unwrap();
                all.extend_from_slice(&three);
            }
            now += Duration::from_millis(200);
            i += 1;
            assert!(i < 1000, "a 64 KiB pipe must fill up");
        }
        // Drain, then write a marker frame; everything read must be whole frames ending with it.
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        s.write(now, &[0x7eed, 0x7eed]).unwrap();
        let mut tail = [0u8; 16];
        let n = reader.read(&mut tail).unwrap();
        all.extend_from_slice(&tail[..n]);
        assert_eq!(all.len() % FRAME_BYTES, 0, "stream lost frame alignment");
        assert_eq!(&all[all.len() - 4..], &[0xed, 0x7e, 0xed, 0x7e]);
    }
}
