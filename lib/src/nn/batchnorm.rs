//! BatchNorm2d with PyTorch's semantics (eps 1e-5, momentum 0.1, running variance unbiased),
//! computed in a [C, N·H·W] layout so every reduction — forward and backward, the affine
//! parameters' gradients included — runs over the last, contiguous axis. candle's own BatchNorm
//! applies the affine step in NCHW, whose gradient is a strided reduction over three axes that
//! took most of a training step.

use super::simd::{self, par_for, DisjointMut};
use super::vol2col::f32_slice;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, Var, D};
use candle_nn::{Init, VarBuilder};
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Var,
    pub running_var: Var,
    pub eps: f64,
    pub momentum: f64,
}

impl BatchNorm2d {
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(c, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(c, "bias", Init::Const(0.0))?;
        // Fetched as tensors of Vars in the VarMap, so setting them updates what is saved.
        let running_mean = Var::from_tensor(&vb.get_with_hints(c, "running_mean", Init::Const(0.0))?)?;
        let running_var = Var::from_tensor(&vb.get_with_hints(c, "running_var", Init::Const(1.0))?)?;
        Ok(Self { weight, bias, running_mean, running_var, eps: 1e-5, momentum: 0.1 })
    }

    /// [N, C, H, W], or [N, C, T, H, W] as BatchNorm3d (the same statistics per channel).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act_t(x, train, false)
    }

    /// BN then ReLU when `relu`: in training on the CPU one op (the ReLU applied as the output is
    /// written, its mask in the backward), else BN and `nn::relu`.
    pub fn forward_act_t(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        if train && super::fusable(x) && x.rank() >= 3 {
            return self.forward_train_fused(x, relu);
        }
        if let Ok((n, c, t, h, w)) = x.dims5() {
            return self.forward_act_t(&x.reshape((n, c, t * h, w))?, train, relu)?.reshape((n, c, t, h, w));
        }
        let y = self.forward_2d(x, train)?;
        if relu {
            super::relu(&y)
        } else {
            Ok(y)
        }
    }

    fn forward_2d(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = x.dim(1)?;
        if !train {
            // Statistics detached: a variable here would make the output record its input.
            let (mean, var) = (self.running_mean.as_tensor().detach(), self.running_var.as_tensor().detach());
            let scale = (var + self.eps)?.sqrt()?.recip()?.mul(&self.weight)?;
            let shift = (&self.bias - mean.mul(&scale)?)?;
            return x
                .broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
                .broadcast_add(&shift.reshape((1, c, 1, 1))?);
        }
        self.forward_train_ops(x)
    }

    /// Training mode with candle's differentiable ops (any device).
    fn forward_train_ops(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let xt = x.transpose(0, 1)?.reshape((c, n * h * w))?.contiguous()?;
        let mean = xt.mean_keepdim(D::Minus1)?;
        let xc = xt.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (&var + self.eps)?.sqrt()?.recip()?;
        let y = xc
            .broadcast_mul(&inv.broadcast_mul(&self.weight.reshape((c, 1))?)?)?
            .broadcast_add(&self.bias.reshape((c, 1))?)?;
        // Running statistics: unbiased variance, as torch.
        let count = (n * h * w) as f64;
        let m = self.momentum;
        let new_mean = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean.flatten_all()?.detach() * m)?)?;
        let unbiased = (var.flatten_all()?.detach() * (count / (count - 1.0).max(1.0)))?;
        let new_var = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        y.reshape((c, n, h, w))?.transpose(0, 1)?.contiguous()
    }

    /// Training mode on the CPU: one custom op (forward and backward by hand) over the
    /// [N, C, …] layout as it is, then the running statistics from the batch's. The op keeps x's
    /// shape: a reshape around it would be a graph node whose gradient candle accumulates as
    /// zeros + grad over the whole activation.
    fn forward_train_fused(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let (n, c) = (x.dim(0)?, x.dim(1)?);
        let s = x.elem_count() / (n * c).max(1);
        let stats = Arc::new(Mutex::new(BatchStats::default()));
        let op = BatchNormTrain {
            dims: [n, c, s],
            shape: x.shape().clone(),
            eps: self.eps,
            relu,
            stats: stats.clone(),
        };
        let y = x.contiguous()?.apply_op3(
            &self.weight.to_dtype(x.dtype())?.contiguous()?,
            &self.bias.to_dtype(x.dtype())?.contiguous()?,
            op,
        )?;
        self.update_running(&*lock_stats(&stats)?, x.device())?;
        Ok(y)
    }

    /// Training mode on the CPU with the convolution before it in the same op (see
    /// `conv_bn_train.rs`), for a dense convolution of geometry `g` whose output has `rank` 4
    /// (2D) or 5 dimensions, then + `residual` (the output's shape), then ReLU.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_after_conv(
        &self,
        x: &Tensor,
        weight: &Tensor,
        g: super::Geometry3d,
        rank: usize,
        residual: Option<&Tensor>,
        relu: bool,
        input_shift: Option<&super::shift::FrameShift>,
    ) -> Result<Tensor> {
        let stats = Arc::new(Mutex::new(BatchStats::default()));
        let y = super::conv_bn_train::conv_bn_train(
            x,
            weight,
            g,
            rank,
            self,
            residual,
            relu,
            input_shift,
            stats.clone(),
        )?;
        self.update_running(&*lock_stats(&stats)?, x.device())?;
        Ok(y)
    }

    /// running ← (1 − momentum) · running + momentum · batch (unbiased variance, as torch).
    fn update_running(&self, stats: &BatchStats, dev: &candle_core::Device) -> Result<()> {
        let c = stats.mean.len();
        let m = self.momentum;
        let new_mean = ((self.running_mean.as_tensor() * (1.0 - m))?
            + (Tensor::from_vec(stats.mean.clone(), c, dev)?.to_dtype(self.running_mean.dtype())? * m)?)?;
        let new_var = ((self.running_var.as_tensor() * (1.0 - m))?
            + (Tensor::from_vec(stats.var_unbiased.clone(), c, dev)?
                .to_dtype(self.running_var.dtype())?
                * m)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)
    }
}

