//! 3D pooling with PyTorch's semantics: `max_pool3d`, `avg_pool3d` (count_include_pad as torch)
//! and `adaptive_avg_pool3d`, floor mode, each a direct kernel with a hand-written backward.
//! Windows follow ATen's `AvgPoolKernel`/`AdaptiveAveragePooling3d`: a padded window
//! [o·s − p, o·s − p + k) clipped to the input, its divisor the unclipped size (clipped at
//! input + padding) when padding counts, the clipped size otherwise; adaptive windows are
//! [⌊o·In/Out⌋, ⌈(o+1)·In/Out⌉).

use super::simd;
use super::vol2col::{f32_slice, par_planes, par_planes_with};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};

/// The pooling windows along one axis: input range [lo, hi) and the padded size for the divisor.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Axis {
    lo: Vec<usize>,
    hi: Vec<usize>,
    padded: Vec<usize>,
}

impl Axis {
    fn fixed(len: usize, k: usize, s: usize, p: usize) -> Result<Self> {
        if k == 0 || s == 0 || len + 2 * p < k || p > k / 2 {
            candle_core::bail!("pool3d: kernel {k}, stride {s}, padding {p} do not fit {len} (torch needs padding ≤ kernel/2)");
        }
        let out = (len + 2 * p - k) / s + 1;
        let mut a = Axis { lo: vec![], hi: vec![], padded: vec![] };
        for o in 0..out {
            let start = (o * s) as isize - p as isize;
            let end = (start + k as isize).min((len + p) as isize);
            a.padded.push((end - start) as usize);
            a.lo.push(start.max(0) as usize);
            a.hi.push((end.min(len as isize)) as usize);
        }
        Ok(a)
    }

    /// Ceil mode without padding (Paddle's `ceil_mode=True`): a last window that starts inside
    /// the input but is cut by its end is kept, its divisor (exclusive) the pixels it covers.
    fn ceil(len: usize, k: usize, s: usize) -> Result<Self> {
        if k == 0 || s == 0 || len == 0 {
            candle_core::bail!("pool: kernel {k}, stride {s} do not fit {len}");
        }
        let out = len.saturating_sub(k).div_ceil(s) + 1;
        let lo: Vec<usize> = (0..out).map(|o| o * s).collect();
        let hi: Vec<usize> = lo.iter().map(|l| (l + k).min(len)).collect();
        let padded = lo.iter().zip(&hi).map(|(l, h)| h - l).collect();
        Ok(Axis { lo, hi, padded })
    }

    fn adaptive(len: usize, out: usize) -> Result<Self> {
        if out == 0 || len == 0 {
            candle_core::bail!("adaptive pool3d: cannot pool {len} to {out}");
        }
        let lo: Vec<usize> = (0..out).map(|o| o * len / out).collect();
        let hi: Vec<usize> = (0..out).map(|o| ((o + 1) * len).div_ceil(out)).collect();
        let padded = lo.iter().zip(&hi).map(|(l, h)| h - l).collect();
        Ok(Axis { lo, hi, padded })
    }

    fn len(&self) -> usize {
        self.lo.len()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Max,
    Avg { count_include_pad: bool },
}

#[derive(Clone, Debug)]
struct Pool {
    kind: Kind,
    input: [usize; 5],
    axes: [Axis; 3],
}

impl Pool {
    fn out_shape(&self) -> Vec<usize> {
        let [n, c, ..] = self.input;
        vec![n, c, self.axes[0].len(), self.axes[1].len(), self.axes[2].len()]
    }

    fn planes(&self) -> (usize, usize) {
        let [_, _, t, h, w] = self.input;
        (t * h * w, self.axes.iter().map(Axis::len).product())
    }

