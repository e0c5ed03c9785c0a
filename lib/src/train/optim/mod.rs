//! Optimisers with PyTorch's update rules (torch.optim.SGD, AdamW, RMSprop, single-tensor CPU
//! path), gradient clipping by global norm and gradient accumulation.
//!
//! candle ships only plain SGD and AdamW; these work over a named list of `Var`s so that state
//! can be saved per parameter name and restored exactly. BatchNorm running statistics live in
//! the same VarMap but are state, not parameters ([`crate::nn::is_buffer`]): they are never
//! stepped and never decayed.

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The trainable parameters of `varmap` by name, in name order, without BatchNorm buffers and
/// without non-float vars.
pub fn trainable_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut vars: Vec<(String, Var)> = data
        .iter()
        .filter(|(name, var)| !crate::nn::is_buffer(name) && var.dtype().is_float())
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Which parameters get no weight decay (buffers never do).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoDecay {
    /// Decay every parameter (PyTorch's default).
    #[default]
    None,
    /// No decay on 1-D parameters: biases and BatchNorm scales/shifts (mmaction2's
    /// `paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.)`, timm's convention).
    NormAndBias,
    /// No decay on parameters whose name contains any of these (PaddleVideo's
    /// `no_weight_decay_name`, e.g. `["bn", "fc.bias"]`).
    Names(Vec<String>),
}

impl NoDecay {
    /// True when `name` must not be decayed.
    pub fn matches(&self, name: &str, var: &Var) -> bool {
        match self {
            NoDecay::None => false,
            NoDecay::NormAndBias => var.rank() <= 1,
            NoDecay::Names(parts) => parts.iter().any(|p| name.contains(p.as_str())),
        }
    }
}

/// A learning-rate and weight-decay multiplier for the parameters whose name contains
/// `match` (mmengine's `paramwise_cfg.custom_keys`, where the longest matching key wins;
/// PaddlePaddle's per-parameter `ParamAttr(learning_rate=...)`). A parameter's LR is the
/// scheduled LR × `lr_mult`, so a schedule keeps the groups' ratios; its weight decay is the
/// optimiser's × `decay_mult` (zero anyway when `no_decay` names it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamGroup {
    #[serde(rename = "match")]
    pub pattern: String,
    #[serde(default = "one")]
    pub lr_mult: f64,
    #[serde(default = "one")]
    pub decay_mult: f64,
}

fn one() -> f64 {
    1.0
}

impl ParamGroup {
    pub fn new(pattern: &str, lr_mult: f64, decay_mult: f64) -> Self {
        Self { pattern: pattern.to_string(), lr_mult, decay_mult }
    }

    /// mmaction2's `paramwise_cfg=dict(fc_lr5=True)` (TSMOptimWrapperConstructor) and
    /// PaddleVideo's TSM/PP-TSM heads (`ParamAttr(learning_rate=5.0)` on the weight,
    /// `learning_rate=10.0, L2Decay(0.0)` on the bias): the classifier `head` (a parameter
    /// prefix such as `head.fc`) learns 5× faster, its bias 10× and without decay.
    pub fn fc_lr5(head: &str) -> [ParamGroup; 2] {
        [
            ParamGroup::new(&format!("{head}.weight"), 5.0, 1.0),
            ParamGroup::new(&format!("{head}.bias"), 10.0, 0.0),
        ]
    }
}

/// An optimiser's state for a checkpoint: per-parameter tensors under `"{slot}.{param}"`
/// (torch's state names: `momentum_buffer`, `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`,
/// `square_avg`, `grad_avg`) and scalars (`lr`, `step.{param}`).
#[derive(Clone, Debug, Default)]
pub struct OptimState {
    pub kind: String,
    pub tensors: BTreeMap<String, Tensor>,
    pub scalars: BTreeMap<String, f64>,
}

/// What the training loop needs from an optimiser: `loss.backward()` then `step(&grads)`.
pub trait Optimizer: Send {
    /// Updates every parameter that has a gradient in `grads`; parameters without one are left
    /// alone, state included (as torch skips `p.grad is None`).
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    /// The parameters this optimiser steps, by name.
    fn vars(&self) -> &[(String, Var)];
    /// `sgd`, `adamw` or `rmsprop`.
    fn kind(&self) -> &'static str;
    fn state(&self) -> OptimState;
    /// Restores a state from [`Optimizer::state`]; refuses another kind, unknown parameter names
    /// and shapes that differ. Parameters absent from `state` start fresh.
    fn load_state(&mut self, state: &OptimState) -> Result<()>;
}

