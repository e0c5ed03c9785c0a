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
// SGD

/// CPU f32, where the fused updates apply.
fn host_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}

/// torch.optim.SGD's update of one parameter in place (the op's first tensor; the gradient is the
/// second), its momentum buffer beside it: the same arithmetic, rounding for rounding, as the
/// tensor-op route (candle's `x * s` is `x · s + 0`), in one pass.
struct SgdUpdate {
    lr: f32,
    weight_decay: f32,
    momentum: f32,
    /// 1 − dampening.
    keep: f32,
    nesterov: bool,
    /// In: the buffer (None before the first step); out: the updated one (None without momentum).
    buf: std::sync::Mutex<Option<Vec<f32>>>,
}

impl SgdUpdate {
    /// Values `p`, `g` (and buffer `b`, empty without momentum; `first`: b holds no history yet).
    fn chunk(&self, p: &mut [f32], g: &[f32], b: &mut [f32], first: bool) {
        let k = [self.lr, self.weight_decay, self.momentum, self.keep];
        sgd_chunk_simd(p, g, b, k, first, self.nesterov)
    }
}

/// `SgdUpdate::chunk` as branch-free loops per case, compiled for the vector width at hand.
#[inline(always)]
fn sgd_chunk(
    p: &mut [f32],
    g: &[f32],
    b: &mut [f32],
    [lr, wd, momentum, keep]: [f32; 4],
    first: bool,
    nesterov: bool,
) {
    // candle's `x * s` is x · s + 0: kept, so the two routes round alike (−0 included).
    let scaled = |x: f32, s: f32| x * s + 0.0;
    let decayed = |p: f32, g: f32| if wd != 0.0 { g + scaled(p, wd) } else { g };
    if b.is_empty() {
        for (p, &g) in p.iter_mut().zip(g) {
            *p -= scaled(decayed(*p, g), lr);
        }
        return;
    }
    for ((p, &g), b) in p.iter_mut().zip(g).zip(b.iter_mut()) {
        let d = decayed(*p, g);
        *b = if first { d } else { scaled(*b, momentum) + scaled(d, keep) };
        let d = if nesterov { d + scaled(*b, momentum) } else { *b };
        *p -= scaled(d, lr);
    }
}

crate::nn::simd::dispatch_simd!(sgd_chunk_simd, sgd_chunk, (p: &mut [f32], g: &[f32], b: &mut [f32], k: [f32; 4], first: bool, nesterov: bool));

impl candle_core::InplaceOp2 for SgdUpdate {
    fn name(&self) -> &'static str {
        "vidkit-sgd-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        use candle_core::CpuStorage::F32;
        use rayon::prelude::*;
        let (F32(p), F32(g)) = (s1, s2) else { candle_core::bail!("SGD update: f32 tensors only") };
        let (Some((p0, p1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            candle_core::bail!("SGD update: contiguous parameter and gradient only")
        };
        let (p, g) = (&mut p[p0..p1], &g[g0..g1]);
        if p.len() != g.len() {
            candle_core::bail!("SGD update: {} parameter values, {} gradient values", p.len(), g.len())
        }
        let mut buf =
            self.buf.lock().map_err(|_| candle_core::Error::Msg("SGD buffer lock poisoned".into()))?;
        if self.momentum == 0.0 {
            *buf = None;
        }
        let first = self.momentum != 0.0 && buf.is_none();
        if first {
            *buf = Some(vec![0.0; p.len()]);
        }
        let b: &mut [f32] = buf.as_deref_mut().unwrap_or_default();
        if !b.is_empty() && b.len() != p.len() {
            candle_core::bail!("SGD update: momentum buffer of {} values for {} parameters", b.len(), p.len())
        }
        const CHUNK: usize = 1 << 16;
        if b.is_empty() {
            p.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .for_each(|(p, g)| self.chunk(p, g, &mut [], first));
        } else {
            p.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(b.par_chunks_mut(CHUNK))
                .for_each(|((p, g), b)| self.chunk(p, g, b, first));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    pub no_decay: NoDecay,
    /// Per-parameter LR and decay multipliers by name pattern.
    pub param_groups: Vec<ParamGroup>,
    /// The classifier head at 5× the LR, its bias at 10× without decay ([`ParamGroup::fc_lr5`]).
    pub fc_lr5: bool,
    /// Layer-wise LR decay for transformers ([`layer_decay_groups`]); absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_decay: Option<f64>,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            no_decay: NoDecay::None,
            param_groups: Vec::new(),
            fc_lr5: false,
            layer_decay: None,
        }
    }
}

/// torch.optim.SGD: `g += wd·p`; with momentum `buf = g` on the first step, then
/// `buf = μ·buf + (1−dampening)·g`; `g = g + μ·buf` (Nesterov) or `g = buf`; `p -= lr·g`.
/// PaddleVideo's `Momentum` with L2 decay is the same rule.
pub struct Sgd {
    cfg: SgdConfig,
    params: Params,
    bufs: Vec<Option<Momentum>>,
    /// Take `SgdUpdate` where it applies (off in a test, to compare with the tensor-op route).
    fused: bool,
}

/// A parameter's momentum buffer: host memory for CPU f32 parameters (updated in the same pass as
/// the parameter, `SgdUpdate`), a tensor elsewhere and as loaded from a checkpoint.
#[derive(Clone)]
enum Momentum {
    Host(Vec<f32>),
    Tensor(Tensor),
}

impl Sgd {
    pub fn new(vars: Vec<(String, Var)>, cfg: SgdConfig) -> Result<Self> {
        if cfg.nesterov && (cfg.momentum <= 0.0 || cfg.dampening != 0.0) {
            bail!("Nesterov momentum requires a momentum and zero dampening");
        }
        let params =
            Params::new(vars, &cfg.no_decay, &groups(cfg.fc_lr5, cfg.layer_decay, &cfg.param_groups)?)?;
        let bufs = vec![None; params.named.len()];
        Ok(Self { cfg, params, bufs, fused: true })
    }

