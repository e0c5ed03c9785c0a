//! ETS, the 2019 PaddlePaddle video zoo's captioner ("Describing Videos by Exploiting Temporal
//! Structure", Yao et al. 2015), as PaddlePaddle/models release/1.8 builds it
//! (`PaddleCV/video/models/ets/ets_net.py`, `configs/ets.yaml`):
//!
//! - encoder over a video's per-frame features [T, F]: fc → tanh, two GRUs (fluid
//!   `dynamic_gru`, forward and reversed, each after its own bias-free fc to 3H), concatenated to
//!   [T, 2H]; a bias-free fc to one score per step, softmax over the sequence, gives the
//!   weighted sum that boots the decoder (fc → tanh); a bias-free fc projects the sequence for
//!   the decoder's attention;
//! - decoder: a GRU cell (fluid `gru_unit`) whose input is a bias-free fc of [word embedding,
//!   attention context], then fc → softmax over the vocabulary.
//!
//! fluid's GRUs: gates ordered update, reset, candidate in the 3H axis; the recurrent weight
//! [H, 3H] is used as its flat buffer split in two — the first 2H·H values as [H, 2H] (update and
//! reset), the last H·H as [H, H] (candidate, applied to reset ⊙ h); h' = u ⊙ (c − h) + h
//! (`origin_mode` false); the bias [1, 3H] is added to the input.
//!
//! The attention (`simple_attention`) scores each step as fc₁(encoder_proj_t + fc(state)) with
//! no nonlinearity between the sum and the scoring fc, so the state's term is the same at every
//! step and cancels in the softmax: the context, and its share of the GRU input, is the same at
//! every decoding step. It is computed once per video here (the state projection's weight is
//! kept, imported and saved, and receives a zero gradient, as in the reference); the PyTorch
//! restatement computes the reference's ops literally and the parity test holds us to it.

use super::ModelConfig;
use crate::caption::{beam_search, BeamConfig, Hypothesis, Vocabulary};
use crate::model::Padded;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// ETS's sizes and decoding settings (`configs/ets.yaml` MODEL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtsSpec {
    pub feat_size: usize,
    pub fc_dim: usize,
    pub gru_hidden_dim: usize,
    pub decoder_size: usize,
    pub word_emb_dim: usize,
    /// Decoding steps at most (the start word not counted).
    pub max_length: usize,
    pub beam_size: usize,
}

impl Default for EtsSpec {
    fn default() -> Self {
        Self {
            feat_size: 2048,
            fc_dim: 1024,
            gru_hidden_dim: 512,
            decoder_size: 512,
            word_emb_dim: 512,
            max_length: 80,
            beam_size: 3,
        }
    }
}

impl EtsSpec {
    pub fn validate(&self) -> Result<()> {
        let sizes = [self.feat_size, self.fc_dim, self.gru_hidden_dim, self.decoder_size, self.word_emb_dim];
        if sizes.contains(&0) || self.max_length == 0 || self.beam_size == 0 {
            bail!("ETS sizes, max_length and beam_size must be positive");
        }
        Ok(())
    }
}

/// The config key (in `ModelConfig::extra`) that holds an ETS model file's `EtsSpec`; the
/// vocabulary is the config's `labels` (word ids in order).
pub const ETS_KEY: &str = "ets";

/// An ETS config for `spec` and `vocab`.
pub fn ets_config(spec: &EtsSpec, vocab: &Vocabulary) -> Result<ModelConfig> {
    spec.validate()?;
    let mut cfg = ModelConfig::defaults("ets");
    cfg.num_classes = vocab.len();
    cfg.labels = Some(vocab.words().to_vec());
    cfg.extra.insert(ETS_KEY.into(), serde_json::to_value(spec)?);
    Ok(cfg)
}

/// The spec and vocabulary of a config, or why it is not an ETS config.
pub fn ets_spec(cfg: &ModelConfig) -> Result<(EtsSpec, Vocabulary)> {
    if cfg.arch != "ets" {
        bail!("a {} model, not ets", cfg.arch);
    }
    let v = cfg.extra.get(ETS_KEY).cloned().unwrap_or(serde_json::Value::Object(Default::default()));
    let spec: EtsSpec = serde_json::from_value(v)?;
    spec.validate()?;
    let Some(words) = cfg.labels.clone() else { bail!("the ETS model file has no vocabulary") };
    let vocab = Vocabulary::new(words)?;
    if vocab.len() < spec.beam_size {
        bail!("{} words cannot fill a beam of {}", vocab.len(), spec.beam_size);
    }
    Ok((spec, vocab))
}

