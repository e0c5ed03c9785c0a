//! Classification losses with PyTorch's semantics, built only from candle ops that carry
//! gradients (`candle_nn::ops::softmax_last_dim` has no backward and would silently freeze the
//! model behind it; see DESIGN.md §6).

use anyhow::{bail, Result};
use candle_core::{DType, Tensor, D};

/// Numerically stable `log_softmax` along `dim`: `x − max − log Σ exp(x − max)`. The max is a
/// constant shift (detached); the result's gradient is exact.
pub fn log_softmax<Dim: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dim) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(dim)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(dim)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// `softmax` with a gradient, as `exp(log_softmax)`.
pub fn softmax<Dim: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dim) -> candle_core::Result<Tensor> {
    log_softmax(x, dim)?.exp()
}

/// What a batch of logits [B, C] is scored against.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    /// Class indices [B] (any integer dtype).
    Labels(&'a Tensor),
    /// Probabilities [B, C] (each row sums to 1: one-hot, mixed by Mixup/CutMix).
    Soft(&'a Tensor),
}

/// One-hot rows [B, C] in `dtype` for class indices `labels` [B]; refuses indices ≥ C.
pub fn one_hot(labels: &Tensor, num_classes: usize, dtype: DType) -> Result<Tensor> {
    if labels.rank() != 1 {
        bail!("labels must be a vector [B], got shape {:?}", labels.dims());
    }
    let labels = labels.to_dtype(DType::U32)?;
    if labels.dim(0)? > 0 {
        let max = labels.max(0)?.to_scalar::<u32>()? as usize;
        if max >= num_classes {
            bail!("label {max} out of range for {num_classes} classes");
        }
    }
    let classes = Tensor::arange(0u32, num_classes as u32, labels.device())?.unsqueeze(0)?;
    Ok(labels.unsqueeze(1)?.broadcast_eq(&classes)?.to_dtype(dtype)?)
}

/// torch `F.cross_entropy(logits, targets, label_smoothing=ε)`, mean over the batch. With hard
/// labels: `(1−ε)·NLL + ε·mean_c(−log p_c)`; with soft targets q: `−Σ_c ((1−ε)·q_c + ε/C)·log p_c`
/// (the same rule, so a one-hot q gives the hard-label loss). Logits [B, C].
pub fn cross_entropy(logits: &Tensor, targets: Targets, label_smoothing: f64) -> Result<Tensor> {
    if logits.rank() != 2 {
        bail!("logits must be [B, C], got shape {:?}", logits.dims());
    }
    if !(0.0..=1.0).contains(&label_smoothing) {
        bail!("label smoothing must be in [0, 1], not {label_smoothing}");
    }
    let (b, c) = logits.dims2()?;
    let q = match targets {
        Targets::Labels(l) => {
            if l.dims() != [b] {
                bail!("{} labels for {b} logit rows", l.elem_count());
            }
            one_hot(l, c, logits.dtype())?
        }
        Targets::Soft(q) => {
            if q.dims() != [b, c] {
                bail!("soft targets have shape {:?}, the logits {:?}", q.dims(), logits.dims());
            }
            q.to_dtype(logits.dtype())?
        }
    };
    let q =
        if label_smoothing > 0.0 { q.affine(1.0 - label_smoothing, label_smoothing / c as f64)? } else { q };
    let logp = log_softmax(logits, D::Minus1)?;
    Ok((q.mul(&logp)?.sum(D::Minus1)?.mean(0)? * -1.0)?)
}

/// torch `F.binary_cross_entropy_with_logits(x, y)` (mean over all elements) for multi-label
/// targets y ∈ [0, 1] of the logits' shape, in the stable form
/// `max(x, 0) − x·y + log(1 + exp(−|x|))`.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if logits.dims() != targets.dims() {
        bail!("targets have shape {:?}, the logits {:?}", targets.dims(), logits.dims());
    }
    let y = targets.to_dtype(logits.dtype())?;
    let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    let loss = ((logits.relu()? - logits.mul(&y)?)? + softplus)?;
    Ok(loss.mean_all()?)
}

