//! BSN, the Boundary-Sensitive Network for temporal action proposals, as MMAction2's
//! `mmaction/models/localizers/bsn.py` with its configs (`configs/_base_/models/bsn_tem.py`,
//! `bsn_pem.py`, `configs/localization/bsn/bsn_pgm_400x100_activitynet-feature.py`): the
//! temporal evaluation module (TEM: three 1-D convolutions giving actionness, start and end
//! probabilities per step), the proposal generation module (PGM, [`crate::proposals::bsn`]:
//! candidates from the boundaries, boundary-sensitive features sampled from the actionness) and
//! the proposal evaluation module (PEM: two fully connected layers scoring each candidate's
//! features). MMAction2 trains and saves the TEM and the PEM separately; a vidkit BSN model file
//! holds both (`tem.*`, `pem.*`) and its spec.

use super::bmn::Conv1d;
use super::ModelConfig;
use crate::proposals::bsn::{bsn_candidates, bsp_features, BsnCandidate, BspSampling};
use crate::proposals::SoftNmsMmaction2;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// BSN's sizes and settings, with MMAction2's names and its ActivityNet configs' values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BsnSpec {
    /// Steps of the (rescaled) feature sequence (`temporal_dim`).
    pub temporal_dim: usize,
    /// Feature width (`tem_feat_dim`).
    pub feat_dim: usize,
    pub tem_hidden_dim: usize,
    /// The TEM's outputs are `relu(r1 · conv1)`, `relu(r2 · conv2)`, `sigmoid(r3 · conv3)`.
    pub tem_conv_ratios: [f64; 3],
    /// Training labels: a boundary's region is `max(1 / T, boundary_ratio · length)` wide.
    pub boundary_ratio: f64,
    /// Training: a step is a positive of the TEM's loss above this match score.
    pub tem_match_threshold: f64,
    /// The PGM: boundaries where a peak or above this fraction of the maximum.
    pub peak_threshold: f64,
    /// The PGM: candidates kept per video at inference (`pgm_features_test_cfg.top_k`).
    pub pgm_top_k: usize,
    /// The PGM: candidates kept per video in training (`pgm_features_train_cfg.top_k`).
    pub pgm_train_top_k: usize,
    pub bsp_boundary_ratio: f64,
    pub num_sample_start: usize,
    pub num_sample_end: usize,
    pub num_sample_action: usize,
    pub num_sample_interp: usize,
    pub pem_hidden_dim: usize,
    /// The PEM's outputs are `relu(r1 · fc1)`, `sigmoid(r2 · fc2)`.
    pub pem_fc_ratios: [f64; 2],
    /// Training: medium (low) tIoU candidates sampled at `u_ratio_m` (`u_ratio_l`) times the high.
    pub pem_u_ratio_m: f64,
    pub pem_u_ratio_l: f64,
    pub pem_high_temporal_iou_threshold: f64,
    pub pem_low_temporal_iou_threshold: f64,
    pub soft_nms_alpha: f64,
    pub soft_nms_low_threshold: f64,
    pub soft_nms_high_threshold: f64,
    pub post_process_top_k: usize,
    /// Frames per snippet in feature extraction: proposals are scaled by the duration the whole
    /// snippets cover, as MMAction2's `post_processing`.
    pub feature_extraction_interval: usize,
}

impl Default for BsnSpec {
    fn default() -> Self {
        Self {
            temporal_dim: 100,
            feat_dim: 400,
            tem_hidden_dim: 512,
            tem_conv_ratios: [1.0, 1.0, 0.01],
            boundary_ratio: 0.1,
            tem_match_threshold: 0.5,
            peak_threshold: 0.5,
            pgm_top_k: 1000,
            pgm_train_top_k: 500,
            bsp_boundary_ratio: 0.2,
            num_sample_start: 8,
            num_sample_end: 8,
            num_sample_action: 16,
            num_sample_interp: 3,
            pem_hidden_dim: 256,
            pem_fc_ratios: [0.1, 0.1],
            pem_u_ratio_m: 1.0,
            pem_u_ratio_l: 2.0,
            pem_high_temporal_iou_threshold: 0.6,
            pem_low_temporal_iou_threshold: 0.2,
            soft_nms_alpha: 0.75,
            soft_nms_low_threshold: 0.65,
            soft_nms_high_threshold: 0.9,
            post_process_top_k: 100,
            feature_extraction_interval: 16,
        }
    }
}

