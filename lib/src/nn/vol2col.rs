//! vol2col / col2vol: the 3D unfolding that turns a convolution of any kernel, stride, padding and
//! dilation into one matrix product, each the other's backward (candle custom ops over contiguous
//! CPU buffers, as `im2col.rs` for 2D). Also the small parallel helper the direct 3D kernels share.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// Geometry of a 3D convolution or pooling window over [N, C, T, H, W], per axis (t, h, w).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry3d {
    pub n: usize,
    pub c: usize,
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub pad: [usize; 3],
    pub dilation: [usize; 3],
}

impl Geometry3d {
    /// Output extent per axis, as PyTorch (floor mode); errors when the window does not fit.
    pub fn out(&self) -> Result<[usize; 3]> {
        let mut o = [0; 3];
        for a in 0..3 {
            let span = self.dilation[a] * (self.kernel[a] - 1) + 1;
            let padded = self.input[a] + 2 * self.pad[a];
            if self.kernel[a] == 0 || self.stride[a] == 0 || padded < span {
                candle_core::bail!(
                    "3D window {:?} (stride {:?}, padding {:?}, dilation {:?}) does not fit input {:?}",
                    self.kernel,
                    self.stride,
                    self.pad,
                    self.dilation,
                    self.input
                );
            }
            o[a] = (padded - span) / self.stride[a] + 1;
        }
        Ok(o)
    }

    pub fn taps(&self) -> usize {
        self.kernel.iter().product()
    }

    pub fn in_volume(&self) -> usize {
        self.input.iter().product()
    }
}

/// For each output position along one axis and tap `k`: the input index, or None in the padding.
#[inline]
pub(crate) fn src(o: usize, k: usize, a: usize, g: &Geometry3d) -> Option<usize> {
    let i = (o * g.stride[a] + k * g.dilation[a]) as isize - g.pad[a] as isize;
    (i >= 0 && (i as usize) < g.input[a]).then_some(i as usize)
}

/// The output columns `lo..=hi` whose input column (tap `kw`) lies inside the row, if any.
#[inline]
pub(crate) fn valid_cols(ow: usize, kw: usize, g: &Geometry3d) -> Option<(usize, usize)> {
    let lo = (0..ow).find(|&o| src(o, kw, 2, g).is_some())?;
    let hi = (0..ow).rev().find(|&o| src(o, kw, 2, g).is_some())?;
    Some((lo, hi))
}

/// Calls `f(plane, out_plane)` for every `plane_len`-sized chunk of `out`, spread over the rayon
/// pool's threads (the GEMM's), so the direct kernels use the same cores as the matmuls.
pub(crate) fn par_planes<F>(out: &mut [f32], plane_len: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    par_planes_with(out, plane_len, || (), |_, i, p| f(i, p));
}

/// Runs `f(state, plane_index, plane)` over every `plane_len` chunk of `out`, in parallel over
/// the rayon pool's threads, with one `init()` state (scratch buffers) per thread. (The pool's
/// size, not candle's `get_num_threads`, which reads /proc/cpuinfo on every call where
/// RAYON_NUM_THREADS is unset: 2 % of an int8 ResNet's forward.)
pub(crate) fn par_planes_with<T, S, I, F>(out: &mut [T], plane_len: usize, init: I, f: F)
where
    T: Send,
    I: Fn() -> S + Sync,
    F: Fn(&mut S, usize, &mut [T]) + Sync,
{
    let planes = if plane_len == 0 { 0 } else { out.len() / plane_len };
    let threads = rayon::current_num_threads().clamp(1, planes.max(1));
    let per = planes.div_ceil(threads).max(1);
    let run = |first: usize, chunk: &mut [T]| {
        let mut state = init();
        for (i, p) in chunk.chunks_mut(plane_len.max(1)).enumerate() {
            f(&mut state, first + i, p);
        }
    };
    if threads == 1 {
        return run(0, out);
    }
    rayon::scope(|s| {
        for (j, chunk) in out.chunks_mut(per * plane_len).enumerate() {
            let run = &run;
            s.spawn(move |_| run(j * per, chunk));
        }
    });
}

