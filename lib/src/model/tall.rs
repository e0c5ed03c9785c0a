//! TALL's CTRL (cross-modal temporal regression localizer) as the 2019 PaddlePaddle video zoo
//! builds it (PaddlePaddle/models release/1.8, `PaddleCV/video/models/tall/tall_net.py`,
//! `configs/tall.yaml`; the TensorFlow original is jiyanggao/TALL's `ctrl_model.py`).
//!
//! A clip's visual feature (the window's feature between its left and right context features,
//! `visual_feature_dim` = 3 × the snippet width) and a sentence embedding are each projected to
//! `semantic_size` by a fully connected layer without bias (`v2s_lt`, `s2s_lt`) and
//! L2-normalised (fluid's `l2_normalize`: x / √(Σx² + 1e-12)). Every sentence i meets every clip
//! j (`cross_modal_comb`): [v_j ⊙ s_i, v_j + s_i, v_j, s_i] (4 × semantic_size), then two 1×1
//! convolutions without bias, `mid_out` (ReLU, `hidden_size`) and `sim_mat` (3 outputs): the
//! alignment score, and the start and end offsets to add to the clip's boundaries (in frames of
//! the source video, as the reference's clip names count them).
//!
//! The first convolution is applied to the concatenation as the sum of its four column blocks'
//! products, (v ⊙ s)·W₁ᵀ + v·(W₂ + W₃)ᵀ + s·(W₂ + W₄)ᵀ, the same numbers (to float rounding)
//! without materialising [Ns, Nv, 4S]: the v and s terms are computed once per clip and
//! sentence.

use super::ModelConfig;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// TALL's sizes (`tall.yaml` MODEL) and how its clips are cut from a video (the reference's
/// sliding-window feature directories and `context_size`/`context_num`), in frames of the
/// source video.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TallSpec {
    /// 3 × the snippet feature width: left context, clip, right context.
    pub visual_feature_dim: usize,
    pub sentence_embedding_size: usize,
    pub semantic_size: usize,
    pub hidden_size: usize,
    /// Alignment score, start offset, end offset.
    pub output_size: usize,
    /// Window lengths at test time, frames (`Interval128_256_overlap0.8`).
    pub windows: Vec<f64>,
    /// Window lengths for training samples, frames (`Interval64_128_256_512_overlap0.8`).
    pub train_windows: Vec<f64>,
    /// Overlap of consecutive windows of one length (stride = length × (1 − overlap)).
    pub overlap: f64,
    /// Length of each context window, frames (`context_size`).
    pub context_size: f64,
    /// Context windows on each side, averaged (`context_num`).
    pub context_num: usize,
}

impl Default for TallSpec {
    fn default() -> Self {
        Self {
            visual_feature_dim: 12288,
            sentence_embedding_size: 4800,
            semantic_size: 1024,
            hidden_size: 1000,
            output_size: 3,
            windows: vec![128.0, 256.0],
            train_windows: vec![64.0, 128.0, 256.0, 512.0],
            overlap: 0.8,
            context_size: 128.0,
            context_num: 1,
        }
    }
}

impl TallSpec {
    /// The width of one snippet's (and one window's) feature.
    pub fn snippet_width(&self) -> usize {
        self.visual_feature_dim / 3
    }

    pub fn validate(&self) -> Result<()> {
        if self.visual_feature_dim == 0 || !self.visual_feature_dim.is_multiple_of(3) {
            bail!("tall: visual_feature_dim must be a positive multiple of 3 (context, clip, context)");
        }
        if self.sentence_embedding_size == 0 || self.semantic_size == 0 || self.hidden_size == 0 {
            bail!("tall: sentence_embedding_size, semantic_size and hidden_size must be positive");
        }
        if self.output_size != 3 {
            bail!("tall: output_size must be 3 (alignment score, start and end offsets)");
        }
        let bad = |w: &[f64]| w.is_empty() || w.iter().any(|l| !(l.is_finite() && *l > 0.0));
        if bad(&self.windows) || bad(&self.train_windows) {
            bail!("tall: windows and train_windows must be non-empty lists of positive frame counts");
        }
        if !(0.0..1.0).contains(&self.overlap) {
            bail!("tall: overlap must be in [0, 1)");
        }
        if !(self.context_size.is_finite() && self.context_size > 0.0) || self.context_num == 0 {
            bail!("tall: context_size and context_num must be positive");
        }
        Ok(())
    }
}