impl BsnSpec {
    pub fn sampling(&self) -> BspSampling {
        BspSampling {
            boundary_ratio: self.bsp_boundary_ratio,
            num_sample_start: self.num_sample_start,
            num_sample_end: self.num_sample_end,
            num_sample_action: self.num_sample_action,
            num_sample_interp: self.num_sample_interp,
        }
    }

    /// The PEM's input width (`pem_feat_dim`: 32 in MMAction2's config).
    pub fn pem_feat_dim(&self) -> usize {
        self.sampling().width()
    }

    pub fn soft_nms(&self) -> SoftNmsMmaction2 {
        SoftNmsMmaction2 {
            alpha: self.soft_nms_alpha,
            low: self.soft_nms_low_threshold,
            high: self.soft_nms_high_threshold,
            top_k: self.post_process_top_k,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("temporal_dim", self.temporal_dim),
            ("feat_dim", self.feat_dim),
            ("tem_hidden_dim", self.tem_hidden_dim),
            ("pgm_top_k", self.pgm_top_k),
            ("pgm_train_top_k", self.pgm_train_top_k),
            ("num_sample_interp", self.num_sample_interp),
            ("pem_hidden_dim", self.pem_hidden_dim),
        ];
        for (what, n) in sizes {
            if n == 0 {
                bail!("bsn: {what} must be positive");
            }
        }
        if self.temporal_dim < 2 {
            bail!("bsn: temporal_dim must be at least 2");
        }
        for (what, n) in [
            ("num_sample_start", self.num_sample_start),
            ("num_sample_end", self.num_sample_end),
            ("num_sample_action", self.num_sample_action),
        ] {
            if n < 2 {
                bail!("bsn: {what} must be at least 2 (samples span their region end to end)");
            }
        }
        if self.soft_nms_alpha <= 0.0 {
            bail!("bsn: soft_nms_alpha must be positive");
        }
        Ok(())
    }
}

/// A fully connected layer as torch's `nn.Linear` (weight [out, in], bias [out]).
#[derive(Clone, Debug)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self { weight: vb.get((cout, cin), "weight")?, bias: vb.get(cout, "bias")? })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}

/// MMAction2's TEM and PEM; parameter names `tem.conv1.weight`, ..., `pem.fc2.bias`.
#[derive(Clone, Debug)]
pub struct Bsn {
    pub config: ModelConfig,
    pub spec: BsnSpec,
    conv1: Conv1d,
    conv2: Conv1d,
    conv3: Conv1d,
    fc1: Linear,
    fc2: Linear,
}

/// What BSN gives for one video: the TEM's curves [T] and the scored candidates (before
/// soft-NMS), with `score` = PEM score · tmin_score · tmax_score as MMAction2's `PEM.predict`.
pub struct BsnVideoOutput {
    pub action: Vec<f32>,
    pub start: Vec<f32>,
    pub end: Vec<f32>,
    pub candidates: Vec<BsnCandidate>,
    pub pem_scores: Vec<f32>,
}

impl Bsn {
    pub fn new(config: ModelConfig, spec: BsnSpec, vb: VarBuilder) -> Result<Self> {
        spec.validate()?;
        let (c, h) = (spec.feat_dim, spec.tem_hidden_dim);
        let tem = vb.pp("tem");
        let pem = vb.pp("pem");
        Ok(Self {
            conv1: Conv1d::new(tem.pp("conv1"), c, h, 3, 1)?,
            conv2: Conv1d::new(tem.pp("conv2"), h, h, 3, 1)?,
            conv3: Conv1d::new(tem.pp("conv3"), h, 3, 1, 1)?,
            fc1: Linear::new(pem.pp("fc1"), spec.pem_feat_dim(), spec.pem_hidden_dim)?,
            fc2: Linear::new(pem.pp("fc2"), spec.pem_hidden_dim, 1)?,
            config,
            spec,
        })
    }

    /// The TEM for features [B, C, T] (channels first): [B, 3, T], rows actionness, start, end.
    pub fn tem(&self, x: &Tensor) -> Result<Tensor> {
        self.tem_t(x, false)
    }

