//! 3D convolution with PyTorch's `nn.Conv3d` semantics (any kernel, stride, padding, dilation,
//! groups, optional bias). Dense and grouped convolutions are lowered to one (batched) matrix
//! product over `vol2col` columns, whose backward is `col2vol` and candle's matmul backward;
//! 1×1×1 convolutions with stride 1 are a plain matmul; depthwise convolutions (groups = C_in =
//! C_out, as X3D and ir-CSN use) run a direct kernel with hand-written backward ops, since as a
//! GEMM they would be C matrix products of one row each.

use super::vol2col::{f32_slice, par_planes, src, unfold3d, valid_cols, Geometry3d};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
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
        let y = if groups == g.c && cout == g.c && groups > 1 {
            x.contiguous()?.apply_op2(&self.weight.contiguous()?, Depthwise3d(g))?
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

/// Runs `f(out_plane, in_plane, taps_of_channel, weight)` style loops of a depthwise 3D window:
/// for every output row (t, y) and tap, the range of output columns whose input is inside.
#[inline]
fn for_each_row<F: FnMut(usize, usize, usize, usize, usize, usize)>(
    g: &Geometry3d,
    out: [usize; 3],
    mut f: F,
) {
    let [kt, kh, kw] = g.kernel;
    let [ot, oh, ow] = out;
    let [_, h, w] = g.input;
    for dw in 0..kw {
        let Some((lo, hi)) = valid_cols(ow, dw, g) else { continue };
        let ix0 = lo * g.stride[2] + dw * g.dilation[2] - g.pad[2];
        for dt in 0..kt {
            for t in 0..ot {
                let Some(it) = src(t, dt, 0, g) else { continue };
                for dh in 0..kh {
                    for y in 0..oh {
                        let Some(iy) = src(y, dh, 1, g) else { continue };
                        // (tap, output row start + lo, input row start + ix0, count)
                        let tap = (dt * kh + dh) * kw + dw;
                        f(tap, (t * oh + y) * ow + lo, (it * h + iy) * w + ix0, hi - lo + 1, 0, 0);
                    }
                }
            }
        }
    }
}

/// Depthwise 3D convolution (groups = C_in = C_out, weight [C, 1, kt, kh, kw]), direct.
struct Depthwise3d(Geometry3d);
/// Its gradient with respect to the input: (grad_out, weight) → grad_in.
struct Depthwise3dBwdData(Geometry3d);
/// Its gradient with respect to the weight: (x, grad_out) → grad_weight.
struct Depthwise3dBwdFilter(Geometry3d);

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
        let g = &self.0;
        let (x, wt) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let out = g.out()?;
        let (p, vol, taps, s) = (out.iter().product::<usize>(), g.in_volume(), g.taps(), g.stride[2]);
        let mut y = vec![0f32; g.n * g.c * p];
        par_planes(&mut y, p, |idx, yp| {
            let c = idx % g.c;
            let xp = &x[idx * vol..][..vol];
            let wc = &wt[c * taps..][..taps];
            for_each_row(g, out, |tap, o0, i0, len, _, _| {
                let wv = wc[tap];
                let yr = &mut yp[o0..o0 + len];
                if s == 1 {
                    for (yo, xi) in yr.iter_mut().zip(&xp[i0..i0 + len]) {
                        *yo += wv * xi;
                    }
                } else {
                    for (j, yo) in yr.iter_mut().enumerate() {
                        *yo += wv * xp[i0 + j * s];
                    }
                }
            });
        });
        Ok((CpuStorage::F32(y), Shape::from(vec![g.n, g.c, out[0], out[1], out[2]])))
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
        let g = &self.0;
        let (gy, wt) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let out = g.out()?;
        let (p, vol, taps, s) = (out.iter().product::<usize>(), g.in_volume(), g.taps(), g.stride[2]);
        let mut gx = vec![0f32; g.n * g.c * vol];
        par_planes(&mut gx, vol, |idx, gxp| {
            let c = idx % g.c;
            let gyp = &gy[idx * p..][..p];
            let wc = &wt[c * taps..][..taps];
            for_each_row(g, out, |tap, o0, i0, len, _, _| {
                let wv = wc[tap];
                for (j, go) in gyp[o0..o0 + len].iter().enumerate() {
                    gxp[i0 + j * s] += wv * go;
                }
            });
        });
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
        let g = &self.0;
        let (x, gy) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let out = g.out()?;
        let (p, vol, taps, s) = (out.iter().product::<usize>(), g.in_volume(), g.taps(), g.stride[2]);
        let mut gw = vec![0f32; g.c * taps];
        // Parallel over channels; each sums over the batch in f64 to keep long sums accurate.
        par_planes(&mut gw, taps, |c, gwc| {
            let mut acc = vec![0f64; taps];
            for n in 0..g.n {
                let idx = n * g.c + c;
                let (xp, gyp) = (&x[idx * vol..][..vol], &gy[idx * p..][..p]);
                for_each_row(g, out, |tap, o0, i0, len, _, _| {
                    let mut sum = 0f32;
                    for (j, go) in gyp[o0..o0 + len].iter().enumerate() {
                        sum += go * xp[i0 + j * s];
                    }
                    acc[tap] += sum as f64;
                });
            }
            for (d, a) in gwc.iter_mut().zip(acc) {
                *d = a as f32;
            }
        });
        let [kt, kh, kw] = g.kernel;
        Ok((CpuStorage::F32(gw), Shape::from(vec![g.c, 1, kt, kh, kw])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        ]
    }

    #[test]
    fn forward_matches_the_definition_and_gradients_match_finite_differences() {
        let dev = Device::Cpu;
        for (cin, cout, k, cfg, [t, h, w]) in cases() {
            let label = format!("{cin}→{cout} k{k:?} {cfg:?} in {t}x{h}x{w}");
            let xs = [2, cin, t, h, w];
            let ws = [cout, cin / cfg.groups, k[0], k[1], k[2]];
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., xs.to_vec(), &dev).unwrap()).unwrap();
            let wt = Var::from_tensor(&Tensor::randn(0f32, 1., ws.to_vec(), &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&Tensor::randn(0f32, 1., cout, &dev).unwrap()).unwrap();
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
            let r = Tensor::randn(0f32, 1., y.shape(), &dev).unwrap();
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
