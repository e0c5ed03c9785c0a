//! torch.optim.AdamW, and Adam with L2 decay (`l2`; amsgrad too), single-tensor path.

use super::*;

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

    lr_and_vars!();

    fn kind(&self) -> &'static str {
        "adamw"
    }

    fn state(&self) -> OptimState {
        let slots: [(&str, &[Option<Tensor>]); 3] = [
            ("exp_avg", &self.exp_avg),
            ("exp_avg_sq", &self.exp_avg_sq),
            ("max_exp_avg_sq", &self.max_exp_avg_sq),
        ];
        self.params.counted_state(self.kind(), self.cfg.lr, &self.steps, &slots)
    }

    fn load_state(&mut self, state: &OptimState) -> Result<()> {
        let mut slots = [
            ("exp_avg", &mut self.exp_avg),
            ("exp_avg_sq", &mut self.exp_avg_sq),
            ("max_exp_avg_sq", &mut self.max_exp_avg_sq),
        ];
        if let Some(lr) = self.params.load_counted_state(state, "adamw", &mut self.steps, &mut slots)? {
            self.cfg.lr = lr;
        }
        Ok(())
    }
}
