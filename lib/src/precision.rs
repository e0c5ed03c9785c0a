//! Inference precision: `--precision` of the inference tools, or the `precision` key of a model
//! file's config (`vconvert -o precision=bf16`). `bf16` runs the model's products (convolutions,
//! linear layers, attention) on operands rounded to bfloat16 with f32 accumulation, as a bf16
//! matrix unit computes them; normalisation, softmax, pooling and activations stay f32
//! (`nn::autocast`). vidkit's kernels compute the rounded values with their f32 arithmetic: the
//! matrix units' results (to accumulation order) on every CPU, not yet their speed.
//!
//! `int8` runs the dense convolutions and Linear layers in int8 (`nn::int8`) with the activation ranges that
//! `vconvert --quantize int8 --calib` stored in the config (`int8_calibration`); the rest stays
//! f32. [`Inference`] carries the precision and, for int8, the plan built from the config.

use crate::nn::gemm::{with_weight_cache, WeightCache};
use crate::nn::int8::{Calibration, Int8Plan};
use anyhow::{bail, Context, Result};
use candle_core::DType;
use serde_json::{Map, Value};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    Int8,
}

impl std::str::FromStr for Precision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            other => bail!("precision {other:?}: f32, bf16 or int8"),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        })
    }
}

impl Precision {
    /// The model config's key.
    pub const CONFIG_KEY: &'static str = "precision";

    /// The precision a config's extra keys ask for, if any.
    pub fn of_config(extra: &Map<String, Value>) -> Result<Option<Self>> {
        match extra.get(Self::CONFIG_KEY) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some),
            Some(other) => bail!("precision {other}: f32, bf16 or int8"),
        }
        .context("model config")
    }

    /// `flag` when given, else the config's, else f32.
    pub fn resolve(flag: Option<Self>, config: Option<Self>) -> Self {
        flag.or(config).unwrap_or_default()
    }

    /// The autocast dtype (None for f32 and int8, whose other products stay f32).
    pub fn dtype(self) -> Option<DType> {
        match self {
            Precision::F32 | Precision::Int8 => None,
            Precision::Bf16 => Some(DType::BF16),
        }
    }

    /// Runs `f` (the forwards of one thread) in this precision.
    ///
    /// # Panics
    /// For int8, whose calibration comes from a model: see [`Inference`].
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        assert!(self != Precision::Int8, "int8 runs through precision::Inference (the model's calibration)");
        crate::nn::with_autocast(self.dtype(), f)
    }
}

/// The config key of the int8 calibration: [[min, max], ...] per convolution.
pub const INT8_CALIBRATION_KEY: &str = "int8_calibration";
/// The config key of the ranges of the residuals the convolutions add: [min, max] or null per
/// convolution.
pub const INT8_RESIDUAL_CALIBRATION_KEY: &str = "int8_residual_calibration";

/// The int8 calibration a config holds, if any.
pub fn int8_calibration(extra: &Map<String, Value>) -> Result<Option<Calibration>> {
    let Some(v) = extra.get(INT8_CALIBRATION_KEY) else { return Ok(None) };
    let bad = || anyhow::anyhow!("model config: {INT8_CALIBRATION_KEY} is not a list of [min, max] pairs");
    let ranges = v
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|p| range_of(p).ok_or_else(bad))
        .collect::<Result<Vec<_>>>()?;
    // Residual ranges (a calibration made before them has none: its shortcuts stay f32).
    let residual_ranges = match extra.get(INT8_RESIDUAL_CALIBRATION_KEY) {
        None => vec![],
        Some(v) => {
            let bad = || {
                anyhow::anyhow!("model config: {INT8_RESIDUAL_CALIBRATION_KEY} is not a list of [min, max] pairs or nulls")
            };
            v.as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|r| match r {
                    Value::Null => Ok(None),
                    r => range_of(r).map(Some).ok_or_else(bad),
                })
                .collect::<Result<Vec<_>>>()?
        }
    };
    Ok(Some(Calibration { ranges, residual_ranges }))
}

/// A [min, max] pair with min ≤ max.
fn range_of(pair: &Value) -> Option<(f32, f32)> {
    match pair.as_array()?.as_slice() {
        [lo, hi] => {
            let (lo, hi) = (lo.as_f64()? as f32, hi.as_f64()? as f32);
            (lo <= hi).then_some((lo, hi))
        }
        _ => None,
    }
}

/// `calibration` into a config's extra keys.
pub fn store_int8_calibration(extra: &mut Map<String, Value>, calibration: &Calibration) {
    let pairs = calibration.ranges.iter().map(|&(lo, hi)| Value::from(vec![lo as f64, hi as f64])).collect();
    extra.insert(INT8_CALIBRATION_KEY.into(), Value::Array(pairs));
    let residuals = calibration
        .residual_ranges
        .iter()
        .map(|r| r.map_or(Value::Null, |(lo, hi)| Value::from(vec![lo as f64, hi as f64])))
        .collect();
    extra.insert(INT8_RESIDUAL_CALIBRATION_KEY.into(), Value::Array(residuals));
}

