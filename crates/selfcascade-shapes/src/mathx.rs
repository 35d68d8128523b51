//! Small bit-exact numeric helpers: a counter-based hash generator, portable sine/cosine and value noise.
//!
//! Everything here uses only IEEE-754 basic operations (`+ - * /`, `sqrt`, `floor`, `round`), which are
//! correctly rounded on every platform Rust supports, so results are identical everywhere. Rust never
//! contracts `a * b + c` into a fused multiply-add on its own, so no platform difference sneaks in there.

/// SplitMix64 finaliser: a high-quality 64-bit mix.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Tiny deterministic generator (SplitMix64). Its stream is fixed by this crate, not by an external
/// library version, so scenes sampled from a seed never change when dependencies are upgraded.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: mix64(seed ^ 0x5EED_5CA1_AB1E_0001),
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)` with 53 bits of resolution.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub(crate) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform index in `0..n` (`n > 0`), by multiply-shift (bias below 2^-32 for tiny `n`).
    pub(crate) fn index(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Approximately standard normal: Irwin–Hall sum of 12 uniforms minus 6 (exact mean 0, variance 1).
    pub(crate) fn normal(&mut self) -> f64 {
        let mut s = 0.0;
        for _ in 0..12 {
            s += self.next_f64();
        }
        s - 6.0
    }
}

/// Portable `(sin x, cos x)`: quadrant reduction plus Taylor polynomials on `[-π/4, π/4]`
/// (absolute error below 1e-12 for |x| < 1e3).
pub(crate) fn sin_cos(x: f64) -> (f64, f64) {
    if !x.is_finite() {
        return (0.0, 1.0);
    }
    let k = (x / std::f64::consts::FRAC_PI_2).round();
    let r = x - k * std::f64::consts::FRAC_PI_2;
    let r2 = r * r;
    let s = r
        * (1.0
            - r2 / 6.0
                * (1.0 - r2 / 20.0 * (1.0 - r2 / 42.0 * (1.0 - r2 / 72.0 * (1.0 - r2 / 110.0)))));
    let c = 1.0
        - r2 / 2.0
            * (1.0
                - r2 / 12.0
                    * (1.0
                        - r2 / 30.0 * (1.0 - r2 / 56.0 * (1.0 - r2 / 90.0 * (1.0 - r2 / 132.0)))));
    match (k as i64).rem_euclid(4) {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

/// Lattice value in `[-1, 1]` for integer cell `(ix, iy)` of octave `octave` and texture `seed`.
fn lattice(seed: u64, octave: u64, ix: i64, iy: i64) -> f64 {
    let h = mix64(
        seed ^ mix64(octave.wrapping_mul(0xA24B_AED4_963E_E407))
            ^ mix64((ix as u64).wrapping_mul(0x9FB2_1C65_1E98_DF25))
            ^ (iy as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93),
    );
    (h >> 11) as f64 * (2.0 / (1u64 << 53) as f64) - 1.0
}

/// Smoothly interpolated value noise with `freq` cells per unit side, result in `[-1, 1]`. Defined in
/// canvas coordinates, hence identical at every resolution. Lattice values covering `[0, 1]²` are
/// tabulated once; points outside are hashed on the fly (same values).
pub(crate) struct ValueNoise {
    seed: u64,
    octave: u64,
    freq: f64,
    side: usize,
    table: Vec<f64>,
}

impl ValueNoise {
    pub(crate) fn new(seed: u64, octave: u64, freq: f64) -> Self {
        let side = if freq.is_finite() && freq > 0.0 && freq < 4096.0 {
            freq.ceil() as usize + 2
        } else {
            0
        };
        let mut table = Vec::with_capacity(side * side);
        for iy in 0..side {
            for ix in 0..side {
                table.push(lattice(seed, octave, ix as i64, iy as i64));
            }
        }
        Self {
            seed,
            octave,
            freq,
            side,
            table,
        }
    }

    fn at(&self, ix: i64, iy: i64) -> f64 {
        let s = self.side as i64;
        if (0..s).contains(&ix) && (0..s).contains(&iy) {
            self.table[(iy * s + ix) as usize]
        } else {
            lattice(self.seed, self.octave, ix, iy)
        }
    }

    /// Noise value at canvas point `(u, v)`.
    pub(crate) fn sample(&self, u: f64, v: f64) -> f64 {
        let x = u * self.freq;
        let y = v * self.freq;
        let fx = x.floor();
        let fy = y.floor();
        let tx = x - fx;
        let ty = y - fy;
        // Smoothstep weights keep the texture free of visible lattice creases.
        let sx = tx * tx * (3.0 - 2.0 * tx);
        let sy = ty * ty * (3.0 - 2.0 * ty);
        let ix = fx as i64;
        let iy = fy as i64;
        let a = self.at(ix, iy);
        let b = self.at(ix + 1, iy);
        let c = self.at(ix, iy + 1);
        let d = self.at(ix + 1, iy + 1);
        let top = a + (b - a) * sx;
        let bottom = c + (d - c) * sx;
        top + (bottom - top) * sy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sin_cos_matches_std() {
        let mut x = -20.0;
        while x < 20.0 {
            let (s, c) = sin_cos(x);
            assert!((s - x.sin()).abs() < 1e-11, "sin {x}");
            assert!((c - x.cos()).abs() < 1e-11, "cos {x}");
            x += 0.0137;
        }
        assert_eq!(sin_cos(f64::NAN), (0.0, 1.0));
    }

    #[test]
    fn generator_ranges() {
        let mut g = SplitMix64::new(7);
        for _ in 0..1000 {
            let u = g.next_f64();
            assert!((0.0..1.0).contains(&u));
            assert!(g.index(5) < 5);
            let noise = ValueNoise::new(3, 0, 6.0);
            let n = noise.sample(g.next_f64(), g.next_f64());
            assert!((-1.0..=1.0).contains(&n));
            // Outside the tabulated square the hashed lattice gives the same field.
            let far = noise.sample(g.next_f64() + 5.0, -g.next_f64());
            assert!((-1.0..=1.0).contains(&far));
        }
    }
}