/// A `len`-value vector whose `plane_len` chunks `f(state, plane_index, plane)` writes, as
/// `par_planes_with`, without zeroing it first (a pass over the output, 7 % of PP-TSMv2).
///
/// # Safety
/// `f` must write every element of every plane it is given.
pub(crate) unsafe fn par_planes_uninit<T, S, I, F>(len: usize, plane_len: usize, init: I, f: F) -> Vec<T>
where
    T: Send,
    I: Fn() -> S + Sync,
    F: Fn(&mut S, usize, &mut [std::mem::MaybeUninit<T>]) + Sync,
{
    assert!(plane_len > 0 && len % plane_len == 0, "planes of {plane_len} do not tile {len}");
    let mut v = Vec::with_capacity(len);
    par_planes_with(&mut v.spare_capacity_mut()[..len], plane_len, init, f);
    // SAFETY: the caller's `f` initialised all `len` elements (every plane was given to it).
    unsafe { v.set_len(len) };
    v
}

/// `vec![0f32; n]`, the zeroing (and the page faults of a fresh allocation) split over the
/// threads for large `n`: done on one thread it was a tenth of a 2D ResNet's serial time.
pub(crate) fn zeros_par(n: usize) -> Vec<f32> {
    let threads = rayon::current_num_threads();
    if n < 1 << 18 || threads < 2 {
        return vec![0f32; n];
    }
    let mut v = Vec::with_capacity(n);
    let per = n.div_ceil(threads);
    rayon::scope(|s| {
        for chunk in v.spare_capacity_mut()[..n].chunks_mut(per) {
            s.spawn(move |_| chunk.fill(std::mem::MaybeUninit::new(0.0)));
        }
    });
    // SAFETY: all n elements were written above.
    unsafe { v.set_len(n) };
    v
}

/// x [N, C, T, H, W] → cols [C·kt·kh·kw, N·To·Ho·Wo]: rows ordered (c, kt, kh, kw) like a PyTorch
/// weight (so groups are contiguous row blocks), columns (n, ot, oh, ow).
pub(super) fn vol2col(x: &[f32], g: &Geometry3d) -> Result<Vec<f32>> {
    vol2col_padded(x, g, 0.0)
}

/// `vol2col` of any element type, `pad` where the window leaves the input (int8's quantized
/// zero).
pub(super) fn vol2col_padded<T: Copy + Send + Sync>(x: &[T], g: &Geometry3d, pad: T) -> Result<Vec<T>> {
    let [ot, oh, ow] = g.out()?;
    let p_out = ot * oh * ow;
    let rows = g.c * g.taps();
    let mut cols = vec![pad; rows * g.n * p_out];
    // One row of the column matrix per (c, tap) and sample: parallel over those rows.
    par_planes_with(
        &mut cols,
        p_out,
        || (),
        |_, idx, dst| {
            let (row, n) = (idx / g.n, idx % g.n);
            column_row(&x[n * g.c * g.in_volume()..][..g.c * g.in_volume()], g, [ot, oh, ow], row, pad, dst);
        },
    );
    Ok(cols)
}