    /// The TEM; `train` computes its convolutions through [`crate::nn::conv1d_differentiable`]
    /// (candle's own conv1d has wrong gradients).
    pub fn tem_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, c, t) = x.dims3()?;
        if c != self.spec.feat_dim || t != self.spec.temporal_dim {
            bail!(
                "bsn takes features [B, {}, {}], got {:?}",
                self.spec.feat_dim,
                self.spec.temporal_dim,
                x.dims()
            );
        }
        let [r1, r2, r3] = self.spec.tem_conv_ratios;
        let x = (self.conv1.forward(x, train)? * r1)?.relu()?;
        let x = (self.conv2.forward(&x, train)? * r2)?.relu()?;
        Ok(candle_nn::ops::sigmoid(&(self.conv3.forward(&x, train)? * r3)?)?)
    }

    /// The PEM for boundary-sensitive features [N, 32]: [N] scores.
    pub fn pem(&self, x: &Tensor) -> Result<Tensor> {
        let [r1, r2] = self.spec.pem_fc_ratios;
        let h = (self.fc1.forward(x)? * r1)?.relu()?;
        Ok(candle_nn::ops::sigmoid(&(self.fc2.forward(&h)? * r2)?)?.flatten_all()?)
    }

    /// Where its parameters are.
    pub fn device(&self) -> &Device {
        self.fc1.weight.device()
    }

    /// TEM, PGM and PEM for one video's features [C, T] (channels first).
    pub fn run_video(&self, features_ct: Vec<f32>) -> Result<BsnVideoOutput> {
        let (c, t) = (self.spec.feat_dim, self.spec.temporal_dim);
        let x = Tensor::from_vec(features_ct, (1, c, t), self.device())?;
        let tem: Vec<f32> = self.tem(&x)?.flatten_all()?.to_vec1()?;
        let (action, rest) = tem.split_at(t);
        let (start, end) = rest.split_at(t);
        let candidates = bsn_candidates(start, end, self.spec.peak_threshold, self.spec.pgm_top_k);
        let pem_scores = self.score_candidates(action, &candidates)?;
        Ok(BsnVideoOutput {
            action: action.to_vec(),
            start: start.to_vec(),
            end: end.to_vec(),
            candidates,
            pem_scores,
        })
    }

    /// The PEM's score of each candidate, from its boundary-sensitive features.
    pub fn score_candidates(&self, action: &[f32], candidates: &[BsnCandidate]) -> Result<Vec<f32>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let sampling = self.spec.sampling();
        let feats = bsp_features(action, candidates, &sampling);
        let x = Tensor::from_vec(feats, (candidates.len(), sampling.width()), self.device())?;
        Ok(self.pem(&x)?.to_vec1()?)
    }
}

/// The proposals of one video's BSN outputs: each candidate scored `pem · tmin_score ·
/// tmax_score` (float32, left to right, as `PEM.predict`), then MMAction2's `post_processing`.
pub fn bsn_scored(out: &BsnVideoOutput) -> Vec<crate::proposals::Proposal> {
    out.candidates
        .iter()
        .zip(&out.pem_scores)
        .map(|(c, &p)| crate::proposals::Proposal {
            xmin: c.tmin as f64,
            xmax: c.tmax as f64,
            score: (p * c.tmin_score * c.tmax_score) as f64,
            label: None,
        })
        .collect()
}

/// The config key (in `ModelConfig::extra`) that holds a BSN model file's `BsnSpec`.
pub const BSN_KEY: &str = "bsn";

/// The 10 parameter names of a BSN.
fn bsn_parameter_names() -> Vec<String> {
    ["tem.conv1", "tem.conv2", "tem.conv3", "pem.fc1", "pem.fc2"]
        .iter()
        .flat_map(|l| [format!("{l}.weight"), format!("{l}.bias")])
        .collect()
}

/// A BSN config for `spec` (`num_classes` 1: proposals are class-agnostic).
pub fn bsn_config(spec: &BsnSpec) -> Result<ModelConfig> {
    let mut cfg = ModelConfig::defaults("bsn");
    cfg.num_classes = 1;
    cfg.extra.insert(BSN_KEY.into(), serde_json::to_value(spec)?);
    Ok(cfg)
}

