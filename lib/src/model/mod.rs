//! Models: backbones, heads and recognizers, a registry by name, and the model file format
//! (one `.safetensors` with the config in its metadata, DESIGN.md §2.4).

mod config;
mod file;
mod import;
mod import_paddle;
mod init;
mod pdparams;
mod pplcnet_v2;
mod recognizer2d;
mod resnet;
mod resnet_vd;

pub use config::ModelConfig;
pub use file::{from_tensors, load_model, read_config, save_model, LoadedModel, CONFIG_KEY};
pub use import::{
    import_checkpoint, import_torch, read_torch_state_dict, Imported, NamedTensors, STATE_DICT_KEYS,
};
pub use import_paddle::{import_paddle, PADDLE_ARCHS};
pub use init::init_weights;
pub use pdparams::read_pdparams;
pub use recognizer2d::Recognizer2d;
pub use resnet::{resnet_layout, ResNet, ShiftSpec};

use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;

/// Every registered architecture.
pub const ARCHS: [&str; 10] = [
    "tsn_r18",
    "tsn_r34",
    "tsn_r50",
    "tsn_r101",
    "tsm_r18",
    "tsm_r34",
    "tsm_r50",
    "tsm_r101",
    "pptsm_r50vd",
    "pptsmv2_lcnetv2",
];

/// A built model of any registered architecture.
#[derive(Clone, Debug)]
pub enum Model {
    Recognizer2d(Recognizer2d),
}

impl Model {
    pub fn config(&self) -> &ModelConfig {
        match self {
            Model::Recognizer2d(m) => &m.config,
        }
    }

    /// Logits [B, classes] for normalised clips [B, T, 3, H, W] (inference, or training
    /// without dropout).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_train(x, train, None)
    }

    /// As `forward_t`, with dropout drawn from `dropout_rng` when given.
    pub fn forward_train(
        &self,
        x: &Tensor,
        train: bool,
        dropout_rng: Option<&mut Rng>,
    ) -> candle_core::Result<Tensor> {
        match self {
            Model::Recognizer2d(m) => m.forward_t(x, train, dropout_rng),
        }
    }

    /// Pooled per-frame features [B, T, C] (before consensus and classifier).
    pub fn features_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Model::Recognizer2d(m) => m.features_t(x, train),
        }
    }
}

/// Builds `config.arch` with parameters from `vb` (fresh ones when it wraps an empty VarMap).
pub fn build(config: &ModelConfig, vb: VarBuilder) -> Result<Model> {
    config.validate()?;
    let arch = config.arch.as_str();
    if arch == "pptsm_r50vd" {
        return Ok(Model::Recognizer2d(Recognizer2d::pptsm(config.clone(), 50, vb)?));
    }
    if arch == "pptsmv2_lcnetv2" {
        return Ok(Model::Recognizer2d(Recognizer2d::pptsmv2(config.clone(), vb)?));
    }
    let (family, depth) = match arch.split_once("_r") {
        Some((f, d)) if ["tsn", "tsm"].contains(&f) => (f, d.parse::<usize>().ok()),
        _ => ("", None),
    };
    match (family, depth) {
        (f, Some(d)) if resnet_layout(d).is_some() && [18, 34, 50, 101].contains(&d) => {
            Ok(Model::Recognizer2d(Recognizer2d::new(config.clone(), d, f == "tsm", vb)?))
        }
        _ => bail!("unknown architecture {arch:?} (known: {})", ARCHS.join(", ")),
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// `cargo test -p vidkit --lib timing -- --ignored --nocapture`: where a training step goes.
    #[test]
    #[ignore]
    fn time_small_tsm_step() {
        let arch = std::env::var("VK_ARCH").unwrap_or_else(|_| "tsm_r18".into());
        let mut cfg = ModelConfig::defaults(&arch);
        cfg.num_classes = 4;
        cfg.base_width = std::env::var("VK_WIDTH").ok().and_then(|s| s.parse().ok()).unwrap_or(16);
        let batch: usize = std::env::var("VK_BATCH").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
        let varmap = VarMap::new();
        let model = build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        let side: usize = std::env::var("VK_SIDE").ok().and_then(|s| s.parse().ok()).unwrap_or(64);
        let x = Tensor::randn(0f32, 1., (batch, 8, 3, side, side), &Device::Cpu).unwrap();
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let y = model.forward_t(&x, true).unwrap();
            let f = t.elapsed();
            let _g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            eprintln!("forward {:?}, backward {:?}", f, t.elapsed() - f);
            let t = std::time::Instant::now();
            let _ = model.forward_t(&x, false).unwrap();
            eprintln!("eval forward {:?}", t.elapsed());
        }
    }
}

#[cfg(test)]
mod learning_sanity {
    use super::*;
    use crate::train::{cross_entropy, trainable_vars, OptimizerConfig, SgdConfig, Targets};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// A model must be able to memorise a handful of random clips: if the loss does not fall,
    /// some op drops or corrupts gradients.
    #[test]
    fn tsm_memorises_a_fixed_batch() {
        let mut cfg = ModelConfig::defaults("tsm_r18");
        cfg.num_classes = 4;
        cfg.base_width = 8;
        cfg.frames = 4;
        cfg.dropout = 0.0;
        let varmap = VarMap::new();
        let model = build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        init_weights(&varmap, 1).unwrap();
        let x = Tensor::randn(0f32, 1., (8, 4, 3, 32, 32), &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 1, 2, 3, 0, 1, 2, 3], &Device::Cpu).unwrap();
        let sgd = OptimizerConfig::Sgd(SgdConfig { lr: 0.01, momentum: 0.9, ..Default::default() });
        let mut opt = sgd.build(trainable_vars(&varmap)).unwrap();
        let mut first = None;
        let mut last = 0.0;
        for _ in 0..40 {
            let logits = model.forward_t(&x, true).unwrap();
            let loss = cross_entropy(&logits, Targets::Labels(&labels), 0.0).unwrap();
            last = loss.to_scalar::<f32>().unwrap();
            first.get_or_insert(last);
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        eprintln!("loss {} → {last}", first.unwrap());
        assert!(last < 0.1 * first.unwrap(), "loss {} → {last}", first.unwrap());
    }
}
