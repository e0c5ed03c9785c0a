//! BatchNorm2d with PyTorch's semantics (eps 1e-5, momentum 0.1, running variance unbiased),
//! computed in a [C, N·H·W] layout so every reduction — forward and backward, the affine
//! parameters' gradients included — runs over the last, contiguous axis. candle's own BatchNorm
//! applies the affine step in NCHW, whose gradient is a strided reduction over three axes that
//! took most of a training step.

use candle_core::{Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder};

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
        if let Ok((n, c, t, h, w)) = x.dims5() {
            return self.forward_t(&x.reshape((n, c, t * h, w))?, train)?.reshape((n, c, t, h, w));
        }
        let (n, c, h, w) = x.dims4()?;
        if !train {
            let scale = (self.running_var.as_tensor() + self.eps)?.sqrt()?.recip()?.mul(&self.weight)?;
            let shift = (&self.bias - self.running_mean.as_tensor().mul(&scale)?)?;
            return x
                .broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
                .broadcast_add(&shift.reshape((1, c, 1, 1))?);
        }
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
}
