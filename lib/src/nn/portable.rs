//! Convolutions from candle's own ops alone, for tensors vidkit's CPU kernels cannot take (on a
//! GPU: candle runs custom ops on the CPU only). Slower than the kernels, exact to float
//! rounding; `with_portable_ops` runs them on the CPU so tests compare the two.
//!
//! candle has `conv2d` (one stride, padding and dilation for both axes) but no 3D convolution:
//! a 3D one is the sum over its temporal taps of 2D convolutions of the frames each tap sees,
//! frames folded into the batch. A depthwise one is the sum over its taps of the shifted input
//! times each channel's weight (candle's grouped `conv2d` runs one convolution per group).

use super::vol2col::Geometry3d;
use candle_core::{Result, Tensor};

/// Every `stride`-th slice of `x` along `dim` from `start`, `count` of them; `x` must hold
/// `start + stride · count` slices there.
fn every(x: &Tensor, dim: usize, start: usize, count: usize, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return x.narrow(dim, start, count);
    }
    let v = x.narrow(dim, start, stride * count)?.contiguous()?;
    let mut dims = v.dims().to_vec();
    dims[dim] = count;
    dims.insert(dim + 1, stride);
    v.reshape(dims)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// `x` zero-padded along `dim` by `before` and enough after for every tap of the window to
/// find its `out` strided slices.
fn pad_for(x: &Tensor, g: &Geometry3d, axis: usize, out: usize) -> Result<Tensor> {
    let dim = axis + 2;
    let len = x.dim(dim)?;
    let span = g.dilation[axis] * (g.kernel[axis] - 1) + g.stride[axis] * out;
    let after = span.saturating_sub(g.pad[axis] + len);
    x.pad_with_zeros(dim, g.pad[axis], after)
}

/// candle's `conv2d` (one padding, stride and dilation for both axes), with a backward whose
/// input gradient has the input's shape. candle's backward takes the transposed convolution's
/// output padding from the height alone, so where the strided windows leave a different number of
/// rows than columns uncovered (a 5 × 6 input at stride 2) the width came out short. Here the
/// padding is explicit and the input cut to what the windows cover: no remainder on either axis.
pub(super) fn conv2d(
    x: &Tensor,
    w: &Tensor,
    pad: usize,
    stride: usize,
    dilation: usize,
    groups: usize,
) -> Result<Tensor> {
    if stride == 1 {
        return super::autocast::product([x, w], |[x, w]| x.conv2d(&w, pad, 1, dilation, groups));
    }
    let mut xp = x.clone();
    for dim in [2, 3] {
        let (len, k) = (x.dim(dim)?, w.dim(dim)?);
        let span = dilation * (k - 1) + 1;
        if len + 2 * pad < span {
            candle_core::bail!("conv2d: a {span}-wide window does not fit {len} values padded by {pad}")
        }
        let covered = (len + 2 * pad - span) / stride * stride + span;
        xp = xp.pad_with_zeros(dim, pad, (covered - pad).saturating_sub(len))?.narrow(dim, 0, covered)?;
    }
    super::autocast::product([&xp, w], |[xp, w]| xp.conv2d(&w, 0, stride, dilation, groups))
}

/// conv3d of `x` [N, C, T, H, W] with `weight` [C_out, C / groups, kt, kh, kw] over `g`.
pub(super) fn conv3d(x: &Tensor, weight: &Tensor, g: &Geometry3d, groups: usize) -> Result<Tensor> {
    let [ot, oh, ow] = g.out()?;
    let cout = weight.dim(0)?;
    if groups == g.c && cout == g.c && groups > 1 {
        return depthwise3d(x, weight, g);
    }
    let (s, p, d) = (g.stride[1], g.pad[1], g.dilation[1]);
    if g.stride[2] != s || g.pad[2] != p || g.dilation[2] != d {
        candle_core::bail!("conv3d off the CPU: height and width need the same stride, padding and dilation")
    }
    let xt = pad_for(x, g, 0, ot)?;
    let mut sum: Option<Tensor> = None;
    for dt in 0..g.kernel[0] {
        // The frames this temporal tap sees, as a batch of images.
        let frames = every(&xt, 2, dt * g.dilation[0], ot, g.stride[0])?.permute((0, 2, 1, 3, 4))?;
        let frames = frames.contiguous()?.reshape((g.n * ot, g.c, g.input[1], g.input[2]))?;
        let w = weight.narrow(2, dt, 1)?.squeeze(2)?.contiguous()?;
        let y = conv2d(&frames, &w, p, s, d, groups)?;
        sum = Some(match sum {
            Some(acc) => (acc + y)?,
            None => y,
        });
    }
    let y = sum.expect("a kernel has at least one tap");
    y.reshape((g.n, ot, cout, oh, ow))?.permute((0, 2, 1, 3, 4))?.contiguous()
}

