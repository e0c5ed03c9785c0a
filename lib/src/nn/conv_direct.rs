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
/// (M = 8, K = 735) packed for VDPBF16PS took 56 ms on Zen 4, directly 31 ms in f32 FMAs
/// and 29–31 ms on VDPBF16PS's channel pairs against 37–39 ms in f32 FMAs (`conv_direct_pairs`,
/// `direct_vs_gemm`'s shapes, side by side).
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
    let bf16 = super::autocast::bf16_products();
    if bf16 {
        // bf16 operands as the blocked products round them (A after BN's scale, B as read),
        // multiplied exactly and summed in f32: the f32 kernels' bf16 path (`gemm::Isa::Avx512`).
        super::simd::bf16_round_in_place(&mut a);
        super::simd::bf16_round_in_place(&mut xp.data);
    }
    #[cfg(target_arch = "x86_64")]
    if bf16 && pairs_channels() {
        return conv_direct_pairs(&a, m, bias, residual, relu, &xp, g, out);
    }
    // Row (c, dt, dh, dw) of the column matrix: where its tap reads, relative to the first
    // input value of an output tile's window.
    let offsets = tap_offsets(g, &xp, g.c);
    let out_ptr = DisjointMut(out.as_mut_ptr());
    for_each_tile(g, m, g.c * xp.vol, &xp, |origin, c_at, r0, cols| {
        // SAFETY: AVX-512 checked above; the offsets stay inside `xp` (padded and sized for the
        // widest tile); each (row, tile) is written by one thread only, at `cols` ≤ 32 columns
        // of the panel's output planes inside `out`.
        unsafe {
            by_rows!(
                (m - r0).min(MR),
                kernel(
                    a.as_ptr().add(r0 * k),
                    &offsets,
                    xp.data.as_ptr().add(origin),
                    out_ptr.at(c_at),
                    p,
                    cols,
                    bias.as_ptr().add(r0),
                    residual.map_or(std::ptr::null(), |r| r.as_ptr().add(c_at)),
                    relu
                )
            )
        }
    });
    Ok(())
}

