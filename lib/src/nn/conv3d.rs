//! 3D convolution with PyTorch's `nn.Conv3d` semantics (any kernel, stride, padding, dilation,
//! groups, optional bias). Dense convolutions on the CPU are one op with its own backward
//! (`conv_gemm`); grouped ones, and dense ones elsewhere, are lowered to one (batched) matrix
//! product over `vol2col` columns, whose backward is `col2vol` and candle's matmul backward;
//! 1×1×1 convolutions with stride 1 are a plain matmul; depthwise convolutions (groups = C_in =
//! C_out, as X3D and ir-CSN use) run a direct kernel with hand-written backward ops, since as a
//! GEMM they would be C matrix products of one row each.

use super::depthwise3d::Depthwise3d;
use super::vol2col::{unfold3d, Geometry3d};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3dConfig {
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    pub dilation: [usize; 3],
    pub groups: usize,
    pub bias: bool,
}

impl Default for Conv3dConfig {
    fn default() -> Self {
        Self { stride: [1; 3], padding: [0; 3], dilation: [1; 3], groups: 1, bias: false }
    }
}

#[derive(Clone, Debug)]
pub struct Conv3d {
    /// [C_out, C_in / groups, kt, kh, kw]
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub cfg: Conv3dConfig,
}

impl Conv3d {
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: [usize; 3],
        cfg: Conv3dConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        if cfg.groups == 0 || cin % cfg.groups != 0 || cout % cfg.groups != 0 {
            candle_core::bail!(
                "conv3d: {cin} → {cout} channels are not divisible into {} groups",
                cfg.groups
            );
        }
        let [kt, kh, kw] = kernel;
        let weight = vb.get_with_hints(
            (cout, cin / cfg.groups, kt, kh, kw),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let bias =
            if cfg.bias { Some(vb.get_with_hints(cout, "bias", candle_nn::Init::Const(0.0))?) } else { None };
        Ok(Self { weight, bias, cfg })
    }

    /// The window geometry of this convolution over `x` [N, C, T, H, W].
    pub fn geometry_of(&self, x: &Tensor) -> Result<Geometry3d> {
        let (n, c, t, h, w) = x.dims5()?;
        let (_, cg, kt, kh, kw) = self.weight.dims5()?;
        if cg * self.cfg.groups != c {
            candle_core::bail!(
                "conv3d: input has {c} channels, the weight expects {} ({} groups of {cg})",
                cg * self.cfg.groups,
                self.cfg.groups
            );
        }
        Ok(Geometry3d {
            n,
            c,
            input: [t, h, w],
            kernel: [kt, kh, kw],
            stride: self.cfg.stride,
            pad: self.cfg.padding,
            dilation: self.cfg.dilation,
        })
    }