    /// Calls `f(output offset, input offsets of the window, divisor)` for each output voxel.
    fn windows(&self, mut f: impl FnMut(usize, &mut dyn Iterator<Item = usize>, f32)) {
        let [_, _, _, h, w] = self.input;
        let [at, ah, aw] = &self.axes;
        let mut o = 0;
        for zt in 0..at.len() {
            for zh in 0..ah.len() {
                for zw in 0..aw.len() {
                    let (t0, t1, h0, h1, w0, w1) =
                        (at.lo[zt], at.hi[zt], ah.lo[zh], ah.hi[zh], aw.lo[zw], aw.hi[zw]);
                    let div = match self.kind {
                        Kind::Avg { count_include_pad: true } => {
                            at.padded[zt] * ah.padded[zh] * aw.padded[zw]
                        }
                        _ => (t1 - t0) * (h1 - h0) * (w1 - w0),
                    };
                    let mut it = (t0..t1).flat_map(move |t| {
                        (h0..h1).flat_map(move |y| (w0..w1).map(move |x| (t * h + y) * w + x))
                    });
                    f(o, &mut it, div.max(1) as f32);
                    o += 1;
                }
            }
        }
    }
}

impl Pool {
    /// Max pooling of one plane: `f(output offset, input offset of the window's maximum, value)`,
    /// the first maximum (a NaN wins, as ATen's), every window scanned in full: the reference the
    /// faster forward and backward are tested against.
    #[cfg(test)]
    fn max_windows(&self, xp: &[f32], mut f: impl FnMut(usize, usize, f32)) {
        let [at, ah, aw] = &self.axes;
        let mut o = 0;
        for zt in 0..at.len() {
            for zh in 0..ah.len() {
                for zw in 0..aw.len() {
                    if let Some((best, m)) = self.window_argmax(xp, [zt, zh, zw]) {
                        f(o, best, m);
                    }
                    o += 1;
                }
            }
        }
    }

    /// Window `z`'s first maximum in `xp` (the last NaN where it holds any, as ATen's): its offset
    /// and value; None for an empty window.
    #[inline]
    fn window_argmax(&self, xp: &[f32], [zt, zh, zw]: [usize; 3]) -> Option<(usize, f32)> {
        let [_, _, _, h, w] = self.input;
        let [at, ah, aw] = &self.axes;
        let (mut best, mut m) = (usize::MAX, f32::NEG_INFINITY);
        for t in at.lo[zt]..at.hi[zt] {
            for row in ah.lo[zh]..ah.hi[zh] {
                let base = (t * h + row) * w;
                let lo = base + aw.lo[zw];
                for (i, &v) in xp[lo..base + aw.hi[zw]].iter().enumerate() {
                    if best == usize::MAX || v > m || v.is_nan() {
                        (best, m) = (lo + i, v);
                    }
                }
            }
        }
        (best != usize::MAX).then_some((best, m))
    }

    /// Max pooling's backward over one plane: each window's gradient to its first maximum, found
    /// as the first value equal to the forward's output `yp` (the scan stops there, half a
    /// window on average, where `window_argmax` compares every value); a NaN output takes the
    /// full scan (the last NaN won).
    fn max_grad(&self, xp: &[f32], yp: &[f32], gyp: &[f32], gxp: &mut [f32]) {
        let [_, _, _, h, w] = self.input;
        let [at, ah, aw] = &self.axes;
        let mut o = 0;
        for zt in 0..at.len() {
            for zh in 0..ah.len() {
                for zw in 0..aw.len() {
                    let m = yp[o];
                    let found = if m.is_nan() {
                        self.window_argmax(xp, [zt, zh, zw]).map(|(i, _)| i)
                    } else {
                        'scan: {
                            for t in at.lo[zt]..at.hi[zt] {
                                for row in ah.lo[zh]..ah.hi[zh] {
                                    let base = (t * h + row) * w;
                                    let lo = base + aw.lo[zw];
                                    if let Some(i) = xp[lo..base + aw.hi[zw]].iter().position(|&v| v == m) {
                                        break 'scan Some(lo + i);
                                    }
                                }
                            }
                            None
                        }
                    };
                    if let Some(i) = found {
                        gxp[i] += gyp[o];
                    }
                    o += 1;
                }
            }
        }
    }
}

impl Pool {
    /// Max pooling's values only (the forward), separable: the w windows of every input row
    /// first, then the (t, h) windows as maxima of whole rows of those (vectorised); `rows` is
    /// scratch. The same values as `max_windows` (a NaN still wins) at a fraction of its cost,
    /// which was a twentieth of a SlowFast forward.
    fn max_values(&self, xp: &[f32], yp: &mut [f32], rows: &mut Vec<f32>) {
        max_values_simd(self, xp, yp, rows)
    }

