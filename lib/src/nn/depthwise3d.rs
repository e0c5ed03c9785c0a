//! Depthwise 3D convolution (groups = C_in = C_out, weight [C, 1, kt, kh, kw]), as X3D, ir-CSN
//! and, one frame at a time, PP-LCNetV2 use: forward and both backward passes, direct.
//!
//! Each channel's volume is zero-padded and split into its stride phases (polyphase: the voxels
//! whose padded coordinates agree modulo the stride). In that layout every tap of a strided,
//! dilated window reads one phase at a fixed offset, so a whole channel's output is, per tap,
//! one contiguous `out[i] += w · phase[off + i]` over an output "frame" laid out with the phase's
//! row pitch (a few columns of it are discarded). No per-row bounds logic and long vectorisable
//! loops, which matters where X3D's late stages are a few pixels wide.

use super::simd::{axpy, deinterleave, dispatch_simd, dot};
use super::vol2col::{f32_slice, par_planes_uninit, par_planes_with, Geometry3d};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::mem::MaybeUninit;

/// Where a channel's padded volume goes in the phase buffer, and where each tap reads from it.
struct Polyphase {
    g: Geometry3d,
    out: [usize; 3],
    /// Extent of one phase per axis (t, h, w).
    dims: [usize; 3],
    /// Floats in the phase buffer (all phases).
    buf_len: usize,
    /// Length of the output frame: the last output's position in the phase pitch, plus one.
    frame_len: usize,
    /// Per tap (PyTorch weight order), its read offset into the phase buffer.
    tap_offsets: Vec<usize>,
    /// Per input column, its position relative to its row's start (phase and index).
    col_offsets: Vec<usize>,
}

impl Polyphase {
    fn new(g: &Geometry3d) -> Result<Self> {
        let out = g.out()?;
        let mut dims = [0; 3];
        for a in 0..3 {
            dims[a] = (g.input[a] + 2 * g.pad[a]).div_ceil(g.stride[a]);
        }
        let phase_len = dims.iter().product::<usize>();
        let phases = g.stride.iter().product::<usize>();
        let [kt, kh, kw] = g.kernel;
        let mut tap_offsets = Vec::with_capacity(g.taps());
        for dt in 0..kt {
            for dh in 0..kh {
                for dw in 0..kw {
                    let reach = [dt * g.dilation[0], dh * g.dilation[1], dw * g.dilation[2]];
                    let phase = (reach[0] % g.stride[0] * g.stride[1] + reach[1] % g.stride[1]) * g.stride[2]
                        + reach[2] % g.stride[2];
                    let shift = ((reach[0] / g.stride[0]) * dims[1] + reach[1] / g.stride[1]) * dims[2]
                        + reach[2] / g.stride[2];
                    tap_offsets.push(phase * phase_len + shift);
                }
            }
        }
        let frame_len = ((out[0] - 1) * dims[1] + out[1] - 1) * dims[2] + out[2];
        let sw = g.stride[2];
        let col_offsets = (0..g.input[2])
            .map(|w| {
                let wp = w + g.pad[2];
                (wp % sw) * phase_len + wp / sw
            })
            .collect();
        Ok(Self { g: *g, out, dims, buf_len: phases * phase_len, frame_len, tap_offsets, col_offsets })
    }

    /// Calls `f(input_row_start, row)` per input row (t, h), `row` being where the row's phase-0
    /// part starts in the buffer (column `w` goes to `row + col_offsets[w]`).
    #[inline(always)]
    fn for_each_input_row(&self, mut f: impl FnMut(usize, usize)) {
        let g = &self.g;
        let [t_in, h_in, _] = g.input;
        let [st, sh, sw] = g.stride;
        let phase_len = self.buf_len / (st * sh * sw);
        // Padded coordinates as (quotient, remainder) by the stride, stepped without dividing
        // (rows can be 7 values long, where four divisions per row showed).
        let (mut tq, mut tr) = (g.pad[0] / st, g.pad[0] % st);
        for t in 0..t_in {
            let (mut hq, mut hr) = (g.pad[1] / sh, g.pad[1] % sh);
            for h in 0..h_in {
                let phase = (tr * sh + hr) * sw;
                let row = phase * phase_len + (tq * self.dims[1] + hq) * self.dims[2];
                f((t * h_in + h) * g.input[2], row);
                hr += 1;
                if hr == sh {
                    (hq, hr) = (hq + 1, 0);
                }
            }
            tr += 1;
            if tr == st {
                (tq, tr) = (tq + 1, 0);
            }
        }
    }

