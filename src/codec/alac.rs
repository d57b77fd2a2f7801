//! Apple Lossless (ALAC) packets to 16-bit stereo PCM: raopd's own decoder.
//!
//! Why not the `alac` crate, which raopd used before: some corrupt packets make it panic (an
//! `assert!` on an LPC order of 31, a bit count that underflows with a rice limit of 0, a
//! slice index past a zero run), so it ran under `catch_unwind`, and for that alone the
//! release build kept unwinding: unwinding tables, landing pads and the unwinder are about
//! a tenth of the MIPS binary (issue 14, README "Binary size"). This decoder cannot panic on
//! any input: every read is bounds-checked and the arithmetic wraps where the reference's
//! C does (fuzz target `decode`, `scripts/fuzz.sh`). It decodes only what RAOP carries: 16-bit
//! samples, two channels (one channel-pair element, or two single-channel elements), at
//! most [`MAX_FRAMES_PER_PACKET`](super::MAX_FRAMES_PER_PACKET) frames a packet; ANNOUNCE
//! refuses other formats.
//!
//! It follows Apple's reference decoder (`ALACDecoder.cpp`, `ag_dec.c`, `dp_dec.c`,
//! `matrix_dec.c` of the ALAC source release, 2011), also where the `alac` crate departs from
//! it: the adaptive Golomb-Rice history is clamped on the decoded value alone, not with the
//! zero-run sign modifier added (the crate and ffmpeg misread some packets Apple's encoder
//! makes: a full-scale step right after silence); any non-zero prediction mode runs the
//! first-difference pass before the predictor (the crate refuses modes other than 15); an LPC
//! order of 0 leaves the residuals as they are; it stops once both channels are decoded, so
//! the closing `ID_END` tag is not needed. Where the reference is undefined (shifts by 32 or
//! more, a quantisation shift of 0) it does what the crate's release build does. Channels of
//! no bits (a 16-bit shift on a single-channel element) are refused. On every packet an
//! encoder makes, and on damaged ones apart from those cases, it gives what the crate gives
//! (`tests/alac_decoder.rs`).

use super::MAX_FRAMES_PER_PACKET;

const MAX_FRAMES: usize = MAX_FRAMES_PER_PACKET as usize;
/// Element tags (`ALACAudioTypes.h`).
const ID_SCE: u32 = 0;
const ID_CPE: u32 = 1;
const ID_LFE: u32 = 3;
const ID_DSE: u32 = 4;
const ID_FIL: u32 = 6;
/// Output bit depth, the only one RAOP uses.
const BIT_DEPTH: u32 = 16;
/// Channels of every RAOP stream.
const CHANNELS: usize = 2;
/// A rice prefix of this many ones escapes to a plain binary value (`MAX_PREFIX_32`).
const MAX_PREFIX: u32 = 9;
/// Bits of an escaped zero-run length (`MAX_DATATYPE_BITS_16`).
const RUN_BITS: u32 = 16;
/// Fixed-point shift of the rice history (`QBSHIFT`).
const QB_SHIFT: u32 = 9;

/// The ALAC parameters of an SDP `a=fmtp` line that decoding needs; only
/// [`AlacParams::from_fmtp`] makes them, so they are always in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlacParams {
    /// Frames per packet (`frameLength`), 1..=352.
    frame_length: u32,
    /// Rice history multiplier (`pb`, 40 in every sender).
    pb: u8,
    /// Initial rice history (`mb`, 10).
    mb: u8,
    /// Rice parameter limit (`kb`, 14), 1..=31.
    kb: u8,
}

/// Why an `a=fmtp` line is refused: malformed (RTSP `400`), or a format RAOP does not carry
/// (`415`). The text names the parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FmtpError {
    Malformed(String),
    Unsupported(String),
}

impl std::fmt::Display for FmtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FmtpError::Malformed(m) | FmtpError::Unsupported(m) => f.write_str(m),
        }
    }
}