    /// The w windows are ResNet's stem pool along w (3 wide, stride 2, padding 1).
    fn w_is_3_by_2(&self) -> bool {
        let (aw, w) = (&self.axes[2], self.input[4]);
        (0..aw.len()).all(|z| aw.lo[z] == (2 * z).saturating_sub(1) && aw.hi[z] == (2 * z + 2).min(w))
    }
}

/// `Pool::max_values`, compiled for the vector width at hand (a closure under `par_planes` runs
/// at the baseline's).
#[inline(always)]
fn max_values_body(p: &Pool, xp: &[f32], yp: &mut [f32], rows: &mut Vec<f32>) {
    let [_, _, t, h, w] = p.input;
    let aw = &p.axes[2];
    let ow = aw.len();
    let max = |m: f32, v: f32| if v > m || v.is_nan() { v } else { m };
    // Windows one value wide along w (C2D's and I3D's pool after stage 1, 2 × 1 × 1): the rows
    // are the input's own.
    if ow == w && (0..ow).all(|z| aw.lo[z] == z && aw.hi[z] == z + 1) {
        return max_rows(p, xp, yp);
    }
    rows.clear();
    rows.resize(t * h * ow, f32::NEG_INFINITY);
    #[cfg(target_arch = "x86_64")]
    let by_vectors = super::gemm::has_avx512() && p.w_is_3_by_2();
    for (src, dst) in xp.chunks_exact(w).zip(rows.chunks_exact_mut(ow)) {
        #[cfg(target_arch = "x86_64")]
        if by_vectors {
            // SAFETY: AVX-512 checked.
            unsafe { max3_stride2_row(src, dst) };
            continue;
        }
        for (zw, d) in dst.iter_mut().enumerate() {
            *d = src[aw.lo[zw]..aw.hi[zw]].iter().fold(f32::NEG_INFINITY, |m, &v| max(m, v));
        }
    }
    max_rows(p, rows, yp)
}

/// The (t, h) windows of max pooling over `rows` (the w windows' maxima, `Pool::axes[2].len()`
/// a row): each output row the maximum of whole rows, in vectors.
#[inline(always)]
fn max_rows(p: &Pool, rows: &[f32], yp: &mut [f32]) {
    let [_, _, _, h, _] = p.input;
    let [at, ah, aw] = &p.axes;
    let ow = aw.len();
    let max = |m: f32, v: f32| if v > m || v.is_nan() { v } else { m };
    for (out_row, dst) in yp.chunks_exact_mut(ow).enumerate() {
        let (zt, zh) = (out_row / ah.len(), out_row % ah.len());
        dst.fill(f32::NEG_INFINITY);
        for ti in at.lo[zt]..at.hi[zt] {
            for hi in ah.lo[zh]..ah.hi[zh] {
                for (d, &v) in dst.iter_mut().zip(&rows[(ti * h + hi) * ow..][..ow]) {
                    *d = max(*d, v);
                }
            }
        }
    }
}

simd::dispatch_simd!(max_values_simd, max_values_body, (p: &Pool, xp: &[f32], yp: &mut [f32], rows: &mut Vec<f32>));