    /// Copies one channel's input volume into `buf` (whose padding positions stay zero).
    fn scatter(&self, vol: &[f32], buf: &mut [f32]) {
        let w_in = self.g.input[2];
        self.for_each_input_row(|src, row| {
            let vol = &vol[src..src + w_in];
            match self.g.stride[2] {
                1 => {
                    let at = row + self.g.pad[2];
                    buf[at..at + w_in].copy_from_slice(vol);
                }
                2 if w_in > 1 => {
                    // Columns alternate between the two phases: de-interleave in pairs, which
                    // the compiler turns into vector shuffles (two strided scalar loops were
                    // 8 % of PP-TSMv2's forward).
                    let (even, odd) = (row + self.col_offsets[0], row + self.col_offsets[1]);
                    if w_in % 2 == 1 {
                        buf[even + w_in / 2] = vol[w_in - 1];
                    }
                    let (lo, hi) = if even < odd { (even, odd) } else { (odd, even) };
                    let (head, tail) = buf.split_at_mut(hi);
                    let (first, second) = (&mut head[lo..lo + w_in / 2], &mut tail[..w_in / 2]);
                    let (e, o) = if even < odd { (first, second) } else { (second, first) };
                    deinterleave(vol, e, o);
                }
                _ => {
                    for (v, off) in vol.iter().zip(&self.col_offsets) {
                        buf[row + off] = *v;
                    }
                }
            }
        });
    }

    /// The adjoint of `scatter`: reads one channel's volume back out of `buf`.
    fn gather(&self, buf: &[f32], vol: &mut [f32]) {
        let w_in = self.g.input[2];
        self.for_each_input_row(|dst, row| {
            if self.g.stride[2] == 1 {
                let at = row + self.g.pad[2];
                vol[dst..dst + w_in].copy_from_slice(&buf[at..at + w_in]);
            } else {
                for (v, off) in vol[dst..dst + w_in].iter_mut().zip(&self.col_offsets) {
                    *v = buf[row + off];
                }
            }
        });
    }

    /// Output rows: (dense start, frame start) of each of the To·Ho rows of Wo values.
    fn for_each_output_row(&self, mut f: impl FnMut(usize, usize)) {
        let [ot, oh, ow] = self.out;
        for t in 0..ot {
            for y in 0..oh {
                f((t * oh + y) * ow, (t * self.dims[1] + y) * self.dims[2]);
            }
        }
    }

    /// Dense [To, Ho, Wo] values into the frame layout, the discarded columns set to zero.
    fn to_frame(&self, dense: &[f32], frame: &mut [f32]) {
        let ow = self.out[2];
        frame.fill(0.0);
        self.for_each_output_row(|d, f| frame[f..f + ow].copy_from_slice(&dense[d..d + ow]));
    }
}

/// Values read past a phase buffer's end by `forward_rows`' widest block (zero).
const ROW_BLOCK_SLACK: usize = 64;

