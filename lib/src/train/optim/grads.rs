//! Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_) and accumulation over
//! micro-batches.

use super::*;

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