/// Batch statistics the training forward computes and its backward reuses, per channel.
#[derive(Default)]
pub(super) struct BatchStats {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    /// Unbiased variance, for the running estimate (as torch).
    var_unbiased: Vec<f32>,
    /// b of y = x·a + b (a = γ·inv_std), so the backward can tell where the ReLU cut.
    shift: Vec<f32>,
}

/// The statistics a training forward left for its backward and the running-estimate update.
pub(super) fn lock_stats(stats: &Mutex<BatchStats>) -> Result<std::sync::MutexGuard<'_, BatchStats>> {
    stats.lock().map_err(|_| candle_core::Error::Msg("batch norm statistics poisoned".into()))
}

/// Training-mode batch norm over contiguous [N, C, S] as one op: (x, γ, β) → y, two passes over
/// each channel forward and two backward, in place of a dozen element-wise candle ops and the
/// transposes they need. The statistics go back to the caller (and to the backward) through
/// `stats`.
struct BatchNormTrain {
    dims: [usize; 3],
    /// x's own shape, [N, C, …], which y keeps.
    shape: Shape,
    eps: f64,
    /// max(0, ·) on the output (and the gradient masked where it is 0).
    relu: bool,
    stats: Arc<Mutex<BatchStats>>,
}

/// Its backward: (x, grad_y, γ) → [grad_x (N·C·S) | grad_γ (C) | grad_β (C)], flat.
pub(super) struct BatchNormTrainBwd {
    pub(super) dims: [usize; 3],
    /// The forward applied a ReLU: grad_y is first masked where its output was 0.
    pub(super) relu: bool,
    pub(super) stats: Arc<Mutex<BatchStats>>,
}

/// One channel's statistics over its N rows of S values: (mean, biased var, unbiased var).
#[inline(always)]
fn channel_stats(x: &[f32], [n, c, s]: [usize; 3], ch: usize) -> (f32, f64, f64) {
    // Plain loops: an iterator's `sum` over the rows stayed an out-of-line function, compiled
    // without the caller's AVX-512.
    let count = (n * s) as f64;
    let mut total = 0f64;
    for i in 0..n {
        total += simd::sum(&x[(i * c + ch) * s..][..s]);
    }
    let mean = (total / count) as f32;
    let mut sq = 0f64;
    for i in 0..n {
        sq += simd::centered_sq_sum(&x[(i * c + ch) * s..][..s], mean);
    }
    (mean, sq / count, sq / (count - 1.0).max(1.0))
}

