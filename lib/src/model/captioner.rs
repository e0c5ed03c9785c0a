//! The task trait of captioners (DESIGN.md §2.5): a model that takes one video's feature
//! sequence [T, C] and gives sentences describing it. `vcaption` runs any of them through
//! [`load_captioner`].

use super::{ets_spec, load_ets, registry, Ets, ModelConfig};
use anyhow::{bail, Result};
use ndarray::Array2;

/// One video's caption and every hypothesis of the search (caption, score), best first.
#[derive(Clone, Debug, PartialEq)]
pub struct Caption {
    pub caption: String,
    pub beams: Vec<(String, f32)>,
}

/// A model that captions feature sequences.
pub trait Captioner: Send + Sync {
    fn config(&self) -> &ModelConfig;
    /// The feature width it takes.
    fn feature_width(&self) -> usize;
    fn caption(&self, features: &Array2<f32>) -> Result<Caption>;
}

impl Captioner for Ets {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn feature_width(&self) -> usize {
        self.spec.feat_size
    }

    fn caption(&self, features: &Array2<f32>) -> Result<Caption> {
        let (caption, beams) = Ets::caption(self, features)?;
        Ok(Caption { caption, beams })
    }
}

/// Loads a captioner of one family from its model file.
pub type CaptionerLoader = fn(&std::path::Path, &ModelConfig) -> Result<Box<dyn Captioner>>;

/// Loads a captioner model file, whichever registered family it is; any other model is refused
/// with what it is and which tools run it.
pub fn load_captioner(path: &std::path::Path) -> Result<Box<dyn Captioner>> {
    let cfg = super::read_config(path)?;
    let info = registry::require_task(&cfg.arch, &[registry::Task::Captioner])
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
    match info.builder {
        registry::Builder::Captioner(load) => load(path, &cfg),
        _ => bail!("{}: {} is not a captioner", path.display(), cfg.arch),
    }
}

/// ETS (the 2019 zoo's captioner).
pub(super) fn load_ets_captioner(path: &std::path::Path, cfg: &ModelConfig) -> Result<Box<dyn Captioner>> {
    ets_spec(cfg).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
    Ok(Box::new(load_ets(path)?))
}
