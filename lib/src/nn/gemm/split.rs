//! A product split among the rayon pool's threads (`partition`), the parts running the blocked
//! kernel, with A packed once for all of them: by the parts' threads together, or taken from an
//! inference run's cache of packed weights (`weight_cache`).

use super::*;

/// Splits the product among the pool's threads and runs the blocked kernel on each part.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_blocked(
    isa: Isa,
    a: MatRef,
    a_cols: Columns,
    b: Rhs,
    n: usize,
    cols: Columns,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    epi: Epilogue,
) {
    run_blocked_to(isa, a, a_cols, b, n, cols, CPtr::F32(c), ldc, accumulate, epi)
}

/// [`run_blocked`] into a C of f32 or bf16 (`act`): bf16 C, bf16 B and bf16 residuals only
/// on the bf16 tile paths (`Isa::bf16_pairs` under bf16 products).
#[allow(clippy::too_many_arguments)]
pub(super) fn run_blocked_to(
    isa: Isa,
    a: MatRef,
    a_cols: Columns,
    b: Rhs,
    n: usize,
    cols: Columns,
    c: CPtr,
    ldc: usize,
    accumulate: bool,
    epi: Epilogue,
) {
    let (m, k) = (a.rows, a.cols);
    let threads = threads_for(m * n * k);
    // Read on the calling thread: the parts run on the pool's.
    let bf16 = bf16_products();
    let c_any = SendC(c);
    // A model's weights packed once for an inference run (`weight_cache`), when they are A.
    let cached = weight_cache::packed(isa, bf16, &a, &a_cols, epi.row_scale, threads);
    #[cfg(target_arch = "x86_64")]
    if bf16 && isa.bf16_pairs() {
        // A packed into tiles once, the threads sharing the work, for every part to read.
        let packed_here;
        let tiles = match cached.as_ref().and_then(|p| p.tiles()) {
            Some(tiles) => tiles,
            None => {
                packed_here = amx::ATiles::pack(&a, &a_cols, epi.row_scale, threads);
                &packed_here
            }
        };
        // A weight taken as B (a Linear layer's Wᵀ), paired once for the run.
        let paired = weight_cache::paired_b(&b, k, n, threads);
        let paired = paired.as_deref();
        let parts = partition(m, n, threads, amx::BLOCK);
        let run = |(rows, part): ((usize, usize), (usize, usize))| {
            // SAFETY: `isa` comes from `Isa::supported` (AMX-BF16 granted or AVX-512 BF16); the
            // parts cover disjoint blocks of the m × n output the callers checked `c` holds,
            // their rows starting at whole blocks of `tiles`.
            unsafe {
                amx::blocked_bf16(isa, tiles, b, paired, cols, c_any.get(), ldc, rows, part, accumulate, epi)
            }
        };
        if parts.len() == 1 {
            run(parts[0]);
        } else {
            rayon::scope(|s| {
                for part in parts {
                    s.spawn(move |_| run(part));
                }
            });
        }
        return;
    }
    let c_ptr = match c {
        CPtr::F32(c) if epi.residual_bf16.is_none() && !matches!(b, Rhs::MatBf16(..) | Rhs::ConvBf16(..)) => {
            SendPtr(c)
        }
        _ => panic!("bf16 operands outside the bf16 tile paths"),
    };
    let parts = partition(m, n, threads, MR);
    #[cfg(target_arch = "x86_64")]
    if parts.len() == 1 {
        // SAFETY: callers checked that the CPU runs `isa` and that `c` holds the m × n output;
        // a cached A holds all rows packed for `isa` in this precision.
        unsafe {
            blocked(
                isa,
                bf16,
                a,
                a_cols,
                b,
                cols,
                c_ptr.0,
                ldc,
                (0, m),
                (0, n),
                accumulate,
                epi,
                cached.as_ref().map(|p| p.whole()),
            )
        };
    } else {
        // Split by columns, every part would pack all of A (the weights, with BN's scale) for
        // itself: pack it once, the threads sharing the work, and let the parts read that.
        let panel_rows = m.div_ceil(MR) * MR;
        let shared =
            (cached.is_none() && parts.iter().all(|p| p.0 == (0, m)) && panel_rows * k <= SHARED_A_MAX)
                .then(|| pack_a_whole(&a, &a_cols, panel_rows, epi.row_scale, bf16, parts.len()));
        let whole = match (&cached, &shared) {
            (Some(p), _) => Some(p.whole()),
            (None, Some(v)) => Some(WholeA { data: v.as_ptr(), panel_rows }),
            (None, None) => None,
        };
        rayon::scope(|s| {
            for (rows, part) in parts {
                s.spawn(move |_| {
                    let c_ptr = c_ptr;
                    // SAFETY: as above; the parts cover disjoint blocks of C, their rows start at
                    // whole panels (`partition`), and `whole` (read only) lives until the scope
                    // ends.
                    unsafe {
                        blocked(
                            isa, bf16, a, a_cols, b, cols, c_ptr.0, ldc, rows, part, accumulate, epi, whole,
                        )
                    };
                });
            }
        });
    }
}

