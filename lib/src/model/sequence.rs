//! Feature-sequence classifiers, as PaddleVideo defines them: AttentionLSTM, AttentionCluster and
//! NeXtVLAD. They take per-frame features ([T, C] per modality, e.g. TSN features from `vfeat`
//! or YouTube-8M's rgb/audio) and give one score vector per video.
//!
//! References (semantics matched; layer names kept so checkpoints map one to one):
//! - AttentionLSTM: PaddleVideo `paddlevideo/modeling/heads/attention_lstm_head.py`
//!   (per modality: fc → tanh → bidirectional LSTM → dropout → attention fc → softmax over the
//!   valid steps → weighted sum; then fc_out1 → relu → fc_out2 → tanh → fc_logit).
//! - AttentionCluster: PaddlePaddle/models `PaddleCV/PaddleVideo/models/attention_cluster/`
//!   (`shifting_attention.py`: per unit, softmax attention over time, a learnable scale and
//!   shift, L2 normalisation, / √units; then dropout → fc1 → tanh → fc2 → tanh → logistic).
//! - NeXtVLAD: PaddlePaddle/models `PaddleCV/PaddleVideo/models/nextvlad/nextvlad_model.py`
//!   (expansion fc, group attention, soft cluster assignment with batch norm, residuals to the
//!   cluster centres summed over time, intra-normalisation, batch norm; context gating).
//!
//! Padding: videos of different lengths are padded at the end; the mask keeps padded steps out
//! of every sum, softmax and batch statistic, so a video scores the same alone or in a batch
//! (in eval mode).

use super::config::SequenceSpec;
use super::ModelConfig;
use crate::nn::{batch_norm2d, dropout, BatchNorm2d, Lstm};
use crate::rng::Rng;
use candle_core::{bail, Result, Tensor, D};
use candle_nn::{linear, linear_no_bias, Linear, Module, VarBuilder};

/// One modality of a batch: features [B, T, C] padded at the end, the mask [B, T] (1 = valid)
/// and each video's length.
#[derive(Clone, Debug)]
pub struct Padded {
    pub x: Tensor,
    pub mask: Tensor,
    pub lengths: Vec<usize>,
}

impl Padded {
    /// Pads sequences [T_i, C] (T_i ≥ 1) into one batch.
    pub fn new(seqs: &[Tensor]) -> Result<Self> {
        let Some(first) = seqs.first() else { bail!("no sequences to batch") };
        let (dev, c) = (first.device().clone(), first.dim(1)?);
        let lengths: Vec<usize> = seqs.iter().map(|s| s.dim(0)).collect::<Result<_>>()?;
        let t = lengths.iter().copied().max().unwrap_or(0);
        if lengths.contains(&0) {
            bail!("a feature sequence is empty");
        }
        let mut rows = Vec::with_capacity(seqs.len());
        for s in seqs {
            if s.dim(1)? != c {
                bail!("feature widths differ within a modality: {} and {c}", s.dim(1)?);
            }
            let pad = t - s.dim(0)?;
            rows.push(if pad == 0 { s.clone() } else { s.pad_with_zeros(0, 0, pad)? });
        }
        let mask: Vec<f32> =
            lengths.iter().flat_map(|&l| (0..t).map(move |i| if i < l { 1.0 } else { 0.0 })).collect();
        Ok(Self {
            x: Tensor::stack(&rows, 0)?,
            mask: Tensor::from_vec(mask, (seqs.len(), t), &dev)?,
            lengths,
        })
    }
}

/// A batch of videos: one padded tensor per modality, in the config's modality order.
pub type SeqBatch = Vec<Padded>;

/// Softmax over time of `scores` [B, T, K] restricted to the valid steps (`mask` [B, T]).
pub(crate) fn masked_softmax_time(scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.unsqueeze(D::Minus1)?; // [B, T, 1]
                                        // Padded steps get a very low score before the max, so they cannot dominate it.
    let shifted = scores.broadcast_add(&((&m - 1.0)? * 1e9)?)?;
    let max = shifted.max_keepdim(1)?.detach();
    let e = scores.broadcast_sub(&max)?.exp()?.broadcast_mul(&m)?;
    e.broadcast_div(&e.sum_keepdim(1)?)
}

