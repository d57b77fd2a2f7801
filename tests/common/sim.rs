//! Reading what a `sim:` output and the daemon's log say about a stream, independently of the
//! daemon's own arithmetic.
//!
//! - [`Timing`]: the `PATH.timing` log of the simulated DAC: when each output frame sounds, on
//!   `CLOCK_MONOTONIC`.
//! - [`find_anchors`]: where short stretches of the input noise landed in the output. Between
//!   two anchors the offset (output index - input index) changes by +1 for each frame the daemon
//!   inserted and by -1 for each it dropped; a gap the daemon concealed leaves anchors missing
//!   but the offset unchanged.
//! - [`Summary`]: the `stream summary:` line the daemon logs when a stream ends.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::audio::{Frame, SAMPLE_RATE};

/// The timing log of a `sim:PATH:±Nppm` output (`PATH.timing`, see `src/output/soft.rs`).
#[derive(Debug, Clone)]
pub struct Timing {
    /// `(output index of the first frame of a write, CLOCK_MONOTONIC ns it sounds)`, in order.
    pub writes: Vec<(u64, u64)>,
    /// `# stop <index> <ns>`: frames from `index` up to the next write were never heard.
    pub stops: Vec<(u64, u64)>,
    /// The simulated DAC's rate in frames per second.
    pub rate: f64,
}

impl Timing {
    /// Reads `PATH.timing` for output `path`, written by a DAC running `ppm` off.
    pub fn read(path: &Path, ppm: f64) -> Timing {
        let tp = timing_path(path);
        let text = std::fs::read_to_string(&tp)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", tp.display()));
        Timing::parse(&text, ppm)
    }

    pub fn parse(text: &str, ppm: f64) -> Timing {
        let mut t = Timing {
            writes: Vec::new(),
            stops: Vec::new(),
            rate: f64::from(SAMPLE_RATE) * (1.0 + ppm / 1e6),
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (list, fields) = match line.strip_prefix('#') {
                Some(rest) => match rest.trim().strip_prefix("stop") {
                    Some(f) => (&mut t.stops, f),
                    None => continue, // another annotation
                },
                None => (&mut t.writes, line),
            };
            let v: Vec<u64> = fields
                .split_whitespace()
                .map(|f| {
                    f.parse()
                        .unwrap_or_else(|_| panic!("timing line {}: {line:?}", n + 1))
                })
                .collect();
            assert_eq!(v.len(), 2, "timing line {}: {line:?}", n + 1);
            list.push((v[0], v[1]));
        }
        assert!(
            t.writes.windows(2).all(|w| w[0].0 < w[1].0),
            "timing log: write indices are not increasing"
        );
        t
    }

    /// When output frame `j` sounds (CLOCK_MONOTONIC ns, fractional): the record of the write
    /// that holds it, advanced at the DAC's rate. `None` before the first write, or when a stop
    /// discarded the frame before it was heard.
    pub fn sound_ns(&self, j: u64) -> Option<f64> {
        let i = self.writes.partition_point(|w| w.0 <= j).checked_sub(1)?;
        let (index, ns) = self.writes[i];
        let next = self.writes.get(i + 1).map_or(u64::MAX, |w| w.0);
        if self
            .stops
            .iter()
            .any(|&(s, _)| s > index && s <= j && s <= next)
        {
            return None;
        }
        Some(ns as f64 + (j - index) as f64 * 1e9 / self.rate)
    }
}

pub fn timing_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".timing");
    PathBuf::from(s)
}

/// One stretch of input found verbatim in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// Input frame index of the stretch's first frame.
    pub input: usize,
    /// Output frame index where it was found.
    pub output: usize,
}

impl Anchor {
    pub fn offset(&self) -> i64 {
        self.output as i64 - self.input as i64
    }
}

/// The anchors found, and how many were looked for.
#[derive(Debug, Clone)]
pub struct Anchors {
    pub found: Vec<Anchor>,
    pub tried: usize,
}

impl Anchors {
    /// The distinct offsets, in order of appearance (consecutive repeats merged).
    pub fn offsets(&self) -> Vec<i64> {
        let mut v: Vec<i64> = Vec::new();
        for a in &self.found {
            if v.last() != Some(&a.offset()) {
                v.push(a.offset());
            }
        }
        v
    }
}

fn pack(f: &Frame) -> u32 {
    (f[0] as u16 as u32) | ((f[1] as u16 as u32) << 16)
}

fn find(hay: &[u32], needle: &[u32], range: Range<i64>) -> Option<usize> {
    let start = range.start.max(0) as usize;
    let end = (range.end.max(0) as usize).min(hay.len());
    if needle.is_empty() || end < start + needle.len() {
        return None;
    }
    (start..=end - needle.len())
        .find(|&i| hay[i] == needle[0] && hay[i..i + needle.len()] == *needle)
}

/// Looks for `len`-frame stretches of `input`, one every `step` frames of `span` (the noise),
/// in `output`. Each is searched first where the previous offset puts it, then within ±`near`
/// frames of that, then anywhere; a stretch not found (cut by an inserted or dropped frame, or
/// concealed as silence) is skipped.
pub fn find_anchors(
    input: &[Frame],
    output: &[Frame],
    span: Range<usize>,
    len: usize,
    step: usize,
    near: i64,
) -> Anchors {
    let inp: Vec<u32> = input.iter().map(pack).collect();
    let out: Vec<u32> = output.iter().map(pack).collect();
    let mut found = Vec::new();
    let mut tried = 0;
    let mut prev: Option<i64> = None;
    let mut k = span.start;
    while k + len <= span.end {
        tried += 1;
        let needle = &inp[k..k + len];
        let hit = match prev {
            Some(off) => {
                let e = k as i64 + off;
                find(&out, needle, e..e + len as i64)
                    .or_else(|| find(&out, needle, e - near..e + near + len as i64))
                    .or_else(|| find(&out, needle, 0..out.len() as i64))
            }
            None => find(&out, needle, 0..out.len() as i64),
        };
        if let Some(j) = hit {
            let a = Anchor {
                input: k,
                output: j,
            };
            prev = Some(a.offset());
            found.push(a);
        }
        k += step;
    }
    Anchors { found, tried }
}

/// The key=value pairs of the last `stream summary:` line in a daemon log.
#[derive(Debug, Clone)]
pub struct Summary {
    pub line: String,
    pub values: BTreeMap<String, f64>,
}

impl Summary {
    /// The last summary in `log`; panics (with the log's end) if there is none.
    pub fn from_log(log: &str) -> Summary {
        let line = log
            .lines()
            .rev()
            .find_map(|l| l.split_once("stream summary: ").map(|(_, s)| s.trim()))
            .unwrap_or_else(|| {
                let start = log.len().saturating_sub(4000);
                panic!(
                    "no `stream summary:` line in the daemon log; its end:\n{}",
                    String::from_utf8_lossy(&log.as_bytes()[start..])
                )
            });
        let values = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v)))
            .collect();
        Summary {
            line: line.to_string(),
            values,
        }
    }

    /// A value; panics if the summary lacks it.
    pub fn get(&self, key: &str) -> f64 {
        *self
            .values
            .get(key)
            .unwrap_or_else(|| panic!("stream summary has no {key}: {}", self.line))
    }

    pub fn int(&self, key: &str) -> i64 {
        self.get(key) as i64
    }
}