    /// Replaces the decay rule: `pred(name, var)` true means no weight decay for that parameter.
    pub fn with_no_decay(mut self, pred: impl Fn(&str, &Var) -> bool) -> Self {
        self.params.set_no_decay(&pred);
        self
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = &self.cfg;
        for (i, (_, var)) in self.params.named.iter().enumerate() {
            let Some(mut d) = grad_of(grads, var) else { continue };
            let p = var.as_tensor().detach();
            let wd = self.params.weight_decay(i, c.weight_decay);
            let lr = self.params.lr(i, c.lr);
            if self.fused && host_f32(&p) && host_f32(&d) && p.shape() == d.shape() {
                // One pass over parameter, gradient and buffer instead of ~8 tensor ops.
                let buf = match self.bufs[i].take() {
                    None => None,
                    Some(Momentum::Host(b)) => Some(b),
                    Some(Momentum::Tensor(b)) => Some(b.flatten_all()?.to_vec1::<f32>()?),
                };
                let update = SgdUpdate {
                    lr: lr as f32,
                    weight_decay: wd as f32,
                    momentum: c.momentum as f32,
                    keep: (1.0 - c.dampening) as f32,
                    nesterov: c.nesterov,
                    buf: std::sync::Mutex::new(buf),
                };
                p.inplace_op2(&d.contiguous()?, &update)?;
                let buf = update.buf.into_inner().map_err(|_| anyhow::anyhow!("SGD buffer lock poisoned"))?;
                self.bufs[i] = buf.map(Momentum::Host);
                continue;
            }
            if wd != 0.0 {
                d = d.add(&(&p * wd)?)?;
            }
            if c.momentum != 0.0 {
                let buf = match self.bufs[i].take() {
                    // torch: buf = torch.clone(grad).detach() on the first step, no dampening.
                    None => d.copy()?,
                    Some(Momentum::Tensor(b)) => (b * c.momentum)?.add(&(&d * (1.0 - c.dampening))?)?,
                    Some(Momentum::Host(b)) => {
                        let b = Tensor::from_vec(b, d.shape(), d.device())?;
                        (b * c.momentum)?.add(&(&d * (1.0 - c.dampening))?)?
                    }
                };
                d = if c.nesterov { d.add(&(&buf * c.momentum)?)? } else { buf.clone() };
                self.bufs[i] = Some(Momentum::Tensor(buf));
            }
            apply(var, &p, &(d * lr)?)?;
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    fn vars(&self) -> &[(String, Var)] {
        &self.params.named
    }

    fn kind(&self) -> &'static str {
        "sgd"
    }

    fn state(&self) -> OptimState {
        let mut s = OptimState { kind: self.kind().into(), ..Default::default() };
        s.scalars.insert("lr".into(), self.cfg.lr);
        for (i, (name, _)) in self.params.named.iter().enumerate() {
            match &self.bufs[i] {
                Some(Momentum::Tensor(b)) => {
                    s.tensors.insert(format!("momentum_buffer.{name}"), b.clone());
                }
                Some(Momentum::Host(b)) => {
                    let var = self.params.named[i].1.as_tensor();
                    let b = Tensor::from_slice(b, var.shape(), var.device())
                        .expect("buffer has its parameter's size");
                    s.tensors.insert(format!("momentum_buffer.{name}"), b);
                }
                None => {}
            }
        }
        s
    }

    fn load_state(&mut self, state: &OptimState) -> Result<()> {
        let mut slots = self.params.read_slots(state, "sgd", &["momentum_buffer"])?;
        for (i, slot) in slots.iter_mut().enumerate() {
            self.bufs[i] = slot.remove("momentum_buffer").map(Momentum::Tensor);
        }
        if let Some(lr) = state.scalars.get("lr") {
            self.cfg.lr = *lr;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// AdamW

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Weight decay as L2 regularisation, added to the gradient before the moments
    /// (torch.optim.Adam's `weight_decay`, Paddle's `Adam` with `weight_decay: L2`, as
    /// PaddleVideo's BMN trains) instead of AdamW's decoupled shrinking.
    pub l2: bool,
    pub amsgrad: bool,
    pub no_decay: NoDecay,
    /// Per-parameter LR and decay multipliers by name pattern.
    pub param_groups: Vec<ParamGroup>,
    /// The classifier head at 5× the LR, its bias at 10× without decay ([`ParamGroup::fc_lr5`]).
    pub fc_lr5: bool,
    /// Layer-wise LR decay for transformers ([`layer_decay_groups`]); absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_decay: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            l2: false,
            amsgrad: false,
            no_decay: NoDecay::None,
            param_groups: Vec::new(),
            fc_lr5: false,
            layer_decay: None,
        }
    }
}

/// torch.optim.AdamW: `t += 1`; `p *= 1 − lr·wd` (decoupled); `m = lerp(m, g, 1−β1)`;
/// `v = β2·v + (1−β2)·g²`; `denom = √v / √(1−β2^t) + eps`; `p -= lr/(1−β1^t) · m / denom`
/// (amsgrad: `v̂ = max(v̂, v)` in place of `v` in `denom`).
pub struct AdamW {
    cfg: AdamWConfig,
    params: Params,
    steps: Vec<u64>,
    exp_avg: Vec<Option<Tensor>>,
    exp_avg_sq: Vec<Option<Tensor>>,
    max_exp_avg_sq: Vec<Option<Tensor>>,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        if !(0.0..1.0).contains(&cfg.beta1) || !(0.0..1.0).contains(&cfg.beta2) {
            bail!("AdamW betas must be in [0, 1)");
        }
        let params =
            Params::new(vars, &cfg.no_decay, &groups(cfg.fc_lr5, cfg.layer_decay, &cfg.param_groups)?)?;
        let n = params.named.len();
        Ok(Self {
            cfg,
            params,
            steps: vec![0; n],
            exp_avg: vec![None; n],
            exp_avg_sq: vec![None; n],
            max_exp_avg_sq: vec![None; n],
        })
    }