/// A fluid GRU's recurrent weight [H, 3H] as its two GEMM operands: [H, 2H] and [H, H].
fn split_gru_weight(w: &Tensor, h: usize) -> Result<(Tensor, Tensor)> {
    let flat = w.flatten_all()?;
    Ok((
        flat.narrow(0, 0, 2 * h * h)?.reshape((h, 2 * h))?,
        flat.narrow(0, 2 * h * h, h * h)?.reshape((h, h))?,
    ))
}

/// One GRU step as fluid's `gru_unit` (and each step of `dynamic_gru`): `g` the input with the
/// bias added [B, 3H], `h` [B, H].
fn gru_step(g: &Tensor, h: &Tensor, gate_w: &Tensor, state_w: &Tensor) -> Result<Tensor> {
    let hd = h.dim(1)?;
    let ur = candle_nn::ops::sigmoid(&(g.narrow(1, 0, 2 * hd)? + h.matmul(gate_w)?)?)?;
    let (u, r) = (ur.narrow(1, 0, hd)?, ur.narrow(1, hd, hd)?);
    let c = (g.narrow(1, 2 * hd, hd)? + (r * h)?.matmul(state_w)?)?.tanh()?;
    Ok(((u * (c - h)?)? + h)?)
}

#[derive(Clone, Debug)]
struct Gru {
    /// The bias-free fc before it, [in, 3H].
    proj: Tensor,
    gate_w: Tensor,
    state_w: Tensor,
    bias: Tensor,
}

impl Gru {
    fn new(input: usize, h: usize, vb: VarBuilder) -> Result<Self> {
        let proj = vb.get((input, 3 * h), "proj")?;
        let (gate_w, state_w) = split_gru_weight(&vb.get((h, 3 * h), "weight")?, h)?;
        Ok(Self { proj, gate_w, state_w, bias: vb.get(3 * h, "bias")? })
    }

    /// `dynamic_gru` over padded sequences [B, T, C] (valid steps first, `mask` [B, T]): the
    /// reversed one starts at each sequence's last valid step; padded outputs are 0.
    fn run(&self, x: &Tensor, mask: &Tensor, reverse: bool) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let h3 = self.proj.dim(1)?;
        let g = x.reshape((b * t, c))?.matmul(&self.proj)?.broadcast_add(&self.bias)?.reshape((b, t, h3))?;
        let mut h = Tensor::zeros((b, h3 / 3), x.dtype(), x.device())?;
        let mut out: Vec<Option<Tensor>> = vec![None; t];
        let order: Vec<usize> = if reverse { (0..t).rev().collect() } else { (0..t).collect() };
        let all_valid = mask.min_all()?.to_scalar::<f32>()? > 0.5;
        for s in order {
            let h_new = gru_step(&g.narrow(1, s, 1)?.squeeze(1)?, &h, &self.gate_w, &self.state_w)?;
            if all_valid {
                out[s] = Some(h_new.clone());
                h = h_new;
            } else {
                let m = mask.narrow(1, s, 1)?;
                h = (h_new.broadcast_mul(&m)? + h.broadcast_mul(&(1.0 - &m)?)?)?;
                out[s] = Some(h_new.broadcast_mul(&m)?);
            }
        }
        Ok(Tensor::stack(&out.into_iter().map(|o| o.expect("every step ran")).collect::<Vec<_>>(), 1)?)
    }
}

/// What the encoder gives the decoder, per video of the batch.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// The decoder's first state, [B, D].
    pub boot: Tensor,
    /// The attention context's share of the GRU input (the same every step), [B, 3D].
    pub context_in: Tensor,
}

/// The ETS captioner.
#[derive(Clone, Debug)]
pub struct Ets {
    pub config: ModelConfig,
    pub spec: EtsSpec,
    pub vocab: Vocabulary,
    input_fc_w: Tensor,
    input_fc_b: Tensor,
    gru_fw: Gru,
    gru_bw: Gru,
    pool_att: Tensor,
    enc_proj: Tensor,
    boot: Tensor,
    embedding: Tensor,
    /// Kept for the reference's parameter set; cancels in the attention softmax (module doc).
    #[allow(dead_code)]
    state_proj: Tensor,
    dec_att: Tensor,
    in_word: Tensor,
    in_context: Tensor,
    dec_gate_w: Tensor,
    dec_state_w: Tensor,
    dec_bias: Tensor,
    out_w: Tensor,
    out_b: Tensor,
}

/// Softmax over time of `scores` [B, T, 1] restricted to valid steps.
fn sequence_softmax(scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok(super::sequence::masked_softmax_time(scores, mask)?)
}

