//! Pooling with reference semantics candle lacks. Max pooling with overlapping windows
//! (kernel > stride), which candle's `max_pool2d` cannot differentiate: `max_pool3d`'s kernel on
//! the CPU, else the max of the strided shifted views, whose `maximum` has a backward. Paddle's ceil-mode average pooling.

use candle_core::{Result, Tensor};

/// Every `stride`-th row and column of `x` [N, C, H, W], starting at (`dy`, `dx`), `oh` × `ow` of them.
fn strided(x: &Tensor, dy: usize, dx: usize, oh: usize, ow: usize, stride: usize) -> Result<Tensor> {
    let (n, c, _, w) = x.dims4()?;
    let rows = x.narrow(2, dy, stride * oh)?.reshape((n, c, oh, stride, w))?.narrow(3, 0, 1)?.squeeze(3)?;
    rows.narrow(3, dx, stride * ow)?.reshape((n, c, oh, ow, stride))?.narrow(4, 0, 1)?.squeeze(4)
}

/// PyTorch `max_pool2d(kernel, stride, padding)` (floor mode), padding with -inf. On the CPU
/// the direct kernel of `max_pool3d` (parallel, no copies, the gradient to each window's first
/// maximum as torch's); elsewhere the strided views below.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    // bf16: a stem's output handed over (`bf16_act`), pooled into bf16.
    if super::fused::conv_fusable(x) && padding <= kernel / 2 {
        let (k, s, p) = ([1, kernel, kernel], [1, stride, stride], [0, padding, padding]);
        return super::max_pool3d(&x.unsqueeze(2)?, k, s, p)?.squeeze(2);
    }
    let (n, c, h, w) = x.dims4()?;
    let oh = (h + 2 * padding - kernel) / stride + 1;
    let ow = (w + 2 * padding - kernel) / stride + 1;
    // Enough padding after the input for every strided view to be whole.
    let need_h = (kernel - 1) + stride * oh;
    let need_w = (kernel - 1) + stride * ow;
    let pad_b = need_h.saturating_sub(padding + h);
    let pad_r = need_w.saturating_sub(padding + w);
    let neg = |rows: usize, cols: usize| -> Result<Tensor> {
        Tensor::full(f32::NEG_INFINITY, (n, c, rows, cols), x.device())?.to_dtype(x.dtype())
    };
    let mut parts = Vec::new();
    if padding > 0 {
        parts.push(neg(h, padding)?);
    }
    parts.push(x.clone());
    if pad_r > 0 {
        parts.push(neg(h, pad_r)?);
    }
    let xp = Tensor::cat(&parts, 3)?;
    let wp = xp.dim(3)?;
    let mut parts = Vec::new();
    if padding > 0 {
        parts.push(neg(padding, wp)?);
    }
    parts.push(xp);
    if pad_b > 0 {
        parts.push(neg(pad_b, wp)?);
    }
    let xp = Tensor::cat(&parts, 2)?.contiguous()?;
    let mut out: Option<Tensor> = None;
    for dy in 0..kernel {
        for dx in 0..kernel {
            let v = strided(&xp, dy, dx, oh, ow, stride)?;
            out = Some(match out {
                None => v,
                Some(m) => m.maximum(&v)?,
            });
        }
    }
    out.expect("kernel >= 1").contiguous()
}

