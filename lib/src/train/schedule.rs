//! Learning-rate schedules as pure functions of (epoch, iteration in the epoch, iterations per
//! epoch), so a resumed run computes the same rate from its position alone.
//!
//! A schedule is a decay rule (constant, step, multi-step, piecewise, cosine) starting from
//! `base_lr`, optionally preceded by a linear warmup. Two warmups exist in the references:
//! - `to_schedule` (PaddleVideo `CustomWarmupCosineDecay` / `CustomWarmupPiecewiseDecay`,
//!   PySlowFast): from `warmup_start_lr` linearly to the decay's own value at `warmup_epochs`;
//!   the decay's clock is not shifted.
//! - `factor` (mmaction2/mmengine `LinearLR` chained with another scheduler, torch `LinearLR`,
//!   Paddle `LinearWarmup`): the decay's rate times a factor rising linearly from
//!   `warmup_start_lr / base_lr` to 1. mmaction2's usual `LinearLR(end=5)` +
//!   `CosineAnnealingLR(begin=5, T_max=epochs-5)` is `decay_begin: 5` with cosine `epochs` = T_max.
//!
//! With `per_iter` the clock is the fractional epoch `epoch + iter / iters_per_epoch`
//! (PaddleVideo `iter_step: True`, mmengine `convert_to_iter_based=True`); without, the rate
//! changes only at epoch boundaries (torch schedulers stepped once per epoch).
//!
//! JSON: `{"name": "cosine", "base_lr": 0.01, "epochs": 50, "eta_min": 0, "warmup_epochs": 5,
//! "warmup_start_lr": 0.001, "per_iter": true}`.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

fn default_gamma() -> f64 {
    0.1
}

/// The decay rule, chosen by `name`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Decay {
    /// `base_lr` throughout.
    Constant,
    /// torch `StepLR`: `base_lr · gamma^⌊t / step_size⌋`.
    Step {
        step_size: usize,
        #[serde(default = "default_gamma")]
        gamma: f64,
    },
    /// torch/mmaction2 `MultiStepLR`: `base_lr · gamma^(number of milestones ≤ t)`.
    #[serde(alias = "multistep")]
    MultiStep {
        milestones: Vec<usize>,
        #[serde(default = "default_gamma")]
        gamma: f64,
    },
    /// PaddleVideo `PiecewiseDecay`: `values[k]` where k = number of boundaries ≤ t; absolute
    /// rates (`base_lr` is not used); `values` has one more entry than `boundaries`.
    Piecewise { boundaries: Vec<usize>, values: Vec<f64> },
    /// torch `CosineAnnealingLR` / PaddleVideo `CosineAnnealingDecay` closed form:
    /// `eta_min + (base_lr − eta_min)·(1 + cos(π·t/epochs))/2`, held at `eta_min` after `epochs`.
    Cosine {
        epochs: f64,
        #[serde(default)]
        eta_min: f64,
    },
}

/// How a warmup joins the decay; see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmupMode {
    #[default]
    ToSchedule,
    Factor,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub base_lr: f64,
    #[serde(flatten)]
    pub decay: Decay,
    /// Change the rate every iteration (fractional epochs), not only at epoch boundaries.
    #[serde(default)]
    pub per_iter: bool,
    /// Linear warmup length in epochs (0: none; fractions allowed).
    #[serde(default)]
    pub warmup_epochs: f64,
    #[serde(default)]
    pub warmup_start_lr: f64,
    #[serde(default)]
    pub warmup_mode: WarmupMode,
    /// Epoch at which the decay's clock starts (mmengine's `begin`); before it the decay gives
    /// its value at 0.
    #[serde(default)]
    pub decay_begin: f64,
}

impl LrSchedule {
    /// `base_lr` throughout.
    pub fn constant(base_lr: f64) -> Self {
        Self::new(base_lr, Decay::Constant)
    }

    /// A decay with no warmup, changing at epoch boundaries.
    pub fn new(base_lr: f64, decay: Decay) -> Self {
        Self {
            base_lr,
            decay,
            per_iter: false,
            warmup_epochs: 0.0,
            warmup_start_lr: 0.0,
            warmup_mode: WarmupMode::ToSchedule,
            decay_begin: 0.0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.base_lr.is_finite() && self.base_lr >= 0.0) {
            bail!("base_lr must be a non-negative number");
        }
        if self.warmup_epochs < 0.0 || self.decay_begin < 0.0 {
            bail!("warmup_epochs and decay_begin must not be negative");
        }
        match &self.decay {
            Decay::Step { step_size: 0, .. } => bail!("step: step_size must be positive"),
            Decay::MultiStep { milestones, .. } if milestones.windows(2).any(|w| w[0] > w[1]) => {
                bail!("multi_step: milestones must be increasing")
            }
            Decay::Piecewise { boundaries, values } if values.len() != boundaries.len() + 1 => {
                bail!(
                    "piecewise: {} boundaries need {} values, not {}",
                    boundaries.len(),
                    boundaries.len() + 1,
                    values.len()
                )
            }
            Decay::Cosine { epochs, .. } if *epochs <= 0.0 => bail!("cosine: epochs must be positive"),
            _ => {}
        }
        Ok(())
    }