    /// [N, C_in, T, H, W] → [N, C_out, T', H', W'].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.geometry_of(x)?;
        let [ot, oh, ow] = g.out()?;
        let cout = self.weight.dim(0)?;
        let groups = self.cfg.groups;
        let y = if super::portable(x) {
            super::portable::conv3d(x, &self.weight, &g, groups)?
        } else if groups == g.c && cout == g.c && groups > 1 {
            x.contiguous()?.apply_op2(&self.weight.contiguous()?, Depthwise3d(g))?
        } else if groups == 1 && super::fusable(x) {
            super::conv_gemm::conv_gemm(x, &self.weight, g)?
        } else {
            let p = ot * oh * ow;
            let cols = if g.taps() == 1 && g.stride == [1; 3] && g.pad == [0; 3] {
                x.reshape((g.n, g.c, p))?.transpose(0, 1)?.contiguous()?.reshape((g.c, g.n * p))?
            } else {
                unfold3d(x, g)?
            };
            let k = g.c / groups * g.taps();
            let out = if groups == 1 {
                super::gemm::matmul(&self.weight.reshape((cout, k))?, &cols)?
            } else {
                let wg = self.weight.reshape((groups, cout / groups, k))?;
                wg.matmul(&cols.reshape((groups, k, g.n * p))?)?.reshape((cout, g.n * p))?
            };
            out.reshape((cout, g.n, p))?
                .transpose(0, 1)?
                .contiguous()?
                .reshape(vec![g.n, cout, ot, oh, ow])?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, cout, 1, 1, 1))?),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::vol2col::src;
    use candle_core::{Device, Var};

    /// A direct 7-deep loop over the definition, as the reference for forward values.
    fn naive(x: &[f32], xs: [usize; 5], w: &[f32], ws: [usize; 5], cfg: &Conv3dConfig) -> Vec<f32> {
        let [n, c, t, h, wd] = xs;
        let [co, cg, kt, kh, kw] = ws;
        let g = Geometry3d {
            n,
            c,
            input: [t, h, wd],
            kernel: [kt, kh, kw],
            stride: cfg.stride,
            pad: cfg.padding,
            dilation: cfg.dilation,
        };
        let [ot, oh, ow] = g.out().unwrap();
        let opg = co / cfg.groups;
        let mut y = vec![0f32; n * co * ot * oh * ow];
        for b in 0..n {
            for o in 0..co {
                let grp = o / opg;
                for (zt, zh, zw) in
                    (0..ot).flat_map(|a| (0..oh).flat_map(move |b| (0..ow).map(move |c| (a, b, c))))
                {
                    let mut s = 0f32;
                    for i in 0..cg {
                        let ci = grp * cg + i;
                        for a in 0..kt {
                            for bb in 0..kh {
                                for cc in 0..kw {
                                    let (Some(it), Some(ih), Some(iw)) =
                                        (src(zt, a, 0, &g), src(zh, bb, 1, &g), src(zw, cc, 2, &g))
                                    else {
                                        continue;
                                    };
                                    s += x[(((b * c + ci) * t + it) * h + ih) * wd + iw]
                                        * w[(((o * cg + i) * kt + a) * kh + bb) * kw + cc];
                                }
                            }
                        }
                    }
                    y[(((b * co + o) * ot + zt) * oh + zh) * ow + zw] = s;
                }
            }
        }
        y
    }

    fn cases() -> Vec<(usize, usize, [usize; 3], Conv3dConfig, [usize; 3])> {
        let c = |stride, padding, dilation, groups| Conv3dConfig {
            stride,
            padding,
            dilation,
            groups,
            bias: true,
        };
        vec![
            (3, 4, [3, 3, 3], c([1, 1, 1], [1, 1, 1], [1, 1, 1], 1), [5, 6, 7]),
            (3, 4, [5, 7, 7], c([1, 2, 2], [2, 3, 3], [1, 1, 1], 1), [6, 11, 9]),
            (4, 6, [3, 1, 1], c([2, 1, 1], [1, 0, 0], [1, 1, 1], 2), [7, 5, 4]),
            (4, 4, [1, 1, 1], c([1, 1, 1], [0, 0, 0], [1, 1, 1], 1), [3, 4, 5]),
            (4, 5, [1, 1, 1], c([1, 2, 2], [0, 0, 0], [1, 1, 1], 1), [3, 7, 6]),
            (6, 6, [3, 3, 3], c([1, 2, 2], [1, 1, 1], [1, 1, 1], 6), [4, 9, 8]),
            (4, 4, [3, 3, 3], c([2, 1, 2], [2, 2, 1], [2, 2, 1], 4), [7, 8, 9]),
            (4, 8, [2, 3, 3], c([1, 1, 1], [1, 2, 0], [2, 2, 3], 2), [5, 8, 9]),
            // Depthwise at X3D's late-stage sizes (1 and 2 pixels wide) and odd strides.
            (5, 5, [3, 3, 3], c([1, 1, 1], [1, 1, 1], [1, 1, 1], 5), [4, 1, 1]),
            (3, 3, [3, 3, 3], c([1, 2, 2], [1, 1, 1], [1, 1, 1], 3), [3, 2, 2]),
            (3, 3, [5, 1, 1], c([1, 1, 1], [2, 0, 0], [1, 1, 1], 3), [6, 3, 2]),
            (2, 2, [3, 5, 3], c([3, 2, 3], [0, 2, 1], [1, 1, 2], 2), [7, 9, 10]),
            // Stride 2 across odd widths, padded or not, past the de-interleave's vector width.
            (3, 3, [1, 3, 3], c([1, 2, 2], [0, 1, 1], [1, 1, 1], 3), [2, 5, 37]),
            (2, 2, [1, 5, 5], c([1, 2, 2], [0, 0, 0], [1, 1, 1], 2), [2, 6, 71]),
        ]
    }

    #[test]
    fn forward_matches_the_definition_and_gradients_match_finite_differences() {
        let dev = Device::Cpu;
        for (cin, cout, k, cfg, [t, h, w]) in cases() {
            let label = format!("{cin}→{cout} k{k:?} {cfg:?} in {t}x{h}x{w}");
            let xs = [2, cin, t, h, w];
            let ws = [cout, cin / cfg.groups, k[0], k[1], k[2]];
            let x = Var::from_tensor(&crate::rng::randn(0f32, 1., xs.to_vec(), &dev).unwrap()).unwrap();
            let wt = Var::from_tensor(&crate::rng::randn(0f32, 1., ws.to_vec(), &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&crate::rng::randn(0f32, 1., cout, &dev).unwrap()).unwrap();
            let conv = Conv3d { weight: wt.as_tensor().clone(), bias: Some(b.as_tensor().clone()), cfg };
            let y = conv.forward(x.as_tensor()).unwrap();
            let xv = x.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let wv = wt.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let bv = b.as_tensor().to_vec1::<f32>().unwrap();
            let mut want = naive(&xv, xs, &wv, ws, &cfg);
            let per = want.len() / (2 * cout);
            for (i, v) in want.iter_mut().enumerate() {
                *v += bv[(i / per) % cout];
            }
            let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got.len(), want.len(), "{label}");
            let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-4, "{label}: forward differs by {diff}");

            // sum(y · r) is linear in x, w and b: central differences are exact up to rounding.
            let r = crate::rng::randn(0f32, 1., y.shape(), &dev).unwrap();
            let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for (vi, v) in [&x, &wt, &b].into_iter().enumerate() {
                let g = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let vals = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let idxs: Vec<usize> =
                    (0..vals.len()).step_by((vals.len() / 7).max(1)).chain([vals.len() - 1]).collect();
                for idx in idxs {
                    let f = |delta: f32| -> f64 {
                        let mut m = vals.clone();
                        m[idx] += delta;
                        let tt = Tensor::from_vec(m, v.as_tensor().shape(), &dev).unwrap();
                        let c2 = match vi {
                            0 => {
                                return (conv.forward(&tt).unwrap() * &r)
                                    .unwrap()
                                    .sum_all()
                                    .unwrap()
                                    .to_scalar::<f32>()
                                    .unwrap() as f64
                            }
                            1 => Conv3d { weight: tt, ..conv.clone() },
                            _ => Conv3d { bias: Some(tt), ..conv.clone() },
                        };
                        (c2.forward(x.as_tensor()).unwrap() * &r)
                            .unwrap()
                            .sum_all()
                            .unwrap()
                            .to_scalar::<f32>()
                            .unwrap() as f64
                    };
                    let fd = (f(0.5) - f(-0.5)) / 1.0;
                    assert!(
                        (g[idx] as f64 - fd).abs() < 2e-3 * fd.abs().max(1.0),
                        "{label}: grad of var {vi} [{idx}] {} vs finite difference {fd}",
                        g[idx]
                    );
                }
            }
        }
    }
}