/// One channel's forward: `buf` holds its phases (and `ROW_BLOCK_SLACK` zeros after them). The
/// output frame (rows at the phase pitch) is summed in blocks of 64 kept in registers over all
/// taps, and each block's valid outputs go straight to `out` (+ bias, ReLU when given); summing
/// the frame in memory tap by tap and copying it out cost twice as much. With `FMA` each tap is
/// a fused multiply-add (one instruction where the CPU has FMA, a libm call where not).
#[inline(always)]
fn forward_rows<const FMA: bool>(
    p: &Polyphase,
    weights: &[f32],
    buf: &[f32],
    epilogue: Option<(f32, bool)>,
    out: &mut [MaybeUninit<f32>],
) {
    const B: usize = ROW_BLOCK_SLACK;
    let (pitch, rows_per_t) = (p.dims[2], p.dims[1]);
    let [_, oh, ow] = p.out;
    for at in (0..p.frame_len).step_by(B) {
        let mut acc = [0f32; B];
        for (&off, &w) in p.tap_offsets.iter().zip(weights) {
            for (a, v) in acc.iter_mut().zip(&buf[off + at..][..B]) {
                *a = if FMA { w.mul_add(*v, *a) } else { *a + w * v };
            }
        }
        // The block's pieces of output rows: frame row r (t = r / rows_per_t, y = its rest),
        // columns below `ow`, rows below `oh`.
        let end = (at + B).min(p.frame_len);
        let mut pos = at;
        while pos < end {
            let (row, col) = (pos / pitch, pos % pitch);
            let row_end = (row * pitch + ow).min(end);
            let (t, y) = (row / rows_per_t, row % rows_per_t);
            if col < ow && y < oh {
                let dense = (t * oh + y) * ow + col;
                let dst = &mut out[dense..dense + (row_end - pos)];
                let src = &acc[pos - at..row_end - at];
                match epilogue {
                    Some((bias, relu)) => {
                        for (d, a) in dst.iter_mut().zip(src) {
                            let v = a + bias;
                            d.write(if relu { v.max(0.0) } else { v });
                        }
                    }
                    None => {
                        for (d, a) in dst.iter_mut().zip(src) {
                            d.write(*a);
                        }
                    }
                }
            }
            pos = (row + 1) * pitch;
        }
    }
}

/// One channel's input gradient: `frame` holds the output gradient, `buf` receives the phases'.
#[inline(always)]
fn backward_data_channel(p: &Polyphase, weights: &[f32], frame: &[f32], buf: &mut [f32]) {
    buf.fill(0.0);
    for (&off, &w) in p.tap_offsets.iter().zip(weights) {
        axpy(w, frame, &mut buf[off..off + frame.len()]);
    }
}

/// Adds one (sample, channel)'s weight gradient to `acc`.
#[inline(always)]
fn backward_filter_channel(p: &Polyphase, frame: &[f32], buf: &[f32], acc: &mut [f64]) {
    for (&off, a) in p.tap_offsets.iter().zip(acc.iter_mut()) {
        *a += dot(frame, &buf[off..off + frame.len()]);
    }
}

dispatch_simd!(forward_rows_simd, forward_rows::<true>, forward_rows::<false>, (p: &Polyphase, weights: &[f32], buf: &[f32], epilogue: Option<(f32, bool)>, out: &mut [MaybeUninit<f32>]));
dispatch_simd!(backward_data_simd, backward_data_channel, (p: &Polyphase, weights: &[f32], frame: &[f32], buf: &mut [f32]));
dispatch_simd!(backward_filter_simd, backward_filter_channel, (p: &Polyphase, frame: &[f32], buf: &[f32], acc: &mut [f64]));

/// The forward op: (x [N, C, T, H, W], weight [C, 1, kt, kh, kw]) → y.
pub(super) struct Depthwise3d(pub Geometry3d);
/// Its gradient with respect to the input: (grad_out, weight) → grad_in.
struct Depthwise3dBwdData(Geometry3d);
/// Its gradient with respect to the weight: (x, grad_out) → grad_weight.
struct Depthwise3dBwdFilter(Geometry3d);