impl AlacParams {
    /// Reads the eleven numbers after the payload type in `a=fmtp:96 ...` (frameLength
    /// compatibleVersion bitDepth pb mb kb numChannels maxRun maxFrameBytes avgBitRate
    /// sampleRate, as in Apple's `ALACSpecificConfig`): the one check of an ALAC format, at
    /// ANNOUNCE (`rtsp::sdp`) and again when the stream's decoder is built. Checked in this
    /// order: eleven parameters; frameLength, bitDepth, numChannels and sampleRate numbers;
    /// 16-bit stereo at [`crate::RATE`] and 1..=352 frames ([`FmtpError::Unsupported`]); the
    /// other parameters numbers, `pb` and `mb` 0..=255, `kb` 1..=31.
    pub fn from_fmtp(params: &str) -> Result<Self, FmtpError> {
        let malformed = |m: String| FmtpError::Malformed(m);
        let f: Vec<&str> = params.split_whitespace().collect();
        let &[frames, _, depth, _, _, _, channels, _, _, _, rate] = f.as_slice() else {
            return Err(malformed(format!(
                "ALAC fmtp needs 11 parameters, got {}",
                f.len()
            )));
        };
        let num = |i: usize, v: &str| {
            v.parse::<u32>()
                .map_err(|_| malformed(format!("ALAC fmtp parameter {} is not a number", i + 1)))
        };
        let (frame_length, depth, channels, rate) = (
            num(0, frames)?,
            num(2, depth)?,
            num(6, channels)?,
            num(10, rate)?,
        );
        if depth != BIT_DEPTH || channels as usize != CHANNELS || rate != crate::RATE {
            return Err(FmtpError::Unsupported(format!(
                "unsupported ALAC format {depth}-bit {channels} ch {rate} Hz (only 16-bit stereo \
                 {} Hz)",
                crate::RATE
            )));
        }
        if frame_length == 0 || frame_length > MAX_FRAMES_PER_PACKET {
            return Err(FmtpError::Unsupported(format!(
                "unsupported ALAC frame length {frame_length} (at most {MAX_FRAMES_PER_PACKET})"
            )));
        }
        let mut v = [0u32; 11];
        for (i, (slot, s)) in v.iter_mut().zip(&f).enumerate() {
            *slot = num(i, s)?;
        }
        let [_, _, _, pb, mb, kb, ..] = v;
        let byte = |x: u32, name: &str| {
            u8::try_from(x).map_err(|_| malformed(format!("ALAC {name} {x} out of range")))
        };
        let (pb, mb, kb) = (byte(pb, "pb")?, byte(mb, "mb")?, byte(kb, "kb")?);
        if !(1..=31).contains(&kb) {
            return Err(malformed(format!("ALAC kb {kb} out of range (1..=31)")));
        }
        Ok(AlacParams {
            frame_length,
            pb,
            mb,
            kb,
        })
    }

    /// Frames per packet (`frameLength`), 1..=352.
    pub fn frame_length(&self) -> u32 {
        self.frame_length
    }
}

/// The packet is not ALAC this decoder can read (cut short, a reserved or unsupported
/// element, inconsistent lengths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

type R<T> = Result<T, Invalid>;

/// An ALAC decoder for one stream: its parameters and the per-channel work buffers
/// (2 × 352 `i32`, inline: no allocation per packet).
pub struct AlacDecoder {
    params: AlacParams,
    mix: [[i32; MAX_FRAMES]; CHANNELS],
}

impl AlacDecoder {
    pub fn new(params: AlacParams) -> Self {
        AlacDecoder {
            params,
            mix: [[0; MAX_FRAMES]; CHANNELS],
        }
    }

    /// Frames per packet of the stream (a packet may hold fewer).
    pub fn frame_length(&self) -> u32 {
        self.params.frame_length()
    }

    /// Decodes one packet into `out` as interleaved left/right samples; returns the number
    /// of frames (`frame_length`, or fewer for a partial frame). `out` must hold
    /// `2 * frame_length` samples, else [`Invalid`].
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> R<usize> {
        let mut r = Reader::new(packet);
        let mut channel = 0;
        let mut frames: Option<usize> = None;
        loop {
            let tag = r.read(3)?;
            match tag {
                ID_SCE | ID_LFE | ID_CPE => {
                    let n = if tag == ID_CPE { 2 } else { 1 };
                    if channel + n > CHANNELS {
                        return Err(Invalid);
                    }
                    let got = self.element(&mut r, out, channel, n)?;
                    if frames.is_some_and(|f| f != got) {
                        return Err(Invalid);
                    }
                    frames = Some(got);
                    channel += n;
                    if channel == CHANNELS {
                        return Ok(got);
                    }
                }
                ID_DSE => {
                    // Data stream element: skipped.
                    r.skip(4)?;
                    let align = r.read(1)? == 1;
                    let mut count = r.read(8)? as usize;
                    if count == 255 {
                        count += r.read(8)? as usize;
                    }
                    if align {
                        r.align()?;
                    }
                    r.skip(count * 8)?;
                }
                ID_FIL => {
                    // Fill element: a 4-bit count, extended by 8 bits (minus one) at 15.
                    let mut count = r.read(4)? as usize;
                    if count == 15 {
                        count = 14 + r.read(8)? as usize;
                    }
                    r.skip(count * 8)?;
                }
                // ID_END (7) before both channels, coupling (2) and program config (5)
                // elements.
                _ => return Err(Invalid),
            }
        }
    }

