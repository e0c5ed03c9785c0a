//! Scaled dot-product attention for inference on the CPU, in one op: softmax(q kᵀ · scale) v for
//! every (batch, head) group, in tiles of query rows. Each tile's scores go through our GEMM
//! into a small buffer, are turned into probabilities there (max subtracted, the vectorised
//! `simd::exp`, normalised), and multiply v straight into the output rows: the score matrix is
//! never whole in memory and the tiles of all groups share the threads. What torch's CPU
//! `scaled_dot_product_attention` does with its flash kernel; here the softmax of a row is
//! complete within its tile (all keys at once), so no running rescaling is needed.

use super::gemm::{serial, sgemm, Epilogue, MatRef};
use super::simd::{dispatch_simd, exp, par_for, DisjointMut};
use super::vol2col::f32_slice;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

/// Multiply-adds of one tile's score product: enough rows that packing kᵀ (once per tile) is
/// small beside the product, few enough that the tiles of one group still feed every thread.
const TILE_MACS: usize = 1 << 25;

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
                c[i] = exp((c[i] - max) * scale);
                sums[i] += c[i];
            }
        }
        let mut sum: f32 = sums.iter().sum();
        for x in chunks.into_remainder() {
            *x = exp((*x - max) * scale);
            sum += *x;
        }
        *inv = 1.0 / sum;
    }
}

dispatch_simd!(softmax_rows, softmax_rows_body, (scores: &mut [f32], nk: usize, scale: f32, inv_sums: &mut [f32]));

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
        let Self { scale, groups, nq, nk, d, dv } = *self;
        let (q, k, v) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        if q.len() != groups * nq * d || k.len() != groups * nk * d || v.len() != groups * nk * dv {
            candle_core::bail!("attention: q, k, v hold {}, {}, {} values", q.len(), k.len(), v.len());
        }
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
        Ok((CpuStorage::F32(out), Shape::from((groups, nq, dv))))
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