/// The forward pass over contiguous x [N, C, T, H, W] and taps [C, kt·kh·kw]; with `epilogue`
/// (per-channel bias, ReLU) added to each output as it leaves its frame.
pub(super) fn depthwise_forward(
    x: &[f32],
    g: &Geometry3d,
    taps: &[f32],
    epilogue: Option<(&[f32], bool)>,
) -> Result<(Vec<f32>, [usize; 3])> {
    let p = Polyphase::new(g)?;
    let (plane, vol, k) = (p.out.iter().product::<usize>(), g.in_volume(), g.taps());
    if x.len() != g.n * g.c * vol || taps.len() != g.c * k {
        candle_core::bail!("depthwise conv3d: {} inputs, {} taps for geometry {g:?}", x.len(), taps.len())
    }
    let run = |buf: &mut Vec<f32>, idx: usize, yp: &mut [MaybeUninit<f32>]| {
        let c = idx % g.c;
        p.scatter(&x[idx * vol..][..vol], buf);
        let epilogue = epilogue.map(|(bias, relu)| (bias[c], relu));
        forward_rows_simd(&p, &taps[c * k..][..k], buf, epilogue, yp);
    };
    // SAFETY: `forward_rows` writes every output of the plane (each output row, in full).
    let y = unsafe {
        par_planes_uninit(g.n * g.c * plane, plane, || vec![0f32; p.buf_len + ROW_BLOCK_SLACK], run)
    };
    Ok((y, p.out))
}

impl CustomOp2 for Depthwise3d {
    fn name(&self) -> &'static str {
        "vidkit-depthwise3d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let g = &self.0;
        let (x, wt) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let (y, [ot, oh, ow]) = depthwise_forward(x, g, wt, None)?;
        Ok((CpuStorage::F32(y), Shape::from(vec![g.n, g.c, ot, oh, ow])))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let gx = grad.apply_op2(w, Depthwise3dBwdData(self.0))?;
        let gw = x.apply_op2(&grad, Depthwise3dBwdFilter(self.0))?;
        Ok((Some(gx), Some(gw)))
    }
}

impl CustomOp2 for Depthwise3dBwdData {
    fn name(&self) -> &'static str {
        "vidkit-depthwise3d-bwd-data"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let g = &self.0;
        let (gy, wt) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let p = Polyphase::new(g)?;
        let (plane, vol, taps) = (p.out.iter().product::<usize>(), g.in_volume(), g.taps());
        let mut gx = super::vol2col::zeros_par(g.n * g.c * vol);
        par_planes_with(
            &mut gx,
            vol,
            || (vec![0f32; p.buf_len], vec![0f32; p.frame_len]),
            |(buf, frame), idx, gxp| {
                let c = idx % g.c;
                p.to_frame(&gy[idx * plane..][..plane], frame);
                backward_data_simd(&p, &wt[c * taps..][..taps], frame, buf);
                p.gather(buf, gxp);
            },
        );
        let [t, h, w] = g.input;
        Ok((CpuStorage::F32(gx), Shape::from(vec![g.n, g.c, t, h, w])))
    }
}

impl CustomOp2 for Depthwise3dBwdFilter {
    fn name(&self) -> &'static str {
        "vidkit-depthwise3d-bwd-filter"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let g = &self.0;
        let (x, gy) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let p = Polyphase::new(g)?;
        let (plane, vol, taps) = (p.out.iter().product::<usize>(), g.in_volume(), g.taps());
        let mut gw = vec![0f32; g.c * taps];
        // Parallel over channels; each sums its samples' products in f64.
        par_planes_with(
            &mut gw,
            taps,
            || (vec![0f32; p.buf_len], vec![0f32; p.frame_len], vec![0f64; taps]),
            |(buf, frame, acc), c, gwc| {
                acc.fill(0.0);
                for n in 0..g.n {
                    let idx = n * g.c + c;
                    p.scatter(&x[idx * vol..][..vol], buf);
                    p.to_frame(&gy[idx * plane..][..plane], frame);
                    backward_filter_simd(&p, frame, buf, acc);
                }
                for (d, a) in gwc.iter_mut().zip(acc.iter()) {
                    *d = *a as f32;
                }
            },
        );
        let [kt, kh, kw] = g.kernel;
        Ok((CpuStorage::F32(gw), Shape::from(vec![g.c, 1, kt, kh, kw])))
    }
}