/// torch `F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)`:
/// `Σ exp(log_q)·(log_q − log_p) / B`, for distillation between two models' log-probabilities
/// [B, C] (DML uses it both ways; detach the side that must not learn).
pub fn kl_div(log_p: &Tensor, log_q: &Tensor) -> Result<Tensor> {
    if log_p.dims() != log_q.dims() || log_p.rank() != 2 {
        bail!("kl_div wants two [B, C] tensors, got {:?} and {:?}", log_p.dims(), log_q.dims());
    }
    let b = log_p.dim(0)? as f64;
    Ok((log_q.exp()?.mul(&log_q.sub(log_p)?)?.sum_all()? / b)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn logits() -> Var {
        Var::from_tensor(&Tensor::new(&[[1f64, 2., 3.], [1., -1., 0.]], &Device::Cpu).unwrap()).unwrap()
    }

    fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn cross_entropy_with_label_smoothing_matches_torch() {
        let x = logits();
        let y = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        // Both rows have log-sum-exp 3.4076060 after their own max: log p = [−2.4076, −1.4076,
        // −0.4076] and [−0.4076, −2.4076, −1.4076]. NLL = 0.4076060 for both rows; the mean
        // over classes of −log p is 1.4076060, so with ε = .1:
        // 0.9·0.4076060 + 0.1·1.4076060 = 0.5076060
        // (torch F.cross_entropy(x, y, label_smoothing=.1) = 0.5076059644443804).
        let l = cross_entropy(x.as_tensor(), Targets::Labels(&y), 0.1).unwrap();
        assert!((scalar(&l) - 0.5076059644443804).abs() < 1e-12);
        let l0 = cross_entropy(x.as_tensor(), Targets::Labels(&y), 0.0).unwrap();
        assert!((scalar(&l0) - 0.4076059644443804).abs() < 1e-12);
        // One-hot soft targets give the hard-label loss; a real soft target matches torch.
        let q = one_hot(&y, 3, DType::F64).unwrap();
        let ls = cross_entropy(x.as_tensor(), Targets::Soft(&q), 0.1).unwrap();
        assert!((scalar(&ls) - 0.5076059644443804).abs() < 1e-12);
        let soft = Tensor::new(&[[0.25f64, 0.25, 0.5], [0.7, 0.0, 0.3]], &Device::Cpu).unwrap();
        let l2 = cross_entropy(x.as_tensor(), Targets::Soft(&soft), 0.1).unwrap();
        assert!((scalar(&l2) - 0.9801059644443806).abs() < 1e-12);
        assert!(cross_entropy(
            x.as_tensor(),
            Targets::Labels(&Tensor::new(&[3u32, 0], &Device::Cpu).unwrap()),
            0.0
        )
        .is_err());
    }

    #[test]
    fn cross_entropy_gradient_matches_closed_form_and_finite_differences() {
        let x = logits();
        let y = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        let eps = 0.1;
        let loss = cross_entropy(x.as_tensor(), Targets::Labels(&y), eps).unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(x.as_tensor()).expect("logits get a gradient").to_vec2::<f64>().unwrap();
        // Closed form: (softmax(x) − ((1−ε)·onehot + ε/C)) / B.
        let p = softmax(x.as_tensor(), 1).unwrap().to_vec2::<f64>().unwrap();
        let labels = [2usize, 0];
        for i in 0..2 {
            for j in 0..3 {
                let q = if j == labels[i] { 1.0 - eps } else { 0.0 } + eps / 3.0;
                assert!((g[i][j] - (p[i][j] - q) / 2.0).abs() < 1e-12, "closed form at {i},{j}");
            }
        }
        // torch's x.grad: [[0.0283486, 0.1056976, −0.1340462], [−0.1340462, 0.0283486, 0.1056976]]
        assert!((g[0][2] + 0.1340461888).abs() < 1e-9 && (g[1][2] - 0.1056975689).abs() < 1e-9);
        // Central differences in f64.
        let base = x.as_tensor().to_vec2::<f64>().unwrap();
        let h = 1e-6;
        for i in 0..2 {
            for j in 0..3 {
                let at = |d: f64| {
                    let mut v = base.clone();
                    v[i][j] += d;
                    let t = Tensor::new(v, &Device::Cpu).unwrap();
                    scalar(&cross_entropy(&t, Targets::Labels(&y), eps).unwrap())
                };
                let fd = (at(h) - at(-h)) / (2.0 * h);
                assert!((fd - g[i][j]).abs() < 1e-8, "finite difference at {i},{j}: {fd} vs {}", g[i][j]);
            }
        }
    }

    #[test]
    fn log_softmax_is_stable_for_large_logits() {
        let x = Tensor::new(&[[1000f32, 0., -1000.]], &Device::Cpu).unwrap();
        let l = log_softmax(&x, 1).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(l[0][0], 0.0);
        assert_eq!(l[0][1], -1000.0);
        assert!(l[0].iter().all(|v| v.is_finite()));
    }

    #[test]
    fn bce_with_logits_matches_torch_and_its_gradient_is_sigmoid_minus_target() {
        let z = Var::from_tensor(&Tensor::new(&[[2f64, -1.], [0., 30.]], &Device::Cpu).unwrap()).unwrap();
        let t = Tensor::new(&[[1f64, 0.], [0.5, 1.]], &Device::Cpu).unwrap();
        // Elements: log(1+e^−2) = 0.126928, log(1+e^−1) = 0.313262, log 2 = 0.693147,
        // log(1+e^−30) ≈ 9.4e−14; mean 0.2833342 (torch: 0.28333421978030854).
        let l = bce_with_logits(z.as_tensor(), &t).unwrap();
        assert!((scalar(&l) - 0.28333421978030854).abs() < 1e-12);
        let g = l.backward().unwrap().get(z.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        let zs = [[2f64, -1.], [0., 30.]];
        let ts = [[1f64, 0.], [0.5, 1.]];
        for i in 0..2 {
            for j in 0..2 {
                let sig = 1.0 / (1.0 + (-zs[i][j]).exp());
                assert!((g[i][j] - (sig - ts[i][j]) / 4.0).abs() < 1e-12, "{i},{j}: {}", g[i][j]);
            }
        }
    }

    #[test]
    fn kl_div_matches_torch() {
        let a = log_softmax(&Tensor::new(&[[1f64, 2., 3.]], &Device::Cpu).unwrap(), 1).unwrap();
        let b = log_softmax(&Tensor::new(&[[0f64, 0., 1.]], &Device::Cpu).unwrap(), 1).unwrap();
        // torch F.kl_div(log_softmax(a), log_softmax(b), "batchmean", log_target=True)
        assert!((scalar(&kl_div(&a, &b).unwrap()) - 0.0681028081294148).abs() < 1e-12);
        assert!(scalar(&kl_div(&a, &a).unwrap()).abs() < 1e-15);
    }
}
