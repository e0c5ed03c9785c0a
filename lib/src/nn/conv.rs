//! 2D convolution: on the CPU the one-frame case of `conv_gemm` (one op, its own backward);
//! elsewhere lowered to one matrix product (im2col + GEMM) built from candle ops that all have a
//! fast backward. candle's own `conv2d` differentiates through a naive
//! `conv_transpose2d` (dot-product loops) that made training ~30× slower than the forward.
//! 1×1 convolutions with stride 1 are a plain matmul with no copy of the input.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Clone, Debug)]
pub struct Conv2d {
    /// [C_out, C_in, k, k]
    pub weight: Tensor,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

/// Rows/columns `d, d + stride, ...` (`n` of them) of `x` along `dim` (2 or 3) of [N, C, H, W].
fn take_strided(x: &Tensor, dim: usize, start: usize, n: usize, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return x.narrow(dim, start, n);
    }
    let part = x.narrow(dim, start, n * stride)?;
    let mut shape = part.dims().to_vec();
    shape[dim] = n;
    shape.insert(dim + 1, stride);
    part.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

fn zero_pad(x: &Tensor, pad: usize, extra_h: usize, extra_w: usize) -> Result<Tensor> {
    if pad == 0 && extra_h == 0 && extra_w == 0 {
        return Ok(x.clone());
    }
    x.pad_with_zeros(2, pad, pad + extra_h)?.pad_with_zeros(3, pad, pad + extra_w)
}

impl Conv2d {
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Self::with_weight_shape((cout, cin, kernel, kernel), stride, padding, vb)
    }

    /// A conv whose `weight` var has `shape` ([C_out, C_in / groups, k, k]).
    pub(super) fn with_weight_shape(
        shape: (usize, usize, usize, usize),
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get_with_hints(shape, "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        Ok(Self { weight, kernel: shape.3, stride, padding })
    }

    /// Output height and width for an h × w input.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1)
    }

    /// Its window over `x` [N, C_in, H, W] as a one-frame 3D geometry.
    pub fn geometry(&self, x: &Tensor) -> Result<super::Geometry3d> {
        let (n, c, h, w) = x.dims4()?;
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        Ok(super::Geometry3d {
            n,
            c,
            input: [1, h, w],
            kernel: [1, k, k],
            stride: [1, s, s],
            pad: [0, p, p],
            dilation: [1; 3],
        })
    }