/// One input row's maxima over w windows 3 wide at stride 2 with padding 1: dst[z] = max of
/// src[2z − 1], src[2z], src[2z + 1] (those inside), in that order, a NaN winning as in the
/// scalar fold; 16 outputs a step from two pairs of loads split into their even and odd values,
/// the values outside the row read as −∞ (which no max keeps), so the row's ends and its last
/// partial step are masked vectors too (a scalar tail was 7 of a ResNet stem's 56 outputs).
///
/// # Safety
/// AVX-512F available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max3_stride2_row(src: &[f32], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let (w, ow) = (src.len() as isize, dst.len());
    let vmax = |m: __m512, v: __m512| {
        let take = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, m) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        _mm512_mask_blend_ps(take, m, v)
    };
    // The 16 values from src[at] on, those outside the row −∞.
    let load = |at: isize| {
        let (lo, hi) = ((-at).clamp(0, 16), (w - at).clamp(0, 16));
        let lanes = ((1u32 << hi) - 1) & !((1u32 << lo) - 1);
        _mm512_mask_loadu_ps(
            _mm512_set1_ps(f32::NEG_INFINITY),
            lanes as __mmask16,
            src.as_ptr().wrapping_offset(at),
        )
    };
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for z in (0..ow).step_by(16) {
        // Outputs z..z+16 read src[2z − 1 .. 2z + 33).
        let at = 2 * z as isize - 1;
        let (lo, hi, lo2, hi2) = (load(at), load(at + 16), load(at + 2), load(at + 18));
        let left = _mm512_permutex2var_ps(lo, even, hi);
        let centre = _mm512_permutex2var_ps(lo, odd, hi);
        let right = _mm512_permutex2var_ps(lo2, even, hi2);
        let n = (ow - z).min(16);
        let lanes = ((1u32 << n) - 1) as __mmask16;
        _mm512_mask_storeu_ps(dst.as_mut_ptr().add(z), lanes, vmax(vmax(left, centre), right));
    }
}

struct PoolFwd(Pool);
/// Average pooling's backward: grad_out → grad_in (linear, so it needs the grad only).
struct AvgBwd(Pool);
/// Max pooling's backward: (x, y, grad_out) → grad_in, to the first maximum of each window as
/// torch.
struct MaxBwd(Pool);

impl CustomOp1 for PoolFwd {
    fn name(&self) -> &'static str {
        "vidkit-pool3d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let p = &self.0;
        let x = f32_slice(s, l)?;
        let (vin, vout) = p.planes();
        let n_out = p.out_shape().iter().product();
        let mut y = super::vol2col::zeros_par(n_out);
        if p.kind == Kind::Max {
            par_planes_with(&mut y, vout, Vec::new, |rows, idx, yp| {
                p.max_values(&x[idx * vin..][..vin], yp, rows)
            });
            return Ok((CpuStorage::F32(y), Shape::from(p.out_shape())));
        }
        par_planes(&mut y, vout, |idx, yp| {
            let xp = &x[idx * vin..][..vin];
            p.windows(|o, win, div| yp[o] = win.map(|i| xp[i]).sum::<f32>() / div);
        });
        Ok((CpuStorage::F32(y), Shape::from(p.out_shape())))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(match self.0.kind {
            Kind::Max => x.apply_op3_no_bwd(&res.contiguous()?, &grad, &MaxBwd(self.0.clone()))?,
            Kind::Avg { .. } => grad.apply_op1(AvgBwd(self.0.clone()))?,
        }))
    }
}

impl CustomOp1 for AvgBwd {
    fn name(&self) -> &'static str {
        "vidkit-avgpool3d-bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let p = &self.0;
        let gy = f32_slice(s, l)?;
        let (vin, vout) = p.planes();
        let mut gx = super::vol2col::zeros_par(p.input.iter().product());
        par_planes(&mut gx, vin, |idx, gxp| {
            let gyp = &gy[idx * vout..][..vout];
            p.windows(|o, win, div| {
                let g = gyp[o] / div;
                for i in win {
                    gxp[i] += g;
                }
            });
        });
        Ok((CpuStorage::F32(gx), Shape::from(p.input.to_vec())))
    }
}

impl CustomOp3 for MaxBwd {
    fn name(&self) -> &'static str {
        "vidkit-maxpool3d-bwd"
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
        let p = &self.0;
        let (x, y, gy) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let (vin, vout) = p.planes();
        if y.len() != gy.len() || x.len() / vin.max(1) != y.len() / vout.max(1) {
            candle_core::bail!(
                "max pool backward: input {}, output {} and gradient {} values",
                x.len(),
                y.len(),
                gy.len()
            )
        }
        let mut gx = super::vol2col::zeros_par(p.input.iter().product());
        par_planes(&mut gx, vin, |idx, gxp| {
            let (xp, yp, gyp) = (&x[idx * vin..][..vin], &y[idx * vout..][..vout], &gy[idx * vout..][..vout]);
            p.max_grad(xp, yp, gyp, gxp);
        });
        Ok((CpuStorage::F32(gx), Shape::from(p.input.to_vec())))
    }
}

