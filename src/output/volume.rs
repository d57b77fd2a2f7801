//! Software volume.
//!
//! AirPlay senders send volume as `volume: <dB>` from -30.0 (quietest) to 0.0 (full), with
//! -144.0 meaning mute. Taken literally, a 30 dB range is too narrow: the bottom of the slider is
//! still loud on a powered speaker. So, like shairport-sync's default software range, the sender's
//! -30..0 is stretched linearly onto -60..0 dB of attenuation:
//!
//! ```text
//! attenuation_db = 2 * airplay_db           for -30 <= airplay_db <= 0
//! gain           = 10 ^ (attenuation_db / 20)
//! airplay_db <= -144 (or below -144)        mute (gain 0)
//! -144 < airplay_db < -30                   clamped to -30 (quietest audible, not mute)
//! airplay_db > 0                            clamped to 0
//! ```
//!
//! The gain is turned into a Q16 fixed-point factor once per volume change, so the per-sample
//! work is one integer multiply, add and shift: routers in this class are 400 MHz MIPS cores
//! without an FPU, where soft-float per sample would cost more than decoding.

/// Fixed-point one: a Q16 gain of `UNITY` is exactly 0 dB.
pub const UNITY: u32 = 1 << 16;
/// The AirPlay value for mute.
pub const MUTE_DB: f32 = -144.0;
/// The quietest non-mute AirPlay volume.
pub const MIN_DB: f32 = -30.0;
/// The loudest AirPlay volume.
pub const MAX_DB: f32 = 0.0;
/// Attenuation at [`MIN_DB`]: the bottom of the stretched range.
pub const RANGE_DB: f32 = 60.0;

/// A volume control that scales samples in place.
pub trait Mixer {
    /// Sets the volume from an AirPlay dB value (see the module docs for the curve).
    fn set_volume(&mut self, airplay_db: f32);
    /// The current volume as an AirPlay dB value, after clamping (-144.0 when muted).
    fn volume_db(&self) -> f32;
    /// Scales interleaved samples in place by the current volume.
    fn apply(&self, frames: &mut [i16]);
}

/// Integer software volume. At 0 dB `apply` leaves samples untouched (bit-exact), and at mute it
/// writes exact zeros.
#[derive(Debug, Clone)]
pub struct SoftMixer {
    db: f32,
    gain: u32,
}

impl Default for SoftMixer {
    /// Full volume: AirPlay senders assume the receiver starts unattenuated until they say
    /// otherwise.
    fn default() -> Self {
        SoftMixer {
            db: MAX_DB,
            gain: UNITY,
        }
    }
}

impl SoftMixer {
    /// A mixer at full volume (0 dB).
    pub fn new() -> Self {
        Self::default()
    }

    /// The current Q16 gain (`UNITY` = 0 dB, 0 = mute).
    pub fn gain(&self) -> u32 {
        self.gain
    }
}

/// Clamps an AirPlay dB value into `[-30, 0]`, or `MUTE_DB`. NaN is `None`: there is no sensible
/// volume to take from it. The RTSP session applies it to every `volume:` it receives, so
/// what is stored, reported (`GET_PARAMETER`, `raopd status`) and played is the same value.
pub fn clamp_airplay_db(db: f32) -> Option<f32> {
    if db.is_nan() {
        None
    } else if db <= MUTE_DB {
        Some(MUTE_DB)
    } else {
        Some(db.clamp(MIN_DB, MAX_DB))
    }
}

/// Q16 gain for an already clamped AirPlay dB value.
fn q16_gain(db: f32) -> u32 {
    if db <= MUTE_DB {
        return 0;
    }
    if db >= MAX_DB {
        return UNITY;
    }
    let attenuation_db = db * (RANGE_DB / -MIN_DB);
    let gain = 10f32.powf(attenuation_db / 20.0) * UNITY as f32;
    // Keep the quietest setting audible and everything below unity on the rounding path of
    // `apply` (which is only overflow-free below UNITY).
    (gain.round() as u32).clamp(1, UNITY - 1)
}

impl Mixer for SoftMixer {
    fn set_volume(&mut self, airplay_db: f32) {
        let Some(db) = clamp_airplay_db(airplay_db) else {
            log::debug!("ignoring NaN volume, keeping {} dB", self.db);
            return;
        };
        self.db = db;
        self.gain = q16_gain(db);
        log::debug!("volume {airplay_db} dB -> {db} dB, Q16 gain {}", self.gain);
    }