/// Row `row` ((c, tap), as `vol2col`'s rows) of one sample's column matrix: `dst` [To·Ho·Wo]
/// from that sample's `x` [C, T, H, W], `pad` where the window leaves the input. `out` is
/// `g.out()`.
#[inline]
pub(super) fn column_row<T: Copy>(
    x: &[T],
    g: &Geometry3d,
    [ot, oh, ow]: [usize; 3],
    row: usize,
    pad: T,
    dst: &mut [T],
) {
    let [_, h, w] = g.input;
    let [_, kh, kw] = g.kernel;
    let vol = g.in_volume();
    let (c, tap) = (row / g.taps(), row % g.taps());
    let (dt, dh, dw) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
    let src_vol = &x[c * vol..][..vol];
    let Some((lo, hi)) = valid_cols(ow, dw, g) else {
        dst[..ot * oh * ow].fill(pad);
        return;
    };
    for t in 0..ot {
        let it = src(t, dt, 0, g);
        for y in 0..oh {
            let drow = &mut dst[(t * oh + y) * ow..][..ow];
            let Some((it, iy)) = it.zip(src(y, dh, 1, g)) else {
                drow.fill(pad);
                continue;
            };
            let srow = &src_vol[(it * h + iy) * w..][..w];
            let ix0 = lo * g.stride[2] + dw * g.dilation[2] - g.pad[2];
            drow[..lo].fill(pad);
            drow[hi + 1..].fill(pad);
            if g.stride[2] == 1 {
                drow[lo..=hi].copy_from_slice(&srow[ix0..ix0 + (hi - lo + 1)]);
            } else {
                for (j, o) in (lo..=hi).enumerate() {
                    drow[o] = srow[ix0 + j * g.stride[2]];
                }
            }
        }
    }
}

/// Extra bytes after a padded volume (`pad_volume`): a run copy reads in 32-byte steps.
const RUN_STEP: usize = 32;

/// One sample's `x` [C, T, H, W] into `out` [C, T + 2·pad_t, H + 2·pad_h, W + 2·pad_w] with
/// `pad` around it, then `RUN_STEP` bytes more: every window of the geometry lies inside, so
/// `padded_column_row` reads it with no bounds tests per output row.
pub(super) fn pad_volume(x: &[u8], g: &Geometry3d, pad: u8, out: &mut Vec<u8>) {
    let [t, h, w] = g.input;
    let [tp, hp, wp] = padded_extent(g);
    out.clear();
    out.resize(g.c * tp * hp * wp + RUN_STEP, pad);
    for (c, src) in x.chunks_exact(t * h * w).take(g.c).enumerate() {
        for (i, src_row) in src.chunks_exact(w).enumerate() {
            let (it, iy) = (i / h + g.pad[0], i % h + g.pad[1]);
            out[((c * tp + it) * hp + iy) * wp + g.pad[2]..][..w].copy_from_slice(src_row);
        }
    }
}

fn padded_extent(g: &Geometry3d) -> [usize; 3] {
    std::array::from_fn(|a| g.input[a] + 2 * g.pad[a])
}

/// `column_row` of a u8 volume padded by `pad_volume` (`xp`) over columns (output positions)
/// `cols`: each output row's part is one run of the padded volume, copied in 32-byte steps at
/// stride 1 (so up to 31 bytes past the last run's end in `dst` are overwritten: `dst` holds
/// them).
pub(super) fn padded_column_row(
    xp: &[u8],
    g: &Geometry3d,
    [_, oh, ow]: [usize; 3],
    row: usize,
    cols: std::ops::Range<usize>,
    dst: &mut [u8],
) {
    let [_, hp, wp] = padded_extent(g);
    let [_, kh, kw] = g.kernel;
    let (c, tap) = (row / g.taps(), row % g.taps());
    let (dt, dh, dw) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
    let plane = hp * wp;
    let base = c * padded_extent(g)[0] * plane + dw * g.dilation[2];
    // Output row (t, y) from x0 on; divisions once per call, not per run.
    let (mut j, mut x0) = (cols.start, cols.start % ow);
    let (mut t, mut y) = ((cols.start / ow) / oh, (cols.start / ow) % oh);
    while j < cols.end {
        let x1 = ow.min(x0 + cols.end - j);
        let it = t * g.stride[0] + dt * g.dilation[0];
        let iy = y * g.stride[1] + dh * g.dilation[1];
        let src = &xp[base + it * plane + iy * wp + x0 * g.stride[2]..];
        let d = &mut dst[j - cols.start..];
        let run = x1 - x0;
        if g.stride[2] == 1 {
            // Fixed-size steps: vector moves, no call per row (the next run overwrites the
            // bytes past this one's end).
            for s in (0..run).step_by(RUN_STEP) {
                let step: &[u8; RUN_STEP] = src[s..s + RUN_STEP].try_into().expect("32 bytes");
                d[s..s + RUN_STEP].copy_from_slice(step);
            }
        } else if g.stride[2] == 2 {
            even_bytes(src, d, run);
        } else {
            for (o, v) in d[..run].iter_mut().zip(src.iter().step_by(g.stride[2])) {
                *o = *v;
            }
        }
        j += run;
        (x0, y) = (0, y + 1);
        if y == oh {
            (t, y) = (t + 1, 0);
        }
    }
}