/// Depthwise conv3d (one filter per channel, `weight` [C, 1, kt, kh, kw]).
pub(super) fn depthwise3d(x: &Tensor, weight: &Tensor, g: &Geometry3d) -> Result<Tensor> {
    let out = g.out()?;
    let mut xp = x.clone();
    for (axis, &o) in out.iter().enumerate() {
        xp = pad_for(&xp, g, axis, o)?;
    }
    let [kt, kh, kw] = g.kernel;
    let w = weight.reshape((g.c, kt * kh * kw))?;
    let mut sum: Option<Tensor> = None;
    for (tap, (a, b, c)) in
        (0..kt).flat_map(|a| (0..kh).flat_map(move |b| (0..kw).map(move |c| (a, b, c)))).enumerate()
    {
        let mut v = xp.clone();
        for (axis, k) in [a, b, c].into_iter().enumerate() {
            v = every(&v, axis + 2, k * g.dilation[axis], out[axis], g.stride[axis])?;
        }
        let wt = w.narrow(1, tap, 1)?.reshape((1, g.c, 1, 1, 1))?;
        let y = v.broadcast_mul(&wt)?;
        sum = Some(match sum {
            Some(acc) => (acc + y)?,
            None => y,
        });
    }
    sum.expect("a kernel has at least one tap").contiguous()
}

#[cfg(test)]
pub(super) mod tests {
    use crate::nn::{with_portable_ops, Conv2d, Conv3d, Conv3dConfig};
    use candle_core::{Device, Tensor, Var};

    /// The largest difference over the largest magnitude of `b`.
    pub(in crate::nn) fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        d / b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    /// The candle-only convolutions equal vidkit's kernels: dense, strided, dilated, grouped,
    /// depthwise, temporal-only and 1×1×1 geometries.
    #[test]
    fn candle_only_conv3d_equals_the_kernels() {
        let dev = Device::Cpu;
        // (c, cout, kernel, stride, padding, dilation, groups, input t h w)
        let cases: [(usize, usize, [usize; 3], [usize; 3], [usize; 3], [usize; 3], usize, [usize; 3]); 7] = [
            (3, 5, [3, 3, 3], [1, 1, 1], [1, 1, 1], [1; 3], 1, [4, 7, 6]),
            (4, 6, [1, 7, 7], [1, 2, 2], [0, 3, 3], [1; 3], 1, [3, 11, 9]),
            (4, 4, [3, 1, 1], [2, 1, 1], [1, 0, 0], [1; 3], 1, [7, 5, 5]),
            (6, 4, [3, 3, 3], [1, 2, 2], [2, 2, 2], [2, 2, 2], 2, [5, 8, 8]),
            (5, 5, [3, 5, 5], [1, 2, 2], [1, 2, 2], [1; 3], 5, [4, 9, 10]),
            (5, 5, [3, 3, 3], [1, 1, 1], [1, 1, 1], [1; 3], 5, [3, 6, 6]),
            (8, 3, [1, 1, 1], [1, 1, 1], [0, 0, 0], [1; 3], 1, [2, 4, 5]),
        ];
        for (i, &(c, cout, kernel, stride, padding, dilation, groups, [t, h, w])) in cases.iter().enumerate()
        {
            let x = crate::rng::randn(0f32, 1., (2, c, t, h, w), &dev).unwrap();
            let weight =
                crate::rng::randn(0f32, 1., (cout, c / groups, kernel[0], kernel[1], kernel[2]), &dev)
                    .unwrap();
            let cfg = Conv3dConfig { stride, padding, dilation, groups, bias: false };
            let conv = Conv3d { weight, bias: None, cfg };
            let kernels = conv.forward(&x).unwrap();
            let candle_only = with_portable_ops(|| conv.forward(&x)).unwrap();
            assert_eq!(kernels.dims(), candle_only.dims(), "case {i}");
            let err = max_rel(&candle_only, &kernels);
            assert!(err < 1e-5, "case {i}: relative error {err}");
        }
    }

    /// A strided 2D convolution's gradients on the candle-only path have the input's and the
    /// weight's shapes and equal the kernels', also where the windows leave a different number of
    /// rows than columns uncovered (candle's own backward made a 5 × 6 input's gradient 5 × 5).
    #[test]
    fn candle_only_strided_conv2d_gradients_equal_the_kernels() {
        let dev = Device::Cpu;
        // (kernel, stride, padding, input h w)
        for (k, s, p, h, w) in
            [(3, 2, 1, 5, 6), (3, 2, 1, 6, 5), (1, 2, 0, 5, 6), (7, 2, 3, 9, 12), (3, 3, 1, 8, 10)]
        {
            let x = Var::from_tensor(&crate::rng::randn(0f32, 1., (2, 3, h, w), &dev).unwrap()).unwrap();
            let weight = Var::from_tensor(&crate::rng::randn(0f32, 1., (4, 3, k, k), &dev).unwrap()).unwrap();
            let conv = Conv2d { weight: weight.as_tensor().clone(), kernel: k, stride: s, padding: p };
            let r = crate::rng::randn(0f32, 1., conv.forward(x.as_tensor()).unwrap().shape(), &dev).unwrap();
            let grads = |portable: bool| {
                let run = || {
                    (conv.forward(x.as_tensor()).unwrap() * &r)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap()
                };
                let g = if portable { with_portable_ops(run) } else { run() };
                (g.get(x.as_tensor()).unwrap().clone(), g.get(weight.as_tensor()).unwrap().clone())
            };
            let ((gx_k, gw_k), (gx_p, gw_p)) = (grads(false), grads(true));
            let case = format!("k{k} s{s} p{p} {h}x{w}");
            assert_eq!(gx_p.dims(), [2, 3, h, w], "{case}: input gradient shape");
            assert!(max_rel(&gx_p, &gx_k) < 1e-5, "{case}: input gradient");
            assert!(max_rel(&gw_p, &gw_k) < 1e-5, "{case}: weight gradient");
        }
    }
}
