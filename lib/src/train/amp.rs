//! Mixed-precision training (`-o amp=bf16|f16`, as PaddleVideo's `--amp` and MMAction2's
//! `AmpOptimWrapper`): parameters, gradients and optimiser state stay f32; the forward's
//! products and their backward run in half precision (`nn::with_autocast`). f16's narrow range
//! needs the loss scaled so small gradients do not flush to zero: `LossScaler` is
//! `torch.cuda.amp.GradScaler` (torch/amp/grad_scaler.py) with its defaults. bf16 has f32's
//! range and trains unscaled, as torch does.

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

/// The half-precision type of the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Amp {
    Bf16,
    F16,
}

impl Amp {
    pub fn dtype(self) -> DType {
        match self {
            Amp::Bf16 => DType::BF16,
            Amp::F16 => DType::F16,
        }
    }

    /// The loss scaler this precision needs: f16 only.
    pub fn scaler(self) -> Option<LossScaler> {
        (self == Amp::F16).then(LossScaler::default)
    }
}

/// Dynamic loss scaling: the loss is multiplied by `scale` before the backward and the
/// gradients divided by it after; a step whose gradients hold an inf or NaN is skipped and the
/// scale halved, and every `GROWTH_INTERVAL` steps in a row without one double it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    /// Finite steps since the scale last changed (torch's `_growth_tracker`).
    pub good_steps: u64,
}

impl Default for LossScaler {
    /// torch's `init_scale=2.**16`.
    fn default() -> Self {
        Self { scale: 65536.0, good_steps: 0 }
    }
}

impl LossScaler {
    /// torch's `growth_interval`; its growth and backoff factors are 2 and 0.5.
    pub const GROWTH_INTERVAL: u64 = 2000;

    /// The loss to differentiate.
    pub fn scale(&self, loss: &Tensor) -> Result<Tensor> {
        Ok((loss * self.scale)?)
    }

    /// Divides the gradients of `vars` in `grads` by the scale; whether all of them are finite.
    pub fn unscale(&self, grads: &mut GradStore, vars: &[(String, Var)]) -> Result<bool> {
        let mut finite = true;
        for (_, var) in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let g = (g.detach() * (1.0 / self.scale))?;
                // An inf or NaN anywhere makes the sum inf or NaN.
                finite &= g.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?.is_finite();
                grads.insert(var.as_tensor(), g);
            }
        }
        Ok(finite)
    }

    /// After an optimiser step (`found_inf`: it was skipped), torch's `update()`.
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= 0.5;
            self.good_steps = 0;
        } else {
            self.good_steps += 1;
            if self.good_steps == Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// torch's schedule: halve and restart the count on an inf, double after 2000 finite steps.
    #[test]
    fn the_scale_backs_off_on_inf_and_grows_after_the_interval() {
        let mut s = LossScaler::default();
        s.update(true);
        assert_eq!((s.scale, s.good_steps), (32768.0, 0));
        for _ in 0..LossScaler::GROWTH_INTERVAL - 1 {
            s.update(false);
        }
        assert_eq!((s.scale, s.good_steps), (32768.0, 1999));
        s.update(false);
        assert_eq!((s.scale, s.good_steps), (65536.0, 0));
        s.update(false);
        s.update(true);
        assert_eq!((s.scale, s.good_steps), (32768.0, 0));
        assert_eq!(Amp::Bf16.scaler(), None);
    }

    /// Unscaling divides the parameters' gradients and reports an inf or NaN in any of them.
    #[test]
    fn unscaling_divides_and_finds_non_finite_gradients() {
        let dev = Device::Cpu;
        let a = Var::new(&[1f32, 2.0], &dev).unwrap();
        let b = Var::new(&[3f32], &dev).unwrap();
        let vars = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let s = LossScaler { scale: 4.0, good_steps: 0 };
        let loss = s.scale(&(a.as_tensor().sum_all().unwrap() * 3.0).unwrap()).unwrap();
        let loss = (loss + b.as_tensor().sqr().unwrap().sum_all().unwrap()).unwrap();
        let mut g = loss.backward().unwrap();
        assert!(s.unscale(&mut g, &vars).unwrap());
        assert_eq!(g.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), [3.0, 3.0]);
        assert_eq!(g.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), [1.5]);
        for bad in [f32::INFINITY, f32::NAN] {
            g.insert(b.as_tensor(), Tensor::new(&[bad], &dev).unwrap());
            assert!(!s.unscale(&mut g, &vars).unwrap(), "{bad}");
        }
    }
}
