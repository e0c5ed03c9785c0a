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