/// y = x·a + b (+ r) (then max(0, ·) with `relu`) over one channel's rows; r, when given, laid
/// out as x.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn channel_affine(
    x: &[f32],
    r: Option<&[f32]>,
    y: DisjointMut,
    [n, c, s]: [usize; 3],
    ch: usize,
    a: f32,
    b: f32,
    relu: bool,
) {
    for i in 0..n {
        let at = (i * c + ch) * s;
        if let Some(r) = r {
            // SAFETY: as below.
            let yr = unsafe { std::slice::from_raw_parts_mut(y.at(at) as *mut MaybeUninit<f32>, s) };
            for ((o, v), r) in yr.iter_mut().zip(&x[at..at + s]).zip(&r[at..at + s]) {
                let v = v * a + b + r;
                o.write(if relu { v.max(0.0) } else { v });
            }
            continue;
        }
        // SAFETY: channel `ch`'s rows are written by this call only (callers split by channel);
        // they may be uninitialised, hence `MaybeUninit`.
        let yr = unsafe { std::slice::from_raw_parts_mut(y.at(at) as *mut MaybeUninit<f32>, s) };
        let rows = yr.iter_mut().zip(&x[at..at + s]);
        if relu {
            rows.for_each(|(o, v)| {
                o.write((v * a + b).max(0.0));
            });
        } else {
            rows.for_each(|(o, v)| {
                o.write(v * a + b);
            });
        }
    }
}

/// One channel's backward: returns (Σ g·x̂, Σ g) and writes grad_x. With `relu_shift` (b of the
/// forward's y = x·a + b) the forward's ReLU is undone first: g is zeroed where x·a + b ≤ 0, the
/// same f32 expression the forward clamped.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn channel_backward(
    x: &[f32],
    gy: &[f32],
    gx: DisjointMut,
    [n, c, s]: [usize; 3],
    ch: usize,
    mean: f32,
    inv_std: f32,
    gamma: f32,
    relu_shift: Option<f32>,
) -> (f64, f64) {
    let a = gamma * inv_std;
    match relu_shift {
        Some(b) => channel_backward_masked(x, gy, gx, [n, c, s], ch, mean, inv_std, a, |g, v| {
            if v * a + b > 0.0 {
                g
            } else {
                0.0
            }
        }),
        None => channel_backward_masked(x, gy, gx, [n, c, s], ch, mean, inv_std, a, |g, _| g),
    }
}

/// `channel_backward` with g = `mask(grad_y, x)` computed where it is read, in both passes (a
/// masked copy of grad_y cost a third pass).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn channel_backward_masked(
    x: &[f32],
    gy: &[f32],
    gx: DisjointMut,
    [n, c, s]: [usize; 3],
    ch: usize,
    mean: f32,
    inv_std: f32,
    a: f32,
    mask: impl Fn(f32, f32) -> f32,
) -> (f64, f64) {
    let rows = |i: usize| (i * c + ch) * s;
    let (mut sum_g, mut sum_gxc) = (0f64, 0f64);
    for i in 0..n {
        let at = rows(i);
        let (row_g, row_gxc) = masked_sums(&gy[at..at + s], &x[at..at + s], mean, &mask);
        sum_g += row_g;
        sum_gxc += row_gxc;
    }
    let count = (n * s) as f64;
    let sum_gxhat = sum_gxc * inv_std as f64;
    // grad_x = γ/σ · (g − mean(g) − x̂ · mean(g·x̂)), x̂ = (x − μ)/σ
    let k0 = -(a as f64 * sum_g / count) as f32;
    let k1 = -(a as f64 * inv_std as f64 * sum_gxhat / count) as f32;
    for i in 0..n {
        let at = rows(i);
        // SAFETY: channel `ch`'s rows of grad_x are written by this call only (callers split by
        // channel); uninitialised until written here.
        let out = unsafe { std::slice::from_raw_parts_mut(gx.at(at) as *mut MaybeUninit<f32>, s) };
        for ((o, g), v) in out.iter_mut().zip(&gy[at..at + s]).zip(&x[at..at + s]) {
            o.write(a * mask(*g, *v) + k1 * (v - mean) + k0);
        }
    }
    (sum_gxhat, sum_g)
}

