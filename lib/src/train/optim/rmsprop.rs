//! torch.optim.RMSprop (centered or not, with momentum), single-tensor path.

use super::*;

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

    lr_and_vars!();

    fn kind(&self) -> &'static str {
        "rmsprop"
    }

    fn state(&self) -> OptimState {
        let slots: [(&str, &[Option<Tensor>]); 3] = [
            ("square_avg", &self.square_avg),
            ("grad_avg", &self.grad_avg),
            ("momentum_buffer", &self.momentum_buffer),
        ];
        self.params.counted_state(self.kind(), self.cfg.lr, &self.steps, &slots)
    }

    fn load_state(&mut self, state: &OptimState) -> Result<()> {
        let mut slots = [
            ("square_avg", &mut self.square_avg),
            ("grad_avg", &mut self.grad_avg),
            ("momentum_buffer", &mut self.momentum_buffer),
        ];
        if let Some(lr) = self.params.load_counted_state(state, "rmsprop", &mut self.steps, &mut slots)? {
            self.cfg.lr = lr;
        }
        Ok(())
    }
}