    /// One audio element of `n` channels (1 or 2) written to channels `first..first + n`
    /// of `out`; returns its frame count.
    fn element(&mut self, r: &mut Reader, out: &mut [i16], first: usize, n: usize) -> R<usize> {
        r.skip(4)?; // element instance tag
        if r.read(12)? != 0 {
            return Err(Invalid);
        }
        let partial = r.read(1)? == 1;
        let shift_bytes = r.read(2)?;
        if shift_bytes > 2 {
            return Err(Invalid);
        }
        let shift = shift_bytes * 8;
        let escape = r.read(1)? == 1;
        let frames = if partial {
            let f = r.read(32)?;
            if f > self.params.frame_length {
                return Err(Invalid);
            }
            f as usize
        } else {
            self.params.frame_length as usize
        };
        let out = out.get_mut(..frames * CHANNELS).ok_or(Invalid)?;

        if escape {
            // Uncompressed: the samples, interleaved, 16 bits each.
            if shift != 0 {
                return Err(Invalid);
            }
            if r.left() < frames * n * BIT_DEPTH as usize {
                return Err(Invalid);
            }
            for frame in out.chunks_exact_mut(CHANNELS) {
                for o in frame.iter_mut().skip(first).take(n) {
                    *o = r.read(BIT_DEPTH)? as u16 as i16;
                }
            }
            return Ok(frames);
        }

        // Compressed: the header of each channel, then its residuals.
        let bits = BIT_DEPTH - shift + n as u32 - 1;
        if bits == 0 {
            return Err(Invalid);
        }
        let mix_bits = r.read(8)?;
        let mix_res = r.read(8)? as u8 as i8 as i32;
        let mut heads = [Predictor::default(); CHANNELS];
        for h in heads.iter_mut().take(n) {
            *h = Predictor::read(r)?;
        }
        // The low bytes of shifted samples follow all headers; the residuals come after them.
        let mut low = r.clone();
        r.skip(shift as usize * frames * n)?;

        let AlacParams { pb, mb, kb, .. } = self.params;
        for (h, mix) in heads.iter_mut().zip(self.mix.iter_mut()).take(n) {
            let buf = mix.get_mut(..frames).ok_or(Invalid)?;
            let hist_mult = u32::from(pb) * h.pb_factor / 4;
            rice_decode(r, buf, bits, u32::from(mb), hist_mult, u32::from(kb))?;
            if h.mode != 0 {
                // Apple's decoder: any mode but 0 (encoders use 15) adds this pass.
                first_difference(buf, bits);
            }
            match h.order {
                // Apple's "numactive == 0": the residuals are the samples.
                0 => {}
                // ... and "numactive == 31": first differences only.
                31 => first_difference(buf, bits),
                o => {
                    let cs = h.coefs.get_mut(..o).ok_or(Invalid)?;
                    predict(buf, bits, cs, h.quant);
                }
            }
        }

        let [u, v] = &mut self.mix;
        let (u, v) = (
            u.get_mut(..frames).ok_or(Invalid)?,
            v.get_mut(..frames).ok_or(Invalid)?,
        );
        if n == 2 && mix_res != 0 {
            for (a, b) in u.iter_mut().zip(v.iter_mut()) {
                let right = a.wrapping_sub(b.wrapping_mul(mix_res).wrapping_shr(mix_bits));
                *a = right.wrapping_add(*b);
                *b = right;
            }
        }
        if shift != 0 {
            // (`r.skip` above made sure these bits are there.)
            for i in 0..frames {
                for ch in [&mut *u, &mut *v].into_iter().take(n) {
                    if let Some(s) = ch.get_mut(i) {
                        *s = s.wrapping_shl(shift) | low.read(shift)? as i32;
                    }
                }
            }
        }
        for (i, frame) in out.chunks_exact_mut(CHANNELS).enumerate() {
            for (k, o) in frame.iter_mut().skip(first).take(n).enumerate() {
                let ch = if k == 0 { &*u } else { &*v };
                *o = ch.get(i).copied().unwrap_or(0) as i16;
            }
        }
        Ok(frames)
    }
}