impl Ets {
    pub fn new(config: ModelConfig, vb: VarBuilder) -> Result<Self> {
        let (spec, vocab) = ets_spec(&config)?;
        let (f, fc, h, d, e, v) = (
            spec.feat_size,
            spec.fc_dim,
            spec.gru_hidden_dim,
            spec.decoder_size,
            spec.word_emb_dim,
            vocab.len(),
        );
        let enc = vb.pp("encoder");
        let dec = vb.pp("decoder");
        let (dec_gate_w, dec_state_w) = split_gru_weight(&dec.get((d, 3 * d), "gru.weight")?, d)?;
        Ok(Self {
            input_fc_w: enc.get((f, fc), "input_fc.weight")?,
            input_fc_b: enc.get(fc, "input_fc.bias")?,
            gru_fw: Gru::new(fc, h, enc.pp("gru_forward"))?,
            gru_bw: Gru::new(fc, h, enc.pp("gru_backward"))?,
            pool_att: enc.get((2 * h, 1), "pool_attention.weight")?,
            enc_proj: enc.get((2 * h, d), "proj.weight")?,
            boot: dec.get((2 * h, d), "boot.weight")?,
            embedding: dec.get((v, e), "embedding")?,
            state_proj: dec.get((d, d), "state_proj.weight")?,
            dec_att: dec.get((d, 1), "attention.weight")?,
            in_word: dec.get((e, 3 * d), "input_word.weight")?,
            in_context: dec.get((2 * h, 3 * d), "input_context.weight")?,
            dec_gate_w,
            dec_state_w,
            dec_bias: dec.get(3 * d, "gru.bias")?,
            out_w: dec.get((d, v), "out.weight")?,
            out_b: dec.get(v, "out.bias")?,
            config,
            spec,
            vocab,
        })
    }

    /// Encodes padded feature sequences [B, T, F].
    pub fn encode(&self, x: &Padded) -> Result<Encoded> {
        let (b, t, f) = x.x.dims3()?;
        if f != self.spec.feat_size {
            bail!("features are {f} wide; this ETS takes {}", self.spec.feat_size);
        }
        let fc = self.spec.fc_dim;
        let inp =
            x.x.reshape((b * t, f))?.matmul(&self.input_fc_w)?.broadcast_add(&self.input_fc_b)?.tanh()?;
        let inp = inp.reshape((b, t, fc))?;
        let seq =
            Tensor::cat(&[self.gru_fw.run(&inp, &x.mask, false)?, self.gru_bw.run(&inp, &x.mask, true)?], 2)?;
        let h2 = seq.dim(2)?;
        let flat = seq.reshape((b * t, h2))?;
        let w = sequence_softmax(&flat.matmul(&self.pool_att)?.reshape((b, t, 1))?, &x.mask)?;
        let vector = seq.broadcast_mul(&w)?.sum(1)?; // [B, 2H]
        let boot = vector.matmul(&self.boot)?.tanh()?;
        let proj = flat.matmul(&self.enc_proj)?; // [B·T, D]
        let att = sequence_softmax(&proj.matmul(&self.dec_att)?.reshape((b, t, 1))?, &x.mask)?;
        let context = seq.broadcast_mul(&att)?.sum(1)?; // [B, 2H]
        Ok(Encoded { boot, context_in: context.matmul(&self.in_context)? })
    }

    /// One decoder step: word ids' embeddings in, new state out.
    fn decode_step(&self, word_in: &Tensor, context_in: &Tensor, h: &Tensor) -> Result<Tensor> {
        let g = word_in.broadcast_add(context_in)?.broadcast_add(&self.dec_bias)?;
        gru_step(&g, h, &self.dec_gate_w, &self.dec_state_w)
    }

