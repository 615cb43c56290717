//! A small, portable, seedable random number generator.
//!
//! Dropout masks, weight initialisation and data shuffling draw from it, on
//! the host and on the device alike, so a seed reproduces a run bit for bit on
//! any target. The state is one `u64` that the caller owns (and a checkpoint
//! can save).
//!
//! Algorithm: SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom
//! number generators", OOPSLA 2014): state += 0x9E3779B97F4A7C15, then a
//! 64-bit finaliser. Period 2^64, passes BigCrush; not cryptographic.

/// SplitMix64 generator; the whole state is [`Rng::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Rng {
    /// The generator state; any value is valid.
    pub state: u64,
}

impl Rng {
    /// A generator seeded with `seed` (any value, zero included).
    pub const fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next 32 uniformly distributed bits (the high half of `next_u64`).
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `[0, 1)` with 24 bits of resolution (every value exact in f32).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f32()
    }

    /// Uniform integer in `[0, bound)` without modulo bias (Lemire's
    /// multiply-shift with rejection). `bound = 0` returns 0.
    pub fn below(&mut self, bound: u32) -> u32 {
        if bound == 0 {
            return 0;
        }
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let m = u64::from(self.next_u32()) * u64::from(bound);
            if (m as u32) >= threshold {
                return (m >> 32) as u32;
            }
        }
    }

    /// A standard normal deviate (Box–Muller, one of the pair), mean 0 and
    /// variance 1, using `libm` for `ln`, `sqrt` and `cos`.
    pub fn normal(&mut self) -> f32 {
        // u1 in (0, 1] so that ln(u1) is finite.
        let u1 = 1.0 - self.next_f32();
        let u2 = self.next_f32();
        libm::sqrtf(-2.0 * libm::logf(u1)) * libm::cosf(core::f32::consts::TAU * u2)
    }

    /// Fisher–Yates shuffle of `items` in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            // `i + 1` fits in u32 for any slice a microcontroller or a
            // training set holds; larger slices shuffle only their tail.
            let bound = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let j = self.below(bound) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs for seed 1234567 of Vigna's splitmix64.c
        // (prng.di.unimi.it), recomputed with a Python transcription of it.
        let mut r = Rng::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(r.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn uniform_and_normal_moments() {
        let mut r = Rng::new(7);
        let n = 200_000;
        let (mut s, mut s2, mut g, mut g2) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for _ in 0..n {
            let u = r.next_f32() as f64;
            assert!((0.0..1.0).contains(&u));
            s += u;
            s2 += u * u;
            let z = r.normal() as f64;
            assert!(z.is_finite());
            g += z;
            g2 += z * z;
        }
        let n = n as f64;
        assert!((s / n - 0.5).abs() < 0.005);
        assert!((s2 / n - s / n * (s / n) - 1.0 / 12.0).abs() < 0.002);
        assert!((g / n).abs() < 0.01);
        assert!((g2 / n - 1.0).abs() < 0.01);
    }

    #[test]
    fn below_is_in_range_and_shuffle_is_a_permutation() {
        let mut r = Rng::new(3);
        for bound in [1u32, 2, 3, 10, 1000] {
            for _ in 0..100 {
                assert!(r.below(bound) < bound);
            }
        }
        let mut v: [u32; 50] = core::array::from_fn(|i| i as u32);
        r.shuffle(&mut v);
        let mut seen = [false; 50];
        for &x in &v {
            seen[x as usize] = true;
        }
        assert!(seen.iter().all(|&b| b));
        assert_ne!(v, core::array::from_fn(|i| i as u32));
    }
}