    /// The schedule's clock in (fractional) epochs.
    pub fn position(&self, epoch: usize, iter: usize, iters_per_epoch: usize) -> f64 {
        if self.per_iter && iters_per_epoch > 0 {
            epoch as f64 + iter as f64 / iters_per_epoch as f64
        } else {
            epoch as f64
        }
    }

    /// The rate for iteration `iter` (0-based) of epoch `epoch` (0-based).
    pub fn lr(&self, epoch: usize, iter: usize, iters_per_epoch: usize) -> f64 {
        self.lr_at(self.position(epoch, iter, iters_per_epoch))
    }

    /// The rate at fractional epoch `t`.
    pub fn lr_at(&self, t: f64) -> f64 {
        let w = self.warmup_epochs;
        if w > 0.0 && t < w {
            let frac = t / w;
            match self.warmup_mode {
                WarmupMode::ToSchedule => {
                    let end = self.decayed(w);
                    self.warmup_start_lr + (end - self.warmup_start_lr) * frac
                }
                WarmupMode::Factor => {
                    if self.base_lr == 0.0 {
                        return 0.0;
                    }
                    let start = self.warmup_start_lr / self.base_lr;
                    self.decayed(t) * (start + (1.0 - start) * frac)
                }
            }
        } else {
            self.decayed(t)
        }
    }

    fn decayed(&self, t: f64) -> f64 {
        let t = (t - self.decay_begin).max(0.0);
        let base = self.base_lr;
        match &self.decay {
            Decay::Constant => base,
            Decay::Step { step_size, gamma } => base * gamma.powi((t / *step_size as f64).floor() as i32),
            Decay::MultiStep { milestones, gamma } => {
                base * gamma.powi(milestones.iter().filter(|&&m| m as f64 <= t).count() as i32)
            }
            Decay::Piecewise { boundaries, values } => {
                let k = boundaries.iter().filter(|&&b| b as f64 <= t).count();
                values[k.min(values.len().saturating_sub(1))]
            }
            Decay::Cosine { epochs, eta_min } => {
                let t = t.min(*epochs);
                eta_min + (base - eta_min) * (1.0 + (PI * t / epochs).cos()) / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1e-3), "{a} != {b}");
    }

    #[test]
    fn multi_step_as_torch_multisteplr() {
        let s = LrSchedule::new(0.1, Decay::MultiStep { milestones: vec![2, 4], gamma: 0.1 });
        // MultiStepLR(milestones=[2, 4], gamma=.1) stepped per epoch: .1 .1 .01 .01 .001 .001
        let want = [0.1, 0.1, 0.01, 0.01, 0.001, 0.001];
        for (e, w) in want.iter().enumerate() {
            close(s.lr(e, 3, 10), *w);
        }
        let st = LrSchedule::new(0.1, Decay::Step { step_size: 3, gamma: 0.5 });
        // StepLR(step_size=3, gamma=.5): epochs 0-2 .1, 3-5 .05, 6 .025
        close(st.lr(2, 0, 1), 0.1);
        close(st.lr(3, 0, 1), 0.05);
        close(st.lr(6, 0, 1), 0.025);
    }

    #[test]
    fn piecewise_as_paddle_piecewisedecay() {
        let s = LrSchedule::new(
            0.0,
            Decay::Piecewise { boundaries: vec![10, 20], values: vec![0.01, 0.001, 0.0001] },
        );
        s.validate().unwrap();
        close(s.lr(9, 5, 10), 0.01);
        close(s.lr(10, 0, 10), 0.001);
        close(s.lr(25, 0, 10), 0.0001);
        let bad = LrSchedule::new(0.0, Decay::Piecewise { boundaries: vec![10], values: vec![0.1] });
        assert!(bad.validate().is_err());
    }