/// Fluid's `l2_normalize(x, axis=1)`: x / √(Σx² + 1e-12) per row.
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}

/// CTRL; parameters `v2s.weight` [S, Dv], `s2s.weight` [S, E], `mid.weight` [H, 4S] and
/// `sim.weight` [3, H] (output × input, as a linear layer's).
#[derive(Clone, Debug)]
pub struct Tall {
    pub config: ModelConfig,
    pub spec: TallSpec,
    v2s: Tensor,
    s2s: Tensor,
    mid: Tensor,
    sim: Tensor,
}

impl Tall {
    /// Where its parameters are.
    pub fn device(&self) -> &Device {
        self.sim.device()
    }

    pub fn new(config: ModelConfig, spec: TallSpec, vb: VarBuilder) -> Result<Self> {
        spec.validate()?;
        let (s, h) = (spec.semantic_size, spec.hidden_size);
        Ok(Self {
            v2s: vb.get((s, spec.visual_feature_dim), "v2s.weight")?,
            s2s: vb.get((s, spec.sentence_embedding_size), "s2s.weight")?,
            mid: vb.get((h, 4 * s), "mid.weight")?,
            sim: vb.get((spec.output_size, h), "sim.weight")?,
            config,
            spec,
        })
    }

    /// Clips [Nv, Dv] into the semantic space, normalised: [Nv, S].
    pub fn embed_clips(&self, visual: &Tensor) -> Result<Tensor> {
        l2_normalize(&visual.matmul(&self.v2s.t()?)?)
    }

    /// Sentences [Ns, E] into the semantic space, normalised: [Ns, S].
    pub fn embed_sentences(&self, sentences: &Tensor) -> Result<Tensor> {
        l2_normalize(&sentences.matmul(&self.s2s.t()?)?)
    }

    /// The outputs for every sentence × clip pair of embedded clips `v` [Nv, S] and sentences
    /// `s` [Ns, S]: [Ns, Nv, 3] (score, start offset, end offset); the reference's `sim_score_mat`
    /// [3, B, B] is this with the output axis first.
    pub fn pairs(&self, v: &Tensor, s: &Tensor) -> Result<Tensor> {
        let (nv, sz) = v.dims2()?;
        let ns = s.dim(0)?;
        let h = self.spec.hidden_size;
        let w_mul = self.mid.narrow(1, 0, sz)?;
        let w_add = self.mid.narrow(1, sz, sz)?;
        let w_v = self.mid.narrow(1, 2 * sz, sz)?;
        let w_s = self.mid.narrow(1, 3 * sz, sz)?;
        let prod = s.unsqueeze(1)?.broadcast_mul(&v.unsqueeze(0)?)?.reshape((ns * nv, sz))?;
        let a = prod.matmul(&w_mul.t()?)?.reshape((ns, nv, h))?;
        let bv = v.matmul(&(&w_add + &w_v)?.t()?)?;
        let bs = s.matmul(&(&w_add + &w_s)?.t()?)?;
        let mid = a.broadcast_add(&bv.unsqueeze(0)?)?.broadcast_add(&bs.unsqueeze(1)?)?.relu()?;
        let out = mid.reshape((ns * nv, h))?.matmul(&self.sim.t()?)?;
        Ok(out.reshape((ns, nv, self.spec.output_size))?)
    }

    /// `TALLNET.net(images, sentences)`: [Ns, Nv, 3] for clip features [Nv, Dv] and sentence
    /// embeddings [Ns, E] (in training Ns = Nv = B and pair (i, i) is the positive one).
    pub fn forward(&self, visual: &Tensor, sentences: &Tensor) -> Result<Tensor> {
        self.pairs(&self.embed_clips(visual)?, &self.embed_sentences(sentences)?)
    }
}