/// dst[i] = src[2i] for i < n, 16 at a time (so up to 15 bytes past n in `dst` are
/// overwritten, and up to 31 past `src[2(n − 1)]` read): the bytes of each 16-bit pair's low
/// half, packed (SSE2, part of x86-64).
#[cfg(target_arch = "x86_64")]
fn even_bytes(src: &[u8], dst: &mut [u8], n: usize) {
    use std::arch::x86_64::*;
    for s in (0..n).step_by(16) {
        let pairs: &[u8; 32] = src[2 * s..2 * s + 32].try_into().expect("32 bytes");
        let out: &mut [u8; 16] = (&mut dst[s..s + 16]).try_into().expect("16 bytes");
        // SAFETY: SSE2 is part of x86-64; the loads read `pairs`, the store writes `out`.
        unsafe {
            let low = _mm_set1_epi16(0xff);
            let lo = _mm_and_si128(_mm_loadu_si128(pairs.as_ptr() as *const __m128i), low);
            let hi = _mm_and_si128(_mm_loadu_si128(pairs.as_ptr().add(16) as *const __m128i), low);
            _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, _mm_packus_epi16(lo, hi));
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn even_bytes(src: &[u8], dst: &mut [u8], n: usize) {
    for (o, v) in dst[..n].iter_mut().zip(src.iter().step_by(2)) {
        *o = *v;
    }
}

/// The adjoint of `vol2col`: sums every column entry back onto the voxel it came from.
pub(super) fn col2vol(cols: &[f32], g: &Geometry3d) -> Result<Vec<f32>> {
    let out = g.out()?;
    let vol = g.in_volume();
    let mut x = vec![0f32; g.n * g.c * vol];
    // Parallel over (n, c) volumes: each gathers from its own rows, so no two threads collide.
    par_planes(&mut x, vol, |idx, dst| col2vol_plane_simd(cols, g, out, idx, dst));
    Ok(x)
}

/// One (n, c) volume of `col2vol`: every tap's column row added into place.
#[inline(always)]
fn col2vol_plane(cols: &[f32], g: &Geometry3d, [ot, oh, ow]: [usize; 3], idx: usize, dst: &mut [f32]) {
    let [_, h, w] = g.input;
    let [_, kh, kw] = g.kernel;
    let p_out = ot * oh * ow;
    let (n, c) = (idx / g.c, idx % g.c);
    for tap in 0..g.taps() {
        let (dt, dh, dw) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
        let row = c * g.taps() + tap;
        let s = &cols[(row * g.n + n) * p_out..][..p_out];
        let Some((lo, hi)) = valid_cols(ow, dw, g) else { continue };
        for t in 0..ot {
            let Some(it) = src(t, dt, 0, g) else { continue };
            for y in 0..oh {
                let Some(iy) = src(y, dh, 1, g) else { continue };
                let xrow = &mut dst[(it * h + iy) * w..][..w];
                let crow = &s[(t * oh + y) * ow..][lo..=hi];
                let ix0 = lo * g.stride[2] + dw * g.dilation[2] - g.pad[2];
                if g.stride[2] == 1 {
                    for (d, v) in xrow[ix0..ix0 + crow.len()].iter_mut().zip(crow) {
                        *d += v;
                    }
                } else {
                    for (j, v) in crow.iter().enumerate() {
                        xrow[ix0 + j * g.stride[2]] += v;
                    }
                }
            }
        }
    }
}

// Called from a closure, which would not inherit a caller's target features.
super::simd::dispatch_simd!(col2vol_plane_simd, col2vol_plane, (cols: &[f32], g: &Geometry3d, out: [usize; 3], idx: usize, dst: &mut [f32]));

pub(crate) fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("3D ops need contiguous f32 input"),
    }
}

