//! Inference precision: `--precision` of the inference tools, or the `precision` key of a model
//! file's config (`vconvert -o precision=bf16`). `bf16` runs the model's products (convolutions,
//! linear layers, attention) on operands rounded to bfloat16 with f32 accumulation, as a bf16
//! matrix unit computes them; normalisation, softmax, pooling and activations stay f32
//! (`nn::autocast`). vidkit's kernels compute the rounded values with their f32 arithmetic: the
//! matrix units' results (to accumulation order) on every CPU, not yet their speed.

use anyhow::{bail, Context, Result};
use candle_core::DType;
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => bail!("precision {other:?}: f32 or bf16"),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
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
            Some(other) => bail!("precision {other}: f32 or bf16"),
        }
        .context("model config")
    }

    /// `flag` when given, else the config's, else f32.
    pub fn resolve(flag: Option<Self>, config: Option<Self>) -> Self {
        flag.or(config).unwrap_or_default()
    }

    /// The autocast dtype (None for f32).
    pub fn dtype(self) -> Option<DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(DType::BF16),
        }
    }

    /// Runs `f` (the forwards of one thread) in this precision.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        crate::nn::with_autocast(self.dtype(), f)
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
        assert!(err.contains("f32 or bf16"), "{err}");
        let mut extra = Map::new();
        assert_eq!(Precision::of_config(&extra).unwrap(), None);
        extra.insert("precision".into(), Value::String("bf16".into()));
        assert_eq!(Precision::of_config(&extra).unwrap(), Some(Precision::Bf16));
        assert_eq!(Precision::resolve(Some(Precision::F32), Some(Precision::Bf16)), Precision::F32);
        assert_eq!(Precision::resolve(None, Some(Precision::Bf16)), Precision::Bf16);
        extra.insert("precision".into(), Value::from(16));
        assert!(Precision::of_config(&extra).is_err());
    }
}
