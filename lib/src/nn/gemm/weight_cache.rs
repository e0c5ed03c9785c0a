//! A model's weights packed once for an inference run: the convolutions' A operand (weights
//! times BatchNorm's scale) converted to bf16 and laid out in tiles for AMX and AVX-512 BF16,
//! instead of packed again in every forward. On a Sapphire Rapids packing A into tiles was
//! 4–5 % of a TSN-R50 bf16 forward's samples (session 30's profile), and the tiles take half
//! the f32 weights' memory.
//!
//! The f32 kernels' panels are cached only on request ([`WeightCache::all_layouts`], which the
//! tests use to run the cache on every machine): they cost a second f32 copy of the weights
//! (TSN-R50 forward: peak RSS 217 → 294 MB) for no gain the noise let us see (packing A is
//! ~1.3 % of an AVX2 f32 forward's samples; 11 alternating rounds within ±10 % of each other).
//!
//! A weight is known by its tensor's id (`as_weight`): candle never reuses an id, and an
//! inference tool's model is a frozen copy whose plain tensors no optimiser changes, so an
//! entry cannot go stale while its [`WeightCache`] lives. The cache is active only inside
//! [`with_weight_cache`] (`precision::Inference::run`); training never enters it, since there
//! the same tensors change every step. An entry also records the shape, the row scale it was
//! packed with, the kernel and the precision, and is packed again if any differs.

use super::{Columns, Isa, MatRef, PackedA};
use candle_core::TensorId;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The packed weights of one inference run, shared by the threads that run its forwards.
#[derive(Default)]
pub struct WeightCache {
    entries: Mutex<HashMap<TensorId, Arc<Entry>>>,
    /// Weights taken as B (a Linear layer's Wᵀ), paired for the bf16 tile paths.
    #[cfg(target_arch = "x86_64")]
    paired: Mutex<HashMap<TensorId, Arc<super::amx::PairedB>>>,
    /// Whether the f32 kernels' panels are cached too, not only tiles.
    panels: bool,
}

impl WeightCache {
    /// A cache of the weights in tiles (bf16 on AMX or AVX-512 BF16).
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A cache of every layout, the f32 kernels' panels too.
    pub fn all_layouts() -> Arc<Self> {
        Arc::new(Self { panels: true, ..Default::default() })
    }