    /// Replaces the decay rule: `pred(name, var)` true means no weight decay for that parameter.
    pub fn with_no_decay(mut self, pred: impl Fn(&str, &Var) -> bool) -> Self {
        self.params.set_no_decay(&pred);
        self
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = &self.cfg;
        for (i, (_, var)) in self.params.named.iter().enumerate() {
            let Some(g) = grad_of(grads, var) else { continue };
            self.steps[i] += 1;
            let t = self.steps[i] as i32;
            let mut p = var.as_tensor().detach();
            let lr = self.params.lr(i, c.lr);
            let wd = self.params.weight_decay(i, c.weight_decay);
            let g = if wd != 0.0 && c.l2 {
                (g + (&p * wd)?)?
            } else {
                if wd != 0.0 {
                    p = (p * (1.0 - lr * wd))?;
                }
                g
            };
            let m = match self.exp_avg[i].take() {
                Some(m) => m,
                None => g.zeros_like()?,
            };
            // torch's lerp_(g, w) for w < 0.5 computes m + w·(g − m).
            let m = m.add(&(g.sub(&m)? * (1.0 - c.beta1))?)?;
            let v = match self.exp_avg_sq[i].take() {
                Some(v) => v,
                None => g.zeros_like()?,
            };
            let v = (v * c.beta2)?.add(&(g.sqr()? * (1.0 - c.beta2))?)?;
            let bc1 = 1.0 - c.beta1.powi(t);
            let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
            let v_used = if c.amsgrad {
                let mx = match self.max_exp_avg_sq[i].take() {
                    Some(mx) => mx.maximum(&v)?,
                    None => v.clone(),
                };
                self.max_exp_avg_sq[i] = Some(mx.clone());
                mx
            } else {
                v.clone()
            };
            let denom = ((v_used.sqrt()? / bc2_sqrt)? + c.eps)?;
            let update = (m.div(&denom)? * (lr / bc1))?;
            apply(var, &p, &update)?;
            self.exp_avg[i] = Some(m);
            self.exp_avg_sq[i] = Some(v);
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    fn vars(&self) -> &[(String, Var)] {
        &self.params.named
    }

    fn kind(&self) -> &'static str {
        "adamw"
    }

    fn state(&self) -> OptimState {
        let mut s = OptimState { kind: self.kind().into(), ..Default::default() };
        s.scalars.insert("lr".into(), self.cfg.lr);
        for (i, (name, _)) in self.params.named.iter().enumerate() {
            if self.steps[i] > 0 {
                s.scalars.insert(format!("step.{name}"), self.steps[i] as f64);
            }
            for (slot, t) in [
                ("exp_avg", &self.exp_avg[i]),
                ("exp_avg_sq", &self.exp_avg_sq[i]),
                ("max_exp_avg_sq", &self.max_exp_avg_sq[i]),
            ] {
                if let Some(t) = t {
                    s.tensors.insert(format!("{slot}.{name}"), t.clone());
                }
            }
        }
        s
    }

    fn load_state(&mut self, state: &OptimState) -> Result<()> {
        let mut slots =
            self.params.read_slots(state, "adamw", &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"])?;
        for (i, slot) in slots.iter_mut().enumerate() {
            self.steps[i] = self.params.step_count(state, i);
            self.exp_avg[i] = slot.remove("exp_avg");
            self.exp_avg_sq[i] = slot.remove("exp_avg_sq");
            self.max_exp_avg_sq[i] = slot.remove("max_exp_avg_sq");
        }
        if let Some(lr) = state.scalars.get("lr") {
            self.cfg.lr = *lr;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// RMSprop

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmsPropConfig {
    pub lr: f64,
    pub alpha: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub centered: bool,
    pub no_decay: NoDecay,
    /// Per-parameter LR and decay multipliers by name pattern.
    pub param_groups: Vec<ParamGroup>,
    /// The classifier head at 5× the LR, its bias at 10× without decay ([`ParamGroup::fc_lr5`]).
    pub fc_lr5: bool,
    /// Layer-wise LR decay for transformers ([`layer_decay_groups`]); absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_decay: Option<f64>,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            no_decay: NoDecay::None,
            param_groups: Vec::new(),
            fc_lr5: false,
            layer_decay: None,
        }
    }
}

/// torch.optim.RMSprop: `g += wd·p`; `s = α·s + (1−α)·g²`; `avg = √s + eps` (centered:
/// `ḡ = lerp(ḡ, g, 1−α)`, `avg = √(s − ḡ²) + eps`); with momentum `buf = μ·buf + g/avg`,
/// `p -= lr·buf`, else `p -= lr·g/avg`. State starts at zero. (Paddle's RMSProp puts eps inside
/// the square root; this is torch's rule.)
pub struct RmsProp {
    cfg: RmsPropConfig,
    params: Params,
    steps: Vec<u64>,
    square_avg: Vec<Option<Tensor>>,
    grad_avg: Vec<Option<Tensor>>,
    momentum_buffer: Vec<Option<Tensor>>,
}

impl RmsProp {
    pub fn new(vars: Vec<(String, Var)>, cfg: RmsPropConfig) -> Result<Self> {
        let params =
            Params::new(vars, &cfg.no_decay, &groups(cfg.fc_lr5, cfg.layer_decay, &cfg.param_groups)?)?;
        let n = params.named.len();
        Ok(Self {
            cfg,
            params,
            steps: vec![0; n],
            square_avg: vec![None; n],
            grad_avg: vec![None; n],
            momentum_buffer: vec![None; n],
        })
    }

    /// Replaces the decay rule: `pred(name, var)` true means no weight decay for that parameter.
    pub fn with_no_decay(mut self, pred: impl Fn(&str, &Var) -> bool) -> Self {
        self.params.set_no_decay(&pred);
        self
    }
}

impl Optimizer for RmsProp {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = &self.cfg;
        for (i, (_, var)) in self.params.named.iter().enumerate() {
            let Some(mut g) = grad_of(grads, var) else { continue };
            self.steps[i] += 1;
            let p = var.as_tensor().detach();
            let wd = self.params.weight_decay(i, c.weight_decay);
            if wd != 0.0 {
                g = g.add(&(&p * wd)?)?;
            }
            let s = match self.square_avg[i].take() {
                Some(s) => s,
                None => g.zeros_like()?,
            };
            let s = (s * c.alpha)?.add(&(g.sqr()? * (1.0 - c.alpha))?)?;
            let avg = if c.centered {
                let ga = match self.grad_avg[i].take() {
                    Some(ga) => ga,
                    None => g.zeros_like()?,
                };
                let ga = ga.add(&(g.sub(&ga)? * (1.0 - c.alpha))?)?;
                let avg = s.sub(&ga.sqr()?)?.sqrt()?;
                self.grad_avg[i] = Some(ga);
                avg
            } else {
                s.sqrt()?
            };
            let avg = (avg + c.eps)?;
            let lr = self.params.lr(i, c.lr);
            let update = if c.momentum > 0.0 {
                let buf = match self.momentum_buffer[i].take() {
                    Some(b) => b,
                    None => g.zeros_like()?,
                };
                let buf = (buf * c.momentum)?.add(&g.div(&avg)?)?;
                self.momentum_buffer[i] = Some(buf.clone());
                (buf * lr)?
            } else {
                (g.div(&avg)? * lr)?
            };
            apply(var, &p, &update)?;
            self.square_avg[i] = Some(s);
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    fn vars(&self) -> &[(String, Var)] {
        &self.params.named
    }

    fn kind(&self) -> &'static str {
        "rmsprop"
    }

    fn state(&self) -> OptimState {
        let mut s = OptimState { kind: self.kind().into(), ..Default::default() };
        s.scalars.insert("lr".into(), self.cfg.lr);
        for (i, (name, _)) in self.params.named.iter().enumerate() {
            if self.steps[i] > 0 {
                s.scalars.insert(format!("step.{name}"), self.steps[i] as f64);
            }
            for (slot, t) in [
                ("square_avg", &self.square_avg[i]),
                ("grad_avg", &self.grad_avg[i]),
                ("momentum_buffer", &self.momentum_buffer[i]),
            ] {
                if let Some(t) = t {
                    s.tensors.insert(format!("{slot}.{name}"), t.clone());
                }
            }
        }
        s
    }

    fn load_state(&mut self, state: &OptimState) -> Result<()> {
        let mut slots =
            self.params.read_slots(state, "rmsprop", &["square_avg", "grad_avg", "momentum_buffer"])?;
        for (i, slot) in slots.iter_mut().enumerate() {
            self.steps[i] = self.params.step_count(state, i);
            self.square_avg[i] = slot.remove("square_avg");
            self.grad_avg[i] = slot.remove("grad_avg");
            self.momentum_buffer[i] = slot.remove("momentum_buffer");
        }
        if let Some(lr) = state.scalars.get("lr") {
            self.cfg.lr = *lr;
        }
        Ok(())
    }
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

// ---------------------------------------------------------------------------------------------
// Gradient clipping and accumulation

/// torch.nn.utils.clip_grad_norm_ (L2): the global norm over the gradients of `vars` present in
/// `grads`; when it exceeds `max_norm`, every gradient is scaled by `max_norm / (norm + 1e-6)`.
/// Returns the norm before clipping (non-finite when a gradient is; nothing is raised, as
/// torch's default `error_if_nonfinite=False`).
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[(String, Var)], max_norm: f64) -> Result<f64> {
    let mut sum_sq = 0f64;
    let mut present = Vec::new();
    for (_, var) in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            // torch takes each gradient's norm first, then the norm of those norms.
            let n = g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?.sqrt();
            sum_sq += n * n;
            present.push(var);
        }
    }
    let total = sum_sq.sqrt();
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        for var in present {
            let g = grads.get(var.as_tensor()).expect("present").detach();
            grads.insert(var.as_tensor(), (g * coef)?);
        }
    }
    Ok(total)
}

/// Sums gradients over micro-batches and hands back their mean, so `k` micro-batches of size b
/// step like one batch of k·b (for a loss that averages over the batch). Only the gradients of
/// the parameters are kept, not the whole graph's.
pub struct GradAccumulator {
    vars: Vec<(String, Var)>,
    sums: Vec<Option<Tensor>>,
    count: usize,
    k: usize,
}

impl GradAccumulator {
    /// `k` ≥ 1 micro-batches per optimiser step; `k` = 1 passes gradients through.
    pub fn new(vars: &[(String, Var)], k: usize) -> Self {
        Self { vars: vars.to_vec(), sums: vec![None; vars.len()], count: 0, k: k.max(1) }
    }