/// Paddle's `l2_normalize`: x / sqrt(max(Σx², 1e-12)) along `dim`.
fn l2_normalize(x: &Tensor, dim: usize) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(dim)?.maximum(1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// BatchNorm over the last axis of [N, C] (Paddle's `batch_norm` on a 2-D input).
fn bn1d(bn: &BatchNorm2d, x: &Tensor, train: bool) -> Result<Tensor> {
    let (n, c) = x.dims2()?;
    bn.forward_t(&x.reshape((n, c, 1, 1))?, train)?.reshape((n, c))
}

#[derive(Clone, Debug)]
struct LstmBranch {
    fc_feature: Linear,
    lstm: Lstm,
    att_fc: Linear,
}

#[derive(Clone, Debug)]
struct ClusterBranch {
    /// The 1×1 convolution giving one attention score per unit and step: [units, C].
    conv: Linear,
    shift_w: Tensor,
    shift_b: Tensor,
    units: usize,
}

#[derive(Clone, Debug)]
struct VladBranch {
    fc_expansion: Linear,
    fc_group_attention: Linear,
    /// [λC, G·K] and [K, λC/G].
    cluster_weights: Tensor,
    cluster_weights2: Tensor,
    bn1: BatchNorm2d,
    bn2: BatchNorm2d,
    groups: usize,
    clusters: usize,
}

#[derive(Clone, Debug)]
enum Body {
    AttentionLstm {
        branches: Vec<LstmBranch>,
        fc_out1: Linear,
        fc_out2: Linear,
    },
    AttentionCluster {
        branches: Vec<ClusterBranch>,
        fc1: Linear,
        fc2: Linear,
    },
    NextVlad {
        branches: Vec<VladBranch>,
        hidden1: Linear,
        hidden1_bn: BatchNorm2d,
        gate1: Linear,
        gate_bn: BatchNorm2d,
        gate2: Linear,
    },
}

#[derive(Clone, Debug)]
pub struct SequenceModel {
    pub config: ModelConfig,
    body: Body,
    fc_logit: Linear,
}

impl SequenceModel {
    pub fn new(config: ModelConfig, vb: VarBuilder) -> Result<Self> {
        let spec: SequenceSpec = match &config.sequence {
            Some(s) => s.clone(),
            None => bail!("{} needs a sequence section", config.arch),
        };
        let dims = &spec.feature_dims;
        let (body, head_in) = match config.arch.as_str() {
            "attention_lstm" => {
                let (e, h) = (spec.embedding_size, spec.lstm_size);
                let branches = (0..dims.len())
                    .map(|i| {
                        Ok(LstmBranch {
                            fc_feature: linear(dims[i], e, vb.pp(format!("fc_feature{i}")))?,
                            lstm: Lstm::new(e, h, true, vb.pp(format!("bi_lstm{i}")))?,
                            att_fc: linear(2 * h, 1, vb.pp(format!("att_fc{i}")))?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let (h1, h2) = (spec.hidden_sizes[0], spec.hidden_sizes[1]);
                let fc_out1 = linear(2 * h * dims.len(), h1, vb.pp("fc_out1"))?;
                let fc_out2 = linear(h1, h2, vb.pp("fc_out2"))?;
                (Body::AttentionLstm { branches, fc_out1, fc_out2 }, h2)
            }
            "attention_cluster" => {
                let branches = (0..dims.len())
                    .map(|i| {
                        let vb = vb.pp(format!("satt{i}"));
                        let units = spec.clusters[i];
                        Ok(ClusterBranch {
                            conv: linear(dims[i], units, vb.pp("conv"))?,
                            shift_w: vb.get(units, "shift_w")?,
                            shift_b: vb.get(units, "shift_b")?,
                            units,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let concat: usize = dims.iter().zip(&spec.clusters).map(|(d, u)| d * u).sum();
                let (h1, h2) = (spec.hidden_sizes[0], spec.hidden_sizes[1]);
                let fc1 = linear(concat, h1, vb.pp("fc1"))?;
                let fc2 = linear(h1, h2, vb.pp("fc2"))?;
                (Body::AttentionCluster { branches, fc1, fc2 }, h2)
            }
            "nextvlad" => {
                let (k, g, x) = (spec.clusters[0], spec.groups, spec.expansion);
                let branches = dims
                    .iter()
                    .zip(&spec.modalities)
                    .map(|(&d, m)| {
                        let vb = vb.pp(m);
                        let width = x * d;
                        Ok(VladBranch {
                            fc_expansion: linear(d, width, vb.pp("fc_expansion"))?,
                            fc_group_attention: linear(width, g, vb.pp("fc_group_attention"))?,
                            cluster_weights: vb.get((width, g * k), "cluster_weights")?,
                            cluster_weights2: vb.get((k, width / g), "cluster_weights2")?,
                            bn1: batch_norm2d(g * k, vb.pp("bn1"))?,
                            bn2: batch_norm2d(k * width / g, vb.pp("bn2"))?,
                            groups: g,
                            clusters: k,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let vlad: usize = dims.iter().map(|d| k * x * d / g).sum();
                let h = spec.hidden_sizes[0];
                let r = h / spec.gating_reduction.max(1);
                let body = Body::NextVlad {
                    branches,
                    hidden1: linear_no_bias(vlad, h, vb.pp("hidden1_fc"))?,
                    hidden1_bn: batch_norm2d(h, vb.pp("hidden1_bn"))?,
                    gate1: linear_no_bias(h, r, vb.pp("gating_fc1"))?,
                    gate_bn: batch_norm2d(r, vb.pp("gating_bn"))?,
                    gate2: linear_no_bias(r, h, vb.pp("gating_fc2"))?,
                };
                (body, h)
            }
            other => bail!("{other} is not a feature-sequence architecture"),
        };
        let fc_logit = linear(head_in, config.num_classes, vb.pp("fc_logit"))?;
        Ok(Self { config, body, fc_logit })
    }

    fn spec(&self) -> &SequenceSpec {
        self.config.sequence.as_ref().expect("checked in new")
    }

    /// Logits [B, classes]. Dropout only when `dropout_rng` is given (training).
    pub fn forward_t(
        &self,
        batch: &[Padded],
        train: bool,
        mut dropout_rng: Option<&mut Rng>,
    ) -> Result<Tensor> {
        let spec = self.spec();
        if batch.len() != spec.modalities.len() {
            bail!(
                "the model takes {} modalities ({}), got {}",
                spec.modalities.len(),
                spec.modalities.join(", "),
                batch.len()
            );
        }
        for ((p, d), m) in batch.iter().zip(&spec.feature_dims).zip(&spec.modalities) {
            if p.x.dim(2)? != *d {
                bail!("modality {m}: the model takes {d}-wide features, got {}", p.x.dim(2)?);
            }
        }
        let p = self.config.dropout as f64;
        let hidden = match &self.body {
            Body::AttentionLstm { branches, fc_out1, fc_out2 } => {
                let mut pooled = Vec::new();
                for (br, inp) in branches.iter().zip(batch) {
                    let embedded = br.fc_feature.forward(&inp.x)?.tanh()?;
                    let out = br.lstm.forward(&embedded, Some(&inp.mask))?;
                    let out = dropout(&out, p, dropout_rng.as_deref_mut())?;
                    let weights = masked_softmax_time(&br.att_fc.forward(&out)?, &inp.mask)?; // [B, T, 1]
                    pooled.push(out.broadcast_mul(&weights)?.sum(1)?);
                }
                let y = fc_out1.forward(&Tensor::cat(&pooled, 1)?)?.relu()?;
                fc_out2.forward(&y)?.tanh()?
            }
            Body::AttentionCluster { branches, fc1, fc2 } => {
                let mut outs = Vec::new();
                for (br, inp) in branches.iter().zip(batch) {
                    let weights = masked_softmax_time(&br.conv.forward(&inp.x)?, &inp.mask)?; // [B, T, U]
                                                                                              // Σ_t w[t, u] x[t, :] for every unit: [B, U, C].
                    let attended = weights.transpose(1, 2)?.contiguous()?.matmul(&inp.x.contiguous()?)?;
                    let shift = attended
                        .broadcast_mul(&br.shift_w.reshape((1, br.units, 1))?)?
                        .broadcast_add(&br.shift_b.reshape((1, br.units, 1))?)?;
                    let normed = (l2_normalize(&shift, 2)? / (br.units as f64).sqrt())?;
                    outs.push(normed.flatten_from(1)?);
                }
                let y = dropout(&Tensor::cat(&outs, 1)?, p, dropout_rng.as_deref_mut())?;
                let y = fc1.forward(&y)?.tanh()?;
                fc2.forward(&y)?.tanh()?
            }
            Body::NextVlad { branches, hidden1, hidden1_bn, gate1, gate_bn, gate2 } => {
                let mut vlads = Vec::new();
                for (br, inp) in branches.iter().zip(batch) {
                    vlads.push(br.forward(inp, train)?);
                }
                let y = dropout(&Tensor::cat(&vlads, 1)?, p, dropout_rng.as_deref_mut())?;
                let act = bn1d(hidden1_bn, &hidden1.forward(&y)?, train)?;
                let gates = bn1d(gate_bn, &gate1.forward(&act)?, train)?.relu()?;
                let gates = candle_nn::ops::sigmoid(&gate2.forward(&gates)?)?;
                (act * gates)?
            }
        };
        self.fc_logit.forward(&hidden)
    }
}

impl VladBranch {
    /// The NeXtVLAD descriptor [B, K·λC/G] of one modality. The valid frames of all videos are
    /// packed together first (Paddle runs on LoD tensors, so batch norm sees only real frames).
    fn forward(&self, inp: &Padded, train: bool) -> Result<Tensor> {
        let (b, t, c) = inp.x.dims3()?;
        let dev = inp.x.device();
        let valid: Vec<u32> = inp
            .lengths
            .iter()
            .enumerate()
            .flat_map(|(v, &l)| (0..l).map(move |i| (v * t + i) as u32))
            .collect();
        let n = valid.len();
        let frames = inp.x.reshape((b * t, c))?.index_select(&Tensor::new(valid.as_slice(), dev)?, 0)?;
        // segment[v, f] = 1 when packed frame f belongs to video v: sums over each video's frames.
        let mut seg = vec![0f32; b * n];
        let mut f = 0;
        for (v, &l) in inp.lengths.iter().enumerate() {
            for _ in 0..l {
                seg[v * n + f] = 1.0;
                f += 1;
            }
        }
        let segment = Tensor::from_vec(seg, (b, n), dev)?;
        let (g, k) = (self.groups, self.clusters);
        let x = self.fc_expansion.forward(&frames)?; // [N, λC]
        let width = x.dim(1)? / g;
        let attention = candle_nn::ops::sigmoid(&self.fc_group_attention.forward(&x)?)?; // [N, G]
        let act = bn1d(&self.bn1, &x.matmul(&self.cluster_weights)?, train)?; // [N, G·K]
        let act = candle_nn::ops::softmax(&act.reshape((n, g, k))?, D::Minus1)?;
        let act = act.broadcast_mul(&attention.unsqueeze(D::Minus1)?)?; // [N, G, K]
                                                                        // a_sum[v, k] = Σ_{frames of v} Σ_g act; a = a_sum ⊗ cluster_weights2: [B, K, λC/G].
        let a_sum = segment.matmul(&act.sum(1)?)?;
        let a = a_sum.unsqueeze(2)?.broadcast_mul(&self.cluster_weights2.unsqueeze(0)?)?;
        // vlad[v] = Σ_{frames of v} actᵀ[K, G] · x[G, λC/G].
        let per_frame = act.transpose(1, 2)?.contiguous()?.matmul(&x.reshape((n, g, width))?)?; // [N, K, w]
        let vlad = segment.matmul(&per_frame.reshape((n, k * width))?)?.reshape((b, k, width))?;
        let vlad = (vlad - a)?;
        // Normalise each cluster's residual, then flatten as [w, K] (Paddle transposes first).
        let vlad = l2_normalize(&vlad.transpose(1, 2)?.contiguous()?, 1)?;
        bn1d(&self.bn2, &vlad.reshape((b, width * k))?, train)
    }
}

/// Input batch of sequences on the CPU from per-video modality lists.
pub fn batch_sequences(videos: &[Vec<Tensor>], modalities: usize) -> Result<SeqBatch> {
    (0..modalities)
        .map(|m| {
            let seqs: Vec<Tensor> = videos
                .iter()
                .map(|v| {
                    v.get(m).cloned().ok_or_else(|| candle_core::Error::Msg(format!("modality {m} missing")))
                })
                .collect::<Result<_>>()?;
            Padded::new(&seqs)
        })
        .collect()
}

/// A sequence model's checkpoint (PyTorch restatement or vidkit names, which are the
/// reference's): strips `module.`/`head.` wrappers, drops BatchNorm's `num_batches_tracked`,
/// flattens AttentionCluster's 1×1 convolution to [units, C], and reads the layer sizes off
/// the weights into the config (`-o` overrides are applied by the caller afterwards). Returns
/// the tensors, the config and how many tensors were dropped.
pub fn adopt_checkpoint(
    arch: &str,
    tensors: Vec<(String, Tensor)>,
) -> anyhow::Result<(std::collections::HashMap<String, Tensor>, ModelConfig, usize)> {
    use anyhow::Context;
    let mut out = std::collections::HashMap::new();
    let mut dropped = 0;
    for (name, t) in tensors {
        let mut n = name.as_str();
        while let Some(rest) = n.strip_prefix("module.").or_else(|| n.strip_prefix("head.")) {
            n = rest;
        }
        if n.ends_with("num_batches_tracked") {
            dropped += 1;
            continue;
        }
        let t = if n.ends_with(".conv.weight") && t.rank() == 4 { t.flatten_from(1)? } else { t };
        if out.insert(n.to_string(), t).is_some() {
            anyhow::bail!("two checkpoint tensors map to {n:?}");
        }
    }
    let mut config = ModelConfig::defaults(arch);
    let mut spec = config.sequence.clone().context("not a sequence architecture")?;
    let dim = |name: &str, axis: usize| out.get(name).and_then(|t: &Tensor| t.dims().get(axis).copied());
    if let Some(c) = dim("fc_logit.weight", 0) {
        config.num_classes = c;
    }
    let count = |f: &dyn Fn(usize) -> String| (0..).take_while(|i| out.contains_key(&f(*i))).count();
    match arch {
        "attention_lstm" => {
            let n = count(&|i| format!("fc_feature{i}.weight"));
            if n > 0 {
                spec.feature_dims = (0..n).filter_map(|i| dim(&format!("fc_feature{i}.weight"), 1)).collect();
                spec.modalities = default_modalities(n);
            }
            spec.embedding_size = dim("fc_feature0.weight", 0).unwrap_or(spec.embedding_size);
            spec.lstm_size = dim("bi_lstm0.weight_hh_l0", 1).unwrap_or(spec.lstm_size);
            if let (Some(a), Some(b)) = (dim("fc_out1.weight", 0), dim("fc_out2.weight", 0)) {
                spec.hidden_sizes = vec![a, b];
            }
        }
        "attention_cluster" => {
            let n = count(&|i| format!("satt{i}.conv.weight"));
            if n > 0 {
                spec.feature_dims = (0..n).filter_map(|i| dim(&format!("satt{i}.conv.weight"), 1)).collect();
                spec.clusters = (0..n).filter_map(|i| dim(&format!("satt{i}.conv.weight"), 0)).collect();
                spec.modalities = default_modalities(n);
            }
            if let (Some(a), Some(b)) = (dim("fc1.weight", 0), dim("fc2.weight", 0)) {
                spec.hidden_sizes = vec![a, b];
            }
        }
        "nextvlad" => {
            // Modalities are the prefixes of `<m>.fc_expansion.weight`, rgb/video first.
            let mut mods: Vec<String> = out
                .keys()
                .filter_map(|k| k.strip_suffix(".fc_expansion.weight").map(str::to_string))
                .collect();
            mods.sort_by_key(|m| (!["rgb", "video"].contains(&m.as_str()), m.clone()));
            if let Some(first) = mods.first().cloned() {
                spec.feature_dims =
                    mods.iter().filter_map(|m| dim(&format!("{m}.fc_expansion.weight"), 1)).collect();
                let wide = dim(&format!("{first}.fc_expansion.weight"), 0).unwrap_or(0);
                let d = spec.feature_dims[0].max(1);
                spec.expansion = wide / d;
                if let Some(k) = dim(&format!("{first}.cluster_weights2"), 0) {
                    spec.clusters = vec![k];
                }
                if let Some(w) = dim(&format!("{first}.cluster_weights2"), 1) {
                    spec.groups = wide / w.max(1);
                }
                spec.modalities = mods;
            }
            if let Some(h) = dim("hidden1_fc.weight", 0) {
                spec.hidden_sizes = vec![h];
                if let Some(r) = dim("gating_fc1.weight", 0) {
                    spec.gating_reduction = h / r.max(1);
                }
            }
        }
        _ => {}
    }
    config.sequence = Some(spec);
    Ok((out, config, dropped))
}

/// `rgb`, then `audio`, then `m2`, ... (the YouTube-8M order PaddleVideo uses).
fn default_modalities(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i {
            0 => "rgb".to_string(),
            1 => "audio".to_string(),
            i => format!("m{i}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn small(arch: &str) -> (ModelConfig, candle_nn::VarMap, SequenceModel) {
        let mut cfg = ModelConfig::defaults(arch);
        cfg.num_classes = 5;
        let spec = cfg.sequence.as_mut().expect("sequence arch");
        spec.modalities = vec!["rgb".into(), "audio".into()];
        spec.feature_dims = vec![8, 4];
        spec.embedding_size = 6;
        spec.lstm_size = 3;
        spec.hidden_sizes = if arch == "nextvlad" { vec![8] } else { vec![12, 6] };
        spec.clusters = vec![3, 2];
        spec.groups = 2;
        spec.gating_reduction = 2;
        cfg.validate().expect("valid config");
        let vm = candle_nn::VarMap::new();
        let model = SequenceModel::new(
            cfg.clone(),
            VarBuilder::from_varmap(&vm, candle_core::DType::F32, &Device::Cpu),
        )
        .expect("model");
        crate::model::init_weights(&vm, 3).expect("init");
        (cfg, vm, model)
    }

    fn videos(lengths: &[usize]) -> Result<Vec<Vec<Tensor>>> {
        lengths
            .iter()
            .map(|&l| {
                Ok(vec![
                    crate::rng::randn(0f32, 1., (l, 8), &Device::Cpu)?,
                    crate::rng::randn(0f32, 1., (l, 4), &Device::Cpu)?,
                ])
            })
            .collect()
    }

    /// In eval mode a video scores the same alone as padded in a batch with longer ones.
    #[test]
    fn padding_does_not_change_scores() -> Result<()> {
        for arch in ["attention_lstm", "attention_cluster", "nextvlad"] {
            let (_, _, model) = small(arch);
            let vids = videos(&[6, 2, 4])?;
            let together = model.forward_t(&batch_sequences(&vids, 2)?, false, None)?;
            for (i, v) in vids.iter().enumerate() {
                let alone = model.forward_t(&batch_sequences(std::slice::from_ref(v), 2)?, false, None)?;
                let d = (together.get(i)? - alone.get(0)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(d < 1e-5, "{arch}: video {i} changes by {d} when batched");
            }
        }
        Ok(())
    }

    /// Training reaches every parameter (DESIGN.md §6: some candle ops silently drop gradients).
    #[test]
    fn every_parameter_gets_a_gradient() -> Result<()> {
        for arch in ["attention_lstm", "attention_cluster", "nextvlad"] {
            let (_, vm, model) = small(arch);
            let batch = batch_sequences(&videos(&[5, 3, 4, 2])?, 2)?;
            let mut rng = Rng::new(1);
            let y = model.forward_t(&batch, true, Some(&mut rng))?;
            let grads = (y * crate::rng::randn(0f32, 1., (4, 5), &Device::Cpu)?)?.sum_all()?.backward()?;
            for (name, var) in vm.data().lock().expect("varmap").iter() {
                // A bias added to every step's attention score cancels in the softmax over
                // time: its true gradient is zero (only rounding noise remains).
                let cancels =
                    name.ends_with("conv.bias") || (name.starts_with("att_fc") && name.ends_with(".bias"));
                if crate::nn::is_buffer(name) || cancels {
                    continue;
                }
                let g =
                    grads.get(var.as_tensor()).map(|g| g.abs()?.sum_all()?.to_scalar::<f32>()).transpose()?;
                assert!(g.is_some_and(|g| g > 0.0), "{arch}: {name} gets no gradient");
            }
        }
        Ok(())
    }

    #[test]
    fn masked_softmax_ignores_padding() -> Result<()> {
        let dev = Device::Cpu;
        let s = Tensor::new(&[[[1f32], [2.], [30.]]], &dev)?;
        let m = Tensor::new(&[[1f32, 1., 0.]], &dev)?;
        let w = masked_softmax_time(&s, &m)?.flatten_all()?.to_vec1::<f32>()?;
        let e = (1f32.exp(), 2f32.exp());
        let want = [e.0 / (e.0 + e.1), e.1 / (e.0 + e.1), 0.0];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{w:?} vs {want:?}");
        }
        Ok(())
    }
}
