//! Scaled dot-product attention for inference on the CPU, in one op: softmax(q kᵀ · scale) v for
//! every (batch, head) group, in tiles of queries. Each tile's scores go through our GEMM into a
//! small buffer, are turned into probabilities there (max subtracted, a vectorised exp), and
//! multiply v straight into the output: the score matrix is never whole in memory and the tiles
//! of all groups share the threads. What torch's CPU `scaled_dot_product_attention` does with its
//! flash kernel; here the softmax of a query is complete within its tile (all keys at once), so
//! no running rescaling is needed.
//!
//! Two tilings. With a blocked GEMM kernel and enough queries, everything is transposed
//! (`transposed`): keys and values are the products' left operands, packed once per group, and
//! the scores are a right operand, which packs by contiguous copies. Otherwise tiles of query
//! rows (`by_rows`), whose scores are a left operand and pack by a transposing gather.

use super::gemm::{blocked_isa, serial, sgemm, sgemm_packed, Epilogue, MatRef, PackedA};
use super::simd::{dispatch_simd, exp_nonpositive, par_for, DisjointMut};
use super::vol2col::f32_slice;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Multiply-adds of one tile's score product: enough rows that packing kᵀ (once per tile) is
/// small beside the product, few enough that the tiles of one group still feed every thread.
const TILE_MACS: usize = 1 << 25;

/// Queries a group needs for the transposed path.
const TRANSPOSED_MIN_QUERIES: usize = 64;

/// exp(scale · (row − max row)) for each `nk`-long row of `scores`, in place, and each row's
/// 1 / sum into `inv_sums`: the unnormalised softmax, whose normalisation the product with v
/// applies as a row scale. Maximum and sum run in 16 independent lanes so that they vectorise
/// (a single running float reduction does not).
#[inline(always)]
fn softmax_rows_body(scores: &mut [f32], nk: usize, scale: f32, inv_sums: &mut [f32]) {
    const L: usize = 16;
    for (row, inv) in scores.chunks_exact_mut(nk).zip(inv_sums.iter_mut()) {
        let mut lanes = [f32::NEG_INFINITY; L];
        let mut chunks = row.chunks_exact(L);
        for c in &mut chunks {
            for i in 0..L {
                lanes[i] = lanes[i].max(c[i]);
            }
        }
        let max = chunks.remainder().iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sums = [0f32; L];
        let mut chunks = row.chunks_exact_mut(L);
        for c in &mut chunks {
            for i in 0..L {
                c[i] = exp_nonpositive((c[i] - max) * scale);
                sums[i] += c[i];
            }
        }
        let mut sum: f32 = sums.iter().sum();
        for x in chunks.into_remainder() {
            *x = exp_nonpositive((*x - max) * scale);
            sum += *x;
        }
        *inv = 1.0 / sum;
    }
}

dispatch_simd!(softmax_rows, softmax_rows_body, (scores: &mut [f32], nk: usize, scale: f32, inv_sums: &mut [f32]));

/// The same down the columns of `st` (the scores transposed, [N_k, len] row-major, already
/// scaled): exp(x − column max) in place and each column's 1 / sum into `inv_sums`. Every step
/// is a whole-row vector operation, no horizontal reductions.
#[inline(always)]
fn softmax_cols_body(st: &mut [f32], len: usize, sums: &mut [f32], inv_sums: &mut [f32]) {
    let max = &mut inv_sums[..len];
    max.fill(f32::NEG_INFINITY);
    for row in st.chunks_exact(len) {
        for (m, &x) in max.iter_mut().zip(row) {
            *m = m.max(x);
        }
    }
    let sums = &mut sums[..len];
    sums.fill(0.0);
    for row in st.chunks_exact_mut(len) {
        for ((x, &m), s) in row.iter_mut().zip(max.iter()).zip(sums.iter_mut()) {
            *x = exp_nonpositive(*x - m);
            *s += *x;
        }
    }
    for (inv, s) in inv_sums.iter_mut().zip(sums.iter()) {
        *inv = 1.0 / s;
    }
}

dispatch_simd!(softmax_cols, softmax_cols_body, (st: &mut [f32], len: usize, sums: &mut [f32], inv_sums: &mut [f32]));

/// The op: q [G, N_q, d], k [G, N_k, d], v [G, N_k, d_v] (contiguous) → [G, N_q, d_v].
struct FusedAttention {
    scale: f32,
    groups: usize,
    nq: usize,
    nk: usize,
    d: usize,
    dv: usize,
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "vidkit-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let Self { groups, nq, nk, d, dv, .. } = *self;
        let (q, k, v) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        if q.len() != groups * nq * d || k.len() != groups * nk * d || v.len() != groups * nk * dv {
            candle_core::bail!("attention: q, k, v hold {}, {}, {} values", q.len(), k.len(), v.len());
        }
        // Keys and values packed once per group need the blocked kernels; with under 64 queries
        // a group (TimeSformer's temporal attention: 8) the packing is not repaid.
        let out = match nq >= TRANSPOSED_MIN_QUERIES && blocked_isa().is_some() {
            true => self.transposed(q, k, v),
            false => self.by_rows(q, k, v),
        };
        Ok((CpuStorage::F32(out), Shape::from((groups, nq, dv))))
    }
}

