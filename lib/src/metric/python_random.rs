//! CPython's `random` module, as far as youtube-8m's average precision calculator uses it:
//! `random.seed(0); random.sample(range(n), n)` (`AveragePrecisionCalculator._shuffle` in
//! google/youtube-8m `average_precision_calculator.py`). That shuffle decides the order of equal
//! scores in GAP, so matching the reference on ties means drawing the same permutation.
//!
//! The generator is MT19937 (Matsumoto & Nishimura's `mt19937ar.c`, which CPython's
//! `Modules/_randommodule.c` carries), seeded by `init_by_array` with the seed's 32-bit words,
//! least significant first (`seed(0)` is the key `[0]`). `sample` is `Lib/random.py`'s pool
//! branch, the only one a full-length sample takes (its set size `21 + 4**ceil(log4(3k))`
//! always exceeds `n = k`), and `_randbelow_with_getrandbits` draws `n.bit_length()` bits,
//! rejecting values `>= n`.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// A `random.Random` instance: the MT19937 state and its position.
pub struct PythonRandom {
    mt: [u32; N],
    index: usize,
}

impl PythonRandom {
    /// `random.seed(seed)` for a non-negative integer below 2**32.
    pub fn seed(seed: u32) -> Self {
        let mut r = Self { mt: [0; N], index: N };
        r.init_by_array(&[seed]);
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..N {
            let prev = self.mt[i - 1];
            self.mt[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        self.index = N;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = self.mt[i - 1];
            self.mt[i] =
                (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
        }
        self.mt[0] = 0x8000_0000; // MSB is 1, assuring a non-zero initial array
    }

    fn twist(&mut self) {
        for kk in 0..N {
            let y = (self.mt[kk] & UPPER_MASK) | (self.mt[(kk + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.mt[kk] = self.mt[(kk + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// `genrand_uint32`: the next tempered 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `getrandbits(k)` for `1 <= k <= 32`: the top `k` bits of one output.
    fn getrandbits(&mut self, k: u32) -> u32 {
        self.next_u32() >> (32 - k)
    }

    /// `_randbelow(n)`: uniform in `[0, n)`, for `0 < n < 2**32`.
    fn randbelow(&mut self, n: u32) -> u32 {
        let k = 32 - n.leading_zeros(); // n.bit_length()
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r;
            }
        }
    }

    /// `sample(range(n), n)`: a permutation of `0..n`. Panics when `n >= 2**32`.
    pub fn sample_permutation(&mut self, n: usize) -> Vec<usize> {
        assert!(u32::try_from(n).is_ok(), "sample_permutation: {n} items is beyond 32-bit draws");
        let mut pool: Vec<usize> = (0..n).collect();
        (0..n)
            .map(|i| {
                let j = self.randbelow((n - i) as u32) as usize;
                let picked = pool[j];
                pool[j] = pool[n - i - 1];
                picked
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values printed by CPython 3.11 (the decode peers venv):
    //   random.seed(0); [random.getrandbits(32) for _ in range(3)]
    //   random.seed(0); random.sample(range(n), n)

    #[test]
    fn seed_zero_gives_cpythons_first_outputs() {
        let mut r = PythonRandom::seed(0);
        assert_eq!([r.next_u32(), r.next_u32(), r.next_u32()], [3626764237, 1654615998, 3255389356]);
    }

    #[test]
    fn sample_of_a_range_is_cpythons_permutation() {
        assert_eq!(PythonRandom::seed(0).sample_permutation(10), vec![6, 9, 0, 2, 4, 3, 5, 1, 8, 7]);
        assert_eq!(
            PythonRandom::seed(0).sample_permutation(40),
            vec![
                24, 26, 2, 16, 32, 31, 25, 19, 30, 11, 18, 28, 6, 36, 4, 9, 33, 3, 35, 8, 17, 23, 39, 22, 37,
                14, 13, 10, 5, 7, 20, 1, 34, 38, 15, 29, 21, 12, 27, 0
            ]
        );
        // Past one twist of the state (624 outputs).
        assert_eq!(
            PythonRandom::seed(0).sample_permutation(1000)[..8],
            [864, 394, 776, 911, 430, 41, 265, 988]
        );
        assert_eq!(PythonRandom::seed(0).sample_permutation(1), vec![0]);
        assert!(PythonRandom::seed(0).sample_permutation(0).is_empty());
    }
}