/// How a tool runs a model's forwards: the precision, and for int8 the plan (the model's
/// calibration, its weights quantized on first use and kept for the run).
#[derive(Clone)]
pub struct Inference {
    pub precision: Precision,
    plan: Option<Arc<Int8Plan>>,
    /// The convolutions' weights packed once for the run (`nn::gemm::WeightCache`).
    weights: Arc<WeightCache>,
}

impl Inference {
    /// `precision` for a model whose config's extra keys are `extra`; int8 needs their
    /// calibration.
    pub fn new(precision: Precision, extra: &Map<String, Value>) -> Result<Self> {
        let plan = match precision {
            Precision::Int8 => {
                let cal = int8_calibration(extra)?.context(
                    "int8 needs the model's calibration: vsample --spec-from M --list L > calib.clips && vconvert --quantize int8 --calib calib.clips M M_INT8",
                )?;
                Some(Int8Plan::new(cal))
            }
            _ => None,
        };
        Ok(Self { precision, plan, weights: WeightCache::new() })
    }

    /// Runs `f` (the forwards of one thread) in this precision, the weights (in bf16 on AMX or
    /// AVX-512 BF16) packed once for every forward of this `Inference` and its clones: the
    /// model's weights must not change while they run (a frozen model).
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        with_weight_cache(&self.weights, || match &self.plan {
            Some(plan) => crate::nn::int8::with_int8(plan, f),
            None => self.precision.run(f),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_reads_the_config_key() {
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("fp32".parse::<Precision>().unwrap(), Precision::F32);
        let err = "f16".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("f32, bf16 or int8"), "{err}");
        let mut extra = Map::new();
        assert_eq!(Precision::of_config(&extra).unwrap(), None);
        extra.insert("precision".into(), Value::String("bf16".into()));
        assert_eq!(Precision::of_config(&extra).unwrap(), Some(Precision::Bf16));
        assert_eq!(Precision::resolve(Some(Precision::F32), Some(Precision::Bf16)), Precision::F32);
        assert_eq!(Precision::resolve(None, Some(Precision::Bf16)), Precision::Bf16);
        extra.insert("precision".into(), Value::from(16));
        assert!(Precision::of_config(&extra).is_err());
    }

    #[test]
    fn int8_needs_and_reads_the_calibration() {
        let mut extra = Map::new();
        let err = Inference::new(Precision::Int8, &extra).err().unwrap().to_string();
        assert!(err.contains("--quantize int8"), "{err}");
        let cal = Calibration {
            ranges: vec![(-1.5, 2.0), (0.0, 6.0)],
            residual_ranges: vec![None, Some((-3.0, 4.0))],
        };
        store_int8_calibration(&mut extra, &cal);
        assert_eq!(int8_calibration(&extra).unwrap(), Some(cal.clone()));
        assert!(Inference::new(Precision::Int8, &extra).is_ok());
        // A calibration stored before residual ranges: the convolutions' alone.
        extra.remove(INT8_RESIDUAL_CALIBRATION_KEY);
        let old = Calibration { residual_ranges: vec![], ..cal };
        assert_eq!(int8_calibration(&extra).unwrap(), Some(old));
        extra.insert(INT8_RESIDUAL_CALIBRATION_KEY.into(), serde_json::json!([null, [2.0]]));
        assert!(int8_calibration(&extra).is_err());
        extra.remove(INT8_RESIDUAL_CALIBRATION_KEY);
        extra.insert(INT8_CALIBRATION_KEY.into(), serde_json::json!([[2.0, 1.0]]));
        assert!(int8_calibration(&extra).is_err());
    }

    /// A frozen model's forwards inside `Inference::run` give bit for bit the forward outside
    /// it, in f32 and bf16, the first time and again: with the run's cache of weights in tiles
    /// (bf16 on AMX or AVX-512 BF16) and with a cache of every layout, which runs everywhere.
    #[test]
    fn forwards_with_weights_packed_once_match_plain_ones() {
        use crate::model::{build, frozen, init_weights, ModelConfig};
        use candle_core::{Device, Tensor};
        use candle_nn::{VarBuilder, VarMap};
        let mut cfg = ModelConfig::defaults("tsm_r18");
        (cfg.num_classes, cfg.base_width, cfg.frames) = (5, 32, 4);
        let varmap = VarMap::new();
        build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        init_weights(&varmap, 3).unwrap();
        let model = frozen(&varmap, &cfg).unwrap();
        let x = crate::rng::randn(0f32, 1., (2, 4, 3, 48, 48), &Device::Cpu).unwrap();
        let values = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for precision in [Precision::F32, Precision::Bf16] {
            let plain = values(precision.run(|| model.forward_t(&x, false)).unwrap());
            let tiles = Inference::new(precision, &Map::new()).unwrap();
            let all = Inference { weights: WeightCache::all_layouts(), ..tiles.clone() };
            for inference in [&tiles, &all] {
                for pass in ["first", "second"] {
                    let got = values(inference.run(|| model.forward_t(&x, false)).unwrap());
                    assert!(got == plain, "{precision}, {pass} forward: {got:?} against {plain:?}");
                }
            }
            if crate::nn::gemm::blocked_isa().is_some() {
                assert!(all.weights.len() >= 20, "{precision}: {} weights cached", all.weights.len());
            }
            let on_tiles = precision == Precision::Bf16
                && crate::nn::gemm::blocked_isa().is_some_and(|i| i.bf16_pairs());
            assert_eq!(
                tiles.weights.is_empty(),
                !on_tiles,
                "{precision}: {} weights in tiles",
                tiles.weights.len()
            );
        }
    }

    /// bf16 activations handed from convolution to convolution (`nn::bf16_act`): those only the
    /// next convolution reads give the logits of a bf16 forward without them bit for bit (every
    /// reader rounds to the bits the producer stores); block outputs as well (their residual
    /// added from bf16, as `torch.autocast` does) move them within bf16's rounding. For the 2D
    /// ResNets (TSM's shifted first convolution reading a bf16 block output) and the 3D ones
    /// (CSN's depthwise middle, which keeps f32, R(2+1)D's two-step middle, C2D's pool after
    /// stage 1, SlowFast's two pathways), on every bf16 path this CPU has; handed over at all on
    /// the tile paths only.
    #[test]
    fn bf16_activations_change_no_logit() {
        use crate::model::{build, frozen, init_weights, ModelConfig};
        use crate::nn::gemm::{with_isa, Isa};
        use crate::nn::{with_handovers, Handovers};
        use candle_core::{Device, Tensor};
        use candle_nn::{VarBuilder, VarMap};
        let values = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // (arch, frames, outputs handed over at Exact: the stem's through its pool where one
        // takes it (R(2+1)D's stem has none), each bottleneck's inner ones (R(2+1)D's middle is
        // two convolutions) but CSN's (its middle convolution is depthwise, which reads and
        // writes f32)).
        let blocks = |depths: [usize; 4]| depths.iter().sum::<usize>();
        for (arch, frames, exact_outputs) in [
            ("tsm_r50", 4, 1 + 2 * blocks([3, 4, 6, 3])),
            ("slow_r50", 4, 1 + 2 * blocks([3, 4, 6, 3])),
            ("c2d_r50", 4, 1 + 2 * blocks([3, 4, 6, 3])),
            ("csn_r101", 4, 1),
            ("r2plus1d_r50", 4, 3 * blocks([3, 4, 6, 3])),
            // Two pathways; the slow stem through its pool, while the fast stem and 8 of the
            // fast pathway's narrowest convolutions run the direct kernel, which hands over in
            // f32.
            ("slowfast_r50", 8, 1 + 2 * 2 * blocks([3, 4, 6, 3]) - 8),
        ] {
            let side = 40;
            let mut cfg = ModelConfig::defaults(arch);
            (cfg.num_classes, cfg.base_width, cfg.frames) = (5, 32, frames);
            let varmap = VarMap::new();
            build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
            init_weights(&varmap, 5).unwrap();
            let model = frozen(&varmap, &cfg).unwrap();
            let x = crate::rng::randn(0f32, 1., (1, frames, 3, side, side), &Device::Cpu).unwrap();
            for isa in Isa::paths() {
                let forward = |which| {
                    let before = crate::nn::bf16_handovers();
                    let run =
                        || with_isa(isa, || Precision::Bf16.run(|| model.forward_t(&x, false)).unwrap());
                    let logits = values(with_handovers(which, run));
                    (logits, crate::nn::bf16_handovers() - before)
                };
                let (plain, none) = forward(Handovers::None);
                let (exact, handed) = forward(Handovers::Exact);
                let (all, all_handed) = forward(Handovers::All);
                let on_tiles = isa.is_some_and(|i| i.bf16_pairs());
                assert!(exact == plain, "{arch} on {isa:?}: {exact:?} against {plain:?}");
                assert_eq!(
                    (none, handed),
                    (0, if on_tiles { exact_outputs } else { 0 }),
                    "{arch} on {isa:?}: handed over"
                );
                let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
                let moved: Vec<f32> = all.iter().zip(&plain).map(|(a, b)| a - b).collect();
                let drift = rms(&moved) / rms(&plain);
                assert!(
                    drift < 2e-2,
                    "{arch} on {isa:?}: block outputs in bf16 moved the logits by {drift:.2e}"
                );
                assert_eq!(all_handed > handed, on_tiles, "{arch} on {isa:?}: {all_handed}");
                eprintln!("{arch} on {isa:?}: {handed} exact, {all_handed} in all handed over; block outputs moved {drift:.1e}");
            }
        }
    }
}