/// (Σ g, Σ g·(x − mean)) with g = `mask(grad, x)`, both in 16 lanes as `simd::sum` (a
/// reordering the compiler would not do on its own), returned in f64.
#[inline(always)]
fn masked_sums(grad: &[f32], x: &[f32], mean: f32, mask: &impl Fn(f32, f32) -> f32) -> (f64, f64) {
    let (mut lanes_g, mut lanes_gx) = ([0f32; 16], [0f32; 16]);
    let (gc, xc) = (grad.chunks_exact(16), x.chunks_exact(16));
    let (mut tail_g, mut tail_gx) = (0f32, 0f32);
    for (g, v) in gc.remainder().iter().zip(xc.remainder()) {
        let m = mask(*g, *v);
        tail_g += m;
        tail_gx += m * (v - mean);
    }
    for (g, v) in gc.zip(xc) {
        for k in 0..16 {
            let m = mask(g[k], v[k]);
            lanes_g[k] += m;
            lanes_gx[k] += m * (v[k] - mean);
        }
    }
    let total = |lanes: [f32; 16]| lanes.iter().map(|&v| v as f64).sum::<f64>();
    (total(lanes_g) + tail_g as f64, total(lanes_gx) + tail_gx as f64)
}

simd::dispatch_simd!(channel_stats_simd, channel_stats, (x: &[f32], dims: [usize; 3], ch: usize) -> (f32, f64, f64));
simd::dispatch_simd!(channel_affine_simd, channel_affine, (x: &[f32], r: Option<&[f32]>, y: DisjointMut, dims: [usize; 3], ch: usize, a: f32, b: f32, relu: bool));
simd::dispatch_simd!(channel_backward_simd, channel_backward, (x: &[f32], gy: &[f32], gx: DisjointMut, dims: [usize; 3], ch: usize, mean: f32, inv_std: f32, gamma: f32, relu_shift: Option<f32>) -> (f64, f64));

