//! torch.optim.SGD (momentum, dampening, Nesterov, L2 decay), with a fused in-place update on
//! CPU f32.

use super::*;

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
    pub(super) fused: bool,
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

    lr_and_vars!();

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