    /// [N, C_in, H, W] → [N, C_out, H', W'], as PyTorch's `conv2d` (no bias, dilation 1).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let cout = self.weight.dim(0)?;
        let (oh, ow) = self.output_size(h, w);
        if super::portable(x) {
            return super::portable::conv2d(x, &self.weight, p, s, 1, 1);
        }
        if super::fusable(x) {
            return super::conv_gemm::conv_gemm(x, &self.weight, self.geometry(x)?);
        }
        if k == 1 && p == 0 {
            let xs = if s == 1 {
                x.clone()
            } else {
                let xp = zero_pad(x, 0, (s * oh).saturating_sub(h), (s * ow).saturating_sub(w))?;
                take_strided(&take_strided(&xp, 2, 0, oh, s)?.contiguous()?, 3, 0, ow, s)?
            };
            let cols =
                xs.reshape((n, c, oh * ow))?.transpose(0, 1)?.contiguous()?.reshape((c, n * oh * ow))?;
            let wm = self.weight.reshape((cout, c))?;
            return super::gemm::matmul(&wm, &cols)?
                .reshape((cout, n, oh * ow))?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((n, cout, oh, ow));
        }
        // One GEMM for the whole batch: [C_out, C·k·k] × [C·k·k, N·H'·W'].
        let cols = super::im2col::unfold(x, k, s, p)?;
        let wm = self.weight.reshape((cout, c * k * k))?;
        super::gemm::matmul(&wm, &cols)?
            .reshape((cout, n, oh * ow))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((n, cout, oh, ow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn reference(x: &Tensor, w: &Tensor, s: usize, p: usize) -> Tensor {
        x.conv2d(w, p, s, 1, 1).unwrap()
    }

    #[test]
    fn matches_candle_conv2d_forward_and_has_gradients() {
        let dev = Device::Cpu;
        for (k, s, p, h, w) in
            [(3, 1, 1, 9, 7), (3, 2, 1, 9, 8), (7, 2, 3, 15, 12), (1, 1, 0, 5, 5), (1, 2, 0, 7, 6)]
        {
            let x = Var::from_tensor(&crate::rng::randn(0f32, 1., (2, 3, h, w), &dev).unwrap()).unwrap();
            let wt = Var::from_tensor(&crate::rng::randn(0f32, 1., (4, 3, k, k), &dev).unwrap()).unwrap();
            let conv = Conv2d { weight: wt.as_tensor().clone(), kernel: k, stride: s, padding: p };
            let ours = conv.forward(x.as_tensor()).unwrap();
            let theirs = reference(x.as_tensor(), wt.as_tensor(), s, p);
            assert_eq!(ours.dims(), theirs.dims(), "k{k} s{s} p{p}");
            let diff =
                (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "k{k} s{s} p{p}: {diff}");
            // Gradients against central finite differences of sum(y · r) for a fixed random r
            // (linear in x and w, so the differences are exact up to rounding; candle's own conv
            // backward mis-sizes some strided cases, so it cannot serve as the reference).
            let r = crate::rng::randn(0f32, 1., ours.shape(), &dev).unwrap();
            let grads = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &wt] {
                let g = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let vals = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for idx in [0, vals.len() / 3, vals.len() - 1] {
                    let eps = 0.5f32;
                    let f = |delta: f32| -> f64 {
                        let mut m = vals.clone();
                        m[idx] += delta;
                        let t = Tensor::from_vec(m, v.as_tensor().shape(), &dev).unwrap();
                        let y = if std::ptr::eq(v, &x) {
                            conv.forward(&t).unwrap()
                        } else {
                            Conv2d { weight: t, ..conv.clone() }.forward(x.as_tensor()).unwrap()
                        };
                        (y * &r).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
                    };
                    let fd = (f(eps) - f(-eps)) / (2.0 * eps as f64);
                    let tol = 1e-3 * fd.abs().max(1.0);
                    assert!(
                        (g[idx] as f64 - fd).abs() < tol,
                        "k{k} s{s} p{p} grad[{idx}] {} vs fd {fd}",
                        g[idx]
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use candle_core::Device;

    #[test]
    #[ignore]
    fn time_conv_pieces() {
        let dev = Device::Cpu;
        let x = crate::rng::randn(0f32, 1., (64, 16, 16, 16), &dev).unwrap();
        let w = crate::rng::randn(0f32, 1., (16, 16, 3, 3), &dev).unwrap();
        let conv = Conv2d { weight: w.clone(), kernel: 3, stride: 1, padding: 1 };
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let _ = conv.forward(&x).unwrap();
            let a = t.elapsed();
            let t = std::time::Instant::now();
            let _ = x.conv2d(&w, 1, 1, 1, 1).unwrap();
            let b = t.elapsed();
            let t = std::time::Instant::now();
            let xp = x.pad_with_zeros(2, 1, 1).unwrap().pad_with_zeros(3, 1, 1).unwrap();
            let p = t.elapsed();
            let t = std::time::Instant::now();
            let mut taps = vec![];
            for dy in 0..3 {
                let r = xp.narrow(2, dy, 16).unwrap().contiguous().unwrap();
                for dx in 0..3 {
                    taps.push(r.narrow(3, dx, 16).unwrap());
                }
            }
            let cols = Tensor::stack(&taps, 2).unwrap().reshape((64, 144, 256)).unwrap();
            let s = t.elapsed();
            let t = std::time::Instant::now();
            let _ = w.reshape((16, 144)).unwrap().broadcast_matmul(&cols).unwrap();
            let m = t.elapsed();
            eprintln!("ours {a:?}, candle {b:?}; pad {p:?} stack {s:?} matmul {m:?}");
        }
    }
}
