//! SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
//! OOPSLA 2014; the constants of Vigna's `splitmix64.c`): tiny, seedable, well mixed, and no
//! dependency for a shuffle or a think time.
//!
//! The splits, the soundscape mixer, the ETL, the trainer's augmentation and the load generator
//! depend on this exact sequence (`crates/data/tests/identity.rs` hashes their outputs): change
//! nothing here that alters a returned value.

/// The SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed; different streams come from different seeds.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        Self::mix(self.0)
    }

    /// SplitMix64's output function alone: a well-mixed 64-bit hash of `z`.
    /// `SplitMix64::new(x).next_u64() == SplitMix64::mix(x + 0x9E37_79B9_7F4A_7C15)`.
    pub fn mix(z: u64) -> u64 {
        let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`: the top 53 bits of [`next_u64`](Self::next_u64) over `2^53`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`) by the remainder of [`next_u64`](Self::next_u64). The splits
    /// and shuffles use this one.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `0..n` (`n > 0`) by scaling [`uniform`](Self::uniform): a different draw
    /// from [`below`](Self::below) for the same state; the load generator uses this one.
    pub fn index(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }

    /// Exponential with the given mean (Poisson inter-arrival and think times).
    pub fn exponential(&mut self, mean: f64) -> f64 {
        // 1 - U lies in (0, 1], so the log is finite.
        -(1.0 - self.uniform()).ln() * mean
    }

    /// Fisher–Yates shuffle, drawing with [`below`](Self::below).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // splitmix64.c seeded with 0 (Vigna's reference implementation).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn mix_is_one_step_of_the_generator() {
        for x in [0u64, 1, 42, u64::MAX] {
            let step = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            assert_eq!(SplitMix64::new(x).next_u64(), SplitMix64::mix(step));
        }
    }

    #[test]
    fn draws_stay_in_range() {
        let mut r = SplitMix64::new(7);
        for _ in 0..1000 {
            assert!((0.0..1.0).contains(&r.uniform()));
            assert!(r.below(3) < 3);
            assert!(r.index(5) < 5);
            assert!(r.exponential(2.0) >= 0.0);
        }
        let mut v: Vec<u32> = (0..50).collect();
        r.shuffle(&mut v);
        v.sort_unstable();
        assert_eq!(v, (0..50).collect::<Vec<_>>());
    }
}