fn pool(x: &Tensor, kind: Kind, axes: impl Fn(usize, usize) -> Result<Axis>) -> Result<Tensor> {
    let (n, c, t, h, w) = x.dims5()?;
    let input = [n, c, t, h, w];
    let axes = [axes(0, t)?, axes(1, h)?, axes(2, w)?];
    if super::portable(x) {
        return pool_candle(x, kind, &axes);
    }
    let x = x.to_dtype(candle_core::DType::F32)?.contiguous()?;
    x.apply_op1(PoolFwd(Pool { kind, input, axes }))
}

/// Max pooling of bf16 activations into bf16 (`bf16_act`: a stem's output on its way to the first
/// block's convolutions, C2D's and I3D's pool after stage 1): exact, since a max of bf16 values
/// is one of them and rounding to bf16 keeps order, so the pool reads and writes half the bytes
/// of widening it first (the stem's output was 25 MB of f32 for a ResNet's 8 × 224² clip).
fn max_pool_bf16(x: &Tensor, axes: impl Fn(usize, usize) -> Result<Axis>) -> Result<Tensor> {
    let (n, c, t, h, w) = x.dims5()?;
    let input = [n, c, t, h, w];
    let axes = [axes(0, t)?, axes(1, h)?, axes(2, w)?];
    x.contiguous()?.apply_op1_no_bwd(&MaxBf16(Pool { kind: Kind::Max, input, axes }))
}

/// [`max_pool_bf16`]'s kernel: each plane widened into scratch, pooled by `Pool::max_values`,
/// its maxima narrowed back (their low halves are zero).
struct MaxBf16(Pool);

impl CustomOp1 for MaxBf16 {
    fn name(&self) -> &'static str {
        "vidkit-max-pool3d-bf16"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let p = &self.0;
        let x = match (s, l.contiguous_offsets()) {
            (CpuStorage::BF16(x), Some((a, b))) => super::bf16_act::bits(&x[a..b]),
            _ => candle_core::bail!("bf16 max pool: contiguous bf16 input expected"),
        };
        let (vin, vout) = p.planes();
        let mut y = vec![half::bf16::ZERO; p.out_shape().iter().product()];
        let scratch = || (Vec::<f32>::new(), Vec::<f32>::new(), Vec::<f32>::new());
        par_planes_with(&mut y, vout, scratch, |(xs, ys, rows), idx, yp| {
            xs.clear();
            xs.extend(x[idx * vin..][..vin].iter().map(|&b| f32::from_bits(u32::from(b) << 16)));
            ys.resize(vout, 0.0);
            p.max_values(xs, ys, rows);
            for (d, v) in yp.iter_mut().zip(ys.iter()) {
                *d = half::bf16::from_bits((v.to_bits() >> 16) as u16);
            }
        });
        Ok((CpuStorage::BF16(y), Shape::from(p.out_shape())))
    }
}

/// The same pooling from candle's ops, for devices the kernel cannot run on: axis by axis, since
/// a box window's max (mean) is the max (mean) along each of its axes in turn, and so is its
/// divisor the product of the axes' divisors. One reduction per output index and axis: slow, but
/// only the stem's and heads' pools take this path.
fn pool_candle(x: &Tensor, kind: Kind, axes: &[Axis; 3]) -> Result<Tensor> {
    let mut y = x.clone();
    for (a, axis) in axes.iter().enumerate() {
        let dim = a + 2;
        let identity =
            axis.len() == y.dim(dim)? && (0..axis.len()).all(|o| (axis.lo[o], axis.hi[o]) == (o, o + 1));
        if identity {
            continue;
        }
        let parts = (0..axis.len())
            .map(|o| {
                let part = y.narrow(dim, axis.lo[o], axis.hi[o] - axis.lo[o])?;
                match kind {
                    Kind::Max => part.max_keepdim(dim),
                    Kind::Avg { count_include_pad } => {
                        let divisor =
                            if count_include_pad { axis.padded[o] } else { axis.hi[o] - axis.lo[o] };
                        part.sum_keepdim(dim)? / divisor as f64
                    }
                }
            })
            .collect::<Result<Vec<_>>>()?;
        y = Tensor::cat(&parts, dim)?;
    }
    Ok(y)
}