    /// Teacher forcing: the vocabulary logits [B, L, V] after each of `words` (each starting with
    /// `<s>`; shorter ones padded, their extra steps meaningless).
    pub fn forward_teacher(&self, x: &Padded, words: &[Vec<usize>]) -> Result<Tensor> {
        let enc = self.encode(x)?;
        let b = words.len();
        let l = words.iter().map(Vec::len).max().unwrap_or(0);
        if b != x.lengths.len() || l == 0 {
            bail!("one word sequence per video, each at least the start word");
        }
        let v = self.vocab.len();
        let ids: Vec<u32> =
            words.iter().flat_map(|w| (0..l).map(move |i| w.get(i).copied().unwrap_or(0) as u32)).collect();
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= v) {
            bail!("word id {bad} outside the vocabulary of {v}");
        }
        let ids = Tensor::from_vec(ids, b * l, x.x.device())?;
        let d3 = 3 * self.spec.decoder_size;
        let word_in = self.embedding.index_select(&ids, 0)?.matmul(&self.in_word)?.reshape((b, l, d3))?;
        let mut h = enc.boot;
        let mut states = Vec::with_capacity(l);
        for s in 0..l {
            h = self.decode_step(&word_in.narrow(1, s, 1)?.squeeze(1)?, &enc.context_in, &h)?;
            states.push(h.clone());
        }
        let hs = Tensor::stack(&states, 1)?.reshape((b * l, self.spec.decoder_size))?;
        Ok(hs.matmul(&self.out_w)?.broadcast_add(&self.out_b)?.reshape((b, l, v))?)
    }

    /// The reference's loss (`fluid.layers.cross_entropy` on the softmax, mean over every word of
    /// the batch): `words` are `<s>` + sentence, the targets sentence + `<e>`.
    pub fn loss(&self, x: &Padded, sentences: &[Vec<usize>]) -> Result<Tensor> {
        let (start, end) = (self.vocab.start_id(), self.vocab.end_id());
        let inputs: Vec<Vec<usize>> =
            sentences.iter().map(|s| std::iter::once(start).chain(s.iter().copied()).collect()).collect();
        let logits = self.forward_teacher(x, &inputs)?;
        let (b, l, v) = logits.dims3()?;
        let mut targets = Vec::with_capacity(b * l);
        let mut mask = Vec::with_capacity(b * l);
        for s in sentences {
            for i in 0..l {
                let t = if i < s.len() { s[i] } else { end };
                targets.push(t as u32);
                mask.push(if i <= s.len() { 1f32 } else { 0.0 });
            }
        }
        let dev = logits.device();
        let count: f32 = mask.iter().sum();
        let logp = candle_nn::ops::log_softmax(&logits.reshape((b * l, v))?, D::Minus1)?;
        let picked = logp.gather(&Tensor::from_vec(targets, (b * l, 1), dev)?, 1)?.squeeze(1)?;
        let mask = Tensor::from_vec(mask, b * l, dev)?;
        Ok(((picked * mask)?.sum_all()? / -(count as f64))?)
    }

    /// Beam search over one video's features [T, F] (the reference's `infer_decoder`).
    pub fn beam_search(&self, features: &Tensor) -> Result<Vec<Hypothesis>> {
        let x = Padded::new(std::slice::from_ref(features))?;
        let enc = self.encode(&x)?;
        let cfg = BeamConfig {
            beam_size: self.spec.beam_size,
            max_length: self.spec.max_length,
            start_id: self.vocab.start_id(),
            end_id: self.vocab.end_id(),
        };
        let dev = features.device().clone();
        let context_in = enc.context_in;
        beam_search(
            cfg,
            enc.boot,
            |ids, h| {
                let k = ids.len();
                let idx = Tensor::from_vec(ids.iter().map(|&i| i as u32).collect::<Vec<_>>(), k, &dev)?;
                let word_in = self.embedding.index_select(&idx, 0)?.matmul(&self.in_word)?;
                let h_new = self.decode_step(&word_in, &context_in, h)?;
                let logits = h_new.matmul(&self.out_w)?.broadcast_add(&self.out_b)?;
                let probs = candle_nn::ops::softmax_last_dim(&logits)?;
                Ok((probs.flatten_all()?.to_vec1::<f32>()?, h_new))
            },
            |h, rows| {
                let idx = Tensor::from_vec(
                    rows.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                    rows.len(),
                    h.device(),
                )?;
                Ok(h.index_select(&idx, 0)?)
            },
        )
    }

    /// The best caption and every hypothesis (caption, score), best first, for features [T, F].
    pub fn caption(&self, features: &ndarray::Array2<f32>) -> Result<(String, Vec<(String, f32)>)> {
        let (t, f) = features.dim();
        if t == 0 {
            bail!("no feature rows");
        }
        if f != self.spec.feat_size {
            bail!("features are {f} wide; this ETS takes {}", self.spec.feat_size);
        }
        if let Some(i) = features.iter().position(|x| !x.is_finite()) {
            bail!("features row {} column {} is not a finite number", i / f, i % f);
        }
        let data: Vec<f32> = features.iter().copied().collect();
        let hyps = self.beam_search(&Tensor::from_vec(data, (t, f), self.input_fc_b.device())?)?;
        let beams: Vec<(String, f32)> =
            hyps.iter().map(|h| (self.vocab.caption(&h.tokens), h.score())).collect();
        let best = beams.first().map(|b| b.0.clone()).unwrap_or_default();
        Ok((best, beams))
    }
}