thread_local! {
    /// One thread's buffers for the transposed path's tiles, reused across tiles and calls.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Values of one tile's transposed scores [N_k, len]: 256 KB, so that the scores, written by
/// the first product, read twice by the softmax and packed by the second product, stay in L2.
const SCORE_VALUES: usize = 1 << 16;

impl FusedAttention {
    /// Tiles of query rows: scores [len, N_k] = q kᵀ, softmax along the rows, then
    /// softmax · v with the 1 / sums as a row scale.
    fn by_rows(&self, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let Self { scale, groups, nq, nk, d, dv } = *self;
        // Rows per tile: a multiple of the GEMM's 12-row panel, the score product near TILE_MACS.
        let rows = (TILE_MACS / (nk * d).max(1)).div_ceil(12).max(1) * 12;
        let rows = rows.min(nq.div_ceil(12) * 12);
        let tiles = nq.div_ceil(rows);
        // Where a group has several tiles, kᵀ of every group once, [d, N_k] row-major: the GEMM
        // then packs its columns from contiguous rows for each tile instead of gathering one value
        // from each of 32 keys (with one tile a group, that packing happens once anyway).
        let transposed = tiles > 1;
        let mut kt_all = vec![0f32; if transposed { groups * d * nk } else { 0 }];
        for g in (0..groups).filter(|_| transposed) {
            let (src, dst) = (&k[g * nk * d..][..nk * d], &mut kt_all[g * d * nk..][..d * nk]);
            for j in 0..nk {
                for c in 0..d {
                    dst[c * nk + j] = src[j * d + c];
                }
            }
        }
        let mut out = vec![0f32; groups * nq * dv];
        let dst = DisjointMut(out.as_mut_ptr());
        // The tasks share the threads; each one's products stay on its thread, in the caller's
        // precision (autocast is per thread).
        let autocast = super::autocast::dtype();
        par_for(groups * tiles, |task| {
            super::autocast::with_autocast(autocast, || {
                serial(|| {
                    let (g, r0) = (task / tiles, task % tiles * rows);
                    let len = rows.min(nq - r0);
                    let qg = &q[(g * nq + r0) * d..][..len * d];
                    let kt = match transposed {
                        true => MatRef::row_major(&kt_all[g * d * nk..][..d * nk], d, nk),
                        false => MatRef::row_major(&k[g * nk * d..][..nk * d], nk, d).t(),
                    };
                    let vg = &v[g * nk * dv..][..nk * dv];
                    let mut scores = vec![0f32; len * nk];
                    let a = MatRef::row_major(qg, len, d);
                    sgemm(a, kt, &mut scores, nk, false, Epilogue::default());
                    let mut inv_sums = vec![0f32; len];
                    softmax_rows(&mut scores, nk, scale, &mut inv_sums);
                    // SAFETY: task (g, tile) writes rows r0..r0 + len of group g only: disjoint ranges.
                    let o = unsafe { std::slice::from_raw_parts_mut(dst.at((g * nq + r0) * dv), len * dv) };
                    sgemm(
                        MatRef::row_major(&scores, len, nk),
                        MatRef::row_major(vg, nk, dv),
                        o,
                        dv,
                        false,
                        Epilogue { row_scale: Some(&inv_sums), ..Default::default() },
                    );
                })
            })
        });
        out
    }

    /// Tiles of query columns, everything transposed: scoresᵀ [N_k, len] = (scale · k) qᵀ, softmax
    /// down the columns, outᵀ [d_v, len] = vᵀ scoresᵀ, scaled and transposed into the output rows.
    /// k and vᵀ are the left operands, packed once per group; the right ones (qᵀ, scoresᵀ) pack
    /// with contiguous copies. Against `by_rows` this drops the transposing pack of every score
    /// (MViT-B's first block: 0.036 → 0.028 s on two AVX2 cores).
    fn transposed(&self, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let Self { scale, groups, nq, nk, d, dv } = *self;
        // Query columns per tile: whole 32-column panels, the scores near SCORE_VALUES.
        let cols = (SCORE_VALUES / nk.max(1) / 32 * 32).max(32).min(nq.max(1));
        let tiles = nq.div_ceil(cols);
        let row_scale = vec![scale; nk];
        let autocast = super::autocast::dtype();
        // Each group's keys (times the scale) and values transposed, packed once for its tiles.
        let packed: Vec<Option<(PackedA, PackedA)>> = (0..groups)
            .into_par_iter()
            .map(|g| {
                super::autocast::with_autocast(autocast, || {
                    let kg = MatRef::row_major(&k[g * nk * d..][..nk * d], nk, d);
                    let vt = MatRef::row_major(&v[g * nk * dv..][..nk * dv], nk, dv).t();
                    PackedA::new(kg, Some(&row_scale)).zip(PackedA::new(vt, None))
                })
            })
            .collect();
        if packed.iter().any(Option::is_none) {
            // The pool's threads have no blocked kernel after all.
            return self.by_rows(q, k, v);
        }
        let mut out: Vec<f32> = Vec::with_capacity(groups * nq * dv);
        let dst = DisjointMut(out.as_mut_ptr());
        par_for(groups * tiles, |task| {
            super::autocast::with_autocast(autocast, || {
                let (g, c0) = (task / tiles, task % tiles * cols);
                let len = cols.min(nq - c0);
                let (pk, pv) = packed[g].as_ref().expect("every group packed (checked above)");
                SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    let need = (d + nk + dv + 2) * len;
                    if scratch.len() < need {
                        scratch.resize(need, 0.0);
                    }
                    let (qt, rest) = scratch.split_at_mut(d * len);
                    let (st, rest) = rest.split_at_mut(nk * len);
                    let (ot, rest) = rest.split_at_mut(dv * len);
                    let (sums, rest) = rest.split_at_mut(len);
                    let inv = &mut rest[..len];
                    super::transpose::transpose(&q[(g * nq + c0) * d..][..len * d], len, d, qt);
                    sgemm_packed(pk, MatRef::row_major(qt, d, len), st, len, Epilogue::default());
                    softmax_cols(st, len, sums, inv);
                    sgemm_packed(pv, MatRef::row_major(st, nk, len), ot, len, Epilogue::default());
                    for row in ot.chunks_exact_mut(len) {
                        for (x, s) in row.iter_mut().zip(inv.iter()) {
                            *x *= s;
                        }
                    }
                    // SAFETY: task (g, tile) owns rows c0..c0 + len of group g, inside the output's
                    // capacity; the transpose only writes them.
                    let o = unsafe { std::slice::from_raw_parts_mut(dst.at((g * nq + c0) * dv), len * dv) };
                    super::transpose::transpose(ot, dv, len, o);
                })
            })
        });
        // SAFETY: the tasks (every group × tile) wrote all groups · nq · dv values.
        unsafe { out.set_len(groups * nq * dv) };
        out
    }
}