/// Parameters with their decay flags and group multipliers, shared by the optimisers.
struct Params {
    named: Vec<(String, Var)>,
    decay: Vec<bool>,
    lr_mult: Vec<f64>,
    decay_mult: Vec<f64>,
}

impl Params {
    fn new(vars: Vec<(String, Var)>, no_decay: &NoDecay, groups: &[ParamGroup]) -> Result<Self> {
        let named: Vec<(String, Var)> =
            vars.into_iter().filter(|(n, v)| !crate::nn::is_buffer(n) && v.dtype().is_float()).collect();
        let decay = named.iter().map(|(n, v)| !no_decay.matches(n, v)).collect();
        let (mut lr_mult, mut decay_mult) = (vec![1.0; named.len()], vec![1.0; named.len()]);
        for g in groups {
            if !(g.lr_mult.is_finite() && g.lr_mult >= 0.0 && g.decay_mult.is_finite() && g.decay_mult >= 0.0)
            {
                bail!("param_groups {:?}: lr_mult and decay_mult must be finite and ≥ 0", g.pattern);
            }
            if !named.iter().any(|(n, _)| n.contains(g.pattern.as_str())) {
                bail!("param_groups {:?} matches no trainable parameter", g.pattern);
            }
        }
        for (i, (name, _)) in named.iter().enumerate() {
            // The longest matching pattern wins (mmengine's custom_keys); on a tie, the later.
            let mut best: Option<&ParamGroup> = None;
            for g in groups.iter().filter(|g| name.contains(g.pattern.as_str())) {
                if best.is_none_or(|b| g.pattern.len() >= b.pattern.len()) {
                    best = Some(g);
                }
            }
            if let Some(g) = best {
                (lr_mult[i], decay_mult[i]) = (g.lr_mult, g.decay_mult);
            }
        }
        Ok(Self { named, decay, lr_mult, decay_mult })
    }

    fn set_no_decay(&mut self, pred: &dyn Fn(&str, &Var) -> bool) {
        for (i, (n, v)) in self.named.iter().enumerate() {
            self.decay[i] = !pred(n, v);
        }
    }

    fn weight_decay(&self, i: usize, wd: f64) -> f64 {
        if self.decay[i] {
            wd * self.decay_mult[i]
        } else {
            0.0
        }
    }

    /// Parameter `i`'s learning rate when the scheduled one is `lr`.
    fn lr(&self, i: usize, lr: f64) -> f64 {
        lr * self.lr_mult[i]
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.named.iter().position(|(n, _)| n == name)
    }

    /// Splits `"{slot}.{param}"` keys of `state` into per-parameter slots after checking them.
    fn read_slots(
        &self,
        state: &OptimState,
        kind: &str,
        slots: &[&str],
    ) -> Result<Vec<BTreeMap<String, Tensor>>> {
        if state.kind != kind {
            bail!("optimiser state is for {:?}, this optimiser is {kind:?}", state.kind);
        }
        let mut out = vec![BTreeMap::new(); self.named.len()];
        for (key, t) in &state.tensors {
            let Some((slot, name)) = key.split_once('.') else { bail!("bad optimiser state key {key:?}") };
            if !slots.contains(&slot) {
                bail!("optimiser state {key:?}: {kind} has no slot {slot:?}");
            }
            let Some(i) = self.index(name) else { bail!("optimiser state for unknown parameter {name:?}") };
            let var = &self.named[i].1;
            if t.shape() != var.shape() {
                bail!("optimiser state {key:?} has shape {:?}, the parameter {:?}", t.dims(), var.dims());
            }
            out[i].insert(slot.to_string(), t.to_device(var.device())?.to_dtype(var.dtype())?);
        }
        for key in state.scalars.keys() {
            if let Some(name) = key.strip_prefix("step.") {
                if self.index(name).is_none() {
                    bail!("optimiser state for unknown parameter {name:?}");
                }
            }
        }
        Ok(out)
    }