/// The largest A (in packed values) packed once for all column parts: 16 MB.
const SHARED_A_MAX: usize = 1 << 22;

/// All rows of A packed at once (`pack_a_whole`, `panel_rows` rows in panels), which the parts
/// of a product read instead of packing A themselves.
#[derive(Clone, Copy)]
pub(super) struct WholeA {
    pub(super) data: *const f32,
    pub(super) panel_rows: usize,
}

// SAFETY: read only, by parts that end before its owner drops it (a scope, or a cached entry
// the product holds).
unsafe impl Send for WholeA {}
unsafe impl Sync for WholeA {}

/// Where a whole packed A (all KC blocks at once) holds row `i` (counted from its first row) of
/// the block starting at column `pc`, `kc` wide: each block's MR-row panels one after another,
/// the blocks one after another.
#[inline]
pub(super) fn whole_a_at(pc: usize, panel_rows: usize, i: usize, kc: usize) -> usize {
    pc * panel_rows + i * kc
}

/// All of A packed whole (`whole_a_at`), the blocks split over `threads`; rounded to bf16 when
/// `bf16`.
pub(super) fn pack_a_whole(
    a: &MatRef,
    a_cols: &Columns,
    panel_rows: usize,
    scale: Option<&[f32]>,
    bf16: bool,
    threads: usize,
) -> Vec<f32> {
    let (m, k) = (a.rows, a.cols);
    // Not zeroed: `pack_a` writes every value of its blocks (zeros in partial panels), and the
    // blocks cover the buffer.
    let mut out: Vec<f32> = Vec::with_capacity(panel_rows * k);
    let blocks: Vec<(usize, usize)> =
        (0..k).step_by(KC).flat_map(|pc| (0..m).step_by(MC).map(move |ic| (pc, ic))).collect();
    let ptr = SendPtr(out.as_mut_ptr());
    let len = panel_rows * k;
    rayon::scope(|s| {
        for t in 0..threads {
            let blocks = &blocks;
            s.spawn(move |_| {
                let ptr = ptr;
                for &(pc, ic) in blocks.iter().skip(t).step_by(threads) {
                    let kc = KC.min(k - pc);
                    let at = whole_a_at(pc, panel_rows, ic, kc);
                    let rows = MC.min(m - ic);
                    let n = rows.div_ceil(MR) * MR * kc;
                    assert!(at + n <= len, "packed A block out of bounds");
                    // SAFETY: the (pc, ic) blocks occupy disjoint ranges of `out`, each taken by
                    // one thread, and `out` outlives the scope.
                    let dst = unsafe { std::slice::from_raw_parts_mut(ptr.0.add(at), n) };
                    pack_a(a, a_cols, ic, rows, pc, kc, scale, dst);
                    if bf16 {
                        bf16_round_in_place(dst);
                    }
                }
            });
        }
    });
    // SAFETY: the blocks, each packed whole above, cover all panel_rows · k values.
    unsafe { out.set_len(panel_rows * k) };
    out
}

/// A C of either type for the parts' threads.
#[derive(Clone, Copy)]
struct SendC(CPtr);
// SAFETY: each thread writes a disjoint block of the output.
unsafe impl Send for SendC {}
unsafe impl Sync for SendC {}

impl SendC {
    /// The pointer (a method, so closures capture the whole Sync wrapper).
    fn get(self) -> CPtr {
        self.0
    }
}

#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
// SAFETY: each thread writes a disjoint block of the output.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Splits the output among `threads`: by columns in whole panels when there are enough of them,
/// else by rows in whole micro-panels of `row_unit` rows.
pub(super) fn partition(
    m: usize,
    n: usize,
    threads: usize,
    row_unit: usize,
) -> Vec<((usize, usize), (usize, usize))> {
    let split = |len: usize, unit: usize| -> Vec<(usize, usize)> {
        let units = len.div_ceil(unit);
        let parts = threads.min(units).max(1);
        (0..parts)
            .map(|p| ((units * p / parts * unit).min(len), (units * (p + 1) / parts * unit).min(len)))
            .filter(|(lo, hi)| hi > lo)
            .collect()
    };
    if threads <= 1 {
        return vec![((0, m), (0, n))];
    }
    // Every part packs all of the operand it does not split: split columns (each part packs all
    // of A, m × k) when that is the smaller duplicate, rows (each packs all of B, k × n) otherwise.
    let (col_units, row_units) = (n.div_ceil(NR), m.div_ceil(row_unit));
    let by_cols = if row_units < 2 * threads {
        true
    } else if col_units < 2 * threads {
        false
    } else {
        n >= m
    };
    if by_cols {
        split(n, NR).into_iter().map(|cols| ((0, m), cols)).collect()
    } else {
        split(m, row_unit).into_iter().map(|rows| (rows, (0, n))).collect()
    }
}