/// Training BN (+ `residual`, laid out as x) (then ReLU) of contiguous [N, C, S] `x`: y and the
/// batch's statistics.
pub(super) fn train_forward(
    x: &[f32],
    dims: [usize; 3],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    residual: Option<&[f32]>,
    relu: bool,
) -> (Vec<f32>, BatchStats) {
    let c = dims[1];
    // Not zeroed: every channel's rows are written below.
    let mut y = Vec::with_capacity(x.len());
    let mut stats = vec![(0f32, 0f64, 0f64, 0f32); c];
    let (yp, sp) = (DisjointMut(y.as_mut_ptr()), stats.as_mut_ptr() as usize);
    par_for(c, |ch| {
        let (mean, var, unbiased) = channel_stats_simd(x, dims, ch);
        let inv = 1.0 / ((var + eps) as f32).sqrt();
        let a = gamma[ch] * inv;
        let b = beta[ch] - mean * a;
        channel_affine_simd(x, residual, yp, dims, ch, a, b, relu);
        // SAFETY: entry `ch` is written by this iteration only.
        unsafe { *(sp as *mut (f32, f64, f64, f32)).add(ch) = (mean, inv as f64, unbiased, b) };
    });
    // SAFETY: `channel_affine` wrote all rows of all channels, which tile x's length.
    unsafe { y.set_len(x.len()) };
    let out = BatchStats {
        mean: stats.iter().map(|t| t.0).collect(),
        inv_std: stats.iter().map(|t| t.1 as f32).collect(),
        var_unbiased: stats.iter().map(|t| t.2 as f32).collect(),
        shift: stats.iter().map(|t| t.3).collect(),
    };
    (y, out)
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "vidkit-batch-norm-train"
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
        let [n, c, s] = self.dims;
        let (x, gamma, beta) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        if x.len() != n * c * s || gamma.len() != c || beta.len() != c {
            candle_core::bail!(
                "batch norm: input {} values, {} / {} affine for {:?}",
                x.len(),
                gamma.len(),
                beta.len(),
                self.dims
            )
        }
        let (y, stats) = train_forward(x, self.dims, gamma, beta, self.eps, None, self.relu);
        *lock_stats(&self.stats)? = stats;
        Ok((CpuStorage::F32(y), self.shape.clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        // Not needed for the ReLU's mask: that is recomputed from x (see `channel_backward`).
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [n, c, s] = self.dims;
        let op = BatchNormTrainBwd { dims: self.dims, relu: self.relu, stats: self.stats.clone() };
        let all = x.apply_op3_no_bwd(&grad.contiguous()?, &gamma.contiguous()?, &op)?;
        let gx = all.narrow(0, 0, n * c * s)?.reshape(x.shape())?;
        let gg = all.narrow(0, n * c * s, c)?;
        let gb = all.narrow(0, n * c * s + c, c)?;
        Ok((Some(gx), Some(gg), Some(gb)))
    }
}

impl CustomOp3 for BatchNormTrainBwd {
    fn name(&self) -> &'static str {
        "vidkit-batch-norm-train-bwd"
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
        let [n, c, s] = self.dims;
        let (x, gy, gamma) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let stats = lock_stats(&self.stats)?;
        if x.len() != n * c * s
            || gy.len() != x.len()
            || gamma.len() != c
            || stats.mean.len() != c
            || (self.relu && stats.shift.len() != c)
        {
            candle_core::bail!("batch norm backward: sizes do not fit {:?}", self.dims)
        }
        // Not zeroed: every channel's rows and affine entries are written below.
        let mut out = Vec::with_capacity(n * c * s + 2 * c);
        let p = DisjointMut(out.as_mut_ptr());
        par_for(c, |ch| {
            let relu_shift = self.relu.then(|| stats.shift[ch]);
            let (sum_gxhat, sum_g) = channel_backward_simd(
                x,
                gy,
                p,
                self.dims,
                ch,
                stats.mean[ch],
                stats.inv_std[ch],
                gamma[ch],
                relu_shift,
            );
            // SAFETY: the two affine-gradient entries of `ch` are written by this iteration only.
            unsafe {
                p.at(n * c * s + ch).write(sum_gxhat as f32);
                p.at(n * c * s + c + ch).write(sum_g as f32);
            }
        });
        // SAFETY: all N·C·S gradient values and 2·C affine entries were written above.
        unsafe { out.set_len(n * c * s + 2 * c) };
        Ok((CpuStorage::F32(out), Shape::from(n * c * s + 2 * c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// The fused training op against the same computation in candle ops: output, running
    /// statistics and the gradients of sum(y · r) with respect to x, γ and β.
    #[test]
    fn fused_training_equals_candle_ops() {
        let dev = Device::Cpu;
        let cases = [((4, 3, 5, 7), 0f64, false), ((2, 5, 1, 33), 50.0, false), ((3, 2, 4, 4), -3.0, false)];
        // And with the ReLU fused in (against candle's BN ops followed by candle's ReLU).
        let relu_cases = [((4, 3, 5, 7), 0f64, true), ((2, 5, 1, 33), 50.0, true)];
        for (shape, offset, relu) in cases.into_iter().chain(relu_cases) {
            let run = || {
                let vm = VarMap::new();
                let bn = BatchNorm2d::new(shape.1, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
                crate::nn::randomise_params(&vm);
                let x = Var::from_tensor(
                    &(crate::rng::randn(0f32, 2., shape, &Device::Cpu).unwrap() + offset).unwrap(),
                )
                .unwrap();
                (vm, bn, x)
            };
            let (vm_a, bn_a, x) = run();
            let (vm_b, bn_b, _) = run();
            // Same parameters on both sides.
            for (name, var) in vm_a.data().lock().unwrap().iter() {
                vm_b.data().lock().unwrap()[name].set(var.as_tensor()).unwrap();
            }
            let x_b = Var::from_tensor(x.as_tensor()).unwrap();
            let y_a = bn_a.forward_train_ops(x.as_tensor()).unwrap();
            let y_a = if relu { y_a.relu().unwrap() } else { y_a };
            let y_b = bn_b.forward_train_fused(x_b.as_tensor(), relu).unwrap();
            let r = crate::rng::randn(0f32, 1., shape, &dev).unwrap();
            let ga = (&y_a * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (&y_b * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let scale = a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
                let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(d < 1e-4 * scale, "{shape:?} relu {relu} {what}: differs by {d} (scale {scale})");
            };
            close(&y_a, &y_b, "output");
            close(bn_a.running_mean.as_tensor(), bn_b.running_mean.as_tensor(), "running mean");
            close(bn_a.running_var.as_tensor(), bn_b.running_var.as_tensor(), "running var");
            close(ga.get(x.as_tensor()).unwrap(), gb.get(x_b.as_tensor()).unwrap(), "grad x");
            close(ga.get(&bn_a.weight).unwrap(), gb.get(&bn_b.weight).unwrap(), "grad weight");
            close(ga.get(&bn_a.bias).unwrap(), gb.get(&bn_b.bias).unwrap(), "grad bias");
        }
    }
}