/// Where each step (channel or channel pair `c`, dt, dh, dw) of a tile's window reads in the
/// padded input, relative to the window's first value; `channels` volumes of `xp.vol` an image.
fn tap_offsets(g: &Geometry3d, xp: &PaddedInput, channels: usize) -> Vec<usize> {
    let [kt, kh, kw] = g.kernel;
    let s = g.stride[2];
    let mut offsets = Vec::with_capacity(channels * g.taps());
    for c in 0..channels {
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
    offsets
}

/// Runs `tile(origin, c_at, r0, cols)` on every output tile of `m` channels: the window's first
/// input value (images `per_image` values apart), the tile's first output, the panel's first row
/// and the valid columns (≤ 32). Work items: one column tile of one output line, swept along h
/// (or t for temporal-only kernels): consecutive output rows share most of their input rows,
/// which then come from L1 (row by row instead, a tile's 100-odd input rows streamed from L2 or
/// memory each time).
fn for_each_tile(
    g: &Geometry3d,
    m: usize,
    per_image: usize,
    xp: &PaddedInput,
    tile: impl Fn(usize, usize, usize, usize) + Sync,
) {
    let [ot, oh, ow] = g.out().expect("the caller's geometry has an output");
    let p = ot * oh * ow;
    let sweep_t = g.kernel[0] > 1 && g.kernel[1] == 1;
    let (lines, sweep) = if sweep_t { (oh, ot) } else { (ot, oh) };
    let tiles = ow.div_ceil(TILE);
    par_for(g.n * lines * tiles, |item| {
        let (n, rest) = (item / (lines * tiles), item % (lines * tiles));
        let (line, w0) = (rest / tiles, rest % tiles * TILE);
        let cols = TILE.min(ow - w0);
        for i in 0..sweep {
            let (t, h) = if sweep_t { (i, line) } else { (line, i) };
            let origin = n * per_image + t * g.stride[0] * xp.plane + h * g.stride[1] * xp.pitch + w0;
            let at = n * m * p + (t * oh + h) * ow + w0;
            for r0 in (0..m).step_by(MR) {
                tile(origin, at + r0 * p, r0, cols);
            }
        }
    });
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

/// Whether the bf16 products run on VDPBF16PS (`Isa::bf16_pairs`, the CPU has AVX-512 BF16):
/// the direct convolution then multiplies channel pairs with it too (`conv_direct_pairs`).
#[cfg(target_arch = "x86_64")]
fn pairs_channels() -> bool {
    super::gemm::blocked_isa().is_some_and(|i| i.bf16_pairs())
        && std::arch::is_x86_feature_detected!("avx512bf16")
}

/// [`conv_direct`] on VDPBF16PS: the padded input's channels paired (channel 2j in a 32-bit
/// word's low half, 2j + 1 in its high half, a zero channel after an odd count), so that every
/// tap of an output tile is one load of 16 pairs, and each instruction multiplies two channels'
/// taps: K/2 steps instead of K (a stem's 3 channels: 2 of 3, the zero channel's half wasted).
/// The operands are those `conv_direct` rounded (`a`, `xp`); the sums are VDPBF16PS's, as the
/// tile products' (`gemm::amx::dpbf16`).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn conv_direct_pairs(
    a: &[f32],
    m: usize,
    bias: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    xp: &PaddedInput,
    g: &Geometry3d,
    out: &mut [f32],
) -> candle_core::Result<()> {
    let [ot, oh, ow] = g.out()?;
    let p = ot * oh * ow;
    let (taps, pairs) = (g.taps(), g.c.div_ceil(2));
    let k = g.c * taps;
    // The input's channel pairs, image by image.
    let mut x = vec![0u32; g.n * pairs * xp.vol];
    let x_ptr = DisjointMut(x.as_mut_ptr());
    par_for(g.n * pairs, |item| {
        let (n, j) = (item / pairs, item % pairs);
        let channel = |c: usize| (c < g.c).then(|| &xp.data[(n * g.c + c) * xp.vol..][..xp.vol]);
        // SAFETY: each item writes its own pair's volume.
        let dst = unsafe { std::slice::from_raw_parts_mut(x_ptr.at(item * xp.vol), xp.vol) };
        // SAFETY: `pairs_channels` checked AVX-512.
        unsafe { pair_values(channel(2 * j).expect("an even channel exists"), channel(2 * j + 1), dst) };
    });
    // A's pairs: panel, step (pair j, tap), row; the same channel pairs, zero past an odd count.
    let panels = m.div_ceil(MR);
    let steps = pairs * taps;
    let bits = |v: f32| v.to_bits() >> 16;
    let mut ap = vec![0u32; panels * steps * MR];
    for panel in 0..panels {
        for j in 0..pairs {
            for tap in 0..taps {
                for r in 0..MR {
                    let at = |c: usize| a[panel * MR * k + (c * taps + tap) * MR + r];
                    let odd = if 2 * j + 1 < g.c { bits(at(2 * j + 1)) } else { 0 };
                    ap[(panel * steps + j * taps + tap) * MR + r] = bits(at(2 * j)) | odd << 16;
                }
            }
        }
    }
    let offsets = tap_offsets(g, xp, pairs);
    let out_ptr = DisjointMut(out.as_mut_ptr());
    for_each_tile(g, m, pairs * xp.vol, xp, |origin, c_at, r0, cols| {
        // SAFETY: `pairs_channels` checked AVX-512 F and BF16; the offsets stay inside `x` (its
        // pairs padded as `xp`, sized for the widest tile); each (row, tile) is written by one
        // thread only, at `cols` ≤ 32 columns of the panel's output planes.
        unsafe {
            by_rows!(
                (m - r0).min(MR),
                kernel_pairs(
                    ap.as_ptr().add(r0 / MR * steps * MR),
                    &offsets,
                    x.as_ptr().add(origin),
                    out_ptr.at(c_at),
                    p,
                    cols,
                    bias.as_ptr().add(r0),
                    residual.map_or(std::ptr::null(), |r| r.as_ptr().add(c_at)),
                    relu
                )
            )
        }
    });
    Ok(())
}

/// `dst[i]` = the bf16 bits of `even[i]` (low half) and `odd[i]` (high half, zero without
/// `odd`): values already rounded to bf16, so their top halves are exact.
///
/// # Safety
/// AVX-512F available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pair_values(even: &[f32], odd: Option<&[f32]>, dst: &mut [u32]) {
    match odd {
        Some(odd) => {
            for ((d, e), o) in dst.iter_mut().zip(even).zip(odd) {
                *d = e.to_bits() >> 16 | o.to_bits() & 0xffff_0000;
            }
        }
        None => dst.iter_mut().zip(even).for_each(|(d, e)| *d = e.to_bits() >> 16),
    }
}