pub struct Vol2col(pub Geometry3d);
pub struct Col2vol(pub Geometry3d);

impl CustomOp1 for Vol2col {
    fn name(&self) -> &'static str {
        "vidkit-vol2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let g = &self.0;
        let p: usize = g.out()?.iter().product();
        let cols = vol2col(f32_slice(storage, layout)?, g)?;
        Ok((CpuStorage::F32(cols), Shape::from((g.c * g.taps(), g.n * p))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Col2vol(self.0))?))
    }
}

impl CustomOp1 for Col2vol {
    fn name(&self) -> &'static str {
        "vidkit-col2vol"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let g = &self.0;
        let x = col2vol(f32_slice(storage, layout)?, g)?;
        let [t, h, w] = g.input;
        Ok((CpuStorage::F32(x), Shape::from(vec![g.n, g.c, t, h, w])))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Vol2col(self.0))?))
    }
}

/// Unfolds `x` [N, C, T, H, W] for the window in `g` (its n, c, input are taken from `x`):
/// [C·kt·kh·kw, N·To·Ho·Wo], differentiable.
pub fn unfold3d(x: &Tensor, g: Geometry3d) -> Result<Tensor> {
    let (n, c, t, h, w) = x.dims5()?;
    let g = Geometry3d { n, c, input: [t, h, w], ..g };
    x.to_dtype(candle_core::DType::F32)?.contiguous()?.apply_op1(Vol2col(g))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows built from the padded volume equal `column_row`'s, over strides (1, 2 and 3),
    /// dilations and paddings on every axis, rows wider and narrower than a copy step, whole or
    /// over column blocks that start and end inside output rows.
    #[test]
    fn padded_rows_equal_the_bounds_tested_ones() {
        let geometries = [
            ([2, 9, 9], [1, 3, 3], [1, 1, 1], [0, 1, 1], [1, 1, 1]),
            ([3, 7, 40], [3, 1, 1], [1, 1, 1], [1, 0, 0], [1, 1, 1]),
            ([1, 11, 13], [1, 7, 7], [1, 2, 2], [0, 3, 3], [1, 1, 1]),
            ([4, 8, 70], [3, 3, 3], [2, 1, 1], [1, 2, 2], [1, 2, 2]),
            ([1, 5, 5], [1, 3, 3], [1, 1, 1], [0, 0, 0], [1, 1, 1]),
            ([1, 6, 80], [1, 3, 3], [1, 2, 2], [0, 1, 1], [1, 1, 1]),
            ([2, 6, 45], [1, 1, 5], [1, 1, 3], [0, 0, 2], [1, 1, 1]),
        ];
        for (input, kernel, stride, pad, dilation) in geometries {
            let g = Geometry3d { n: 1, c: 2, input, kernel, stride, pad, dilation };
            let x: Vec<u8> = (0..g.c * g.in_volume()).map(|i| (i * 37 % 127) as u8).collect();
            let out = g.out().unwrap();
            let p = out.iter().product::<usize>();
            let mut padded = Vec::new();
            pad_volume(&x, &g, 99, &mut padded);
            for row in 0..g.c * g.taps() {
                let mut want = vec![0u8; p];
                column_row(&x, &g, out, row, 99, &mut want);
                // The whole row, and column blocks that start and end inside output rows.
                for cols in [0..p, p / 3..p, p / 5..p / 2, 0..1, p - 1..p] {
                    let mut got = vec![0u8; cols.len() + 64];
                    padded_column_row(&padded, &g, out, row, cols.clone(), &mut got);
                    assert_eq!(got[..cols.len()], want[cols.clone()], "{g:?} row {row} columns {cols:?}");
                }
            }
        }
    }
}
