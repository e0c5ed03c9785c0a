//! A small seeded random generator (SplitMix64 seeding a xoshiro256**), owned here so the same
//! `--seed` gives the same bytes on every platform and every dependency version.

#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        Self { s: [splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x)] }
    }

    /// The generator's whole state, for checkpoints: `Rng::from_state(r.state())` continues
    /// exactly where `r` is.
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// Restores a state saved by [`Rng::state`]. All-zero is not a state xoshiro can be in.
    pub fn from_state(s: [u64; 4]) -> Self {
        assert!(s != [0; 4], "Rng::from_state: the all-zero state is invalid");
        Self { s }
    }

    /// An independent generator for item `n` of a run (a video, a clip), so results do not
    /// depend on the order in which parallel workers reach the items.
    pub fn derive(seed: u64, n: u64) -> Self {
        let mut x = seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Self::new(splitmix64(&mut x))
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn uniform_range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [0, n); `n` must be > 0.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        // Lemire's multiply-shift; the bias is < 2^-32 for the sizes we use.
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Uniform integer in [lo, hi] inclusive.
    pub fn int_inclusive(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(hi >= lo);
        lo + self.below((hi - lo + 1) as usize) as i64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal (Box–Muller; one value per call keeps the stream simple to reason about).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

thread_local! {
    /// Tensors drawn so far on this thread by [`randn`] and [`rand`].
    static TENSOR_DRAWS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// `n` values of `draw` from this thread's next seeded generator: the n-th tensor a thread
/// draws is the same on every run (libtest runs each test on a thread of its own).
fn thread_draws(n: usize, mut draw: impl FnMut(&mut Rng) -> f32) -> Vec<f32> {
    let k = TENSOR_DRAWS.with(|c| c.replace(c.get() + 1));
    let mut rng = Rng::derive(0x7e57, k);
    (0..n).map(|_| draw(&mut rng)).collect()
}

/// A tensor of normal draws, as `Tensor::randn`, but seeded (this thread's sequence): candle's
/// CPU generator cannot be seeded, so a test whose tolerance a rare draw could break would
/// fail at random; with these it passes or fails the same way every run.
pub fn randn<S: Into<candle_core::Shape>>(
    mean: f32,
    std: f32,
    shape: S,
    device: &candle_core::Device,
) -> candle_core::Result<candle_core::Tensor> {
    let shape = shape.into();
    let v = thread_draws(shape.elem_count(), |r| mean + std * r.normal() as f32);
    candle_core::Tensor::from_vec(v, shape, device)
}

/// A tensor uniform in [lo, hi), as `Tensor::rand`, seeded as [`randn`].
pub fn rand<S: Into<candle_core::Shape>>(
    lo: f32,
    hi: f32,
    shape: S,
    device: &candle_core::Device,
) -> candle_core::Result<candle_core::Tensor> {
    let shape = shape.into();
    let v = thread_draws(shape.elem_count(), |r| r.uniform_range(lo as f64, hi as f64) as f32);
    candle_core::Tensor::from_vec(v, shape, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_ranges_hold() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = Rng::new(1);
        let mut seen = [0usize; 5];
        for _ in 0..5000 {
            let v = r.below(5);
            seen[v] += 1;
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
        assert_ne!(Rng::derive(1, 0).next_u64(), Rng::derive(1, 1).next_u64());
    }

    #[test]
    fn state_round_trip_continues_the_sequence() {
        let mut a = Rng::new(3);
        a.next_u64();
        let mut b = Rng::from_state(a.state());
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }
}