/// torch `max_pool3d(x, kernel, stride, padding)` on [N, C, T, H, W] (floor mode, dilation 1).
/// Under int8, u8 from a convolution is pooled as bytes (`int8::max_pool`).
pub fn max_pool3d(x: &Tensor, kernel: [usize; 3], stride: [usize; 3], padding: [usize; 3]) -> Result<Tensor> {
    if x.dtype() == candle_core::DType::U8 {
        return super::int8::max_pool(x, kernel, stride, padding);
    }
    let axes = |a, len| Axis::fixed(len, kernel[a], stride[a], padding[a]);
    // A stem's or a block's output handed over in bf16 (`bf16_act`), pooled into bf16.
    if x.dtype() == candle_core::DType::BF16 && !super::portable(x) {
        return max_pool_bf16(x, axes);
    }
    let out = pool(x, Kind::Max, axes)?;
    if super::int8::active() {
        super::int8::pooled(x, &out);
    }
    Ok(out)
}

/// torch `avg_pool3d(x, kernel, stride, padding, count_include_pad=...)` (floor mode).
pub fn avg_pool3d(
    x: &Tensor,
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
    count_include_pad: bool,
) -> Result<Tensor> {
    pool(x, Kind::Avg { count_include_pad }, |a, len| Axis::fixed(len, kernel[a], stride[a], padding[a]))
}

/// Paddle `AvgPool2D(kernel_size=k, stride=k, ceil_mode=True)` (exclusive) over each frame of
/// `x` [N, C, T, H, W]: windows cut by the bottom or right border average the pixels they cover.
pub(super) fn avg_pool_frames_ceil(x: &Tensor, k: usize) -> Result<Tensor> {
    pool(x, Kind::Avg { count_include_pad: false }, |a, len| {
        if a == 0 {
            Axis::fixed(len, 1, 1, 0)
        } else {
            Axis::ceil(len, k, k)
        }
    })
}

