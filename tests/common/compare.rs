//! Checks that a receiver's raw output holds the input bit for bit.
//!
//! The output starts with whatever the receiver wrote before the stream (often silence) and may
//! end early or late, so the input is first located in it: a stretch of input noise is searched
//! for verbatim, on a frame boundary (noise makes a 2048-frame stretch unique). At that single
//! offset every frame of the input's signal span (first to last non-zero frame) must be present
//! and unchanged. A receiver that drops the start of a stream (shairport-sync loses about 72 ms)
//! is told apart from one that corrupts audio in the middle, and the report says where and how
//! much differs so a failing test explains itself.

use std::fmt;
use std::ops::Range;

use super::audio::{Frame, SAMPLE_RATE};

/// Frames of input searched for verbatim in the output to fix the offset.
const ANCHOR: usize = 2048;
/// Frames per chunk in the chunk-by-chunk diagnostic.
const CHUNK: usize = 1024;
/// How far (frames) around its expected place a chunk is searched for in the diagnostic.
const CHUNK_SEARCH: usize = 5 * SAMPLE_RATE as usize;
/// Mismatch runs listed in the report.
const RUNS_SHOWN: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every frame of the signal span is in the output, unchanged, at one constant offset, and the
    /// input's trailing silence matches wherever the output has it.
    BitExact,
    /// The first `n` frames of the signal span are missing or differ (and are not found at
    /// another offset); everything after is exact.
    BitExactAfterLeadingLoss(usize),
    /// Anything else.
    NotExact,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::BitExact => write!(f, "BIT_EXACT"),
            Verdict::BitExactAfterLeadingLoss(n) => {
                write!(f, "BIT_EXACT_AFTER_LEADING_LOSS({n} frames)")
            }
            Verdict::NotExact => write!(f, "NOT_EXACT"),
        }
    }
}

/// A run of consecutive signal-span frames, after the first exact one, that differ or are missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MismatchRun {
    /// Input frame index where the run starts.
    pub start: usize,
    pub len: usize,
    /// How many of them fall outside the output (it ended early or started late).
    pub missing: usize,
}

/// Everything the comparison found; `Display` gives the multi-line report.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub verdict: Verdict,
    pub input_frames: usize,
    pub output_frames: usize,
    /// The input's signal span: first non-zero frame to one past the last.
    pub span: Range<usize>,
    /// Output index minus input index, when a stretch of the input was found in the output.
    pub offset: Option<i64>,
    /// How the offset was found (or why not).
    pub offset_found_by: String,
    /// Frames of the signal span that are exact at `offset`.
    pub exact_frames: usize,
    /// Frames of the signal span before its first exact frame.
    pub lost_at_start: usize,
    /// Frames after the first exact one that differ or are missing.
    pub mismatched_frames: usize,
    pub mismatch_runs: Vec<MismatchRun>,
    /// Largest sample difference among mismatched frames present in the output.
    pub max_abs_diff: i32,
    /// Input trailing-silence frames compared / differing / beyond the end of the output.
    pub trailing_compared: usize,
    pub trailing_differ: usize,
    pub trailing_absent: usize,
    /// Chunks of the signal span found verbatim anywhere near their expected place, and the
    /// distinct offsets they were found at in order (more than one: drift, drops or repeats).
    pub chunks_found: usize,
    pub chunks_total: usize,
    pub chunk_offsets: Vec<i64>,
    /// First output frame with a sample beyond +-1 LSB (dither is not signal).
    pub output_first_signal: Option<usize>,
    pub input_peak: i32,
    pub output_peak: i32,
}

impl Comparison {
    pub fn is_bit_exact(&self) -> bool {
        self.verdict == Verdict::BitExact
    }
}

