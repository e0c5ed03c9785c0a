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
    /// Frame interval of the `dense` sampler (pytorchvideo's T × τ clips); absent for others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<usize>,
    pub short_side: u32,
    pub crop_size: u32,
    /// TSM: 1/shift_div of the channels shift each way.
    pub shift_div: usize,
    /// Channels of the first stage (64 in torchvision; smaller for narrow test models).
    pub base_width: usize,
    /// Blocks per backbone stage of a 3D CNN, replacing the architecture's own (pytorchvideo's
    /// `_MODEL_STAGE_DEPTH`, [3, 4, 6, 3] for R50; X3D's ⌈depth factor · [1, 2, 5, 3]⌉) with the
    /// same structure and parameter names: `[2, 2, 2, 2]` and a narrow `base_width` make a Slow
    /// with ResNet-18's block counts. Absent: the architecture's depths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_depths: Option<[usize; 4]>,
    /// Class names, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Test-time aggregation over clips and views: `softmax` (average probabilities), `logits`,
    /// or `sigmoid` (per-class probabilities, for multi-label models).
    pub aggregate: String,
    /// Multi-label classification: sigmoid outputs and binary cross-entropy in training.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub multilabel: bool,
    /// Feature-sequence models (AttentionLSTM, AttentionCluster, NeXtVLAD): their inputs and
    /// layer sizes. Absent for models that take frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<SequenceSpec>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Inputs and sizes of a feature-sequence model, with PaddleVideo's names and defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SequenceSpec {
    /// Modality names (feature datasets / the `modality` header key), in input order.
    pub modalities: Vec<String>,
    /// Feature width of each modality.
    pub feature_dims: Vec<usize>,
    /// AttentionLSTM: width of the per-frame embedding before the LSTM.
    pub embedding_size: usize,
    /// AttentionLSTM: hidden size of each LSTM direction.
    pub lstm_size: usize,
    /// Widths of the fully connected layers between pooling and the classifier.
    pub hidden_sizes: Vec<usize>,
    /// AttentionCluster: attention units per modality; NeXtVLAD: clusters (first entry).
    pub clusters: Vec<usize>,
    /// NeXtVLAD: groups, expansion and the gating reduction of the context gate.
    pub groups: usize,
    pub expansion: usize,
    pub gating_reduction: usize,
}

impl Default for SequenceSpec {
    fn default() -> Self {
        Self {
            modalities: vec!["rgb".into()],
            feature_dims: vec![2048],
            embedding_size: 512,
            lstm_size: 1024,
            hidden_sizes: vec![8192, 4096],
            clusters: vec![32],
            groups: 8,
            expansion: 2,
            gating_reduction: 8,
        }
    }
}

impl SequenceSpec {
    /// PaddleVideo's settings per architecture, for one `rgb` modality of 2048-d features (the
    /// VideoTag layout: TSN-R50 features in, AttentionLSTM out).
    pub fn defaults(arch: &str) -> Option<Self> {
        let base = Self::default();
        match arch {
            // configs/recognition/attention_lstm/attention_lstm_youtube8m.yaml; fc sizes fixed in
            // paddlevideo/modeling/heads/attention_lstm_head.py.
            "attention_lstm" => Some(base),
            // PaddleCV/PaddleVideo configs/attention_cluster.yaml: 32 units, fc 1024 and 4096.
            "attention_cluster" => Some(Self { hidden_sizes: vec![1024, 4096], ..base }),
            // PaddleCV/PaddleVideo configs/nextvlad.yaml: 128 clusters, hidden 2048, 8 groups.
            "nextvlad" => Some(Self { hidden_sizes: vec![2048], clusters: vec![128], ..base }),
            _ => None,
        }
    }