/// torch `adaptive_avg_pool3d(x, out)`.
pub fn adaptive_avg_pool3d(x: &Tensor, out: [usize; 3]) -> Result<Tensor> {
    pool(x, Kind::Avg { count_include_pad: false }, |a, len| Axis::adaptive(len, out[a]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Values all distinct, so max pooling is differentiable at the test point.
    fn distinct(shape: [usize; 5]) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i * 7919) % n) as f32 / n as f32 - 0.5).collect();
        Tensor::from_vec(v, shape.to_vec(), &Device::Cpu).unwrap()
    }

    type PoolFn = Box<dyn Fn(&Tensor) -> Tensor>;

    /// The separable forward gives each window's maximum as the direct scan does, NaN included.
    #[test]
    fn max_values_equal_window_scan() {
        // The last two are wide enough for the 16-output steps of the stem pool's w pass (rows of
        // 80 and 81), with ties (rounded values), −∞ and NaNs at even and odd columns.
        for (kernel, stride, pad, input) in [
            ([1, 3, 3], [1, 2, 2], [0, 1, 1], [1, 2, 5, 7, 9]),
            ([3, 3, 2], [2, 1, 2], [1, 1, 1], [1, 2, 5, 7, 9]),
            ([1, 3, 3], [1, 2, 2], [0, 1, 1], [1, 2, 1, 3, 80]),
            ([1, 3, 3], [1, 2, 2], [0, 1, 1], [1, 1, 1, 4, 81]),
            // A ResNet stem's rows (112 → 56: three steps of 16 and a partial one).
            ([1, 3, 3], [1, 2, 2], [0, 1, 1], [1, 1, 2, 3, 112]),
            // C2D's pool after stage 1: windows one value wide along w.
            ([2, 1, 1], [2, 1, 1], [0, 0, 0], [1, 2, 5, 3, 11]),
        ] {
            let x = crate::rng::randn(0f32, 1., input.to_vec(), &Device::Cpu).unwrap();
            let mut xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            if input[4] > 9 {
                xs.iter_mut().for_each(|v| *v = (*v * 2.0).round());
                for (i, v) in
                    [(5, f32::NAN), (36, f32::NAN), (37, f32::NAN), (50, f32::NEG_INFINITY), (101, f32::NAN)]
                {
                    xs[i] = v;
                }
            }
            xs[40] = f32::NAN;
            let axes = [0, 1, 2].map(|a| Axis::fixed(input[a + 2], kernel[a], stride[a], pad[a]).unwrap());
            let p = Pool { kind: Kind::Max, input, axes };
            let (vin, vout) = p.planes();
            for plane in xs.chunks_exact(vin) {
                let mut want = vec![f32::NEG_INFINITY; vout];
                p.max_windows(plane, |o, _, v| want[o] = v);
                let mut got = vec![0f32; vout];
                p.max_values(plane, &mut got, &mut Vec::new());
                for (o, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(g == w || (g.is_nan() && w.is_nan()), "{kernel:?} output {o}: {g} vs {w}");
                }
            }
        }
    }

    /// bf16 in, bf16 out: the f32 pool of the widened input, whose maxima are bf16 values
    /// already (NaNs and ties included), on a stem's and a stage-1 pool's windows.
    #[test]
    fn max_pool_of_bf16_is_the_f32_pool_of_its_values() {
        let x = crate::rng::randn(0f32, 1., (2, 3, 4, 9, 20), &Device::Cpu).unwrap();
        let mut xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (xs[7], xs[300], xs[301]) = (f32::NAN, f32::NEG_INFINITY, -0.0);
        let x = Tensor::from_vec(xs, (2, 3, 4, 9, 20), &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
        for (kernel, stride, pad) in [([1, 3, 3], [1, 2, 2], [0, 1, 1]), ([2, 1, 1], [2, 1, 1], [0, 0, 0])] {
            let got = max_pool3d(&x, kernel, stride, pad).unwrap();
            assert_eq!(got.dtype(), DType::BF16, "{kernel:?}");
            let want = max_pool3d(&x.to_dtype(DType::F32).unwrap(), kernel, stride, pad).unwrap();
            let got = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got.len(), want.len());
            for (o, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "{kernel:?} output {o}: {g} vs {w}"
                );
            }
        }
    }

    /// The backward from the forward's output sends each gradient where the full window scan
    /// does: ties (small integers) and NaNs included.
    #[test]
    fn max_backward_from_the_output_equals_window_scan() {
        for (kernel, stride, pad) in [([1, 3, 3], [1, 2, 2], [0, 1, 1]), ([3, 3, 2], [2, 1, 2], [1, 1, 1])] {
            let input = [1, 2, 5, 7, 9];
            let x = crate::rng::randn(0f32, 2., input.to_vec(), &Device::Cpu).unwrap().round().unwrap();
            let mut xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (xs[40], xs[41], xs[44]) = (f32::NAN, -0.0, f32::NAN);
            let axes = [0, 1, 2].map(|a| Axis::fixed(input[a + 2], kernel[a], stride[a], pad[a]).unwrap());
            let p = Pool { kind: Kind::Max, input, axes };
            let (vin, vout) = p.planes();
            for (n, plane) in xs.chunks_exact(vin).enumerate() {
                let gy: Vec<f32> = (0..vout).map(|o| (o + 7 * n) as f32 + 0.5).collect();
                let mut want = vec![0f32; vin];
                p.max_windows(plane, |o, i, _| want[i] += gy[o]);
                let mut y = vec![0f32; vout];
                p.max_values(plane, &mut y, &mut Vec::new());
                let mut got = vec![0f32; vin];
                p.max_grad(plane, &y, &gy, &mut got);
                assert_eq!(got, want, "{kernel:?} plane {n}");
            }
        }
    }

    /// The candle-only pooling (a GPU's path) equals the kernels: max, average with and without
    /// the padding counted, adaptive.
    #[test]
    fn candle_only_pools_equal_the_kernels() {
        let x = crate::rng::randn(0f32, 1., (2, 3, 5, 9, 8), &Device::Cpu).unwrap();
        let pools: Vec<(&str, PoolFn)> = vec![
            ("max", Box::new(|x| max_pool3d(x, [1, 3, 3], [1, 2, 2], [0, 1, 1]).unwrap())),
            ("max t", Box::new(|x| max_pool3d(x, [3, 2, 2], [2, 1, 2], [1, 1, 0]).unwrap())),
            ("avg counted", Box::new(|x| avg_pool3d(x, [3, 3, 3], [2, 2, 2], [1, 1, 1], true).unwrap())),
            ("avg clipped", Box::new(|x| avg_pool3d(x, [3, 3, 3], [2, 2, 2], [1, 1, 1], false).unwrap())),
            ("adaptive", Box::new(|x| adaptive_avg_pool3d(x, [2, 4, 3]).unwrap())),
        ];
        for (name, pool) in pools {
            let kernel = pool(&x);
            let candle_only = crate::nn::with_portable_ops(|| pool(&x));
            assert_eq!(kernel.dims(), candle_only.dims(), "{name}");
            let d =
                (kernel - candle_only).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(d < 1e-6, "{name}: {d}");
        }
    }

    #[test]
    fn pools_have_torch_windows_and_finite_difference_gradients() {
        let cases: Vec<(&str, [usize; 5], PoolFn, Vec<usize>)> = vec![
            (
                "max k133 s122 p011",
                [2, 3, 4, 7, 6],
                Box::new(|x| max_pool3d(x, [1, 3, 3], [1, 2, 2], [0, 1, 1]).unwrap()),
                vec![2, 3, 4, 4, 3],
            ),
            (
                "max k211 s211",
                [1, 2, 5, 3, 3],
                Box::new(|x| max_pool3d(x, [2, 1, 1], [2, 1, 1], [0, 0, 0]).unwrap()),
                vec![1, 2, 2, 3, 3],
            ),
            (
                "avg incl pad",
                [1, 2, 3, 5, 5],
                Box::new(|x| avg_pool3d(x, [3, 3, 3], [2, 2, 2], [1, 1, 1], true).unwrap()),
                vec![1, 2, 2, 3, 3],
            ),
            (
                "avg excl pad",
                [1, 2, 3, 5, 5],
                Box::new(|x| avg_pool3d(x, [3, 3, 3], [2, 2, 2], [1, 1, 1], false).unwrap()),
                vec![1, 2, 2, 3, 3],
            ),
            (
                "adaptive 1",
                [2, 3, 3, 4, 5],
                Box::new(|x| adaptive_avg_pool3d(x, [1, 1, 1]).unwrap()),
                vec![2, 3, 1, 1, 1],
            ),
            (
                "adaptive 2x3x2",
                [1, 2, 5, 7, 3],
                Box::new(|x| adaptive_avg_pool3d(x, [2, 3, 2]).unwrap()),
                vec![1, 2, 2, 3, 2],
            ),
        ];
        for (label, shape, f, want_shape) in cases {
            let x = Var::from_tensor(&distinct(shape)).unwrap();
            let y = f(x.as_tensor());
            assert_eq!(y.dims(), want_shape.as_slice(), "{label}");
            let r = crate::rng::randn(0f32, 1., y.shape(), &Device::Cpu).unwrap();
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let vals = x.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // Steps far below the gap between distinct values keep every max where it is.
            let eps = 0.4 / vals.len() as f32;
            for idx in 0..vals.len() {
                let at = |d: f32| {
                    let mut m = vals.clone();
                    m[idx] += d;
                    let t = Tensor::from_vec(m, shape.to_vec(), &Device::Cpu).unwrap();
                    (f(&t) * &r).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
                };
                let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                assert!(
                    (g[idx] as f64 - fd).abs() < 2e-2 * fd.abs().max(1.0),
                    "{label} [{idx}]: {} vs {fd}",
                    g[idx]
                );
            }
        }
        // Hand-checked windows: the corner output of a 3×3×3, padding-1 average over a 3×5×5
        // block of ones sees 2·2·2 real voxels out of 27 (counting padding) or 8 (not).
        let ones = Tensor::ones((1, 1, 3, 5, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
        let incl = avg_pool3d(&ones, [3, 3, 3], [2, 2, 2], [1, 1, 1], true).unwrap();
        let excl = avg_pool3d(&ones, [3, 3, 3], [2, 2, 2], [1, 1, 1], false).unwrap();
        let first = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((first(&incl) - 8.0 / 27.0).abs() < 1e-6, "{}", first(&incl));
        assert_eq!(first(&excl), 1.0);
    }
}