    #[test]
    fn cosine_per_epoch_and_per_iteration() {
        let mut s = LrSchedule::new(0.1, Decay::Cosine { epochs: 4.0, eta_min: 0.001 });
        // eta_min + 0.099·(1 + cos(πt/4))/2 at t = 0..4:
        // 0.1, 0.001 + 0.099·0.8535534 = 0.0855018, 0.0505, 0.0154982, 0.001
        let want = [
            0.1,
            0.001 + 0.099 * (1.0 + (PI / 4.0).cos()) / 2.0,
            0.0505,
            0.001 + 0.099 * (1.0 - (PI / 4.0).cos()) / 2.0,
            0.001,
        ];
        for (e, w) in want.iter().enumerate() {
            close(s.lr(e, 1, 2), *w);
        }
        assert!((want[1] - 0.08550179).abs() < 1e-8);
        close(s.lr(9, 0, 2), 0.001);
        s.per_iter = true;
        // Iteration 1 of 2 in epoch 1 is t = 1.5: 0.001 + 0.099·(1 + cos(3π/8))/2 = 0.0694428
        close(s.lr(1, 1, 2), 0.001 + 0.099 * (1.0 + (3.0 * PI / 8.0).cos()) / 2.0);
        assert!((s.lr(1, 1, 2) - 0.06944283).abs() < 1e-8);
    }

    #[test]
    fn warmup_to_schedule_as_paddlevideo_customwarmupcosine() {
        // CustomWarmupCosineDecay(warmup_start_lr=.01, warmup_epochs=2, cosine_base_lr=.1,
        // max_epoch=10, num_iters=2): the cosine (eta_min 0) reaches 0.05·(1 + cos(π/5)) =
        // 0.0904508 at epoch 2; the warmup climbs to it linearly from 0.01.
        let s: LrSchedule = serde_json::from_str(
            r#"{"name": "cosine", "base_lr": 0.1, "epochs": 10, "warmup_epochs": 2,
                "warmup_start_lr": 0.01, "per_iter": true}"#,
        )
        .unwrap();
        s.validate().unwrap();
        let end = 0.05 * (1.0 + (PI / 5.0).cos());
        close(s.lr(0, 0, 2), 0.01);
        close(s.lr(0, 1, 2), 0.01 + (end - 0.01) * 0.25);
        close(s.lr(1, 1, 2), 0.01 + (end - 0.01) * 0.75);
        close(s.lr(2, 0, 2), end);
        close(s.lr(5, 0, 2), 0.05);
        assert!((s.lr(0, 1, 2) - 0.03011271).abs() < 1e-8);
    }

    #[test]
    fn warmup_factor_as_mmaction2_linearlr_then_cosine() {
        // LinearLR(start_factor=.1, begin=0, end=2, convert_to_iter_based) then
        // CosineAnnealingLR(T_max=8, begin=2, end=10), base .1, 4 iterations per epoch.
        let s: LrSchedule = serde_json::from_str(
            r#"{"name": "cosine", "base_lr": 0.1, "epochs": 8, "warmup_epochs": 2, "warmup_start_lr": 0.01,
                "warmup_mode": "factor", "decay_begin": 2, "per_iter": true}"#,
        )
        .unwrap();
        close(s.lr(0, 0, 4), 0.01);
        // t = 1: factor 0.1 + 0.9·0.5 = 0.55
        close(s.lr(1, 0, 4), 0.055);
        close(s.lr(2, 0, 4), 0.1);
        // t = 6: cosine at 4 of 8 epochs, cos(π/2) = 0 → 0.05
        close(s.lr(6, 0, 4), 0.05);
        close(s.lr(10, 0, 4), 0.0);
        // With a multi-step decay from 0 (mmaction2 TSM configs), the factor multiplies it.
        let m = LrSchedule {
            warmup_epochs: 1.0,
            warmup_start_lr: 0.01,
            warmup_mode: WarmupMode::Factor,
            per_iter: true,
            ..LrSchedule::new(0.1, Decay::MultiStep { milestones: vec![1], gamma: 0.1 })
        };
        close(m.lr(0, 1, 2), 0.1 * 0.55);
        close(m.lr(1, 0, 2), 0.01);
    }

    #[test]
    fn serde_round_trip_and_defaults() {
        let s: LrSchedule =
            serde_json::from_str(r#"{"name": "multi_step", "base_lr": 0.01, "milestones": [20, 40]}"#)
                .unwrap();
        assert_eq!(s, LrSchedule::new(0.01, Decay::MultiStep { milestones: vec![20, 40], gamma: 0.1 }));
        let back: LrSchedule = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let c: LrSchedule = serde_json::from_str(r#"{"name": "constant", "base_lr": 0.5}"#).unwrap();
        assert_eq!(c, LrSchedule::constant(0.5));
        assert!(serde_json::from_str::<LrSchedule>(r#"{"name": "exp", "base_lr": 0.5}"#).is_err());
    }
}
