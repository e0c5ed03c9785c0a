//! A dense convolution, the training-mode BatchNorm after it, a residual and a ReLU as one graph
//! node on the CPU. candle's backward starts every node's input gradient as zeros and adds to
//! it, a zeroed buffer and an add over the whole activation per node; with the conv, the BN and
//! the residual add as separate nodes, the conv's and the BN's outputs paid that for nothing, in
//! every layer of a ResNet.

use super::activation::relu_mask;
use super::batchnorm::{lock_stats, train_forward, BatchNorm2d, BatchNormTrainBwd, BatchStats};
use super::conv_gemm::{conv_forward, volume_shape, ConvGemmGradInput, ConvGemmGradWeight};
use super::shift::{FrameShift, ShiftOp};
use super::vol2col::{f32_slice, Geometry3d};
use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor};
use std::sync::{Arc, Mutex};

/// BN(conv(x)) (+ `residual`) (then ReLU) in training for `x` [N, C, T, H, W] (or [N, C, H, W]
/// with `rank` 4), `weight` [C_out, C, kt, kh, kw] (groups 1, no bias) over `g`; `residual` has
/// the output's shape. The batch statistics go to `stats` (the caller updates the running ones).
/// With `input_shift` (frames as the batch of a 4D x), the conv reads x temporally shifted: TSM's
/// shift inside the node, so the shifted copy's gradient is not a zeroed buffer and an add of
/// its own.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_bn_train(
    x: &Tensor,
    weight: &Tensor,
    g: Geometry3d,
    rank: usize,
    bn: &BatchNorm2d,
    residual: Option<&Tensor>,
    relu: bool,
    input_shift: Option<&FrameShift>,
    stats: Arc<Mutex<BatchStats>>,
) -> Result<Tensor> {
    if input_shift.is_some() && (rank != 4 || g.input[0] != 1) {
        candle_core::bail!(
            "conv + batch norm: a temporal shift of the input needs frames as the batch (4D x)"
        )
    }
    let cout = weight.dim(0)?;
    let out = volume_shape(g.n, cout, g.out()?, rank)?;
    let (gamma, beta) = (bn.weight.to_dtype(x.dtype())?, bn.bias.to_dtype(x.dtype())?);
    let op = ConvBnTrain {
        g,
        cout,
        out: out.clone(),
        eps: bn.eps,
        relu,
        residual: residual.is_some(),
        input_shift: input_shift.cloned(),
        stats,
        z: Mutex::new(None),
        shifted: Mutex::new(None),
        bf16: super::autocast::bf16_products(),
    };
    let x = x.contiguous()?;
    match residual {
        None => {
            let w = weight.contiguous()?.reshape((cout, g.c * g.taps()))?;
            x.apply_op3(&w, &Tensor::cat(&[&gamma, &beta], 0)?, op)
        }
        Some(r) => {
            if r.dims() != out.dims() {
                candle_core::bail!(
                    "conv + batch norm: residual {:?} for an output {:?}",
                    r.dims(),
                    out.dims()
                )
            }
            // Four inputs for a three-input op: the weight travels with γ and β (a copy of the
            // weight, small beside the activations).
            let params = Tensor::cat(&[&weight.flatten_all()?, &gamma, &beta], 0)?;
            x.apply_op3(&params, &r.contiguous()?, op)
        }
    }
}

/// (x, w [C_out, C·taps], [γ | β]) → y, or with a residual (x, [w | γ | β], residual) → y,
/// keeping the convolution's output z for the backward.
struct ConvBnTrain {
    g: Geometry3d,
    cout: usize,
    out: Shape,
    eps: f64,
    relu: bool,
    residual: bool,
    /// The conv reads x shifted so (frames = g.n).
    input_shift: Option<FrameShift>,
    stats: Arc<Mutex<BatchStats>>,
    /// z = conv(x), from the forward to the backward (which takes it, freeing it early).
    z: Mutex<Option<Tensor>>,
    /// The shifted x the conv read (with `input_shift`), for the weight gradient.
    shifted: Mutex<Option<Tensor>>,
    /// The forward ran under bf16 autocast: the backward's products do too.
    bf16: bool,
}

fn poisoned<T>(_: T) -> candle_core::Error {
    candle_core::Error::Msg("conv + batch norm state poisoned".into())
}

impl ConvBnTrain {
    fn weight_len(&self) -> usize {
        self.cout * self.g.c * self.g.taps()
    }
}