/// `TALLNET.loss`: for outputs [B, B, 3] (sentence × clip) and the positives' offsets [B, 2]
/// (start, end; frames), the alignment loss mean(log(1 + exp(M ⊙ score)) ⊙ (I + 1/B)) with
/// M = 1 − 2I (the diagonal pairs positive, every other pair in the batch negative), plus
/// 0.01 × the mean L1 distance between the diagonal's offsets and the targets. Returns
/// (loss, alignment, regression).
pub fn tall_loss(out: &Tensor, offsets: &Tensor) -> Result<(Tensor, f32, f32)> {
    let (b, b2, k) = out.dims3()?;
    if b != b2 || k != 3 || offsets.dims() != [b, 2] {
        bail!(
            "tall loss: outputs {:?} and offsets {:?}, want [B, B, 3] and [B, 2]",
            out.dims(),
            offsets.dims()
        );
    }
    let dev = out.device();
    let eye = Tensor::eye(b, DType::F32, dev)?;
    let mask = (1.0 - (&eye * 2.0)?)?;
    let para = (&eye + 1.0 / b as f64)?;
    let score = out.narrow(2, 0, 1)?.squeeze(2)?;
    // log(1 + exp(x)), as the reference writes it (no overflow guard: its scores stay small).
    let loss_mat = ((mask * score)?.exp()? + 1.0)?.log()?;
    let align = (loss_mat * para)?.mean_all()?;
    let diag = out.broadcast_mul(&eye.unsqueeze(2)?)?.sum(1)?; // [B, 3]: pair (i, i)
    let pred = diag.narrow(1, 1, 2)?;
    let reg = (pred - offsets)?.abs()?.mean_all()?;
    let loss = ((&reg * 0.01)? + &align)?;
    let (a, r) = (align.to_scalar::<f32>()?, reg.to_scalar::<f32>()?);
    Ok((loss, a, r))
}

/// The config key (in `ModelConfig::extra`) that holds a TALL model file's `TallSpec`.
pub const TALL_KEY: &str = "tall";

/// A TALL config for `spec`.
pub fn tall_config(spec: &TallSpec) -> Result<ModelConfig> {
    let mut cfg = ModelConfig::defaults("tall");
    cfg.num_classes = 1;
    cfg.extra.insert(TALL_KEY.into(), serde_json::to_value(spec)?);
    Ok(cfg)
}

/// The `TallSpec` of a config, or why it is not a TALL config.
pub fn tall_spec(cfg: &ModelConfig) -> Result<TallSpec> {
    if cfg.arch != "tall" {
        bail!("a {} model, not tall", cfg.arch);
    }
    let v = cfg.extra.get(TALL_KEY).cloned().unwrap_or(serde_json::Value::Object(Default::default()));
    let spec: TallSpec = serde_json::from_value(v)?;
    spec.validate()?;
    Ok(spec)
}

/// A TALL from named tensors; every name of the model must be there, and no other.
pub fn tall_from_tensors(
    cfg: ModelConfig,
    tensors: std::collections::HashMap<String, Tensor>,
) -> Result<Tall> {
    let spec = tall_spec(&cfg)?;
    const NAMES: [&str; 4] = ["v2s.weight", "s2s.weight", "mid.weight", "sim.weight"];
    if let Some(extra) = tensors.keys().filter(|k| !NAMES.contains(&k.as_str())).min() {
        bail!("weights do not fit tall: unexpected tensor {extra:?}");
    }
    if let Some(missing) = NAMES.iter().find(|n| !tensors.contains_key(**n)) {
        bail!("weights do not fit tall: no tensor {missing:?}");
    }
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    Tall::new(cfg, spec, vb).map_err(|e| anyhow::anyhow!("weights do not fit tall: {e:#}"))
}

/// Loads a TALL model file (`vconvert --arch tall`, `vtrain --arch tall`).
pub fn load_tall(path: &std::path::Path) -> Result<Tall> {
    let (cfg, tensors) = super::file::read_model_file(path, |cfg| tall_spec(cfg).map(|_| ()))?;
    tall_from_tensors(cfg, tensors).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
}