    /// Adds one micro-batch's gradients; true when `k` have been added and it is time to step.
    pub fn add(&mut self, grads: &GradStore) -> Result<bool> {
        for (i, (_, var)) in self.vars.iter().enumerate() {
            if let Some(g) = grads.get(var.as_tensor()) {
                let g = g.detach();
                self.sums[i] = Some(match self.sums[i].take() {
                    Some(s) => s.add(&g)?,
                    None => g,
                });
            }
        }
        self.count += 1;
        Ok(self.is_ready())
    }

    pub fn is_ready(&self) -> bool {
        self.count >= self.k
    }

    /// Micro-batches added since the last `take`.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The accumulated gradients scaled by 1/n for the n micro-batches added (n = k for a full
    /// group; a shorter last group of an epoch is averaged over its own size, as mmcv's
    /// GradientCumulativeOptimizerHook does), and a reset. None when nothing was added.
    pub fn take(&mut self) -> Result<Option<GradStore>> {
        if self.count == 0 {
            return Ok(None);
        }
        let scale = 1.0 / self.count as f64;
        let mut out = GradStore::default();
        for (i, (_, var)) in self.vars.iter().enumerate() {
            if let Some(s) = self.sums[i].take() {
                let g = if self.count == 1 { s } else { (s * scale)? };
                out.insert(var.as_tensor(), g);
            }
        }
        self.count = 0;
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn var(v: &[f32]) -> Var {
        Var::from_tensor(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap()
    }

    fn values(v: &Var) -> Vec<f32> {
        v.as_tensor().to_vec1::<f32>().unwrap()
    }

    /// Gradients of loss = Σ(p² / 2) + Σ(c·p), i.e. g = p + c, with c = [0.5, −1.5].
    fn grads_for(vars: &[(String, Var)]) -> GradStore {
        let c = Tensor::new(&[0.5f32, -1.5], &Device::Cpu).unwrap();
        let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
        for (_, v) in vars {
            let p = v.as_tensor();
            let l = ((p.sqr().unwrap() * 0.5).unwrap() + p.mul(&c).unwrap()).unwrap().sum_all().unwrap();
            loss = (loss + l).unwrap();
        }
        loss.backward().unwrap()
    }

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() <= 1e-6 * w.abs().max(1.0), "{what}: got {got:?}, want {want:?}");
        }
    }

    /// Two parameters "w" (decayed) and "fc.bias" (no decay by predicate), plus a BN buffer that
    /// must never move; both parameters start at [1, −2].
    fn setup() -> (Vec<(String, Var)>, Var) {
        let buffer = var(&[3.0, 4.0]);
        let vars = vec![
            ("w".to_string(), var(&[1.0, -2.0])),
            ("fc.bias".to_string(), var(&[1.0, -2.0])),
            ("bn.running_mean".to_string(), buffer.clone()),
        ];
        (vars, buffer)
    }

