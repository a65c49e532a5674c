//! SplitMix64, the small seeded generator behind every random choice of the
//! simulator, so that one seed always gives the same fleet and the same runs.
//!
//! The algorithm is Steele, Lea and Flood's SplitMix64 ("Fast splittable
//! pseudorandom number generators", OOPSLA 2014): a Weyl sequence with step
//! `0x9E3779B97F4A7C15` passed through a 64-bit finalizer. It is not
//! cryptographic, which the simulator does not need.

/// Weyl-sequence increment of SplitMix64 (the golden ratio in 64-bit fixed point).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A SplitMix64 generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// Creates a generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// Creates the generator of one numbered stream (such as a device index)
    /// of `seed`, so that each device draws from its own sequence whatever
    /// order the devices run in.
    pub fn for_stream(seed: u64, stream: u64) -> Self {
        let mut mixer = SplitMix64::new(seed ^ stream.wrapping_add(1).wrapping_mul(GAMMA));
        SplitMix64::new(mixer.next_u64())
    }

    /// Returns the next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Returns a float in `[0, 1)` built from 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        (self.next_u64() >> 11) as f64 * SCALE
    }

    /// Returns a value in `0..bound`, or 0 when `bound` is 0.
    ///
    /// Uses Lemire's multiply-and-shift with rejection, so every value is
    /// equally likely.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        let mut product = u128::from(self.next_u64()) * u128::from(bound);
        let mut low = product as u64;
        if low < bound {
            let threshold = bound.wrapping_neg() % bound;
            while low < threshold {
                product = u128::from(self.next_u64()) * u128::from(bound);
                low = product as u64;
            }
        }
        (product >> 64) as u64
    }

    /// Returns a value in `low..=high`; `low` when the range is empty.
    pub fn between(&mut self, low: i64, high: i64) -> i64 {
        if high <= low {
            return low;
        }
        let span = high.abs_diff(low).saturating_add(1);
        low.wrapping_add(self.below(span) as i64)
    }

    /// Returns true with `probability` (clamped to `[0, 1]`).
    pub fn chance(&mut self, probability: f64) -> bool {
        self.next_f64() < probability
    }

    /// Returns a uniformly chosen element, `None` for an empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        let index = self.below(items.len() as u64) as usize;
        items.get(index)
    }

    /// Returns an index chosen with probability proportional to its weight;
    /// `None` when no weight is positive.
    pub fn pick_weighted(&mut self, weights: &[f64]) -> Option<usize> {
        let total: f64 = weights.iter().filter(|w| **w > 0.0).sum();
        if total <= 0.0 {
            return None;
        }
        let mut point = self.next_f64() * total;
        let mut last_positive = None;
        for (index, weight) in weights.iter().enumerate() {
            if *weight <= 0.0 {
                continue;
            }
            if point < *weight {
                return Some(index);
            }
            point -= weight;
            last_positive = Some(index);
        }
        // Rounding can leave `point` a hair above the last weight.
        last_positive
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for index in (1..items.len()).rev() {
            let other = self.below(index as u64 + 1) as usize;
            items.swap(index, other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_reference_outputs() {
        // Reference values of SplitMix64 for seeds 0 and 1234567, computed
        // independently from the published algorithm.
        let cases: [(u64, [u64; 3]); 2] = [
            (
                0,
                [0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f],
            ),
            (
                1_234_567,
                [0x599ed017fb08fc85, 0x2c73f08458540fa5, 0x883ebce5a3f27c77],
            ),
        ];
        for (seed, expected) in cases {
            let mut rng = SplitMix64::new(seed);
            for (index, value) in expected.into_iter().enumerate() {
                assert_eq!(rng.next_u64(), value, "seed {seed}, output {index}");
            }
        }
    }

    #[test]
    fn same_seed_same_sequence() {
        let mut first = SplitMix64::new(42);
        let mut second = SplitMix64::new(42);
        let mut other = SplitMix64::new(43);

        let a: Vec<u64> = (0..16).map(|_| first.next_u64()).collect();
        let b: Vec<u64> = (0..16).map(|_| second.next_u64()).collect();
        let c: Vec<u64> = (0..16).map(|_| other.next_u64()).collect();

        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn streams_are_independent() {
        let mut device_0 = SplitMix64::for_stream(7, 0);
        let mut device_1 = SplitMix64::for_stream(7, 1);
        let mut device_0_again = SplitMix64::for_stream(7, 0);

        let first = device_0.next_u64();

        assert_ne!(first, device_1.next_u64());
        assert_eq!(first, device_0_again.next_u64());
    }

    #[test]
    fn bounded_draws_stay_in_range() {
        let mut rng = SplitMix64::new(9);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            let value = rng.below(7);
            assert!(value < 7, "below(7) returned {value}");
            seen[value as usize] += 1;
        }
        // Each of the 7 values should come up about 1000 times.
        for (value, count) in seen.iter().enumerate() {
            assert!(
                (850..1150).contains(count),
                "value {value} seen {count} times"
            );
        }
        for _ in 0..1000 {
            let value = rng.between(20, 60);
            assert!(
                (20..=60).contains(&value),
                "between(20, 60) returned {value}"
            );
            let unit = rng.next_f64();
            assert!((0.0..1.0).contains(&unit), "next_f64 returned {unit}");
        }
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.between(5, 5), 5);
    }

    #[test]
    fn weighted_pick_skips_zero_weights() {
        let mut rng = SplitMix64::new(3);
        let weights = [0.0, 1.0, 0.0, 3.0];
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            let index = rng.pick_weighted(&weights).expect("positive weights exist");
            counts[index] += 1;
        }

        assert_eq!(counts[0], 0);
        assert_eq!(counts[2], 0);
        assert!(
            (850..1150).contains(&counts[1]),
            "index 1 picked {} times",
            counts[1]
        );
        assert_eq!(rng.pick_weighted(&[0.0, -1.0]), None);
    }

    #[test]
    fn shuffle_keeps_elements() {
        let mut rng = SplitMix64::new(11);
        let mut items: Vec<u32> = (0..50).collect();

        rng.shuffle(&mut items);

        assert_ne!(items, (0..50).collect::<Vec<u32>>());
        items.sort_unstable();
        assert_eq!(items, (0..50).collect::<Vec<u32>>());
    }
}