    fn volume_db(&self) -> f32 {
        self.db
    }

    fn apply(&self, frames: &mut [i16]) {
        match self.gain {
            UNITY => {}
            0 => frames.fill(0),
            gain => {
                // gain < UNITY, so |s * gain| + 2^15 < 2^31: no overflow in i32. Adding half an
                // LSB before the arithmetic shift rounds to nearest instead of towards -inf,
                // which would add a DC offset.
                let gain = gain as i32;
                for s in frames.iter_mut() {
                    *s = ((i32::from(*s) * gain + (1 << 15)) >> 16) as i16;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_samples() -> Vec<i16> {
        (i16::MIN..=i16::MAX).collect()
    }

    #[test]
    fn zero_db_is_bit_exact_identity() {
        let mut m = SoftMixer::new();
        m.set_volume(-10.0);
        m.set_volume(0.0);
        assert_eq!(m.gain(), UNITY);
        let mut buf = all_samples();
        m.apply(&mut buf);
        assert_eq!(buf, all_samples());
        // Above range clamps to 0 dB, still identity.
        m.set_volume(6.0);
        assert_eq!(m.volume_db(), 0.0);
        m.apply(&mut buf);
        assert_eq!(buf, all_samples());
    }

    #[test]
    fn mute_is_exact_zeros() {
        let mut m = SoftMixer::new();
        for db in [-144.0, -200.0, f32::NEG_INFINITY] {
            m.set_volume(db);
            assert_eq!(m.volume_db(), MUTE_DB);
            let mut buf = all_samples();
            m.apply(&mut buf);
            assert!(buf.iter().all(|&s| s == 0));
        }
    }

    #[test]
    fn curve_end_points_and_clamping() {
        let mut m = SoftMixer::new();
        m.set_volume(-30.0);
        // -60 dB = 0.001 -> 65.536 in Q16.
        assert_eq!(m.gain(), 66);
        m.set_volume(-15.0);
        // -30 dB = 0.0316 -> 2072.4 in Q16.
        assert_eq!(m.gain(), 2072);
        m.set_volume(-100.0);
        assert_eq!(m.volume_db(), MIN_DB);
        assert_eq!(m.gain(), 66);
        m.set_volume(f32::NAN);
        assert_eq!(m.volume_db(), MIN_DB, "NaN must not change the volume");
        let mut buf = [32767, -32768, 1000, -1000, 0];
        m.apply(&mut buf);
        assert_eq!(buf, [33, -33, 1, -1, 0]);
    }

    #[test]
    fn curve_is_monotonic() {
        let mut m = SoftMixer::new();
        let mut last_gain = 0;
        let mut last_out = 0i16;
        m.set_volume(MUTE_DB);
        assert_eq!(m.gain(), 0);
        for step in 0..=300 {
            let db = -30.0 + step as f32 * 0.1;
            m.set_volume(db);
            let g = m.gain();
            assert!(
                g >= last_gain,
                "gain fell from {last_gain} to {g} at {db} dB"
            );
            assert!(g > 0);
            let mut s = [20_000i16];
            m.apply(&mut s);
            assert!(s[0] >= last_out);
            last_gain = g;
            last_out = s[0];
        }
        assert_eq!(last_gain, UNITY);
        // Large steps are strictly increasing.
        let gains: Vec<u32> = (-30..=0)
            .step_by(5)
            .map(|db| {
                m.set_volume(db as f32);
                m.gain()
            })
            .collect();
        assert!(gains.windows(2).all(|w| w[0] < w[1]), "{gains:?}");
    }

    #[test]
    fn attenuation_is_symmetric_and_rounded() {
        let mut m = SoftMixer::new();
        m.set_volume(-3.0); // -6 dB
        let g = m.gain() as f64 / UNITY as f64;
        assert!((g - 10f64.powf(-6.0 / 20.0)).abs() < 1e-4);
        let mut buf = all_samples();
        m.apply(&mut buf);
        for (out, inp) in buf.iter().zip(all_samples()) {
            let exact = inp as f64 * m.gain() as f64 / UNITY as f64;
            assert!((*out as f64 - exact).abs() <= 0.5, "{inp} -> {out}");
        }
    }
}