/// One channel's prediction header in a compressed element.
#[derive(Clone, Copy, Default)]
struct Predictor {
    /// Prediction mode (0, or 15 for a first-difference pass before the predictor).
    mode: u32,
    /// The coefficients' fixed-point shift (`denShift`).
    quant: u32,
    /// Rice history multiplier factor (`pbFactor`), times `pb / 4`.
    pb_factor: u32,
    /// LPC order (`numActive`), 0..=31.
    order: usize,
    /// The coefficients, oldest sample's first.
    coefs: [i16; 32],
}

impl Predictor {
    fn read(r: &mut Reader) -> R<Self> {
        let mut p = Predictor {
            mode: r.read(4)?,
            quant: r.read(4)?,
            pb_factor: r.read(3)?,
            order: r.read(5)? as usize,
            coefs: [0; 32],
        };
        // Stored last coefficient first.
        for k in p.coefs.iter_mut().take(p.order).rev() {
            *k = r.read(16)? as u16 as i16;
        }
        Ok(p)
    }
}

/// Adaptive Golomb-Rice residuals (`ag_dec.c`, `dyn_decomp`): fills `buf`; `bits` is the
/// channel's sample width, `mb` the initial history, `mult` the history multiplier,
/// `kb` the rice limit (>= 1).
fn rice_decode(r: &mut Reader, buf: &mut [i32], bits: u32, mb: u32, mult: u32, kb: u32) -> R<()> {
    let mut history = mb;
    let mut sign_modifier = 0u32;
    let len = buf.len();
    let mut i = 0;
    while i < len {
        let k = (31 - ((history >> QB_SHIFT).wrapping_add(3) | 1).leading_zeros()).min(kb);
        let m = (1u32 << k).wrapping_sub(1);
        let raw = r.rice(m, k, bits)?;
        let val = raw.wrapping_add(sign_modifier);
        sign_modifier = 0;
        if let Some(s) = buf.get_mut(i) {
            *s = ((val >> 1) as i32) ^ -((val & 1) as i32);
        }
        // Clamped on the decoded value alone (`ag_dec.c`; Apple's encoder does the same).
        history = if raw > 0xffff {
            0xffff
        } else {
            history
                .wrapping_add(val.wrapping_mul(mult))
                .wrapping_sub(history.wrapping_mul(mult) >> QB_SHIFT)
        };
        // A run of zeros may follow.
        if history < 128 && i + 1 < len {
            let k = history.leading_zeros() - 24 + ((history + 16) >> 6);
            let m = ((1u32 << k) - 1) & ((1u32 << kb) - 1);
            let run = r.rice(m, k, RUN_BITS)? as usize;
            if run > 0 {
                if run >= len - i {
                    return Err(Invalid);
                }
                for s in buf.iter_mut().skip(i + 1).take(run) {
                    *s = 0;
                }
                i += run;
            }
            if run <= 0xffff {
                sign_modifier = 1;
            }
            history = 0;
        }
        i += 1;
    }
    Ok(())
}

/// Sign-extends the low `bits` bits of `v` (`bits` 0 leaves it as is, as the crate's
/// release build does).
fn sign_extend(v: i32, bits: u32) -> i32 {
    let s = 32u32.wrapping_sub(bits);
    v.wrapping_shl(s).wrapping_shr(s)
}

/// Each sample plus the one before (`unpc_block` with `numactive == 31`).
fn first_difference(buf: &mut [i32], bits: u32) {
    let mut prev: Option<i32> = None;
    for x in buf.iter_mut() {
        if let Some(p) = prev {
            *x = sign_extend(x.wrapping_add(p), bits);
        }
        prev = Some(*x);
    }
}

