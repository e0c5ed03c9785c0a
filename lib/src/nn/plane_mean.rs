//! The mean of each (sample, channel) plane of x [N, C, ...]: global average pooling, as the
//! squeeze-excitation gates of X3D and PP-LCNetV2 and the heads use it. In eval mode one parallel
//! pass (candle's reductions run on one thread); candle's mean in training.

use super::simd::{self, dispatch_simd, par_for, DisjointMut};
use super::vol2col::f32_slice;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// x [N, C, d…] → [N, C]: the mean over all trailing dimensions.
///
/// `train`: candle's mean. X3D's train-mode gradients (the gradient-parity test of x3d_xs) moved
/// 3e-3 off torch's float64 ones with this op's more exact sum, as with the fused swish's
/// last-bit differences (see gated_swish.rs). Chosen by the mode, not by whether the input tracks
/// a gradient: model weights are variables, so in eval mode it always does.
pub fn plane_mean(x: &Tensor, train: bool) -> Result<Tensor> {
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    let x = x.reshape((n, c, ()))?;
    if !super::fusable(&x) || train {
        return x.mean(2);
    }
    x.contiguous()?.apply_op1(PlaneMean)
}

/// [N, C, P] → [N, C].
struct PlaneMean;

dispatch_simd!(plane_sum, plane_sum_body, (x: &[f32]) -> f64);

#[inline(always)]
fn plane_sum_body(x: &[f32]) -> f64 {
    simd::sum(x)
}

impl CustomOp1 for PlaneMean {
    fn name(&self) -> &'static str {
        "vidkit-plane-mean"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        super::fused::kernel_allowed(self.name())?;
        let x = f32_slice(s, l)?;
        let (n, c, p) = l.shape().dims3()?;
        let mut out = vec![0f32; n * c];
        let dst = DisjointMut(out.as_mut_ptr());
        par_for(n * c, |i| {
            let mean = plane_sum(&x[i * p..][..p]) / p.max(1) as f64;
            // SAFETY: entry i is written by this iteration only.
            unsafe { *dst.at(i) = mean as f32 };
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c))))
    }

    /// Each input gets its plane's gradient / P.
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let p = x.dim(2)?;
        Ok(Some((grad.unsqueeze(2)?.broadcast_as(x.shape())? / p.max(1) as f64)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn equals_candle_mean_and_keeps_its_gradient() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&crate::rng::randn(0f32, 1., (2, 3, 4, 5, 7), &dev).unwrap()).unwrap();
        let want = x.as_tensor().reshape((2, 3, 140)).unwrap().mean(2).unwrap();
        for train in [false, true] {
            let ours = plane_mean(x.as_tensor(), train).unwrap();
            let d = (&ours - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(d < 1e-6, "{d}");
            let g = ours.sum_all().unwrap().backward().unwrap();
            let gx = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(gx.iter().all(|&v| (v - 1.0 / 140.0).abs() < 1e-7), "train {train}");
        }
    }
}