    /// How many weights are packed.
    pub fn len(&self) -> usize {
        #[cfg(target_arch = "x86_64")]
        let paired = self.paired.lock().map_or(0, |e| e.len());
        #[cfg(not(target_arch = "x86_64"))]
        let paired = 0;
        self.entries.lock().map_or(0, |e| e.len()) + paired
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A packed weight and what it was packed from.
pub(super) struct Entry {
    rows: usize,
    cols: usize,
    scale: Option<Vec<f32>>,
    packed: PackedA,
}

impl std::ops::Deref for Entry {
    type Target = PackedA;
    fn deref(&self) -> &PackedA {
        &self.packed
    }
}

thread_local! {
    /// The cache of the inference run on this thread.
    static ACTIVE: RefCell<Option<Arc<WeightCache>>> = const { RefCell::new(None) };
    /// The weight the product about to run on this thread takes as A: its id and its buffer.
    static WEIGHT: Cell<Option<(TensorId, *const f32, usize)>> = const { Cell::new(None) };
}

/// Restores the active cache when dropped, also when the run panics (`with_weight_cache`; a
/// `Cell` setting goes through `scoped::with_setting`).
struct Restore<F: FnMut()>(F);
impl<F: FnMut()> Drop for Restore<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Runs `f` (an inference run's forwards on this thread) with weights packed into `cache`.
pub fn with_weight_cache<T>(cache: &Arc<WeightCache>, f: impl FnOnce() -> T) -> T {
    let mut before = ACTIVE.with(|a| a.borrow_mut().replace(cache.clone()));
    let _restore = Restore(move || ACTIVE.with(|a| *a.borrow_mut() = before.take()));
    f()
}

/// Runs `f`, a product whose A is `data`, the buffer of the weight tensor `id` (the model's
/// own, contiguous), so that an active cache packs it once.
pub fn as_weight<T>(id: TensorId, data: &[f32], f: impl FnOnce() -> T) -> T {
    crate::nn::scoped::with_setting(&WEIGHT, Some((id, data.as_ptr(), data.len())), f)
}

/// The cached packing of A when this thread runs an inference product on a weight (`as_weight`
/// inside `with_weight_cache`), packed now on a miss; None otherwise. Only a product reading the
/// weight's own buffer takes it (not one that work stealing runs on this thread meanwhile), and
/// takes it once.
pub(super) fn packed(
    isa: Isa,
    bf16: bool,
    a: &MatRef,
    a_cols: &Columns,
    scale: Option<&[f32]>,
    threads: usize,
) -> Option<Arc<Entry>> {
    let (id, data, len) = WEIGHT.with(|w| w.get())?;
    if (a.data.as_ptr(), a.data.len()) != (data, len) {
        return None;
    }
    WEIGHT.with(|w| w.set(None));
    let cache = ACTIVE.with(|c| c.borrow().clone())?;
    if !(cache.panels || bf16 && isa.bf16_pairs()) {
        return None;
    }
    // A weight is a plain row-major matrix.
    if a.cs != 1 || a.rs != a.cols || a_cols.per < a.cols {
        return None;
    }
    let scale = scale.map(|s| &s[..a.rows]);
    let fits = |e: &Entry| {
        (e.rows, e.cols) == (a.rows, a.cols) && e.scale.as_deref() == scale && e.packed.is_for(isa, bf16)
    };
    if let Some(e) = cache.entries.lock().ok()?.get(&id).filter(|e| fits(e)) {
        return Some(e.clone());
    }
    // Packed outside the lock: the packing runs on the pool's threads.
    let entry = Arc::new(Entry {
        rows: a.rows,
        cols: a.cols,
        scale: scale.map(<[f32]>::to_vec),
        packed: PackedA::pack(isa, bf16, *a, a_cols, scale, threads),
    });
    cache.entries.lock().ok()?.insert(id, entry.clone());
    Some(entry)
}

/// The weight's B paired once (`amx::PairedB`), when this thread runs a bf16 tile product (the
/// caller's `bf16 && isa.bf16_pairs()`) whose B is the weight marked by `as_weight` (its
/// buffer, any view: a Linear layer's Wᵀ is a transposed one) inside `with_weight_cache`,
/// paired now on a miss; None otherwise. Like [`packed`], takes the mark once.
#[cfg(target_arch = "x86_64")]
pub(super) fn paired_b(
    b: &super::Rhs,
    k: usize,
    n: usize,
    threads: usize,
) -> Option<Arc<super::amx::PairedB>> {
    let (id, data, len) = WEIGHT.with(|w| w.get())?;
    // One matrix (a single batch item), viewed on the weight's own buffer.
    let super::Rhs::Mat(m, cols) = b else { return None };
    if (m.data.as_ptr(), m.data.len()) != (data, len) || (m.rows, m.cols) != (k, n) || cols.per < n {
        return None;
    }
    WEIGHT.with(|w| w.set(None));
    let cache = ACTIVE.with(|c| c.borrow().clone())?;
    if let Some(e) = cache.paired.lock().ok()?.get(&id).filter(|e| e.fits(m)) {
        return Some(e.clone());
    }
    // SAFETY: the caller runs the bf16 tile paths (AVX-512 F, BW and VL with them) and checked
    // B's view against its buffer.
    let entry = Arc::new(unsafe { super::amx::PairedB::pair(b, k, n, threads) });
    cache.paired.lock().ok()?.insert(id, entry.clone());
    Some(entry)
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::nn::vol2col::Geometry3d;
    use crate::rng::Rng;

    /// A convolution over a cached weight gives bit for bit what the same product packing its
    /// own A gives, on every path the machine has, in f32 and bf16, for products that split
    /// their columns among threads, their rows, and a stride-2 (phased) one. The second run
    /// reads the cache (the buffer changed under the same id gives the first result); a new
    /// BatchNorm scale packs the weight anew.
    #[test]
    fn cached_weights_multiply_as_freshly_packed_ones() {
        let mut rng = Rng::new(11);
        let mut random = |n: usize| (0..n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect::<Vec<f32>>();
        // (C_out, C_in, kernel, stride, padding, input T × H × W, images)
        let cases = [
            (40, 8, [1, 3, 3], [1, 1, 1], [0, 1, 1], [2, 20, 20], 1),
            (300, 128, [1, 1, 1], [1, 1, 1], [0, 0, 0], [1, 7, 7], 1),
            (24, 6, [1, 3, 3], [1, 2, 2], [0, 1, 1], [1, 17, 17], 2),
        ];
        let mut ran = vec![];
        for isa in Isa::paths().into_iter().flatten() {
            for half in [None, Some(candle_core::DType::BF16)] {
                for &(cout, c, kernel, stride, pad, input, n) in &cases {
                    let g = Geometry3d { n, c, input, kernel, stride, pad, dilation: [1; 3] };
                    let out = g.out().unwrap();
                    let (k, p) = (c * g.taps(), out.iter().product::<usize>());
                    let (x, mut w, scale, bias) =
                        (random(n * c * g.in_volume()), random(cout * k), random(cout), random(cout));
                    let id =
                        candle_core::Tensor::zeros(1, candle_core::DType::F32, &candle_core::Device::Cpu)
                            .unwrap()
                            .id();
                    let cache = WeightCache::all_layouts();
                    let product = |w: &[f32], scale: &[f32], cached: bool| {
                        let run = || {
                            let epi = Epilogue {
                                row_scale: Some(scale),
                                row_bias: Some(&bias),
                                relu: true,
                                ..Default::default()
                            };
                            let conv = ConvRhs { x: &x, g, out };
                            let cols = Columns { per: p, b_stride: 0, c_stride: cout * p };
                            sgemm_conv_new(MatRef::row_major(w, cout, k), conv, cols, p, epi)
                        };
                        crate::nn::with_autocast(half, || {
                            with_isa(Some(isa), || match cached {
                                true => with_weight_cache(&cache, || as_weight(id, w, run)),
                                false => run(),
                            })
                        })
                    };
                    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                    let what = format!("{isa:?} {half:?} {cout}×{k}, {p} positions");
                    let fresh = bits(product(&w, &scale, false));
                    let cached = bits(product(&w, &scale, true));
                    assert!(fresh == cached, "{what}: the cached weight's product differs");
                    assert_eq!(cache.len(), 1, "{what}");
                    // Read from the cache: the weight's buffer is no longer looked at.
                    let first = w.clone();
                    w.iter_mut().for_each(|v| *v = -*v);
                    assert!(bits(product(&w, &scale, true)) == cached, "{what}: the weight was packed again");
                    // Another scale: packed again, from the buffer as it is now.
                    let scale2: Vec<f32> = scale.iter().map(|s| s * 0.5).collect();
                    let want = bits(product(&w, &scale2, false));
                    assert!(
                        bits(product(&w, &scale2, true)) == want,
                        "{what}: a new scale kept the old packing"
                    );
                    assert_ne!(w, first);
                }
            }
            ran.push(isa);
        }
        println!("weight cache paths: {ran:?}");
    }

    /// A weight taken as B (x · Wᵀ, a Linear layer's product: B a transposed view of the
    /// weight's buffer) is paired once and multiplies bit for bit as B paired per product does,
    /// on every bf16 tile path the machine has: K and the columns past one block and not whole
    /// steps or panels, the product split by columns (few rows) and by rows (many). The second
    /// run reads the pairs (the buffer changed under the same id gives the first result); the
    /// same buffer seen untransposed is paired anew.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_weight_taken_as_b_is_paired_once() {
        let mut rng = Rng::new(12);
        let mut random = |n: usize| (0..n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect::<Vec<f32>>();
        let (k, n) = (600, 600);
        let mut w = random(n * k);
        let id =
            candle_core::Tensor::zeros(1, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap().id();
        let mut ran = vec![];
        for isa in Isa::paths().into_iter().flatten().filter(|i| i.bf16_pairs()) {
            for m in [40, 700] {
                let x = random(m * k);
                let cache = WeightCache::new();
                let product = |w: &[f32], transposed: bool, cached: bool| {
                    let run = || {
                        let (rs, cs) = if transposed { (1, k) } else { (n, 1) };
                        let b = MatRef { data: w, rows: k, cols: n, rs, cs };
                        let a = MatRef::row_major(&x, m, k);
                        sgemm_columns_new(a, b, Columns::single(n), n, Epilogue::default())
                    };
                    crate::nn::with_autocast(Some(candle_core::DType::BF16), || {
                        with_isa(Some(isa), || match cached {
                            true => with_weight_cache(&cache, || as_weight(id, w, run)),
                            false => run(),
                        })
                    })
                };
                let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                let what = format!("{isa:?}, {m} rows");
                let cached = bits(product(&w, true, true));
                assert!(
                    bits(product(&w, true, false)) == cached,
                    "{what}: the paired weight's product differs"
                );
                assert_eq!(cache.len(), 1, "{what}");
                let first = w.clone();
                w.iter_mut().for_each(|v| *v = -*v);
                assert!(bits(product(&w, true, true)) == cached, "{what}: the weight was paired again");
                // The buffer untransposed: paired anew, from the buffer as it is now.
                let want = bits(product(&w, false, false));
                assert!(bits(product(&w, false, true)) == want, "{what}: another view kept the old pairs");
                assert_ne!(w, first);
            }
            ran.push(isa);
        }
        println!("paired weight paths: {ran:?}");
    }

    /// Only a weight's product inside a run takes the cache: a product outside `as_weight` (an
    /// activation as A) or on another buffer packs its own, `as_weight` outside a run caches
    /// nothing, and the default cache leaves f32 panels alone.
    #[test]
    fn only_weights_inside_a_run_are_cached() {
        let (a, b) = (vec![0.5f32; 24 * 40], vec![0.25f32; 40 * 50]);
        let id =
            candle_core::Tensor::zeros(1, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap().id();
        let product = || {
            let (am, bm) = (MatRef::row_major(&a, 24, 40), MatRef::row_major(&b, 40, 50));
            sgemm_columns_new(am, bm, Columns::single(50), 50, Epilogue::default())
        };
        let want = product();
        let cache = WeightCache::all_layouts();
        assert_eq!(with_weight_cache(&cache, product), want);
        assert!(cache.is_empty(), "an activation's product was cached");
        assert_eq!(as_weight(id, &a, product), want);
        assert!(cache.is_empty());
        // A product on another buffer (work stolen by this thread) leaves the weight alone.
        let other = a.clone();
        assert_eq!(with_weight_cache(&cache, || as_weight(id, &other, product)), want);
        assert!(cache.is_empty(), "a product on another buffer took the weight");
        if blocked_isa().is_some() {
            assert_eq!(with_weight_cache(&cache, || as_weight(id, &a, product)), want);
            assert_eq!(cache.len(), 1);
            // The default cache holds tiles only: not these f32 panels.
            let tiles_only = WeightCache::new();
            assert_eq!(with_weight_cache(&tiles_only, || as_weight(id, &a, product)), want);
            assert!(tiles_only.is_empty(), "f32 panels cached by default");
        }
    }
}
