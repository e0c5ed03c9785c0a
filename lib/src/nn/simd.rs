//! Small vector loops written so the compiler vectorises them, and a dispatcher that compiles a
//! function for AVX-512 and AVX2 beside the baseline and picks one at run time (the release
//! build targets plain x86-64, whose SSE2 would use a quarter of the vector width).

/// `y[i] += a · x[i]`.
#[inline(always)]
pub(super) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Σ x[i]·y[i] in 16 independent lanes (a reordering the compiler may not do on its own),
/// returned in f64 for the caller's longer sums.
#[inline(always)]
pub(super) fn dot(x: &[f32], y: &[f32]) -> f64 {
    let mut lanes = [0f32; 16];
    let (xc, yc) = (x.chunks_exact(16), y.chunks_exact(16));
    let tail: f32 = xc.remainder().iter().zip(yc.remainder()).map(|(a, b)| a * b).sum();
    for (a, b) in xc.zip(yc) {
        for k in 0..16 {
            lanes[k] += a[k] * b[k];
        }
    }
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

/// Σ x[i] in 16 lanes, as `dot`.
#[inline(always)]
pub(super) fn sum(x: &[f32]) -> f64 {
    let mut lanes = [0f32; 16];
    let xc = x.chunks_exact(16);
    let tail: f32 = xc.remainder().iter().sum();
    for a in xc {
        for k in 0..16 {
            lanes[k] += a[k];
        }
    }
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

/// Σ (x[i] − m)² in 16 lanes, as `dot`.
#[inline(always)]
pub(super) fn centered_sq_sum(x: &[f32], m: f32) -> f64 {
    let mut lanes = [0f32; 16];
    let xc = x.chunks_exact(16);
    let tail: f32 = xc.remainder().iter().map(|v| (v - m) * (v - m)).sum();
    for a in xc {
        for k in 0..16 {
            let d = a[k] - m;
            lanes[k] += d * d;
        }
    }
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

/// `fn $name(args)` calling `$body(args)` compiled for AVX-512, else AVX2+FMA, else the baseline
/// (`$baseline(args)` there when given: a body written with `f32::mul_add`, say, which is one
/// instruction with FMA and a libm call without).
macro_rules! dispatch_simd {
    ($name:ident, $body:path, ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $crate::nn::simd::dispatch_simd!($name, $body, $body, ($($arg: $ty),*) $(-> $ret)?);
    };
    ($name:ident, $body:path, $baseline:path, ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features the function was compiled for.
                    return unsafe { wide($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $baseline($($arg),*)
        }
    };
}
pub(crate) use dispatch_simd;

/// Asks for the cache line holding `p` ahead of its use (PREFETCHT0); nothing where the target
/// has no such hint. Safe: a prefetch reads nothing and faults on no address.
#[inline(always)]
pub(super) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing and faults on no address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// `x` rounded to the nearest bfloat16 (ties to even, as `half::bf16::from_f32`; NaN stays NaN),
/// kept as f32: the value a bf16 matrix unit multiplies (bf16 × bf16 is exact in f32, so f32
/// FMAs on rounded operands are its arithmetic up to the order of accumulation).
#[inline(always)]
pub(crate) fn bf16_round(x: f32) -> f32 {
    let b = x.to_bits();
    let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
    let r = if nan { b | 0x0040_0000 } else { b.wrapping_add(0x7fff + ((b >> 16) & 1)) };
    f32::from_bits(r & 0xffff_0000)
}

fn bf16_round_slice(x: &mut [f32]) {
    for v in x {
        *v = bf16_round(*v);
    }
}

dispatch_simd!(bf16_round_simd, bf16_round_slice, (x: &mut [f32]));

/// Every value of `x` rounded to bfloat16 in place (`bf16_round`), in the widest vectors the CPU
/// has.
pub(crate) fn bf16_round_in_place(x: &mut [f32]) {
    bf16_round_simd(x)
}

/// A pointer that threads may share because each writes a disjoint part of what it points to.
pub(super) struct DisjointMut<T = f32>(pub *mut T);
// SAFETY: users write disjoint index sets from each thread (documented at each use).
unsafe impl<T> Send for DisjointMut<T> {}
unsafe impl<T> Sync for DisjointMut<T> {}

impl<T> Clone for DisjointMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for DisjointMut<T> {}

impl<T> DisjointMut<T> {
    /// The pointer `i` elements in (a method, so closures capture the whole Sync wrapper).
    #[inline(always)]
    pub(super) fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

thread_local! {
    /// Set while this thread runs work that is already one of several parallel tasks.
    static SEQUENTIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with `par_for` (and what sizes its work by `pool_threads`) on this thread alone:
/// for a task that is already one of several running in parallel (one image of a batch), where
/// splitting it again would only add fork and join.
pub(super) fn sequential<R>(f: impl FnOnce() -> R) -> R {
    super::scoped::with_setting(&SEQUENTIAL, true, f)
}

/// The threads `par_for` spreads work over here: the rayon pool's, or 1 inside `sequential`.
pub(super) fn pool_threads() -> usize {
    match SEQUENTIAL.with(|s| s.get()) {
        true => 1,
        false => rayon::current_num_threads().max(1),
    }
}

/// Calls `f(i)` for i in 0..count, split into contiguous ranges over the rayon pool's threads.
pub(super) fn par_for(count: usize, f: impl Fn(usize) + Sync) {
    let threads = pool_threads().clamp(1, count.max(1));
    if threads == 1 {
        return (0..count).for_each(f);
    }
    let per = count.div_ceil(threads);
    // On rayon's warm pool: an OS thread spawned per call and part was ~a quarter of an X3D-XS
    // forward (thread start and wake-up), a ninth of PP-TSMv2's.
    rayon::scope(|s| {
        for j in 0..threads {
            let f = &f;
            s.spawn(move |_| (j * per..((j + 1) * per).min(count)).for_each(f));
        }
    });
}

/// `par_for` with the calls handed out one at a time as threads free up (rayon's work
/// stealing), for tasks of unequal cost or counts that do not share out evenly.
pub(super) fn par_for_stealing(count: usize, f: impl Fn(usize) + Sync + Send) {
    if pool_threads() == 1 || count <= 1 {
        return (0..count).for_each(f);
    }
    use rayon::prelude::*;
    (0..count).into_par_iter().with_max_len(1).for_each(f);
}

/// eˣ to within ~2 ulp (Cephes' expf: x = n·ln 2 + r, a degree-7 polynomial for eʳ, 2ⁿ through
/// the exponent bits), branch-free so that loops over it vectorise, where libm's expf is a call
/// per element. Inputs are clamped to the finite range.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.33654, 88.72283);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 5.000_000_1e-1;
    let er = p * r * r + r + 1.0;
    // 2ⁿ (n in [-126, 128]) as two normal powers of two, so neither end leaves f32's range; the
    // integer is read from the mantissa of e + 1.5·2²³ (no float-to-int conversion, no overflow
    // checks: both would keep the loop scalar).
    let a = (n * 0.5).floor();
    let pow2 = |e: f32| {
        let int = (e + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
        f32::from_bits(int.wrapping_add(127) << 23)
    };
    er * pow2(a) * pow2(n - a)
}

/// eˣ for x ≤ 0 (a softmax's shifted scores): the polynomial of [`exp`] in fused multiply-adds,
/// with n found by the round-to-nearest of adding 1.5·2²³ (+ 127, the exponent bias), whose
/// mantissa then holds n + 127, so that one shift makes 2ⁿ (n in [-126, 0] stays normal).
/// For loops compiled with FMA (`dispatch_simd` bodies): elsewhere `mul_add` is a libm call.
#[inline(always)]
pub(super) fn exp_nonpositive(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0 + 127.0;
    // Below -87.34 the result would leave the normal range; above 0 is not asked for. A NaN
    // stays NaN (`f32::max` would drop it).
    let x = if x < -87.33654 { -87.33654 } else { x };
    let t = x.mul_add(std::f32::consts::LOG2_E, MAGIC);
    let n = t - MAGIC;
    let r = n.mul_add(2.121_944_4e-4, n.mul_add(-0.693_359_4, x));
    let p = 1.987_569_1e-4f32.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    let er = (p * r).mul_add(r, r) + 1.0;
    er * f32::from_bits(t.to_bits() << 23)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, libm) = (super::exp(x) as f64, (x as f64).exp());
            worst = worst.max((ours - libm).abs() / libm);
            x += 0.00731;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(super::exp(-200.0) >= 0.0 && super::exp(-200.0) < 1e-37);
        assert!(super::exp(200.0).is_finite());
    }

    #[test]
    fn exp_nonpositive_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (ours, libm) = (super::exp_nonpositive(x) as f64, (x as f64).exp());
            worst = worst.max((ours - libm).abs() / libm);
            x += 0.00731;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(super::exp_nonpositive(0.0), 1.0);
        assert!(super::exp_nonpositive(-200.0) >= 0.0 && super::exp_nonpositive(-200.0) < 1e-37);
        assert_eq!(super::exp_nonpositive(f32::NEG_INFINITY), super::exp_nonpositive(-200.0));
        assert!(super::exp_nonpositive(f32::NAN).is_nan());
    }
}

/// `even[i] = src[2i]`, `odd[i] = src[2i + 1]` over the shorter of the two.
#[inline(always)]
fn deinterleave_pairs(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(src.chunks_exact(2)) {
        *e = pair[0];
        *o = pair[1];
    }
}

dispatch_simd!(deinterleave_simd, deinterleave_pairs, (src: &[f32], even: &mut [f32], odd: &mut [f32]));

/// `deinterleave_pairs` in the widest vectors the CPU has; for callers inside closures, which
/// would not inherit a caller's target features.
pub(super) fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    deinterleave_simd(src, even, odd)
}
// Fused multiply-adds in the vector variants; the baseline has no FMA instruction.

#[cfg(test)]
mod bf16_tests {
    use super::*;

    /// Rounds as candle's f32 → bf16 cast (the `half` crate's): ties to even, overflow to
    /// infinity, NaN kept; the in-place pass (vector code) equals the scalar one.
    #[test]
    fn bf16_rounding_equals_the_half_crate() {
        let mut rng = crate::rng::Rng::new(3);
        let mut xs: Vec<f32> = (0..4099).map(|_| ((rng.uniform() - 0.5) * 1e4) as f32).collect();
        xs.extend([
            0.0,
            -0.0,
            1.0 + f32::EPSILON * 64.0,
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::MAX,
            f32::MIN_POSITIVE / 3.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        let mut vector = xs.clone();
        bf16_round_in_place(&mut vector);
        for (&x, &v) in xs.iter().zip(&vector) {
            let want = half::bf16::from_f32(x).to_f32();
            let got = bf16_round(x);
            assert!(
                want.to_bits() == got.to_bits() || (want.is_nan() && got.is_nan()),
                "{x:e}: {got:e} vs {want:e}"
            );
            assert_eq!(v.to_bits(), got.to_bits(), "{x:e}: vector pass differs");
        }
    }
}