/// The adaptive LPC predictor (`dp_dec.c`, `unpc_block`): `coefs` (oldest sample's first)
/// adapt as samples are decoded; `quant` is the coefficients' fixed-point shift.
fn predict(buf: &mut [i32], bits: u32, coefs: &mut [i16], quant: u32) {
    let order = coefs.len();
    // The first `order + 1` samples are first differences.
    let head = (order + 1).min(buf.len());
    if let Some(h) = buf.get_mut(..head) {
        first_difference(h, bits);
    }
    let round = 1i32.wrapping_shl(quant.wrapping_sub(1));
    for i in order + 1..buf.len() {
        // [mean, order previous samples, this residual]
        let Some(w) = buf.get_mut(i - order - 1..=i) else {
            break;
        };
        let Some((cur, rest)) = w.split_last_mut() else {
            break;
        };
        let Some((&mut mean, hist)) = rest.split_first_mut() else {
            break;
        };
        let mut sum = 0i32;
        for (x, c) in hist.iter().zip(coefs.iter()) {
            sum = sum.wrapping_add(x.wrapping_sub(mean).wrapping_mul(i32::from(*c)));
        }
        let predicted = sum.wrapping_add(round).wrapping_shr(quant);
        let err = *cur;
        *cur = sign_extend(predicted.wrapping_add(mean).wrapping_add(err), bits);
        if err != 0 {
            let sign = err.signum();
            let mut left = sign.wrapping_mul(err);
            for (j, (x, c)) in hist.iter().zip(coefs.iter_mut()).enumerate() {
                let d = x.wrapping_sub(mean);
                let s = d.signum() * sign;
                *c = c.wrapping_add(s as i16);
                let step = d.wrapping_mul(s).wrapping_shr(quant);
                left = left.wrapping_sub(sign.wrapping_mul(step).wrapping_mul(j as i32 + 1));
                if left <= 0 {
                    break;
                }
            }
        }
    }
}

/// Reads big-endian bit fields; nothing past the end of the packet is ever taken.
#[derive(Clone)]
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    /// Bits read so far.
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bits read so far.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    /// Bits not yet read.
    pub(super) fn left(&self) -> usize {
        (self.buf.len() * 8).saturating_sub(self.pos)
    }

    /// The next 32 bits, zeros past the end.
    fn peek(&self) -> u32 {
        let at = self.pos / 8;
        let word = match self.buf.get(at..at + 8) {
            Some(s) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(s);
                u64::from_be_bytes(b)
            }
            None => {
                let mut b = [0u8; 8];
                for (k, d) in b.iter_mut().enumerate() {
                    *d = self.buf.get(at + k).copied().unwrap_or(0);
                }
                u64::from_be_bytes(b)
            }
        };
        ((word << (self.pos % 8)) >> 32) as u32
    }

    /// The next `n` bits (0..=32).
    pub(super) fn read(&mut self, n: u32) -> R<u32> {
        if n == 0 {
            return Ok(0);
        }
        if self.left() < n as usize {
            return Err(Invalid);
        }
        let v = self.peek() >> (32 - n.min(32));
        self.pos += n as usize;
        Ok(v)
    }

    fn skip(&mut self, n: usize) -> R<()> {
        if self.left() < n {
            return Err(Invalid);
        }
        self.pos += n;
        Ok(())
    }

    fn align(&mut self) -> R<()> {
        self.skip((8 - self.pos % 8) % 8)
    }

    /// One Golomb-Rice value (`dyn_get_32bit`): a unary prefix (at most
    /// [`MAX_PREFIX`] - 1 ones and a zero) times `m`, then a `k`-bit remainder stored in
    /// `k - 1` bits when it is 0; a prefix of [`MAX_PREFIX`] ones escapes to `escape_bits`
    /// plain bits.
    fn rice(&mut self, m: u32, k: u32, escape_bits: u32) -> R<u32> {
        let ones = (!self.peek()).leading_zeros();
        if ones >= MAX_PREFIX {
            self.skip(MAX_PREFIX as usize)?;
            return self.read(escape_bits.min(32));
        }
        self.skip(ones as usize + 1)?;
        if k <= 1 {
            return Ok(ones);
        }
        let high = self.read(k - 1)?;
        let rem = if high > 0 {
            (high << 1) + self.read(1)? - 1
        } else {
            0
        };
        Ok(ones.wrapping_mul(m).wrapping_add(rem))
    }
}
