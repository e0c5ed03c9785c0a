//! Direct convolution for layers with few output and input channels (SlowFast's fast-pathway
//! stem: 3 → 8 channels), inference only.
//!
//! Why: the implicit GEMM packs the column matrix (K × N, K = C·taps) for the micro-kernel, and
//! that copy pays for itself only when many rows of A reuse it. With M = 8 each packed value
//! feeds 8 multiply-adds: the fast stem (5×7×7 over 32 frames, K = 735) wrote a 295 M-value column
//! matrix and ran at ~30 GFLOP/s on 2 threads. Here the input is copied once, zero-padded and
//! split into w-stride phases, so that every tap of every output tile is a contiguous in-bounds
//! read; the micro-kernel takes its B rows straight from that copy through a table of tap
//! offsets: ~70 GFLOP/s on the same layer (`direct_vs_gemm` below).

use super::gemm::{by_rows, fma_rows, pack_a, store_rows, Columns, MatRef, MR};
use super::simd::{par_for, DisjointMut};
use super::vol2col::{zeros_par, Geometry3d};

/// Widest layer (output channels) worth the direct path; wider ones reuse packed B enough.
pub(super) const MAX_DIRECT_CHANNELS: usize = 16;

/// Most input channels for the direct path: each tile reads C·kt·kh input rows per output row,
/// which stream well from a few channels (a stem's 3) but not from 32 or 64 (there the packing's
/// long sequential runs win).
pub(super) const MAX_DIRECT_INPUTS: usize = 8;

/// Columns of one output tile (two zmm registers).
const TILE: usize = 32;

/// The input zero-padded in t, h and w, each padded row stored as its `s` (w stride) phases of
/// `q` values: phase φ holds padded columns φ, φ + s, …; `q` leaves room for reads past the last
/// output tile so that no load needs a bound.
struct PaddedInput {
    data: Vec<f32>,
    q: usize,
    /// Values per padded row (s·q), per (t) plane, per channel volume.
    pitch: usize,
    plane: usize,
    vol: usize,
}

fn pad_and_phase(x: &[f32], g: &Geometry3d, ow: usize) -> PaddedInput {
    let [t, h, w] = g.input;
    let [pt, ph, pw] = g.pad;
    let s = g.stride[2];
    let (tp, hp, wp) = (t + 2 * pt, h + 2 * ph, w + 2 * pw);
    let reach = (g.kernel[2] - 1) * g.dilation[2] / s;
    let q = wp.div_ceil(s).max(ow.div_ceil(TILE) * TILE + reach);
    let pitch = s * q;
    let (plane, vol) = (hp * pitch, tp * hp * pitch);
    let mut data = zeros_par(g.n * g.c * vol);
    super::vol2col::par_planes(&mut data, pitch, |row, dst| {
        // Padded row `row` = ((n·C + c)·Tp + ti)·Hp + hi; rows inside the padding stay zero.
        let (nc, rest) = (row / (tp * hp), row % (tp * hp));
        let (ti, hi) = (rest / hp, rest % hp);
        if ti < pt || ti >= pt + t || hi < ph || hi >= ph + h {
            return;
        }
        let src = &x[((nc * t + ti - pt) * h + hi - ph) * w..][..w];
        match s {
            1 => dst[pw..pw + w].copy_from_slice(src),
            // Even input columns go to phase pw % 2 from pw / 2 on, odd ones to the other phase
            // from (pw + 1) / 2 on.
            2 => {
                let (first, second) = ((pw % 2) * q + pw / 2, ((pw + 1) % 2) * q + (pw + 1) / 2);
                if w % 2 == 1 {
                    dst[first + w / 2] = src[w - 1];
                }
                let (lo, hi) = (first.min(second), first.max(second));
                let (head, tail) = dst.split_at_mut(hi);
                let (a, b) = (&mut head[lo..lo + w / 2], &mut tail[..w / 2]);
                let (even, odd) = if first < second { (a, b) } else { (b, a) };
                super::simd::deinterleave(src, even, odd);
            }
            _ => {
                for (col, &v) in src.iter().enumerate() {
                    let padded = col + pw;
                    dst[(padded % s) * q + padded / s] = v;
                }
            }
        }
    });
    PaddedInput { data, q, pitch, plane, vol }
}