    fn step_count(&self, state: &OptimState, i: usize) -> u64 {
        state.scalars.get(&format!("step.{}", self.named[i].0)).map_or(0, |s| *s as u64)
    }

    /// The state of an optimiser that counts steps per parameter (Adam, RMSprop): its LR, each
    /// stepped parameter's count, and its per-parameter slots by name.
    fn counted_state(
        &self,
        kind: &str,
        lr: f64,
        steps: &[u64],
        slots: &[(&str, &[Option<Tensor>])],
    ) -> OptimState {
        let mut s = OptimState { kind: kind.into(), ..Default::default() };
        s.scalars.insert("lr".into(), lr);
        for (i, (name, _)) in self.named.iter().enumerate() {
            if steps[i] > 0 {
                s.scalars.insert(format!("step.{name}"), steps[i] as f64);
            }
            for (slot, values) in slots {
                if let Some(t) = &values[i] {
                    s.tensors.insert(format!("{slot}.{name}"), t.clone());
                }
            }
        }
        s
    }

    /// Restores what `counted_state` saved into `steps` and `slots`; the saved LR, if any.
    fn load_counted_state(
        &self,
        state: &OptimState,
        kind: &str,
        steps: &mut [u64],
        slots: &mut [(&str, &mut Vec<Option<Tensor>>)],
    ) -> Result<Option<f64>> {
        let names: Vec<&str> = slots.iter().map(|(n, _)| *n).collect();
        let mut saved = self.read_slots(state, kind, &names)?;
        for (i, slot) in saved.iter_mut().enumerate() {
            steps[i] = self.step_count(state, i);
            for (name, values) in slots.iter_mut() {
                values[i] = slot.remove(*name);
            }
        }
        Ok(state.scalars.get("lr").copied())
    }
}

/// The groups an optimiser is built with: `fc_lr5` must have been resolved to the model's head
/// by [`OptimizerConfig::build_for_model`] first.
/// Layer-wise LR decay (BEiT's and MAE's `param_groups_lrd`, MViT's and VideoMAE's fine-tuning
/// recipe) for a transformer of `depth` attention blocks named `backbone.blocks.{i}.`
/// (TimeSformer) or `blocks.{i}.` (MViT): block i at `decay^(depth − i)`, the embeddings (patch,
/// cls, position, time) at `decay^(depth + 1)`, the final norm and the head at 1. As parameter
/// groups (LR multipliers; decay unchanged). CNNs (pytorchvideo's also name stages `blocks.N`)
/// are refused: their blocks hold no attention.
pub fn layer_decay_groups(names: &[&str], decay: f64) -> Result<Vec<ParamGroup>> {
    if !(decay > 0.0 && decay <= 1.0) {
        bail!("layer_decay must be in (0, 1], not {decay}");
    }
    let prefix = if names.iter().any(|n| n.starts_with("backbone.blocks.")) { "backbone." } else { "" };
    let blocks = format!("{prefix}blocks.");
    if !names.iter().any(|n| n.starts_with(&blocks) && n.contains(".attn.")) {
        bail!("layer_decay applies to transformers (attention blocks named backbone.blocks.N or blocks.N); this model has none");
    }
    let depth = (0..).take_while(|i| names.iter().any(|n| n.starts_with(&format!("{blocks}{i}.")))).count();
    let mut g: Vec<ParamGroup> = (0..depth)
        .map(|i| ParamGroup::new(&format!("{blocks}{i}."), decay.powi((depth - i) as i32), 1.0))
        .collect();
    for embedding in ["patch_embed.", "cls_token", "pos_embed", "time_embed", "cls_positional_encoding."] {
        let pattern = format!("{prefix}{embedding}");
        if names.iter().any(|n| n.starts_with(&pattern)) {
            g.push(ParamGroup::new(&pattern, decay.powi(depth as i32 + 1), 1.0));
        }
    }
    Ok(g)
}

fn groups(fc_lr5: bool, layer_decay: Option<f64>, groups: &[ParamGroup]) -> Result<Vec<ParamGroup>> {
    if fc_lr5 || layer_decay.is_some() {
        bail!("fc_lr5 and layer_decay need the model: build the optimiser with build_for_model");
    }
    Ok(groups.to_vec())
}