/// Paddle `AvgPool2D(kernel_size=k, stride=k, padding=0, ceil_mode=True)` with its default
/// `exclusive=True` (the ResNet-D shortcut of PaddleVideo's ResNetTweaksTSM): windows cut by the
/// bottom or right border average only the pixels they cover.
pub fn avg_pool2d_ceil(x: &Tensor, k: usize) -> Result<Tensor> {
    if super::fusable(x) {
        return super::pool3d::avg_pool_frames_ceil(&x.unsqueeze(2)?, k)?.squeeze(2);
    }
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (h.div_ceil(k), w.div_ceil(k));
    let padded = x.pad_with_zeros(2, 0, oh * k - h)?.pad_with_zeros(3, 0, ow * k - w)?;
    let sums = padded.reshape((n, c, oh, k, ow, k))?.sum(5)?.sum(3)?;
    if h % k == 0 && w % k == 0 {
        return sums / (k * k) as f64;
    }
    let counts: Vec<f32> =
        (0..oh).flat_map(|i| (0..ow).map(move |j| (k.min(h - i * k) * k.min(w - j * k)) as f32)).collect();
    let counts = Tensor::from_vec(counts, (1, 1, oh, ow), x.device())?.to_dtype(x.dtype())?;
    sums.broadcast_div(&counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_a_direct_window_max_and_has_a_gradient() {
        let (h, w) = (7, 6);
        let v: Vec<f32> = (0..h * w).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
        let x = Var::from_tensor(&Tensor::from_vec(v.clone(), (1, 1, h, w), &Device::Cpu).unwrap()).unwrap();
        let y = max_pool2d(x.as_tensor(), 3, 2, 1).unwrap();
        let (oh, ow) = ((h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1);
        assert_eq!(y.dims(), &[1, 1, oh, ow]);
        let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in 0..oh {
            for j in 0..ow {
                let mut m = f32::NEG_INFINITY;
                for di in 0..3 {
                    for dj in 0..3 {
                        let (r, c) = ((2 * i + di) as i64 - 1, (2 * j + dj) as i64 - 1);
                        if r >= 0 && c >= 0 && (r as usize) < h && (c as usize) < w {
                            m = m.max(v[r as usize * w + c as usize]);
                        }
                    }
                }
                assert_eq!(got[i * ow + j], m, "({i}, {j})");
            }
        }
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(gx, (oh * ow) as f32, "every output sends its gradient to one input (the first maximum)");
        // The strided-views path (taken off the CPU or for f64) gives the same maxima.
        let x64 = x.as_tensor().to_dtype(candle_core::DType::F64).unwrap();
        let y64 = max_pool2d(&x64, 3, 2, 1).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(y64, got.iter().map(|&v| v as f64).collect::<Vec<_>>());
    }

    #[test]
    fn ceil_mode_average_counts_only_covered_pixels() {
        // What Paddle's AvgPool2D(2, 2, ceil_mode=True) gives for arange(25) as 5×5 (measured).
        // The pooling kernel, then candle's ops (a GPU's path).
        for candle_only in [false, true] {
            let pool = |x: &Tensor| {
                let run = || avg_pool2d_ceil(x, 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                if candle_only {
                    crate::nn::with_portable_ops(run)
                } else {
                    run()
                }
            };
            let x = Tensor::arange(0f32, 25., &Device::Cpu).unwrap().reshape((1, 1, 5, 5)).unwrap();
            assert_eq!(
                pool(&x),
                vec![3., 5., 6.5, 13., 15., 16.5, 20.5, 22.5, 24.],
                "candle only: {candle_only}"
            );
            let x = Tensor::arange(0f32, 16., &Device::Cpu).unwrap().reshape((1, 1, 4, 4)).unwrap();
            assert_eq!(pool(&x), vec![2.5, 4.5, 10.5, 12.5], "candle only: {candle_only}");
        }
        // The kernel's gradient (each output's gradient over the pixels its window covers)
        // equals autograd's through candle's ops, cut windows included.
        let x = Var::from_tensor(&crate::rng::randn(0f32, 1., (2, 3, 7, 6), &Device::Cpu).unwrap()).unwrap();
        let w = crate::rng::randn(0f32, 1., (2, 3, 4, 3), &Device::Cpu).unwrap();
        let grad = |candle_only: bool| {
            let run = || (avg_pool2d_ceil(x.as_tensor(), 2).unwrap() * &w).unwrap().sum_all().unwrap();
            let loss = if candle_only { crate::nn::with_portable_ops(run) } else { run() };
            let g = loss.backward().unwrap();
            g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let (kernel, candle_ops) = (grad(false), grad(true));
        for (a, b) in kernel.iter().zip(&candle_ops) {
            assert!((a - b).abs() < 1e-6, "gradient {a} vs {b}");
        }
    }
}