/// Every parameter name of an ETS with `config`, with its shape.
pub fn ets_parameter_shapes(config: &ModelConfig) -> Result<Vec<(String, Vec<usize>)>> {
    let varmap = candle_nn::VarMap::new();
    Ets::new(config.clone(), VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    let data = varmap.data().lock().expect("varmap lock");
    let mut out: Vec<(String, Vec<usize>)> =
        data.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect();
    out.sort();
    Ok(out)
}

/// An ETS from named tensors; every name of the model must be there, and no other.
pub fn ets_from_tensors(cfg: ModelConfig, tensors: std::collections::HashMap<String, Tensor>) -> Result<Ets> {
    let shapes = ets_parameter_shapes(&cfg)?;
    if let Some(extra) = tensors.keys().filter(|k| !shapes.iter().any(|(n, _)| n == *k)).min() {
        bail!("weights do not fit ets: unexpected tensor {extra:?}");
    }
    for (name, shape) in &shapes {
        match tensors.get(name) {
            None => bail!("weights do not fit ets: no tensor {name:?}"),
            Some(t) if t.dims() != shape.as_slice() => {
                bail!("weights do not fit ets: {name:?} is {:?}, the config wants {shape:?}", t.dims())
            }
            Some(_) => {}
        }
    }
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    Ets::new(cfg, vb)
}

/// Loads an ETS model file (`vconvert --arch ets`, `vtrain --arch ets`).
pub fn load_ets(path: &std::path::Path) -> Result<Ets> {
    let (cfg, tensors) = super::file::read_model_file(path, |cfg| ets_spec(cfg).map(|_| ()))?;
    ets_from_tensors(cfg, tensors).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
}

/// fluid's default initialisation: every weight Xavier-uniform over its [in, out] shape
/// (`U(±√(6 / (in + out)))`; the embedding [V, E] too), biases 0. Drawn from our Rng in name
/// order.
pub fn init_ets(varmap: &candle_nn::VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = crate::rng::Rng::new(seed ^ 0xE75);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if dims.len() == 2 {
            let k = (6.0 / (dims[0] + dims[1]) as f64).sqrt();
            (0..n).map(|_| rng.uniform_range(-k, k) as f32).collect()
        } else {
            vec![0.0; n]
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (ModelConfig, candle_nn::VarMap) {
        let spec = EtsSpec {
            feat_size: 6,
            fc_dim: 5,
            gru_hidden_dim: 4,
            decoder_size: 3,
            word_emb_dim: 4,
            max_length: 6,
            beam_size: 2,
        };
        let vocab = Vocabulary::build(["a b c a b c a b c d d d"], 3);
        let cfg = ets_config(&spec, &vocab).unwrap();
        let vm = candle_nn::VarMap::new();
        Ets::new(cfg.clone(), VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        init_ets(&vm, 1).unwrap();
        (cfg, vm)
    }

    #[test]
    fn a_video_scores_the_same_alone_or_padded_in_a_batch() -> Result<()> {
        let (cfg, vm) = tiny();
        let m = Ets::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
        let a = crate::rng::randn(0f32, 1.0, (5, 6), &Device::Cpu)?;
        let b = crate::rng::randn(0f32, 1.0, (3, 6), &Device::Cpu)?;
        let words = vec![vec![0, 3, 4], vec![0, 5]];
        let both = m.forward_teacher(&Padded::new(&[a.clone(), b.clone()])?, &words)?;
        let alone = m.forward_teacher(&Padded::new(&[b])?, &words[1..])?;
        let d = (both.narrow(0, 1, 1)?.narrow(1, 0, 2)? - alone)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "{d}");
        Ok(())
    }

    #[test]
    fn every_parameter_but_the_cancelling_state_projection_gets_a_gradient() -> Result<()> {
        let (cfg, vm) = tiny();
        let m = Ets::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
        let x = Padded::new(&[crate::rng::randn(0f32, 1.0, (4, 6), &Device::Cpu)?])?;
        let loss = m.loss(&x, &[vec![3, 4, 5]])?;
        let grads = loss.backward()?;
        for (name, var) in vm.data().lock().expect("varmap").iter() {
            let g = grads.get(var.as_tensor());
            let norm = match g {
                Some(g) => g.abs()?.sum_all()?.to_scalar::<f32>()?,
                None => 0.0,
            };
            if name == "decoder.state_proj.weight" {
                assert_eq!(norm, 0.0);
            } else {
                assert!(norm > 0.0, "{name}: no gradient");
            }
        }
        Ok(())
    }
}