    fn run(opt: &mut dyn Optimizer, vars: &[(String, Var)], steps: usize) {
        for _ in 0..steps {
            let mut g = grads_for(&vars[..2]);
            // A buffer with a gradient (it never gets one in practice) must still be skipped.
            g.insert(vars[2].1.as_tensor(), Tensor::new(&[1f32, 1.], &Device::Cpu).unwrap());
            opt.step(&g).unwrap();
        }
    }

    #[test]
    fn sgd_momentum_weight_decay_matches_torch() {
        let (vars, buffer) = setup();
        let cfg = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.01, ..Default::default() };
        let mut opt = Sgd::new(vars.clone(), cfg).unwrap().with_no_decay(|n, _| n.ends_with("bias"));
        assert_eq!(opt.vars().len(), 2);
        run(&mut opt, &vars, 3);
        // w[0]: p0 = 1, d = g + wd·p = p + 0.5 + 0.01·p.
        // step 1: d = 1.51,       buf = d = 1.51,                  p = 1 − 0.151 = 0.849
        // step 2: d = 1.35749,    buf = 0.9·1.51 + d = 2.71649,     p = 0.849 − 0.271649 = 0.577351
        // step 3: d = 1.08312451, buf = 0.9·2.71649 + d = 3.52796551, p = 0.224554449
        // w[1] (p0 = −2, c = −1.5): d = −3.52, −3.16448, −2.52489952; buf = −3.52, −6.33248,
        // −8.22413152; p = −1.648, −1.014752, −0.192338848.
        // torch.optim.SGD(param groups, lr=.1, momentum=.9, weight_decay=.01) in f32:
        // [0.224554464, −0.192338958] and [0.229000062, −0.200999916].
        assert_close(&values(&vars[0].1), &[0.224554449, -0.192338848], "w");
        // fc.bias without decay: d = g = p + c. step 1: d = 1.5, p = 0.85; step 2: d = 1.35,
        // buf = 2.7, p = 0.58; step 3: d = 1.08, buf = 3.51, p = 0.229.
        // fc.bias[1]: d = −3.5 → p = −1.65; d = −3.15, buf = −6.3 → −1.02; d = −2.52,
        // buf = −8.19 → −0.201.
        assert_close(&values(&vars[1].1), &[0.229, -0.201], "fc.bias");
        assert_eq!(values(&buffer), vec![3.0, 4.0]);
    }

    /// The one-pass CPU update equals the tensor-op route bit for bit over steps (weight decay,
    /// dampening, Nesterov or not, no momentum), and its buffer goes through a saved state and
    /// back into either route.
    #[test]
    fn fused_sgd_equals_the_tensor_ops() {
        let mut rng = crate::rng::Rng::new(5);
        let mut random =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect() };
        let configs = [
            SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.01, ..Default::default() },
            SgdConfig { lr: 0.05, momentum: 0.8, dampening: 0.3, weight_decay: 1e-4, ..Default::default() },
            SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.01, ..Default::default() },
            SgdConfig { lr: 0.2, weight_decay: 0.0, ..Default::default() },
        ];
        for cfg in configs {
            let start = [random(70_000), random(3)];
            let grads: Vec<[Vec<f32>; 2]> = (0..4).map(|_| [random(70_000), random(3)]).collect();
            let vars_of = || -> Vec<(String, Var)> {
                ["a.weight", "b.bias"].iter().zip(&start).map(|(n, v)| (n.to_string(), var(v))).collect()
            };
            let (fused_vars, plain_vars) = (vars_of(), vars_of());
            let mut fused = Sgd::new(fused_vars.clone(), cfg.clone()).unwrap();
            let mut plain = Sgd::new(plain_vars.clone(), cfg.clone()).unwrap();
            plain.fused = false;
            for (step, g) in grads.iter().enumerate() {
                for (opt, vars) in [(&mut fused, &fused_vars), (&mut plain, &plain_vars)] {
                    let mut store = vars[0].1.as_tensor().sum_all().unwrap().backward().unwrap();
                    for ((_, v), g) in vars.iter().zip(g) {
                        store.insert(v.as_tensor(), Tensor::from_slice(g, v.shape(), &Device::Cpu).unwrap());
                    }
                    opt.step(&store).unwrap();
                }
                if step == 1 {
                    // Through a saved state: the fused route reloads its buffer as a tensor.
                    fused.load_state(&fused.state()).unwrap();
                }
                for ((_, f), (_, p)) in fused_vars.iter().zip(&plain_vars) {
                    let same = values(f).iter().zip(values(p)).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{cfg:?}: parameters differ after step {step}");
                }
            }
            let (fs, ps) = (fused.state(), plain.state());
            assert_eq!(fs.tensors.len(), ps.tensors.len(), "{cfg:?}: buffers saved");
            for (name, t) in &fs.tensors {
                let (a, b) = (
                    t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    ps.tensors[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                );
                assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{cfg:?}: buffer {name}");
            }
        }
    }

    /// mmaction2's fc_lr5 on plain SGD: with the same gradient everywhere, the head's weight
    /// moves 5× as far as a backbone weight and its bias 10×; decay_mult scales weight decay.
    #[test]
    fn fc_lr5_and_param_groups_scale_the_update() {
        let names = ["backbone.conv.weight", "backbone.bn.bias", "head.fc.weight", "head.fc.bias"];
        let vars: Vec<(String, Var)> = names.iter().map(|n| (n.to_string(), var(&[1.0, -2.0]))).collect();
        let cfg = OptimizerConfig::Sgd(SgdConfig { lr: 0.01, fc_lr5: true, ..Default::default() });
        assert!(cfg.build(vars.clone()).is_err(), "fc_lr5 needs the model's head");
        let mut opt = cfg.build_for_model(vars.clone(), "head.fc").unwrap();
        // g = p + c = [1.5, −3.5]: a base step of lr·g = [0.015, −0.035].
        run_plain(opt.as_mut(), &vars, 1);
        let step = |i: usize| -> Vec<f64> {
            values(&vars[i].1).iter().zip([1.0, -2.0]).map(|(p, p0)| p0 - *p as f64).collect()
        };
        assert_close(&values(&vars[0].1), &[0.985, -1.965], "backbone weight");
        for (i, mult) in [(1, 1.0), (2, 5.0), (3, 10.0)] {
            let want: Vec<f64> = step(0).iter().map(|s| s * mult).collect();
            let got: Vec<f32> = step(i).iter().map(|s| *s as f32).collect();
            assert_close(&got, &want, names[i]);
        }

        // Explicit groups: the longest matching pattern wins; decay_mult scales weight decay
        // (and fc_lr5's bias group has none).
        let vars: Vec<(String, Var)> = names.iter().map(|n| (n.to_string(), var(&[1.0, -2.0]))).collect();
        let cfg = OptimizerConfig::Sgd(SgdConfig {
            lr: 0.1,
            weight_decay: 0.5,
            param_groups: vec![
                ParamGroup::new("backbone", 0.0, 1.0),
                ParamGroup::new("backbone.bn", 2.0, 0.0),
            ],
            fc_lr5: true,
            ..Default::default()
        });
        let mut opt = cfg.build_for_model(vars.clone(), "head.fc").unwrap();
        run_plain(opt.as_mut(), &vars, 1);
        // conv frozen by lr_mult 0; bn: p − 0.2·g; fc.weight: p − 0.5·(g + 0.5·p);
        // fc.bias: p − 1.0·g (no decay).
        assert_close(&values(&vars[0].1), &[1.0, -2.0], "frozen");
        assert_close(&values(&vars[1].1), &[0.7, -1.3], "bn");
        assert_close(&values(&vars[2].1), &[0.0, 0.25], "fc.weight");
        assert_close(&values(&vars[3].1), &[-0.5, 1.5], "fc.bias");

        // A pattern that matches nothing, or a negative multiplier, is refused.
        let bad = |g: ParamGroup| {
            let c = SgdConfig { param_groups: vec![g], ..Default::default() };
            Sgd::new(vars.clone(), c).err().map(|e| e.to_string()).unwrap_or_default()
        };
        assert!(bad(ParamGroup::new("neck", 2.0, 1.0)).contains("\"neck\" matches no trainable parameter"));
        assert!(bad(ParamGroup::new("head", -1.0, 1.0)).contains("must be finite and ≥ 0"));
        let e = OptimizerConfig::Sgd(SgdConfig { fc_lr5: true, ..Default::default() })
            .build_for_model(vars.clone(), "cls")
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("\"cls.weight\" matches no trainable parameter"), "{e:#}");
    }

    #[test]
    fn sgd_nesterov_matches_torch() {
        let vars = vec![("w".to_string(), var(&[1.0, -2.0]))];
        let cfg = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, ..Default::default() };
        let mut opt = Sgd::new(vars.clone(), cfg).unwrap();
        run_plain(&mut opt, &vars, 3);
        // first element, g = p + 0.5:
        // step 1: g = 1.5, buf = 1.5, d = 1.5 + 1.35 = 2.85, p = 0.715
        // step 2: g = 1.215, buf = 1.35 + 1.215 = 2.565, d = 1.215 + 2.3085 = 3.5235, p = 0.36265
        // step 3: g = 0.86265, buf = 2.3085 + 0.86265 = 3.17115, d = 3.716685, p = −0.0090185
        // second element, g = p − 1.5: −3.5 → buf −3.5, d −6.65, p −1.335; g −2.835,
        // buf −5.985, d −8.2215, p −0.51285; g −2.01285, buf −7.39935, d −8.672265,
        // p 0.3543765. torch.optim.SGD([w], lr=.1, momentum=.9, nesterov=True) in f32:
        // [−0.0090185, 0.3543763].
        assert_close(&values(&vars[0].1), &[-0.0090185, 0.3543765], "w");
    }

    fn run_plain(opt: &mut dyn Optimizer, vars: &[(String, Var)], steps: usize) {
        for _ in 0..steps {
            opt.step(&grads_for(vars)).unwrap();
        }
    }

    #[test]
    fn adamw_matches_torch() {
        let (vars, buffer) = setup();
        let cfg = AdamWConfig { lr: 0.1, weight_decay: 0.1, ..Default::default() };
        let mut opt = AdamW::new(vars.clone(), cfg).unwrap().with_no_decay(|n, _| n.ends_with("bias"));
        run(&mut opt, &vars, 3);
        // w[0]: p0 = 1, g = p + 0.5, β = (0.9, 0.999), eps 1e-8, lr 0.1, wd 0.1.
        // step 1: g = 1.5, p ← 0.99·1; m = 0.15, v = 0.00225; m̂ = 1.5, √v̂ = 1.5 → p = 0.89
        // step 2: g = 1.39, p ← 0.99·0.89 = 0.8811; m = 0.274, v = 0.00417985;
        //         m̂ = 0.274/0.19, √v̂ = √(0.00417985/0.001999) → p = 0.7813706
        // step 3: g = 1.2813706, m = 0.3747371, v = 0.0058176 → p = 0.6743072
        // w[1] (p0 = −2, g = p − 1.5): −1.88, −1.7613061, −1.6439796.
        // fc.bias (no decay): 0.9, 0.8002391, 0.7009029; −1.9, −1.8000860, −1.7003189.
        // torch.optim.AdamW(param groups, lr=.1, weight_decay=.1) in f32: [0.6743072, −1.6439795]
        // and [0.7009028, −1.7003189].
        assert_close(&values(&vars[0].1), &[0.6743072, -1.6439796], "w");
        assert_close(&values(&vars[1].1), &[0.7009029, -1.7003189], "fc.bias");
        assert_eq!(values(&buffer), vec![3.0, 4.0]);
    }

    /// Adam with L2 decay in the gradient: torch.optim.Adam([w], lr=.1, weight_decay=.1), three
    /// steps of g = p + c (+ 0.1·p), in f32: [0.7009405, −1.7003340].
    #[test]
    fn adam_l2_matches_torch() {
        let vars = vec![("w".to_string(), var(&[1.0, -2.0]))];
        let cfg = AdamWConfig { lr: 0.1, weight_decay: 0.1, l2: true, ..Default::default() };
        let mut opt = AdamW::new(vars.clone(), cfg).unwrap();
        run_plain(&mut opt, &vars, 3);
        assert_close(&values(&vars[0].1), &[0.7009405, -1.7003340], "w");
    }

    #[test]
    fn adamw_amsgrad_matches_torch() {
        let vars = vec![("w".to_string(), var(&[1.0, -2.0]))];
        let cfg = AdamWConfig { lr: 1.0, beta2: 0.5, weight_decay: 0.0, amsgrad: true, ..Default::default() };
        let mut opt = AdamW::new(vars.clone(), cfg).unwrap();
        run_plain(&mut opt, &vars, 3);
        // lr 1 and β2 = 0.5 make v shrink after the first step, so the running max matters.
        // w[0]: step 1: g = 1.5, m = 0.15, v = vmax = 1.125; m̂ = 1.5, √(v̂) = 1.5 → p ≈ 0 (6.7e−9)
        // step 2: g = 0.5, m = 0.185, v = 0.6875, vmax = 1.125; m̂ = 0.185/0.19,
        //         √(1.125/0.75) = 1.2247449 → p = −0.7950098
        // step 3: g = −0.2950098, m = 0.1369990, vmax = 1.125 → p = −0.7950098 − 0.1369990/0.271
        //         / (√(1.125/0.875) = 1.1338934) = −1.2408466
        // w[1]: v = 6.125, 6.1875, 4.1664 (the max is 6.1875 at step 3): p = −1, 0.0353039, 0.9441666.
        // torch.optim.AdamW([w], lr=1, betas=(.9, .5), weight_decay=0, amsgrad=True):
        // [−1.2408466, 0.9441667] (without amsgrad: [−1.5905023, 1.1428823]).
        assert_close(&values(&vars[0].1), &[-1.2408466, 0.9441666], "w");
    }

    #[test]
    fn rmsprop_matches_torch() {
        let (vars, buffer) = setup();
        let cfg =
            RmsPropConfig { lr: 0.01, alpha: 0.99, weight_decay: 0.1, momentum: 0.9, ..Default::default() };
        let mut opt = RmsProp::new(vars.clone(), cfg).unwrap().with_no_decay(|n, _| n.ends_with("bias"));
        run(&mut opt, &vars, 3);
        // w[0]: g = p + 0.5 + 0.1·p.
        // step 1: g = 1.6, s = 0.0256, avg = 0.16 + 1e−8, buf = g/avg = 9.9999994, p = 0.9
        // step 2: g = 1.49, s = 0.0475450, avg = 0.2180482, buf = 15.833352, p = 0.7416665
        // step 3: g = 1.3158331, s = 0.0643837, avg = 0.2537395, buf = 19.435781, p = 0.5473087
        // w[1]: g = −3.7, −3.59, −3.4142026 → p = −1.9, −1.7401842, −1.5408426.
        // fc.bias (no decay): 0.9, 0.7415851, 0.5469488; −1.9, −1.7401415, −1.5406593.
        // torch.optim.RMSprop(param groups, lr=.01, weight_decay=.1, momentum=.9) in f32:
        // [0.5473087, −1.5408425] and [0.5469487, −1.5406593].
        assert_close(&values(&vars[0].1), &[0.5473087, -1.5408426], "w");
        assert_close(&values(&vars[1].1), &[0.5469488, -1.5406593], "fc.bias");
        assert_eq!(values(&buffer), vec![3.0, 4.0]);
    }

    #[test]
    fn rmsprop_centered_without_momentum_matches_torch() {
        let vars = vec![("w".to_string(), var(&[1.0, -2.0]))];
        let cfg = RmsPropConfig { lr: 0.01, centered: true, ..Default::default() };
        let mut opt = RmsProp::new(vars.clone(), cfg).unwrap();
        run_plain(&mut opt, &vars, 3);
        // w[0]: step 1: g = 1.5, s = 0.0225, ḡ = 0.015, avg = √(0.0225 − 0.000225) = 0.1492481,
        // p = 1 − 0.01·1.5/0.1492481 = 0.8994962; step 2: g = 1.3994962, s = 0.0418609,
        // avg = 0.2025558, p = 0.8304044; step 3: avg = 0.2395616, p = 0.7748694.
        // w[1]: −1.8994962, −1.8289376, −1.7714257. torch.optim.RMSprop([w], lr=.01,
        // centered=True): [0.7748694, −1.7714256].
        assert_close(&values(&vars[0].1), &[0.7748694, -1.7714257], "w");
    }

    #[test]
    fn optimizer_config_from_json() {
        let c: OptimizerConfig = serde_json::from_str(
            r#"{"name": "Momentum", "lr": 0.02, "momentum": 0.9, "no_decay": "norm_and_bias"}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            OptimizerConfig::Sgd(SgdConfig {
                lr: 0.02,
                momentum: 0.9,
                no_decay: NoDecay::NormAndBias,
                ..Default::default()
            })
        );
        let c: OptimizerConfig =
            serde_json::from_str(r#"{"name": "adamw", "no_decay": {"names": ["bn", "bias"]}}"#).unwrap();
        assert_eq!(
            c,
            OptimizerConfig::AdamW(AdamWConfig {
                no_decay: NoDecay::Names(vec!["bn".into(), "bias".into()]),
                ..Default::default()
            })
        );
        assert!(serde_json::from_str::<OptimizerConfig>(r#"{"name": "sgd", "momentun": 0.9}"#).is_err());
        let grouped: OptimizerConfig = serde_json::from_str(
            r#"{"name": "sgd", "fc_lr5": true, "param_groups": [{"match": "backbone", "lr_mult": 0.1}]}"#,
        )
        .unwrap();
        assert_eq!(
            grouped,
            OptimizerConfig::Sgd(SgdConfig {
                fc_lr5: true,
                param_groups: vec![ParamGroup::new("backbone", 0.1, 1.0)],
                ..Default::default()
            })
        );
        assert!(serde_json::from_str::<OptimizerConfig>(
            r#"{"name": "sgd", "param_groups": [{"match": "a", "lr": 1}]}"#
        )
        .is_err());
        let back: OptimizerConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let opt =
            c.build(vec![("a.weight".into(), var(&[1.0])), ("a.running_var".into(), var(&[1.0]))]).unwrap();
        assert_eq!(opt.kind(), "adamw");
        assert_eq!(opt.vars().len(), 1);
    }

    #[test]
    fn no_decay_norm_and_bias_uses_rank() {
        let w = Var::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        let b = Var::zeros(2, DType::F32, &Device::Cpu).unwrap();
        assert!(!NoDecay::NormAndBias.matches("conv.weight", &w));
        assert!(NoDecay::NormAndBias.matches("bn.weight", &b));
        assert!(NoDecay::Names(vec!["bn".into()]).matches("layer1.0.bn1.weight", &b));
        assert!(!NoDecay::None.matches("bn.weight", &b));
    }

    #[test]
    fn state_round_trip_continues_identically() {
        // Per-group multipliers come from the config, so a resumed run continues exactly too.
        let groups = vec![ParamGroup::new("w", 3.0, 0.5)];
        for cfg in [
            OptimizerConfig::Sgd(SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.01,
                param_groups: groups.clone(),
                ..Default::default()
            }),
            OptimizerConfig::AdamW(AdamWConfig {
                lr: 0.1,
                amsgrad: true,
                param_groups: groups.clone(),
                ..Default::default()
            }),
            OptimizerConfig::RmsProp(RmsPropConfig {
                lr: 0.01,
                momentum: 0.5,
                centered: true,
                param_groups: groups.clone(),
                ..Default::default()
            }),
        ] {
            let a = vec![("w".to_string(), var(&[1.0, -2.0]))];
            let mut opt = cfg.build(a.clone()).unwrap();
            run_plain(opt.as_mut(), &a, 2);
            let state = opt.state();
            let b = vec![("w".to_string(), var(&values(&a[0].1)))];
            let mut resumed = cfg.build(b.clone()).unwrap();
            resumed.load_state(&state).unwrap();
            run_plain(opt.as_mut(), &a, 1);
            run_plain(resumed.as_mut(), &b, 1);
            assert_eq!(values(&a[0].1), values(&b[0].1), "{}", opt.kind());
            // Wrong kind and unknown names are refused.
            let other = if opt.kind() == "sgd" { "adamw" } else { "sgd" };
            let mut wrong = state.clone();
            wrong.kind = other.into();
            assert!(resumed.load_state(&wrong).is_err());
            let mut unknown = state.clone();
            let (k, t) = unknown.tensors.pop_first().unwrap();
            unknown.tensors.insert(k.replace(".w", ".x"), t);
            assert!(resumed.load_state(&unknown).is_err());
        }
    }

    #[test]
    fn clip_grad_norm_matches_torch() {
        let a = var(&[3.0, 0.0]);
        let b = var(&[0.0, 4.0]);
        let vars = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let loss = (a.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap()
            + (b.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
        let mut g = loss.unwrap().backward().unwrap();
        // Gradients [3, 0] and [0, 4]: global norm 5; max_norm 1 scales by 1/(5 + 1e-6).
        let n = clip_grad_norm(&mut g, &vars, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-6);
        let ga = g.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let gb = g.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_close(&ga, &[3.0 / 5.000001, 0.0], "a");
        assert_close(&gb, &[0.0, 4.0 / 5.000001], "b");
        // Under the limit nothing changes.
        let n2 = clip_grad_norm(&mut g, &vars, 10.0).unwrap();
        assert!((n2 - 1.0).abs() < 1e-5);
        assert_close(&g.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), &[0.0, 4.0 / 5.000001], "b");
    }

    #[test]
    fn accumulation_averages_micro_batches() {
        let w = var(&[1.0, 2.0]);
        let vars = vec![("w".to_string(), w.clone())];
        let mut acc = GradAccumulator::new(&vars, 2);
        // loss_i = Σ(x_i · w): gradient x_i; the mean of [1, 3] and [3, 5] is [2, 4].
        for (i, x) in [[1f32, 3.], [3., 5.]].iter().enumerate() {
            let x = Tensor::new(x, &Device::Cpu).unwrap();
            let g = w.as_tensor().mul(&x).unwrap().sum_all().unwrap().backward().unwrap();
            assert_eq!(acc.add(&g).unwrap(), i == 1);
        }
        let g = acc.take().unwrap().unwrap();
        assert_eq!(g.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), vec![2.0, 4.0]);
        assert_eq!(acc.count(), 0);
        assert!(acc.take().unwrap().is_none());
        // Stepping with the mean equals one step on the full batch.
        let mut opt = Sgd::new(vars.clone(), SgdConfig { lr: 0.5, ..Default::default() }).unwrap();
        opt.step(&g).unwrap();
        assert_eq!(values(&w), vec![0.0, 0.0]);
    }

    #[test]
    fn layer_decay_scales_blocks_by_depth_and_leaves_the_head() {
        let names = [
            "backbone.cls_token",
            "backbone.patch_embed.proj.weight",
            "backbone.blocks.0.attn.qkv.weight",
            "backbone.blocks.1.mlp.fc1.weight",
            "backbone.norm.weight",
            "head.fc.weight",
        ];
        let g = layer_decay_groups(&names, 0.5).unwrap();
        let mult = |p: &str| g.iter().find(|g| g.pattern == p).map(|g| g.lr_mult);
        assert_eq!(mult("backbone.blocks.0."), Some(0.25));
        assert_eq!(mult("backbone.blocks.1."), Some(0.5));
        assert_eq!(mult("backbone.cls_token"), Some(0.125));
        assert_eq!(mult("backbone.patch_embed."), Some(0.125));
        assert!(mult("backbone.pos_embed").is_none() && mult("head.fc").is_none());
        // Through the optimiser: the LRs each parameter gets.
        let vars: Vec<(String, Var)> = names
            .iter()
            .map(|n| (n.to_string(), Var::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap()))
            .collect();
        let cfg =
            OptimizerConfig::AdamW(AdamWConfig { lr: 1.0, layer_decay: Some(0.5), ..Default::default() });
        assert!(cfg.build(vars.clone()).is_err(), "needs the model");
        assert!(cfg.build_for_model(vars, "head.fc").is_ok());
        let none = ["head.fc.weight"];
        assert!(layer_decay_groups(&none, 0.5).unwrap_err().to_string().contains("backbone.blocks.N"));
        assert!(layer_decay_groups(&names, 1.5).is_err());
        // MViT's names (no backbone prefix); a 3D CNN's pytorchvideo stages are no transformer.
        let mvit = [
            "patch_embed.patch_model.weight",
            "cls_positional_encoding.pos_embed_spatial",
            "blocks.0.attn.q.weight",
            "blocks.1.mlp.fc1.weight",
            "head.proj.weight",
        ];
        let g = layer_decay_groups(&mvit, 0.5).unwrap();
        let mult = |p: &str| g.iter().find(|g| g.pattern == p).map(|g| g.lr_mult);
        assert_eq!((mult("blocks.0."), mult("blocks.1.")), (Some(0.25), Some(0.5)));
        assert_eq!((mult("patch_embed."), mult("cls_positional_encoding.")), (Some(0.125), Some(0.125)));
        assert!(layer_decay_groups(&["blocks.1.res_blocks.0.branch2.conv_a.weight"], 0.5).is_err());
    }
}