impl CustomOp3 for ConvBnTrain {
    fn name(&self) -> &'static str {
        "vidkit-conv-bn-train"
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
        let g = self.g;
        let (x, second, third) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let (w, affine, residual) = if self.residual {
            let (w, affine) = second.split_at(self.weight_len().min(second.len()));
            (w, affine, Some(third))
        } else {
            (second, third, None)
        };
        if w.len() != self.weight_len()
            || x.len() != g.n * g.c * g.in_volume()
            || affine.len() != 2 * self.cout
            || residual.is_some_and(|r| r.len() != self.out.elem_count())
        {
            candle_core::bail!(
                "conv + batch norm: {} weights, input {:?}, {} affine values and a residual of {:?} do not fit",
                w.len(),
                l1.dims(),
                affine.len(),
                residual.map(|r| r.len())
            )
        }
        let z = match &self.input_shift {
            None => conv_forward(x, w, self.cout, &g)?,
            Some(shift) => {
                let xs = shift.apply(x, g.n, g.c, g.in_volume())?;
                let z = conv_forward(&xs, w, self.cout, &g)?;
                *self.shifted.lock().map_err(poisoned)? =
                    Some(Tensor::from_vec(xs, l1.shape(), &Device::Cpu)?);
                z
            }
        };
        let dims = [g.n, self.cout, z.len() / (g.n * self.cout).max(1)];
        let (gamma, beta) = affine.split_at(self.cout);
        let (y, stats) = train_forward(&z, dims, gamma, beta, self.eps, residual, self.relu);
        *lock_stats(&self.stats)? = stats;
        *self.z.lock().map_err(poisoned)? = Some(Tensor::from_vec(z, self.out.clone(), &Device::Cpu)?);
        Ok((CpuStorage::F32(y), self.out.clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        second: &Tensor,
        third: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        super::autocast::bf16_if(self.bf16, || self.backward(x, second, third, y, grad))
    }
}

impl ConvBnTrain {
    /// `bwd` in the forward's precision.
    fn backward(
        &self,
        x: &Tensor,
        second: &Tensor,
        third: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(z) = self.z.lock().map_err(poisoned)?.take() else {
            candle_core::bail!("conv + batch norm: backward without (or after another) forward")
        };
        let (n, c, wlen) = (z.elem_count(), self.cout, self.weight_len());
        let (w, gamma) = if self.residual {
            (second.narrow(0, 0, wlen)?.reshape((c, wlen / c))?, second.narrow(0, wlen, c)?)
        } else {
            (second.clone(), third.narrow(0, 0, c)?)
        };
        // With a residual, the ReLU's mask comes from y (the sum decided it) and the masked
        // gradient is also the residual's; without, the BN backward masks from z itself.
        let grad = grad.contiguous()?;
        let g_res = match (self.residual, self.relu) {
            (true, true) => Some(relu_mask(&grad, y)?),
            (true, false) => Some(grad.clone()),
            (false, _) => None,
        };
        let bn = BatchNormTrainBwd {
            dims: [self.g.n, c, n / (self.g.n * c).max(1)],
            relu: self.relu && !self.residual,
            stats: self.stats.clone(),
        };
        let all = z.apply_op3_no_bwd(g_res.as_ref().unwrap_or(&grad), &gamma.contiguous()?, &bn)?;
        drop(z);
        let gz = all.narrow(0, 0, n)?.reshape(self.out.clone())?;
        let g_affine = all.narrow(0, n, 2 * c)?;
        // Only the gradients something upstream needs (the stem's input is the clip itself).
        let mut gx = x.track_op().then(|| w.apply_op2_no_bwd(&gz, &ConvGemmGradInput(self.g))).transpose()?;
        // With a shifted input: the weight gradient over what the conv read, the input gradient
        // shifted back.
        let shifted = self.shifted.lock().map_err(poisoned)?.take();
        let conv_input = match (&self.input_shift, &shifted) {
            (Some(shift), Some(xs)) => {
                gx = gx.map(|g| g.apply_op1_no_bwd(&ShiftOp(shift.reversed()))).transpose()?;
                xs
            }
            (Some(_), None) => candle_core::bail!("conv + batch norm: shifted input missing in the backward"),
            (None, _) => x,
        };
        if !self.residual {
            let gw = w
                .track_op()
                .then(|| conv_input.apply_op2_no_bwd(&gz, &ConvGemmGradWeight(self.g)))
                .transpose()?;
            return Ok((gx, gw, Some(g_affine)));
        }
        let gw = conv_input.apply_op2_no_bwd(&gz, &ConvGemmGradWeight(self.g))?;
        let g_params = Tensor::cat(&[&gw.flatten_all()?, &g_affine], 0)?;
        Ok((gx, Some(g_params), g_res))
    }
}

#[cfg(test)]
mod tests {
    use crate::nn::{add_act, conv_bn_train_act, BatchNorm2d, Conv3d, Conv3dConfig};
    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::{VarBuilder, VarMap};