/// The `BsnSpec` of a config, or why it is not a BSN config.
pub fn bsn_spec(cfg: &ModelConfig) -> Result<BsnSpec> {
    if cfg.arch != "bsn" {
        bail!("a {} model, not bsn", cfg.arch);
    }
    let v = cfg.extra.get(BSN_KEY).cloned().unwrap_or(serde_json::Value::Object(Default::default()));
    let spec: BsnSpec = serde_json::from_value(v)?;
    spec.validate()?;
    Ok(spec)
}

/// A BSN from named tensors; the names and shapes must be exactly the model's.
pub fn bsn_from_tensors(cfg: ModelConfig, tensors: std::collections::HashMap<String, Tensor>) -> Result<Bsn> {
    let names = bsn_parameter_names();
    if let Some(extra) = tensors.keys().filter(|k| !names.contains(k)).min() {
        bail!("weights do not fit bsn: unexpected tensor {extra:?}");
    }
    if let Some(missing) = names.iter().find(|n| !tensors.contains_key(*n)) {
        bail!("weights do not fit bsn: no tensor {missing:?}");
    }
    let spec = bsn_spec(&cfg)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    Bsn::new(cfg, spec, vb).map_err(|e| anyhow::anyhow!("weights do not fit bsn: {e:#}"))
}

/// Loads a BSN model file (`vconvert --arch bsn`).
pub fn load_bsn(path: &std::path::Path) -> Result<Bsn> {
    let (cfg, tensors) = super::file::read_model_file(path, |cfg| bsn_spec(cfg).map(|_| ()))?;
    bsn_from_tensors(cfg, tensors).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
}

/// PyTorch's default initialisation of a fresh TEM and PEM (MMAction2's `init_weights` touches
/// only 2-D convolutions and BN, which BSN has none of): `nn.Conv1d` and `nn.Linear` weights and
/// biases `U(-k, k)`, k = 1/√(fan in). Drawn from our Rng in name order.
pub fn init_bsn(varmap: &candle_nn::VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = crate::rng::Rng::new(seed ^ 0xB5_7E11);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let layer = name.rsplit_once('.').map_or(name.as_str(), |(l, _)| l);
        let weight = &data[&format!("{layer}.weight")];
        let fan_in: usize = weight.dims()[1..].iter().product();
        let k = 1.0 / (fan_in as f64).sqrt();
        let values: Vec<f32> = (0..n).map(|_| rng.uniform_range(-k, k) as f32).collect();
        var.set(&Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    pub(crate) fn small_spec() -> BsnSpec {
        BsnSpec { temporal_dim: 16, feat_dim: 6, tem_hidden_dim: 8, pem_hidden_dim: 12, ..Default::default() }
    }

    #[test]
    fn a_small_bsn_runs_end_to_end() {
        let spec = small_spec();
        let varmap = VarMap::new();
        let model = Bsn::new(
            bsn_config(&spec).unwrap(),
            spec.clone(),
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .unwrap();
        init_bsn(&varmap, 3).unwrap();
        let feats: Vec<f32> = (0..6 * 16).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
        let out = model.run_video(feats).unwrap();
        assert_eq!((out.action.len(), out.start.len(), out.end.len()), (16, 16, 16));
        assert!(!out.candidates.is_empty());
        assert_eq!(out.pem_scores.len(), out.candidates.len());
        assert!(out.pem_scores.iter().all(|s| *s > 0.0 && *s < 1.0));
        let scored = bsn_scored(&out);
        assert!(scored.iter().all(|p| p.xmin < p.xmax && p.score > 0.0));
        // The names are the model's, and a missing one is named.
        let mut tensors: std::collections::HashMap<String, Tensor> =
            varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        assert_eq!(tensors.len(), 10);
        tensors.remove("pem.fc2.bias");
        let e = bsn_from_tensors(bsn_config(&spec).unwrap(), tensors).unwrap_err();
        assert!(e.to_string().contains("no tensor \"pem.fc2.bias\""), "{e}");
    }

    #[test]
    fn the_spec_refuses_what_cannot_run() {
        let spec = BsnSpec { num_sample_start: 1, ..Default::default() };
        assert!(spec.validate().unwrap_err().to_string().contains("num_sample_start"));
        assert_eq!(BsnSpec::default().pem_feat_dim(), 32);
    }
}
