//! Multi-room: two raopd fed by one sender at once sound the same frame at the same instant.
//!
//! Two daemons run in one namespace, on two ports, each writing to a simulated DAC at 0 ppm
//! (`--output sim:PATH:+0ppm`, which logs in `PATH.timing` when each frame sounds, on
//! `CLOCK_MONOTONIC`). One PipeWire player (pw-cat) is linked to two RAOP sinks
//! (libpipewire-module-raop-sink), one per daemon, in one graph on one clock: both sinks get the
//! same buffers in the same cycle and send them with their own RTSP session, RTP timestamps and
//! sync packets, as a desktop playing to two AirPlay speakers does.
//!
//! The check does not trust either daemon: short stretches of the input noise (anchors) are
//! located in each output, and each one's sound time is read from that output's timing log.
//! For every anchor found in both outputs, |sound time on A - sound time on B| must be at most
//! 1 ms, for 10 s of noise. The maximum and median differences are printed.

mod common;

use std::time::Duration;

use common::audio::{self, Frame, SAMPLE_RATE};
use common::daemon::Daemon;
use common::netns::Netns;
use common::senders::{self, PipewireOpts};
use common::sim::{find_anchors, Summary, Timing};
use common::TestDir;

const HOST: &str = "127.0.0.1";
const NOISE_SECS: f64 = 10.0;
/// Trailing silence: carries the noise through the receivers' latency before the sender stops.
const SILENCE_SECS: f64 = 3.0;
/// Anchor length and spacing in frames (64 frames of noise are unique; one anchor per 10 ms).
const ANCHOR_LEN: usize = 64;
const ANCHOR_STEP: usize = 441;
/// Largest allowed difference between the two rooms (ns).
const MAX_SKEW_NS: f64 = 1_000_000.0;

/// One receiver's output and timing log.
struct Room {
    output: Vec<Frame>,
    timing: Timing,
    /// The daemon's `stream summary:` line (corrections, resyncs, late packets).
    summary: String,
}

#[test]
fn two_receivers_fed_by_one_pipewire_sound_within_1_ms() {
    common::require_env();
    let test = "multiroom_pipewire";
    let dir = TestDir::new(test);
    let wav = dir.join("noise.wav");
    let input = audio::make_noise_wav(&wav, NOISE_SECS, SILENCE_SECS);
    let noise = (NOISE_SECS * f64::from(SAMPLE_RATE)).round() as usize;
    let ns = Netns::new();

    let ports = [5401u16, 5402];
    let mut daemons = Vec::new();
    let mut outs = Vec::new();
    for (room, port) in ["a", "b"].into_iter().zip(ports) {
        let room_dir = dir.join(room);
        std::fs::create_dir_all(&room_dir).expect("create room dir");
        let out = room_dir.join("out.raw");
        let output_arg = format!("sim:{}:+0ppm", out.display());
        let name = format!("{test}_{room}");
        let d = Daemon::start(
            &ns,
            &room_dir,
            port,
            &["--name", &name, "--no-mdns", "--output", &output_arg],
        );
        daemons.push(d);
        outs.push(out);
    }

    let sent = senders::pipewire_stream(
        &ns,
        &[(HOST, ports[0]), (HOST, ports[1])],
        &wav,
        dir.path(),
        &PipewireOpts::rsa_alac(),
    );
    // Stopping PipeWire ends both sessions; each daemon logs its summary then.
    for d in &daemons {
        let log = d.log_path().to_path_buf();
        common::wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("stream summary:"))
        });
    }
    let mut running = Vec::new();
    for d in &mut daemons {
        running.push(d.is_running());
        d.stop();
    }
    sent.assert_ok();
    assert!(
        running.iter().all(|r| *r),
        "a raopd exited during the stream"
    );

    let rooms: Vec<Room> = outs
        .iter()
        .zip(&daemons)
        .map(|(out, d)| Room {
            output: audio::read_raw(out),
            timing: Timing::read(out, 0.0),
            summary: Summary::from_log(&d.log()).line,
        })
        .collect();

    // Where each anchor of the noise sounds in each room.
    let sound_times: Vec<Vec<Option<f64>>> = rooms
        .iter()
        .map(|room| {
            let anchors = find_anchors(
                &input,
                &room.output,
                0..noise,
                ANCHOR_LEN,
                ANCHOR_STEP,
                4 * ANCHOR_STEP as i64,
            );
            let mut t = vec![None; anchors.tried];
            for a in &anchors.found {
                t[a.input / ANCHOR_STEP] = room.timing.sound_ns(a.output as u64);
            }
            t
        })
        .collect();
    let tried = sound_times[0].len();
    let found: Vec<usize> = sound_times
        .iter()
        .map(|t| t.iter().filter(|s| s.is_some()).count())
        .collect();
    let mut diffs: Vec<(usize, f64)> = sound_times[0]
        .iter()
        .zip(&sound_times[1])
        .enumerate()
        .filter_map(|(k, (a, b))| Some((k * ANCHOR_STEP, (*a)? - (*b)?)))
        .collect();
    assert!(
        !diffs.is_empty(),
        "{test}: no stretch of the noise sounded in both rooms (anchors found: A {}, B {} of \
         {tried}; output frames: A {}, B {})",
        found[0],
        found[1],
        rooms[0].output.len(),
        rooms[1].output.len()
    );
    let mut sorted: Vec<f64> = diffs.iter().map(|d| d.1).collect();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let worst = diffs
        .iter()
        .copied()
        .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
        .expect("diffs");
    eprintln!(
        "{test}: {} anchors heard in both rooms (A {}, B {} of {tried}); sound time A - B: median \
         {:+.3} ms, max |A - B| {:.3} ms at input frame {}, range {:+.3} .. {:+.3} ms\n  A: \
         {}\n  B: {}",
        diffs.len(),
        found[0],
        found[1],
        median / 1e6,
        worst.1.abs() / 1e6,
        worst.0,
        sorted[0] / 1e6,
        sorted[sorted.len() - 1] / 1e6,
        rooms[0].summary,
        rooms[1].summary
    );

    // Both rooms play (nearly) the whole noise, so the comparison covers the stream. Anchors go
    // missing where a daemon inserted or dropped a frame (after it re-anchored on a sender whose
    // timeline moved, for instance); those are not a difference between the rooms.
    assert!(
        diffs.len() * 10 >= tried * 9,
        "{test}: only {} of {tried} stretches of the noise sounded in both rooms (A {}, B {})",
        diffs.len(),
        found[0],
        found[1]
    );
    diffs.retain(|d| d.1.abs() > MAX_SKEW_NS);
    assert!(
        diffs.is_empty(),
        "{test}: {} stretches sound more than {:.1} ms apart in the two rooms, the first at input \
         frame {} ({:+.3} ms), the worst {:+.3} ms at input frame {}",
        diffs.len(),
        MAX_SKEW_NS / 1e6,
        diffs[0].0,
        diffs[0].1 / 1e6,
        worst.1 / 1e6,
        worst.0
    );
}