    pub fn validate(&self, arch: &str) -> Result<()> {
        let n = self.modalities.len();
        if n == 0 || self.feature_dims.len() != n {
            bail!("sequence: {n} modalities need as many feature_dims (got {})", self.feature_dims.len());
        }
        if self.feature_dims.iter().chain(&self.clusters).any(|d| *d == 0) {
            bail!("sequence: feature_dims and clusters must be positive");
        }
        match arch {
            "attention_lstm"
                if self.hidden_sizes.len() != 2 || self.embedding_size == 0 || self.lstm_size == 0 =>
            {
                bail!(
                    "attention_lstm needs hidden_sizes [fc_out1, fc_out2] and positive embedding/lstm sizes"
                )
            }
            "attention_cluster" if self.hidden_sizes.len() != 2 || self.clusters.len() != n => {
                bail!("attention_cluster needs hidden_sizes [fc1, fc2] and one cluster count per modality")
            }
            "nextvlad" => {
                if self.hidden_sizes.len() != 1 || self.clusters.is_empty() || self.groups == 0 {
                    bail!("nextvlad needs hidden_sizes [hidden], clusters [K] and groups > 0");
                }
                for d in &self.feature_dims {
                    if (d * self.expansion) % self.groups != 0 {
                        bail!(
                            "nextvlad: expansion × feature dim {d} is not divisible by {} groups",
                            self.groups
                        );
                    }
                }
                if self.hidden_sizes[0] < self.gating_reduction.max(1) {
                    bail!("nextvlad: hidden size below the gating reduction");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl ModelConfig {
    /// Whether `arch` takes feature sequences rather than frames.
    pub fn is_sequence_arch(arch: &str) -> bool {
        super::arch_info(arch).is_ok_and(|a| a.task == super::Task::SequenceRecognizer)
    }

    /// The models of pytorchvideo's zoo: the 3D CNNs and MViT (see `model::zoo_input`).
    pub fn is_zoo_arch(arch: &str) -> bool {
        super::zoo_input(arch).is_some()
    }

    pub fn defaults(arch: &str) -> Self {
        let sequence = SequenceSpec::defaults(arch);
        if let Some(z) = super::zoo_input(arch) {
            // pytorchvideo normalises 0–1 pixels with mean 0.45, std 0.225 (hub docs and
            // PySlowFast's Kinetics configs); our config is on the 0–255 scale.
            return Self {
                frames: z.frames,
                mean: [0.45 * 255.0; 3],
                std: [0.225 * 255.0; 3],
                sampler: "dense".into(),
                interval: Some(z.interval),
                short_side: z.short_side,
                crop_size: z.crop_size,
                // X3D's stem is 24 wide (round_width(12, 2)); the ResNets' 64.
                base_width: if arch.starts_with("x3d") { 24 } else { 64 },
                // hub/csn.py builds csn_r101 without dropout; the others drop 0.5.
                dropout: if arch == "csn_r101" { 0.0 } else { 0.5 },
                ..Self::defaults("")
            }
            .with_arch(arch);
        }
        let base = Self {
            arch: arch.to_string(),
            num_classes: 400,
            frames: 8,
            // PP-TSMv2's PPTSM_v2 sets dropout_prob 0.2; the others' heads 0.5.
            dropout: if arch == "pptsmv2_lcnetv2" { 0.2 } else { 0.5 },
            mean: [123.675, 116.28, 103.53],
            std: [58.395, 57.12, 57.375],
            sampler: "segment".into(),
            interval: None,
            short_side: 256,
            crop_size: 224,
            shift_div: 8,
            base_width: 64,
            stage_depths: None,
            labels: None,
            aggregate: "softmax".into(),
            multilabel: false,
            sequence,
            extra: Map::new(),
        };
        if arch.starts_with("stnet") {
            // configs/stnet.yaml: 7 segments of 5 frames, ImageNet mean/std, no dropout; the
            // reader's 4:3 resize to 256 and centre crop 224 (VALID; TEST: 25 segments, crop 256).
            let mut extra = Map::new();
            extra.insert("seglen".into(), 5.into());
            extra.insert("fixed_ratio".into(), true.into());
            return Self { frames: 35, dropout: 0.0, sampler: "stnet".into(), extra, ..base };
        }
        super::timesformer::vit_defaults(arch, base.clone()).unwrap_or(base)
    }

    /// The architecture options stored under `keys` of the extra map, as a `T` (absent keys take
    /// `T`'s serde defaults); the error names the architecture.
    pub fn extra_options<T: serde::de::DeserializeOwned>(&self, keys: &[&str]) -> candle_core::Result<T> {
        let picked: Map<String, Value> =
            keys.iter().filter_map(|k| self.extra.get(*k).map(|v| (k.to_string(), v.clone()))).collect();
        serde_json::from_value(Value::Object(picked))
            .map_err(|e| candle_core::Error::Msg(format!("{}: config: {e}", self.arch)))
    }

    /// `base` with the extra map's values under `keys` in place of its own (the architecture's
    /// options as a config overrides them); the error names the architecture.
    pub fn options_over<T: Serialize + serde::de::DeserializeOwned>(
        &self,
        base: T,
        keys: &[&str],
    ) -> anyhow::Result<T> {
        let mut v = serde_json::to_value(base)?;
        let obj = v.as_object_mut().context("options are not a JSON object")?;
        for k in keys {
            if let Some(x) = self.extra.get(*k) {
                obj.insert(k.to_string(), x.clone());
            }
        }
        serde_json::from_value(v).map_err(|e| anyhow::anyhow!("{}: config: {e}", self.arch))
    }

    /// Consecutive frames per segment of the `stnet` sampler (the extra key `seglen`); 1 for
    /// the others.
    pub fn seglen(&self) -> usize {
        self.extra.get("seglen").and_then(Value::as_u64).map_or(1, |v| v as usize)
    }

    /// Whether frames are resized to a fixed 4:3 (the extra key `fixed_ratio`, the 2019 Paddle
    /// zoo's `group_scale`) rather than keeping their aspect.
    pub fn fixed_ratio(&self) -> bool {
        self.extra.get("fixed_ratio").and_then(Value::as_bool).unwrap_or(false)
    }

    /// The model's clip sampler, in training (random) or test mode, one clip.
    pub fn sampler_config(&self, train: bool) -> Result<crate::sample::SamplerConfig> {
        let s = crate::sample::SamplerConfig {
            kind: self.sampler.parse()?,
            frames: self.frames,
            interval: self.interval.unwrap_or(1),
            clips: 1,
            train,
            seglen: self.seglen(),
        };
        s.validate().with_context(|| format!("{}: the config's sampler", self.arch))?;
        Ok(s)
    }

    fn with_arch(mut self, arch: &str) -> Self {
        self.arch = arch.to_string();
        self
    }

    /// Applies `key=value` overrides; the value is JSON (`-o mean=[1,2,3]`), or a bare string. A
    /// dotted key sets one field of an object-valued key and keeps the others
    /// (`-o non_local_cfg.mode=dot_product`).
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<()> {
        let mut v = serde_json::to_value(&*self)?;
        for o in overrides {
            let (k, val) = o.split_once('=').with_context(|| format!("override {o:?} is not key=value"))?;
            let parsed =
                serde_json::from_str::<Value>(val).unwrap_or_else(|_| Value::String(val.to_string()));
            let path: Vec<&str> = k.trim().split('.').collect();
            if path.iter().any(|p| p.is_empty()) {
                bail!("override {o:?}: empty key");
            }
            let mut obj = v.as_object_mut().expect("config is an object");
            for (i, part) in path[..path.len() - 1].iter().enumerate() {
                let slot = obj.entry(part.to_string()).or_insert_with(|| Value::Object(Map::new()));
                if slot.is_null() {
                    *slot = Value::Object(Map::new());
                }
                obj = slot
                    .as_object_mut()
                    .with_context(|| format!("override {o:?}: {} is not an object", path[..=i].join(".")))?;
            }
            obj.insert(path[path.len() - 1].to_string(), parsed);
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
        if !["softmax", "logits", "sigmoid"].contains(&self.aggregate.as_str()) {
            bail!("aggregate must be softmax, logits or sigmoid, not {:?}", self.aggregate);
        }
        match (&self.sequence, Self::is_sequence_arch(&self.arch)) {
            (Some(s), true) => s.validate(&self.arch)?,
            (None, true) => bail!("{} needs a `sequence` section (modalities, feature_dims, ...)", self.arch),
            (Some(_), false) => bail!("{} takes frames: a `sequence` section does not apply", self.arch),
            (None, false) => {}
        }
        if let Some(d) = self.stage_depths {
            if !Self::is_zoo_arch(&self.arch) && !self.arch.starts_with("stnet") {
                bail!(
                    "stage_depths applies to the 3D CNNs (slow_r50, x3d_xs, ...) and StNet, not {}",
                    self.arch
                );
            }
            if d.contains(&0) {
                bail!("stage_depths {d:?}: every stage needs at least one block");
            }
        }
        if let Some(l) = &self.labels {
            if l.len() != self.num_classes {
                bail!("{} labels for {} classes", l.len(), self.num_classes);
            }
        }
        let int8 = crate::precision::int8_calibration(&self.extra)?;
        if self.precision()? == Some(crate::precision::Precision::Int8) && int8.is_none() {
            bail!(
                "precision int8 needs the model's calibration (int8_calibration): vconvert --quantize int8 --calib CLIPS"
            );
        }
        Ok(())
    }

    /// The inference precision the config asks for (`precision`: f32, bf16 or int8), if any.
    pub fn precision(&self) -> Result<Option<crate::precision::Precision>> {
        crate::precision::Precision::of_config(&self.extra)
    }
}