/// softmax(q kᵀ · scale) v for f32 CPU tensors q [.., N_q, d], k [.., N_k, d], v [.., N_k, d_v],
/// [.., N_q, d_v]; inference only (no backward).
pub(super) fn attention_cpu(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let rank = q.rank();
    let (nq, d) = (q.dim(rank - 2)?, q.dim(rank - 1)?);
    let (nk, dv) = (k.dim(rank - 2)?, v.dim(rank - 1)?);
    let groups = q.elem_count() / (nq * d).max(1);
    let mut shape = q.dims()[..rank - 2].to_vec();
    shape.extend([nq, dv]);
    let op = FusedAttention { scale: scale as f32, groups, nq, nk, d, dv };
    let y = q.contiguous()?.apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)?;
    y.reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// softmax(q kᵀ · scale) v in f64, one row at a time.
    fn reference(op: &FusedAttention, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let FusedAttention { scale, groups, nq, nk, d, dv } = *op;
        let mut out = vec![0f32; groups * nq * dv];
        for g in 0..groups {
            for i in 0..nq {
                let qi = &q[(g * nq + i) * d..][..d];
                let s: Vec<f64> = (0..nk)
                    .map(|j| {
                        let kj = &k[(g * nk + j) * d..][..d];
                        qi.iter().zip(kj).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale as f64
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for c in 0..dv {
                    let x: f64 = (0..nk).map(|j| e[j] * v[(g * nk + j) * dv + c] as f64).sum();
                    out[(g * nq + i) * dv + c] = (x / sum) as f32;
                }
            }
        }
        out
    }

    /// Both tilings against the reference: partial tiles, one query, keys past one K block and
    /// a tile of 32 columns (2000 keys); the transposed one where the machine has a blocked kernel.
    #[test]
    fn row_and_transposed_tiles_match_the_reference() {
        let mut rng = Rng::new(3);
        let mut ran = vec![];
        for (groups, nq, nk, d, dv) in
            [(2, 600, 2000, 64, 5), (3, 70, 300, 40, 24), (1, 1, 5, 8, 8), (2, 130, 7, 96, 96)]
        {
            let mut random =
                |n: usize| (0..n).map(|_| rng.uniform() as f32 * 4.0 - 2.0).collect::<Vec<f32>>();
            let (q, k, v) = (random(groups * nq * d), random(groups * nk * d), random(groups * nk * dv));
            let op = FusedAttention { scale: 0.3, groups, nq, nk, d, dv };
            let want = reference(&op, &q, &k, &v);
            let worst = |got: &[f32]| want.iter().zip(got).map(|(w, g)| (w - g).abs()).fold(0f32, f32::max);
            let rows = op.by_rows(&q, &k, &v);
            assert!(worst(&rows) < 1e-5, "rows {groups}×{nq}×{nk}: {}", worst(&rows));
            // The tiles run on the pool's threads, which take the detected kernel.
            if let Some(isa) = blocked_isa() {
                let cols = op.transposed(&q, &k, &v);
                assert!(worst(&cols) < 1e-5, "{isa:?} transposed {groups}×{nq}×{nk}: {}", worst(&cols));
                ran.push(isa);
            }
        }
        println!("transposed tiles ran on: {ran:?}");
    }
}