/// Whether `conv_direct` is the faster path for `m` output channels over geometry `g` (and the
/// CPU has AVX-512). Under bf16 autocast too, its operands rounded first: SlowFast's fast stem
/// (M = 8, K = 735) packed for VDPBF16PS took 56 ms on Zen 4, directly 31 ms.
pub(super) fn applies(m: usize, g: &Geometry3d) -> bool {
    m > 0 && m <= MAX_DIRECT_CHANNELS && g.c <= MAX_DIRECT_INPUTS && super::gemm::has_avx512()
}

/// `out` [N, M, T', H', W'] = relu?(scale ⊙ conv(x, weight) + bias (+ residual)) for a dense
/// (groups 1) geometry; `weight` is [M, C·taps] in PyTorch order. Any channel counts; AVX-512
/// required (`applies` says when this is the path to take).
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_direct(
    weight: &[f32],
    scale: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    x: &[f32],
    g: &Geometry3d,
    out: &mut [f32],
) -> candle_core::Result<()> {
    assert!(super::gemm::has_avx512(), "direct conv needs AVX-512");
    let m = scale.len();
    let [ot, oh, ow] = g.out()?;
    let p = ot * oh * ow;
    let k = g.c * g.taps();
    assert_eq!(weight.len(), m * k, "direct conv: weight size");
    assert_eq!(out.len(), g.n * m * p, "direct conv: output size");
    assert!(x.len() >= g.n * g.c * g.in_volume(), "direct conv: input size");
    if let Some(r) = residual {
        assert_eq!(r.len(), out.len(), "direct conv: residual size");
    }
    let mut xp = pad_and_phase(x, g, ow);
    let panels = m.div_ceil(MR);
    let mut a = vec![0f32; panels * MR * k];
    pack_a(&MatRef::row_major(weight, m, k), &Columns::single(k), 0, m, 0, k, Some(scale), &mut a);
    if super::autocast::bf16_products() {
        // bf16 operands as the blocked products round them (A after BN's scale, B as read),
        // multiplied exactly and summed in f32: the f32 kernels' bf16 path (`gemm::Isa::Avx512`).
        super::simd::bf16_round_in_place(&mut a);
        super::simd::bf16_round_in_place(&mut xp.data);
    }
    // Row (c, dt, dh, dw) of the column matrix: where its tap reads, relative to the first
    // input value of an output tile's window.
    let [kt, kh, kw] = g.kernel;
    let s = g.stride[2];
    let mut offsets = Vec::with_capacity(k);
    for c in 0..g.c {
        for dt in 0..kt {
            for dh in 0..kh {
                for dw in 0..kw {
                    let wd = dw * g.dilation[2];
                    offsets.push(
                        c * xp.vol
                            + dt * g.dilation[0] * xp.plane
                            + dh * g.dilation[1] * xp.pitch
                            + (wd % s) * xp.q
                            + wd / s,
                    );
                }
            }
        }
    }
    // Work items: one column tile of one output line, swept along h (or t for temporal-only
    // kernels): consecutive output rows share most of their input rows, which then come from
    // L1 (row by row instead, a tile's 100-odd input rows streamed from L2 or memory each time).
    let sweep_t = kt > 1 && kh == 1;
    let (lines, sweep) = if sweep_t { (oh, ot) } else { (ot, oh) };
    let tiles = ow.div_ceil(TILE);
    let rows = g.n * lines * tiles;
    let out_ptr = DisjointMut(out.as_mut_ptr());
    par_for(rows, |item| {
        let (n, rest) = (item / (lines * tiles), item % (lines * tiles));
        let (line, w0) = (rest / tiles, rest % tiles * TILE);
        let cols = TILE.min(ow - w0);
        for i in 0..sweep {
            let (t, h) = if sweep_t { (i, line) } else { (line, i) };
            let origin = n * g.c * xp.vol + t * g.stride[0] * xp.plane + h * g.stride[1] * xp.pitch;
            let at = n * m * p + (t * oh + h) * ow + w0;
            for panel in 0..panels {
                let r0 = panel * MR;
                let c_at = at + r0 * p;
                // SAFETY: AVX-512 checked above; the offsets stay inside `xp` (padded and
                // sized for the widest tile); each (row, tile) is written by one thread only,
                // at `cols` ≤ 32 columns of `rows` output planes inside `out`.
                unsafe {
                    by_rows!(
                        (m - r0).min(MR),
                        kernel(
                            a.as_ptr().add(r0 * k),
                            &offsets,
                            xp.data.as_ptr().add(origin + w0),
                            out_ptr.at(c_at),
                            p,
                            cols,
                            bias.as_ptr().add(r0),
                            residual.map_or(std::ptr::null(), |r| r.as_ptr().add(c_at)),
                            relu
                        )
                    )
                }
            }
        }
    });
    Ok(())
}