/// Reads the gradient of `var` as a plain tensor (no graph behind it).
fn grad_of(grads: &GradStore, var: &Var) -> Option<Tensor> {
    grads.get(var.as_tensor()).map(|g| g.detach())
}

/// `p - lr * d`, written back into the var.
fn apply(var: &Var, p: &Tensor, update: &Tensor) -> Result<()> {
    var.set(&p.sub(update)?)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// An optimiser chosen by name in a JSON config: `{"name": "sgd", "lr": 0.01, "momentum": 0.9,
/// "weight_decay": 1e-4, "no_decay": "norm_and_bias", "fc_lr5": true, "param_groups":
/// [{"match": "backbone", "lr_mult": 0.1}]}`. The LR schedule, when there is one,
/// overrides `lr` every iteration through [`Optimizer::set_lr`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name")]
pub enum OptimizerConfig {
    #[serde(rename = "sgd", alias = "SGD", alias = "momentum", alias = "Momentum")]
    Sgd(SgdConfig),
    #[serde(rename = "adamw", alias = "AdamW")]
    AdamW(AdamWConfig),
    #[serde(rename = "rmsprop", alias = "RMSprop", alias = "RMSProp")]
    RmsProp(RmsPropConfig),
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Sgd(SgdConfig { lr: 0.01, momentum: 0.9, weight_decay: 1e-4, ..Default::default() })
    }
}

impl OptimizerConfig {
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd(c) => c.lr,
            OptimizerConfig::AdamW(c) => c.lr,
            OptimizerConfig::RmsProp(c) => c.lr,
        }
    }

    /// Builds the optimiser over `vars` (buffers are dropped here if the caller left them in).
    /// `fc_lr5` is refused here: it needs [`OptimizerConfig::build_for_model`].
    pub fn build(&self, vars: Vec<(String, Var)>) -> Result<Box<dyn Optimizer>> {
        Ok(match self {
            OptimizerConfig::Sgd(c) => Box::new(Sgd::new(vars, c.clone())?),
            OptimizerConfig::AdamW(c) => Box::new(AdamW::new(vars, c.clone())?),
            OptimizerConfig::RmsProp(c) => Box::new(RmsProp::new(vars, c.clone())?),
        })
    }

    /// As [`OptimizerConfig::build`] for a model whose classifier's parameters are
    /// `{head}.weight` and `{head}.bias` ([`crate::model::Model::classifier`]): `fc_lr5` becomes
    /// two parameter groups after the configured ones.
    pub fn build_for_model(&self, vars: Vec<(String, Var)>, head: &str) -> Result<Box<dyn Optimizer>> {
        let mut c = self.clone();
        let (fc_lr5, groups, layer_decay) = match &mut c {
            OptimizerConfig::Sgd(c) => (&mut c.fc_lr5, &mut c.param_groups, &mut c.layer_decay),
            OptimizerConfig::AdamW(c) => (&mut c.fc_lr5, &mut c.param_groups, &mut c.layer_decay),
            OptimizerConfig::RmsProp(c) => (&mut c.fc_lr5, &mut c.param_groups, &mut c.layer_decay),
        };
        if let Some(d) = layer_decay.take() {
            // First, so the configured groups' longer patterns win over them.
            let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
            groups.splice(0..0, layer_decay_groups(&names, d)?);
        }
        if std::mem::take(fc_lr5) {
            groups.extend(ParamGroup::fc_lr5(head));
        }
        c.build(vars).context("optimizer")
    }
}

/// The `Optimizer` methods every optimiser here has alike: its config's LR and its parameters.
macro_rules! lr_and_vars {
    () => {
        fn lr(&self) -> f64 {
            self.cfg.lr
        }

        fn set_lr(&mut self, lr: f64) {
            self.cfg.lr = lr;
        }

        fn vars(&self) -> &[(String, Var)] {
            &self.params.named
        }
    };
}

mod adamw;
mod grads;
mod rmsprop;
mod sgd;

pub use adamw::{AdamW, AdamWConfig};
pub use grads::{clip_grad_norm, GradAccumulator};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use sgd::{Sgd, SgdConfig};

#[cfg(test)]
mod tests;