/// [`kernel`] on channel pairs: for each step (pair, tap), 32 columns' pairs read at
/// `x + offsets[step]` times the R rows' weight pairs (`MR` a step, first R used), VDPBF16PS
/// summing both products; then `store_rows`' epilogue.
///
/// # Safety
/// AVX-512 F and BF16 available; `a` holds `offsets.len()·MR` pairs; `x + offsets[s] + 0..32`
/// readable for every step; `c`, `res` and `bias` as for [`kernel`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_pairs<const R: usize>(
    a: *const u32,
    offsets: &[usize],
    x: *const u32,
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
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(x.add(off).cast()));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(x.add(off + 16).cast()));
        for r in 0..R {
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r) as i32));
            acc.0[r] = _mm512_dpbf16_ps(acc.0[r], av, b0);
            acc.1[r] = _mm512_dpbf16_ps(acc.1[r], av, b1);
        }
        a = a.add(MR);
    }
    store_rows(acc, c, ldc, cols, false, bias, res, relu);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gemm::{sgemm_conv, with_isa, Columns, ConvRhs, Epilogue, Isa};

    /// Under bf16 autocast the direct kernel multiplies the operands the products round (A after
    /// BN's scale, the input): on each bf16 path the machine has (the f32 kernels' `Avx512`, and
    /// VDPBF16PS's channel pairs where the tiles run) it gives that path's product to summation
    /// order, and differs from its own f32 result by the rounding. Odd and even channel counts
    /// (a zero channel pairs the last one), a residual, more rows than a panel.
    #[test]
    fn under_bf16_the_direct_kernel_rounds_as_the_products_do() {
        if !super::super::gemm::has_avx512() {
            eprintln!("no AVX-512: the direct kernel not checked");
            return;
        }
        let mut rng = crate::rng::Rng::new(5);
        let mut ran = vec![];
        for isa in Isa::paths().into_iter().flatten().filter(|i| *i == Isa::Avx512 || i.bf16_pairs()) {
            for (c, m) in [(3, 8), (4, 14)] {
                let g = Geometry3d {
                    n: 2,
                    c,
                    input: [4, 20, 18],
                    kernel: [3, 7, 7],
                    stride: [1, 2, 2],
                    pad: [1, 3, 3],
                    dilation: [1; 3],
                };
                let k = c * g.taps();
                let [ot, oh, ow] = g.out().unwrap();
                let p = ot * oh * ow;
                let mut random = |n: usize| (0..n).map(|_| rng.uniform() as f32 - 0.5).collect::<Vec<f32>>();
                let (x, w, scale, bias) =
                    (random(g.n * g.c * g.in_volume()), random(m * k), random(m), random(m));
                let res = random(g.n * m * p);
                let direct = || {
                    let mut out = vec![0f32; g.n * m * p];
                    conv_direct(&w, &scale, &bias, Some(&res), true, &x, &g, &mut out).unwrap();
                    out
                };
                let bf16 = Some(candle_core::DType::BF16);
                let on_isa =
                    |f: &dyn Fn() -> Vec<f32>| with_isa(Some(isa), || crate::nn::with_autocast(bf16, f));
                let (ours, f32s) = (on_isa(&direct), with_isa(Some(isa), direct));
                let products = on_isa(&|| {
                    let mut out = vec![0f32; g.n * m * p];
                    let epi = Epilogue {
                        row_scale: Some(&scale),
                        row_bias: Some(&bias),
                        residual: Some(&res),
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
                });
                let worst =
                    |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                let (to_products, to_f32) = (worst(&ours, &products), worst(&ours, &f32s));
                let what = format!("{isa:?}, {c} channels");
                assert!(
                    to_products < 1e-5,
                    "{what}: bf16 direct kernel {to_products} from the rounded products"
                );
                assert!(
                    to_f32 > 100.0 * to_products.max(1e-7),
                    "{what}: bf16 direct kernel only {to_f32} from f32: not rounded?"
                );
            }
            ran.push(isa);
        }
        println!("bf16 direct kernel paths: {ran:?}");
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