/// The reference's initialisation: `v2s_lt` and `s2s_lt` N(0, 1) (`NormalInitializer(0, 1)`),
/// the 1×1 convolutions fluid's conv2d default N(0, √(2 / fan_in)). Drawn from our Rng (Box–Muller)
/// in name order.
pub fn init_tall(varmap: &candle_nn::VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = crate::rng::Rng::new(seed ^ 0x7A11);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let std = if name.starts_with("mid") || name.starts_with("sim") {
            (2.0 / dims[1] as f64).sqrt()
        } else {
            1.0
        };
        let values: Vec<f32> = (0..n)
            .map(|_| {
                let (u1, u2) = (1.0 - rng.uniform(), rng.uniform());
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * std) as f32
            })
            .collect();
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> TallSpec {
        TallSpec {
            visual_feature_dim: 12,
            sentence_embedding_size: 5,
            semantic_size: 6,
            hidden_size: 7,
            ..Default::default()
        }
    }

    fn model(spec: &TallSpec, vm: &candle_nn::VarMap) -> Tall {
        let m = Tall::new(
            tall_config(spec).unwrap(),
            spec.clone(),
            VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu),
        )
        .unwrap();
        init_tall(vm, 3).unwrap();
        m
    }

    /// The decomposed first convolution gives the concatenation's numbers
    /// (`cross_modal_comb`: clip j along the second axis, sentence i along the first).
    #[test]
    fn pairs_equal_the_concatenated_comb() {
        let spec = small();
        let vm = candle_nn::VarMap::new();
        let m = model(&spec, &vm);
        let v = crate::rng::randn(0f32, 1.0, (3, 12), &Device::Cpu).unwrap();
        let s = crate::rng::randn(0f32, 1.0, (2, 5), &Device::Cpu).unwrap();
        let got = m.forward(&v, &s).unwrap();
        let (ve, se) = (m.embed_clips(&v).unwrap(), m.embed_sentences(&s).unwrap());
        let vv = ve.unsqueeze(0).unwrap().broadcast_as((2, 3, 6)).unwrap();
        let ss = se.unsqueeze(1).unwrap().broadcast_as((2, 3, 6)).unwrap();
        let comb =
            Tensor::cat(&[(&vv * &ss).unwrap(), (&vv + &ss).unwrap(), vv.clone(), ss.clone()], 2).unwrap();
        let mid = comb.reshape((6, 24)).unwrap().matmul(&m.mid.t().unwrap()).unwrap().relu().unwrap();
        let want = mid.matmul(&m.sim.t().unwrap()).unwrap().reshape((2, 3, 3)).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{diff}");
    }

    /// Every parameter receives a gradient through the loss, and the loss is the formula's.
    #[test]
    fn loss_reaches_every_parameter() {
        let spec = small();
        let vm = candle_nn::VarMap::new();
        let m = model(&spec, &vm);
        let v = crate::rng::randn(0f32, 1.0, (4, 12), &Device::Cpu).unwrap();
        let s = crate::rng::randn(0f32, 1.0, (4, 5), &Device::Cpu).unwrap();
        let off = crate::rng::randn(0f32, 10.0, (4, 2), &Device::Cpu).unwrap();
        let out = m.forward(&v, &s).unwrap();
        let (loss, align, reg) = tall_loss(&out, &off).unwrap();
        let o: Vec<Vec<Vec<f32>>> = out.to_vec3().unwrap();
        let t: Vec<Vec<f32>> = off.to_vec2().unwrap();
        let (mut a, mut r) = (0f64, 0f64);
        for i in 0..4 {
            for j in 0..4 {
                let x = o[i][j][0] as f64;
                let (sign, w) = if i == j { (-1.0, 1.25) } else { (1.0, 0.25) };
                a += (1.0 + (sign * x).exp()).ln() * w / 16.0;
            }
            r += ((o[i][i][1] - t[i][0]).abs() + (o[i][i][2] - t[i][1]).abs()) as f64 / 8.0;
        }
        assert!((a - align as f64).abs() < 1e-5 && (r - reg as f64).abs() < 1e-4, "{a} {align} {r} {reg}");
        let total = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((total - (a + 0.01 * r)).abs() < 1e-5);
        let g = loss.backward().unwrap();
        for (name, var) in vm.data().lock().unwrap().iter() {
            let gv = g.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
            let norm = gv.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0 && norm.is_finite(), "{name}: gradient norm {norm}");
        }
    }

    #[test]
    fn spec_checks() {
        assert!(TallSpec { visual_feature_dim: 10, ..Default::default() }.validate().is_err());
        assert!(TallSpec { output_size: 2, ..Default::default() }.validate().is_err());
        assert!(TallSpec { windows: vec![], ..Default::default() }.validate().is_err());
        assert_eq!(TallSpec::default().snippet_width(), 4096);
    }
}
