//! Post-training int8 quantization of a model (`vconvert --quantize int8 --calib CLIPS`): the
//! activation range of every dense convolution over calibration clips (min/max, histogram or
//! percentiles: `nn::observer`), stored in the model's config, and the accuracy it costs: top-1
//! agreement of the int8 and f32 forwards and the largest change of any class probability, over
//! the calibration clips and held-apart ones.

use crate::infer::{score_batch, Aggregate};
use crate::model::Model;
use crate::nn::int8::{calibrate, with_int8, Calibration, Calibrator, Int8Plan};
pub use crate::nn::observer::RangeMethod;
use anyhow::{bail, Result};
use candle_core::Tensor;
use std::sync::{Arc, Mutex};

/// The input ranges of `model`'s convolutions over `clips` ([T, 3, H, W] each), by `method`.
pub fn calibrate_model(
    model: &Model,
    clips: impl IntoIterator<Item = Result<Tensor>>,
    method: RangeMethod,
) -> Result<Calibration> {
    let cal = Arc::new(Mutex::new(Calibrator::new(method)));
    let mut seen = 0usize;
    for clip in clips {
        let clip = clip?;
        calibrate(&cal, || model.forward_t(&clip.unsqueeze(0)?, false))?;
        seen += 1;
    }
    if seen == 0 {
        bail!("no calibration clips");
    }
    let cal = cal.lock().map_err(|_| anyhow::anyhow!("calibration poisoned"))?.finish();
    if cal.ranges.is_empty() {
        bail!("{}: no convolution runs through the int8 path (nothing to quantize)", model.config().arch);
    }
    Ok(cal)
}

/// How far the int8 forward strays from the f32 one over a set of clips.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Agreement {
    pub clips: usize,
    /// Clips whose top-1 class is the same.
    pub top1_same: usize,
    /// The largest |p_int8 − p_f32| of any class of any clip (softmax probabilities).
    pub max_prob_change: f32,
}

impl Agreement {
    pub fn top1_rate(&self) -> f64 {
        self.top1_same as f64 / self.clips.max(1) as f64
    }
}

impl std::fmt::Display for Agreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} clips: top-1 the same on {} ({:.1} %), largest probability change {:.4}",
            self.clips,
            self.top1_same,
            100.0 * self.top1_rate(),
            self.max_prob_change
        )
    }
}

/// The int8 forward (`plan`) against the f32 one over `clips`.
pub fn agreement(
    model: &Model,
    plan: &Arc<Int8Plan>,
    clips: impl IntoIterator<Item = Result<Tensor>>,
) -> Result<Agreement> {
    let mut a = Agreement::default();
    let argmax = |p: &[f32]| {
        p.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0
    };
    for clip in clips {
        let clip = clip?;
        let f = score_batch(model, std::slice::from_ref(&clip), Aggregate::Softmax)?.remove(0);
        let q = with_int8(plan, || score_batch(model, std::slice::from_ref(&clip), Aggregate::Softmax))?
            .remove(0);
        a.clips += 1;
        a.top1_same += usize::from(argmax(&f) == argmax(&q));
        a.max_prob_change = f.iter().zip(&q).fold(a.max_prob_change, |m, (x, y)| m.max((x - y).abs()));
    }
    Ok(a)
}
