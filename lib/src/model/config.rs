//! A model's config: what it is and what input it expects. Stored as JSON in the metadata of the
//! model's `.safetensors` file (key `vidkit_config`), so a model file needs nothing else.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Registered architecture name (`tsm_r50`, ...).
    pub arch: String,
    pub num_classes: usize,
    /// Segments (frames) per clip.
    pub frames: usize,
    /// Dropout before the classifier (train only).
    pub dropout: f32,
    /// Per-channel mean and std on the 0–255 pixel scale (mmaction2's convention).
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Input spec for `vsample --spec-from`: sampler, short side, crop size.
    pub sampler: String,
    pub short_side: u32,
    pub crop_size: u32,
    /// TSM: 1/shift_div of the channels shift each way.
    pub shift_div: usize,
    /// Channels of the first stage (64 in torchvision; smaller for narrow test models).
    pub base_width: usize,
    /// Class names, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Test-time aggregation over clips and views: `softmax` (average probabilities) or `logits`.
    pub aggregate: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ModelConfig {
    pub fn defaults(arch: &str) -> Self {
        Self {
            arch: arch.to_string(),
            num_classes: 400,
            frames: 8,
            // PP-TSMv2's PPTSM_v2 sets dropout_prob 0.2; the others' heads 0.5.
            dropout: if arch == "pptsmv2_lcnetv2" { 0.2 } else { 0.5 },
            mean: [123.675, 116.28, 103.53],
            std: [58.395, 57.12, 57.375],
            sampler: "segment".into(),
            short_side: 256,
            crop_size: 224,
            shift_div: 8,
            base_width: 64,
            labels: None,
            aggregate: "softmax".into(),
            extra: Map::new(),
        }
    }

    /// Applies `key=value` overrides; the value is JSON (`-o mean=[1,2,3]`), or a bare string.
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<()> {
        let mut v = serde_json::to_value(&*self)?;
        let obj = v.as_object_mut().expect("config is an object");
        for o in overrides {
            let (k, val) = o.split_once('=').with_context(|| format!("override {o:?} is not key=value"))?;
            let parsed =
                serde_json::from_str::<Value>(val).unwrap_or_else(|_| Value::String(val.to_string()));
            obj.insert(k.trim().to_string(), parsed);
        }
        *self = serde_json::from_value(v).context("config override")?;
        self.validate()
    }

    pub fn validate(&self) -> Result<()> {
        if self.num_classes == 0 || self.frames == 0 {
            bail!("num_classes and frames must be positive");
        }
        if self.std.iter().any(|s| *s <= 0.0) {
            bail!("std must be positive");
        }
        if !["softmax", "logits"].contains(&self.aggregate.as_str()) {
            bail!("aggregate must be softmax or logits, not {:?}", self.aggregate);
        }
        if let Some(l) = &self.labels {
            if l.len() != self.num_classes {
                bail!("{} labels for {} classes", l.len(), self.num_classes);
            }
        }
        Ok(())
    }
}