    /// The one-node conv + BN (+ ReLU, + residual) against the conv op followed by the BN op:
    /// outputs, running statistics, and the gradients of sum(y · r) for x, the conv weight, γ, β.
    #[test]
    fn fused_training_conv_bn_equals_the_two_ops() {
        let dev = Device::Cpu;
        // (C, C_out, kernel, stride, pad, input t×h×w, rank of x, relu, residual)
        let cases = [
            (4, 6, [1, 3, 3], [1, 1, 1], [0, 1, 1], [1, 9, 7], 4, true, false),
            (5, 3, [1, 1, 1], [1, 1, 1], [0, 0, 0], [1, 6, 6], 4, false, false),
            (3, 8, [1, 3, 3], [1, 2, 2], [0, 1, 1], [1, 9, 10], 4, true, true),
            (4, 5, [3, 3, 3], [1, 1, 1], [1, 1, 1], [4, 6, 5], 5, true, false),
            (6, 4, [3, 1, 1], [1, 1, 1], [1, 0, 0], [5, 4, 4], 5, false, true),
            (3, 7, [1, 1, 1], [1, 2, 2], [0, 0, 0], [2, 7, 7], 5, true, true),
        ];
        for (c, cout, kernel, stride, pad, [t, h, w], rank, relu, with_residual) in cases {
            let label = format!(
                "{c}→{cout} k{kernel:?} s{stride:?} rank {rank} relu {relu} residual {with_residual}"
            );
            let build = || {
                let vm = VarMap::new();
                let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
                let cfg = Conv3dConfig { stride, padding: pad, ..Default::default() };
                let conv = Conv3d::new(c, cout, kernel, cfg, vb.pp("conv")).unwrap();
                let bn = BatchNorm2d::new(cout, vb.pp("bn")).unwrap();
                (vm, conv, bn)
            };
            let (vm_a, conv_a, bn_a) = build();
            let (vm_b, conv_b, bn_b) = build();
            crate::nn::randomise_params(&vm_a);
            for (name, var) in vm_a.data().lock().unwrap().iter() {
                vm_b.data().lock().unwrap()[name].set(var.as_tensor()).unwrap();
            }
            let x5 = (crate::rng::randn(0f32, 1., (2, c, t, h, w), &dev).unwrap() + 0.3).unwrap();
            let x = Var::from_tensor(&if rank == 4 { x5.squeeze(2).unwrap() } else { x5 }).unwrap();
            let x5 = if rank == 4 { x.as_tensor().unsqueeze(2).unwrap() } else { x.as_tensor().clone() };
            let g = conv_a.geometry_of(&x5).unwrap();
            let [ot, oh, ow] = g.out().unwrap();
            let out: Vec<usize> = if rank == 4 { vec![2, cout, oh, ow] } else { vec![2, cout, ot, oh, ow] };
            let residual = with_residual
                .then(|| Var::from_tensor(&crate::rng::randn(0f32, 1., out.clone(), &dev).unwrap()).unwrap());
            let residual = residual.as_ref().map(Var::as_tensor);
            // The conv weight in the rank of x, as Conv2d keeps it for 4D inputs.
            let weight_of = |conv: &Conv3d| {
                if rank == 4 {
                    conv.weight.squeeze(2).unwrap()
                } else {
                    conv.weight.clone()
                }
            };
            let y_fused =
                conv_bn_train_act(x.as_tensor(), &weight_of(&conv_a), g, &bn_a, residual, relu).unwrap();
            let z = crate::nn::conv_gemm::conv_gemm(x.as_tensor(), &weight_of(&conv_b), g).unwrap();
            let bn_relu = relu && residual.is_none();
            let y_apart =
                add_act(bn_b.forward_act_t(&z, true, bn_relu).unwrap(), residual, relu && !bn_relu).unwrap();
            assert_eq!(y_fused.dims(), out.as_slice(), "{label}");
            let r = crate::rng::randn(0f32, 1., out.clone(), &dev).unwrap();
            let ga = (&y_fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (&y_apart * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-3);
                let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(d <= 1e-5 * scale, "{label} {what}: differs by {d} (scale {scale})");
            };
            close(&y_fused, &y_apart, "output");
            close(bn_a.running_mean.as_tensor(), bn_b.running_mean.as_tensor(), "running mean");
            close(bn_a.running_var.as_tensor(), bn_b.running_var.as_tensor(), "running var");
            let grad = |gs: &candle_core::backprop::GradStore, v: &Tensor, what: &str| {
                gs.get(v).unwrap_or_else(|| panic!("{label}: no gradient for {what}")).clone()
            };
            close(&grad(&ga, x.as_tensor(), "x"), &grad(&gb, x.as_tensor(), "x"), "grad x");
            if let Some(r) = residual {
                close(&grad(&ga, r, "residual"), &grad(&gb, r, "residual"), "grad residual");
            }
            for (a, b, what) in [
                (&conv_a.weight, &conv_b.weight, "grad conv weight"),
                (&bn_a.weight, &bn_b.weight, "grad γ"),
                (&bn_a.bias, &bn_b.bias, "grad β"),
            ] {
                close(&grad(&ga, a, what), &grad(&gb, b, what), what);
            }
        }
    }
}
