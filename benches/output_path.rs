//! Cost of the per-period output path: one round of the sans-IO `Renderer` (`src/stream/render.rs`)
//! and the sink requests it makes (read the sink, write the period), as the edge in `player`
//! carries them out, moving one 352-frame period from the jitter buffer through the software volume into the sink, as the
//! reactor does every 8 ms while a stream plays.
//!
//! - `pump_pipe_devnull`: `SoftSink::pipe("/dev/null")`, volume at unity (AirPlay 0 dB);
//! - `pump_pipe_devnull_vol`: the same with `SoftMixer` at AirPlay -10 dB (a -20 dB gain);
//! - `pump_sim_file_vol`: `SoftSink::sim` into a temporary file (its timing log too), -10 dB.
//!
//! Time is simulated: before each pump the clock moves on by one period, so each call writes
//! about 352 frames, exactly the steady state of a real stream; the sink paces itself by that
//! clock. The jitter buffer is kept one second ahead (packets committed, not decoded: that is
//! `packet_path`'s part), outside the timed section. The result is normalised to 352 frames
//! written.
//!
//! `cargo bench --bench output_path`. Output lines: `bench: <name> <ns/iter> ns/iter (<iters>
//! iters)`, one iter being one 352-frame period.

use std::hint::black_box;
use std::time::{Duration, Instant};

use raopd::buffer::{Insert, JitterBuffer};
use raopd::output::{Mixer, Sink, SoftMixer, SoftSink};
use raopd::stream::{Output, Renderer, SinkReading};

const FRAMES: usize = 352;
const RATE: u64 = 44_100;
/// Measuring time per benchmark (simulated time runs far faster than this).
const BUDGET: Duration = Duration::from_millis(2000);
/// At most this many periods for the sim output (its file grows by 1408 bytes a period).
const SIM_MAX_PERIODS: usize = 100_000;

fn frames_to_duration(frames: u64) -> Duration {
    Duration::from_nanos(frames * 1_000_000_000 / RATE)
}

/// The edge's part (as `player::drive` does it): carries out on `sink` what the renderer asks
/// at `now` until it says when to come back.
fn pump(
    r: &mut Renderer,
    now: Instant,
    sink: &mut dyn Sink,
    buffer: &mut JitterBuffer,
    due_of: &dyn Fn(u32) -> Option<Instant>,
    apply: &dyn Fn(&mut [i16]),
) -> std::io::Result<Option<Instant>> {
    loop {
        match r.poll(now, sink.capacity(), buffer, due_of, apply) {
            Output::Start => {
                let opening = Instant::now();
                sink.start()?;
                r.started(now + opening.elapsed(), sink.underruns());
            }
            Output::Read(at) => {
                let status = sink.status(at)?;
                r.reading(SinkReading {
                    status,
                    at: sink.status_time(at),
                    capacity: sink.capacity(),
                    underruns: sink.underruns(),
                    position_steps: sink.position_steps(),
                });
            }
            Output::Write { frames, at } => {
                let n = sink.write(at, frames)?;
                r.wrote(n);
            }
            Output::SetWakeup(frames) => sink.set_wakeup(frames)?,
            Output::Stop(wake) => {
                sink.stop();
                return Ok(wake);
            }
            Output::Wait(wake) => return Ok(wake),
        }
    }
}

/// Pumps a stream through `sink` until `BUDGET` passes or `max_periods` periods were written.
fn bench(name: &str, mut sink: SoftSink, volume_db: f32, max_periods: usize) {
    let mut mixer = SoftMixer::default();
    mixer.set_volume(volume_db);
    let mut buffer = JitterBuffer::with_capacity_frames(3 * 44100);
    buffer.reset(FRAMES);
    buffer.start_at(0);
    // Fill every slot's PCM once with a signal; later packets reuse the slots' contents.
    let mut seq: u16 = 0;
    let mut sent: u64 = 0;
    let mut feed = |buffer: &mut JitterBuffer, upto: u64| {
        while sent < upto {
            if let Insert::Slot(idx) = buffer.insert(seq, sent as u32, 0) {
                let pcm = buffer.slot_pcm(idx);
                if pcm[0] == 0 {
                    for (k, s) in pcm.iter_mut().enumerate() {
                        *s = ((k as i32 * 7919 + sent as i32) % 20000 - 10000) as i16 | 1;
                    }
                }
                buffer.commit(idx, FRAMES);
            }
            seq = seq.wrapping_add(1);
            sent += FRAMES as u64;
        }
    };

    let mut r = Renderer::new();
    let t0 = Instant::now();
    let due0 = t0 + Duration::from_millis(300);
    let due_of = move |ts: u32| Some(due0 + frames_to_duration(u64::from(ts)));
    let apply = |f: &mut [i16]| mixer.apply(f);
    r.set_start(0);
    let period = frames_to_duration(FRAMES as u64);
    let mut now = t0;
    // Warm up: start the stream and fill the sink to its target depth (untimed).
    while now < due0 + Duration::from_secs(1) {
        feed(
            &mut buffer,
            (now - t0).as_millis() as u64 * RATE / 1000 + RATE,
        );
        pump(&mut r, now, &mut sink, &mut buffer, &due_of, &apply).expect("pump");
        now += period;
    }
    assert!(r.is_started(), "{name}: the stream did not start");
    let written0 = r.stats.frames_written;
    let mut timed = Duration::ZERO;
    let mut calls = 0usize;
    let wall = Instant::now();
    while wall.elapsed() < BUDGET && calls < max_periods {
        feed(
            &mut buffer,
            (now - t0).as_millis() as u64 * RATE / 1000 + RATE,
        );
        let t = Instant::now();
        let wake = pump(&mut r, now, &mut sink, &mut buffer, &due_of, &apply).expect("pump");
        timed += t.elapsed();
        black_box(wake);
        calls += 1;
        now += period;
    }
    let frames = r.stats.frames_written - written0;
    let periods = frames as f64 / FRAMES as f64;
    assert!(
        (periods - calls as f64).abs() <= 0.02 * calls as f64 + 2.0,
        "{name}: {calls} pumps wrote {periods:.1} periods"
    );
    let s = r.stats;
    assert_eq!(
        (s.frames_inserted, s.frames_dropped, s.resyncs),
        (0, 0, 0),
        "{name}: corrections in a steady stream: {s:?}"
    );
    assert_eq!(sink.underruns(), 0, "{name}: sink underrun");
    sink.stop();
    let ns = timed.as_nanos() as f64 / periods;
    println!(
        "bench: {name} {ns:.1} ns/iter ({} iters)",
        periods.round() as u64
    );
}

fn main() {
    let devnull = std::path::Path::new("/dev/null");
    bench(
        "pump_pipe_devnull",
        SoftSink::pipe(devnull).expect("open /dev/null"),
        0.0,
        usize::MAX,
    );
    bench(
        "pump_pipe_devnull_vol",
        SoftSink::pipe(devnull).expect("open /dev/null"),
        -10.0,
        usize::MAX,
    );
    let dir = std::env::temp_dir().join(format!("raopd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("out.raw");
    bench(
        "pump_sim_file_vol",
        SoftSink::sim(&out, 0.0).expect("open sim output"),
        -10.0,
        SIM_MAX_PERIODS,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