/// Compares `input` (the WAV's frames) with `output` (the receiver's raw frames).
pub fn compare(input: &[Frame], output: &[Frame]) -> Comparison {
    let inp: Vec<u32> = input.iter().map(pack).collect();
    let out: Vec<u32> = output.iter().map(pack).collect();
    let first_nz = inp.iter().position(|&f| f != 0);
    let last_nz = inp.iter().rposition(|&f| f != 0);
    let span = match (first_nz, last_nz) {
        (Some(a), Some(b)) => a..b + 1,
        _ => panic!("compare: the input is all silence"),
    };
    let mut c = Comparison {
        verdict: Verdict::NotExact,
        input_frames: input.len(),
        output_frames: output.len(),
        span: span.clone(),
        offset: None,
        offset_found_by: String::new(),
        exact_frames: 0,
        lost_at_start: span.len(),
        mismatched_frames: 0,
        mismatch_runs: Vec::new(),
        max_abs_diff: 0,
        trailing_compared: 0,
        trailing_differ: 0,
        trailing_absent: 0,
        chunks_found: 0,
        chunks_total: 0,
        chunk_offsets: Vec::new(),
        output_first_signal: output
            .iter()
            .position(|f| f.iter().any(|&s| (s as i32).abs() > 1)),
        input_peak: peak(input),
        output_peak: peak(output),
    };

    // 1. The offset: a stretch of input found verbatim in the output.
    let alen = ANCHOR.min(span.len());
    for frac in [0.5, 0.25, 0.75, 0.1, 0.9, 0.02, 0.98] {
        let k = span.start + (frac * (span.len() - alen) as f64) as usize;
        if let Some(pos) = find(&out, &inp[k..k + alen], 0..out.len()) {
            c.offset = Some(pos as i64 - k as i64);
            c.offset_found_by = format!("exact match of input frames {k}..{}", k + alen);
            break;
        }
    }
    let Some(off) = c.offset else {
        c.offset_found_by = "no stretch of the input is in the output verbatim".to_string();
        c.chunks_total = span.len() / CHUNK;
        return c;
    };

    // 2. Frame by frame at that offset.
    let at = |k: usize| -> Option<u32> {
        let j = k as i64 + off;
        (j >= 0 && (j as usize) < out.len()).then(|| out[j as usize])
    };
    let exact: Vec<bool> = span.clone().map(|k| at(k) == Some(inp[k])).collect();
    c.exact_frames = exact.iter().filter(|&&e| e).count();
    c.lost_at_start = exact.iter().position(|&e| e).unwrap_or(span.len());
    let mut k = span.start + c.lost_at_start;
    while k < span.end {
        if exact[k - span.start] {
            k += 1;
            continue;
        }
        let start = k;
        let mut missing = 0;
        while k < span.end && !exact[k - span.start] {
            match at(k) {
                Some(o) => c.max_abs_diff = c.max_abs_diff.max(max_diff(o, inp[k])),
                None => missing += 1,
            }
            k += 1;
        }
        c.mismatched_frames += k - start;
        c.mismatch_runs.push(MismatchRun {
            start,
            len: k - start,
            missing,
        });
    }
    for (k, &want) in inp.iter().enumerate().skip(span.end) {
        match at(k) {
            Some(o) => {
                c.trailing_compared += 1;
                if o != want {
                    c.trailing_differ += 1;
                }
            }
            None => c.trailing_absent += 1,
        }
    }

    // 3. Diagnostic: where is each chunk of the input, if anywhere?
    let mut prev = off;
    for c0 in (span.start..span.end.saturating_sub(CHUNK - 1)).step_by(CHUNK) {
        c.chunks_total += 1;
        let key = &inp[c0..c0 + CHUNK];
        let expected = c0 as i64 + prev;
        let lo = (expected - CHUNK_SEARCH as i64).max(0) as usize;
        let hi = ((expected + (CHUNK + CHUNK_SEARCH) as i64).max(0) as usize).min(out.len());
        let fast = expected >= 0
            && (expected as usize + CHUNK) <= out.len()
            && &out[expected as usize..expected as usize + CHUNK] == key;
        let pos = if fast {
            Some(expected as usize)
        } else {
            find(&out, key, lo..hi)
        };
        if let Some(pos) = pos {
            c.chunks_found += 1;
            prev = pos as i64 - c0 as i64;
            if c.chunk_offsets.last() != Some(&prev) {
                c.chunk_offsets.push(prev);
            }
        }
    }

    // Part of the input found at a second offset means a gap or a repeat, not a lost start.
    let one_offset = c.chunk_offsets.len() <= 1;
    let clean = c.mismatch_runs.is_empty() && c.trailing_differ == 0 && one_offset;
    c.verdict = if c.exact_frames == 0 || !clean {
        Verdict::NotExact
    } else if c.lost_at_start == 0 {
        Verdict::BitExact
    } else {
        Verdict::BitExactAfterLeadingLoss(c.lost_at_start)
    };
    c
}