/// R output channels × `cols` (≤ 32) output columns: for each row k of the column matrix, 32
/// input values read at `x + offsets[k]` times the packed weights (`MR` per k, first R used);
/// then + bias, + residual (laid out as C), ReLU, and a masked store of the `cols` valid columns.
///
/// # Safety
/// AVX-512F available; `a` holds `offsets.len()·MR` floats; `x + offsets[k] + 0..32` readable for
/// every k; `c` (and `res` when not null) address R rows of `ldc` with `cols` writable
/// (readable) values each; `bias` R floats.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const R: usize>(
    a: *const f32,
    offsets: &[usize],
    x: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    bias: *const f32,
    res: *const f32,
    relu: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R]);
    let mut a = a;
    for &off in offsets {
        fma_rows(a, x.add(off), &mut acc);
        a = a.add(MR);
    }
    store_rows(acc, c, ldc, cols, false, bias, res, relu);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gemm::{sgemm_conv, with_isa, Columns, ConvRhs, Epilogue, Isa};

    /// Under bf16 autocast the direct kernel multiplies the operands the products round (A after
    /// BN's scale, the input): it gives the f32 kernels' bf16 path to summation order, and differs
    /// from its own f32 result by the rounding.
    #[test]
    fn under_bf16_the_direct_kernel_rounds_as_the_products_do() {
        if !super::super::gemm::has_avx512() {
            eprintln!("no AVX-512: the direct kernel not checked");
            return;
        }
        let mut rng = crate::rng::Rng::new(5);
        let g = Geometry3d {
            n: 2,
            c: 3,
            input: [4, 20, 18],
            kernel: [3, 7, 7],
            stride: [1, 2, 2],
            pad: [1, 3, 3],
            dilation: [1; 3],
        };
        let (m, k) = (8, 3 * g.taps());
        let [ot, oh, ow] = g.out().unwrap();
        let p = ot * oh * ow;
        let mut random = |n: usize| (0..n).map(|_| rng.uniform() as f32 - 0.5).collect::<Vec<f32>>();
        let (x, w, scale, bias) = (random(g.n * g.c * g.in_volume()), random(m * k), random(m), random(m));
        let direct = || {
            let mut out = vec![0f32; g.n * m * p];
            conv_direct(&w, &scale, &bias, None, true, &x, &g, &mut out).unwrap();
            out
        };
        let bf16 = Some(candle_core::DType::BF16);
        let (ours, f32s) = (crate::nn::with_autocast(bf16, direct), direct());
        let products = crate::nn::with_autocast(bf16, || {
            with_isa(Some(Isa::Avx512), || {
                let mut out = vec![0f32; g.n * m * p];
                let epi = Epilogue {
                    row_scale: Some(&scale),
                    row_bias: Some(&bias),
                    relu: true,
                    ..Default::default()
                };
                let cols = Columns { per: p, b_stride: 0, c_stride: m * p };
                sgemm_conv(
                    MatRef::row_major(&w, m, k),
                    ConvRhs { x: &x, g, out: [ot, oh, ow] },
                    cols,
                    &mut out,
                    p,
                    epi,
                );
                out
            })
        });
        let worst = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let (to_products, to_f32) = (worst(&ours, &products), worst(&ours, &f32s));
        assert!(to_products < 1e-5, "bf16 direct kernel {to_products} from the rounded products");
        assert!(
            to_f32 > 100.0 * to_products.max(1e-7),
            "bf16 direct kernel only {to_f32} from f32: not rounded?"
        );
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::nn::gemm::{sgemm_conv, Columns, ConvRhs, Epilogue};

    /// Direct kernel against the implicit GEMM on SlowFast's fast-pathway shapes; min of 5 runs
    /// (`cargo test -p vidkit --lib direct_vs_gemm -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn direct_vs_gemm() {
        let mut rng = crate::rng::Rng::new(1);
        for &(c, m, input, kernel, stride, pad) in &[
            (3, 8, [32, 224, 224], [5, 7, 7], [1, 2, 2], [2, 3, 3]),
            (32, 8, [32, 56, 56], [3, 1, 1], [1, 1, 1], [1, 0, 0]),
            (8, 8, [32, 56, 56], [1, 3, 3], [1, 1, 1], [0, 1, 1]),
            (64, 16, [32, 28, 28], [3, 1, 1], [1, 1, 1], [1, 0, 0]),
            (3, 64, [8, 224, 224], [1, 7, 7], [1, 2, 2], [0, 3, 3]),
            (3, 64, [8, 224, 224], [5, 7, 7], [1, 2, 2], [2, 3, 3]),
            (3, 24, [4, 182, 182], [1, 3, 3], [1, 2, 2], [0, 1, 1]),
            (3, 45, [16, 224, 224], [1, 7, 7], [1, 2, 2], [0, 3, 3]),
        ] {
            let g = Geometry3d { n: 1, c, input, kernel, stride, pad, dilation: [1; 3] };
            let [ot, oh, ow] = g.out().unwrap();
            let p = ot * oh * ow;
            let k = c * g.taps();
            let x: Vec<f32> = (0..c * g.in_volume()).map(|_| rng.uniform() as f32).collect();
            let w: Vec<f32> = (0..m * k).map(|_| rng.uniform() as f32).collect();
            let (scale, bias) = (vec![1f32; m], vec![0f32; m]);
            let mut out = vec![0f32; m * p];
            let time = |f: &mut dyn FnMut()| {
                (0..5)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        f();
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::MAX, f64::min)
            };
            let direct = time(&mut || {
                conv_direct(&w, &scale, &bias, None, false, &x, &g, &mut out).unwrap();
            });
            let mut out2 = vec![0f32; m * p];
            let gemm = time(&mut || {
                let epi = Epilogue { row_scale: Some(&scale), row_bias: Some(&bias), ..Default::default() };
                let conv = ConvRhs { x: &x, g, out: [ot, oh, ow] };
                let cols = Columns { per: p, b_stride: 0, c_stride: m * p };
                sgemm_conv(MatRef::row_major(&w, m, k), conv, cols, &mut out2, p, epi);
            });
            let d = out.iter().zip(&out2).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let gflop = 2.0 * (m * k * p) as f64 / 1e9;
            eprintln!(
                "{kernel:?} c={c} m={m}: direct {direct:.4} s ({:.0} GFLOP/s), gemm {gemm:.4} s ({:.0}); max diff {d}",
                gflop / direct,
                gflop / gemm
            );
        }
    }
}