/// Panics with the full report unless `output` holds `input` bit for bit from its first frame.
pub fn assert_bit_exact(input: &[Frame], output: &[Frame], what: &str) -> Comparison {
    let c = compare(input, output);
    assert!(
        c.is_bit_exact(),
        "{what}: output is not bit-exact: {}\n{c}",
        c.verdict
    );
    c
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |frames: f64| 1000.0 * frames / SAMPLE_RATE as f64;
        let span_len = self.span.len();
        writeln!(
            f,
            "input:  {} frames ({:.3} s), signal span [{}, {}) = {} frames, peak {}",
            self.input_frames,
            self.input_frames as f64 / SAMPLE_RATE as f64,
            self.span.start,
            self.span.end,
            span_len,
            self.input_peak
        )?;
        let first = match self.output_first_signal {
            Some(i) => i.to_string(),
            None => "none".to_string(),
        };
        writeln!(
            f,
            "output: {} frames ({:.3} s), first frame beyond +-1 LSB: {first}, peak {}",
            self.output_frames,
            self.output_frames as f64 / SAMPLE_RATE as f64,
            self.output_peak
        )?;
        let Some(off) = self.offset else {
            writeln!(f, "offset: not found: {}", self.offset_found_by)?;
            if self.output_peak > 0 && self.output_peak != self.input_peak {
                let db = 20.0 * (self.output_peak as f64 / self.input_peak as f64).log10();
                writeln!(
                    f,
                    "levels: output peak is {db:+.1} dB from the input's (volume applied? \
                     resampled? wrong byte order or channel count?)"
                )?;
            } else if self.output_peak == 0 {
                writeln!(f, "levels: the output is all silence")?;
            }
            return write!(f, "{}", self.verdict);
        };
        writeln!(
            f,
            "offset: {off} frames ({:.1} ms) = output index - input index, by {}",
            ms(off as f64),
            self.offset_found_by
        )?;
        writeln!(
            f,
            "exact_frames: {}/{span_len} ({:.3} %) of the signal span",
            self.exact_frames,
            100.0 * self.exact_frames as f64 / span_len as f64
        )?;
        if self.exact_frames > 0 {
            writeln!(
                f,
                "lost_at_start: {} frames ({:.1} ms)",
                self.lost_at_start,
                ms(self.lost_at_start as f64)
            )?;
        } else {
            writeln!(
                f,
                "lost_at_start: no frame of the span matched at this offset"
            )?;
        }
        if !self.mismatch_runs.is_empty() {
            let missing: usize = self.mismatch_runs.iter().map(|r| r.missing).sum();
            writeln!(
                f,
                "after_start: {} frames differ or are missing in {} run(s), {missing} beyond the \
                 output; max |diff| {}",
                self.mismatched_frames,
                self.mismatch_runs.len(),
                self.max_abs_diff
            )?;
            for r in self.mismatch_runs.iter().take(RUNS_SHOWN) {
                writeln!(
                    f,
                    "  input frames {}..{} ({} frames, {:.1} ms at {:.3} s){}",
                    r.start,
                    r.start + r.len,
                    r.len,
                    ms(r.len as f64),
                    r.start as f64 / SAMPLE_RATE as f64,
                    if r.missing > 0 {
                        format!(", {} beyond the output", r.missing)
                    } else {
                        String::new()
                    }
                )?;
            }
            if self.mismatch_runs.len() > RUNS_SHOWN {
                writeln!(f, "  ... {} more", self.mismatch_runs.len() - RUNS_SHOWN)?;
            }
        }
        writeln!(
            f,
            "trailing_silence: {} frames compared ({} differ), {} absent (output ended)",
            self.trailing_compared, self.trailing_differ, self.trailing_absent
        )?;
        let shown: Vec<String> = self
            .chunk_offsets
            .iter()
            .take(10)
            .map(|o| o.to_string())
            .collect();
        writeln!(
            f,
            "chunks: {}/{} chunks of {CHUNK} frames found verbatim; offsets in order: [{}]{}",
            self.chunks_found,
            self.chunks_total,
            shown.join(", "),
            if self.chunk_offsets.len() > 10 {
                " ..."
            } else {
                ""
            }
        )?;
        write!(f, "{}", self.verdict)
    }
}

/// A frame as one integer, for fast equality and search.
fn pack(f: &Frame) -> u32 {
    (f[0] as u16 as u32) | ((f[1] as u16 as u32) << 16)
}

fn max_diff(a: u32, b: u32) -> i32 {
    let d = |x: u32, y: u32| ((x as u16 as i16) as i32 - (y as u16 as i16) as i32).abs();
    d(a, b).max(d(a >> 16, b >> 16))
}

fn peak(frames: &[Frame]) -> i32 {
    frames
        .iter()
        .flat_map(|f| f.iter())
        .map(|&s| (s as i32).abs())
        .max()
        .unwrap_or(0)
}

/// Index of the first occurrence of `needle` in `hay[range]`.
fn find(hay: &[u32], needle: &[u32], range: Range<usize>) -> Option<usize> {
    let end = range.end.min(hay.len());
    if needle.is_empty() || end < range.start + needle.len() {
        return None;
    }
    let first = needle[0];
    (range.start..=end - needle.len())
        .find(|&i| hay[i] == first && &hay[i..i + needle.len()] == needle)
}
