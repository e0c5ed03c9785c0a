//! BMN, the Boundary-Matching Network for temporal action proposals, as PaddleVideo's
//! `paddlevideo/modeling/backbones/bmn.py`: a base module of two grouped 1-D convolutions over
//! the feature sequence, the temporal evaluation module (start and end probabilities per step),
//! and the proposal evaluation module, whose boundary-matching layer samples the sequence for
//! every (duration, start) pair through a fixed interpolation mask, followed by a 3-D
//! convolution over the samples and 2-D convolutions over the boundary-matching map.
//!
//! The reference multiplies by a dense mask `[T, N·D·T]` (128 MB at T = D = 100, N = 32) and then
//! convolves the samples with a `(N, 1, 1)` kernel. Both are linear, so here the kernel is applied
//! first (`Y_n = W_n · x`, N products of `[512, 128] × [128, T]`) and each map position sums the
//! few (≤ 2 per sample point) mask entries of its N samples over `Y`: the same numbers with ~40x
//! fewer multiply-adds. The mask itself is built as the reference builds it, entry for entry.

use super::ModelConfig;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};

/// BMN's sizes, with PaddleVideo's names and defaults (`configs/localization/bmn.yaml`; the
/// hidden widths are fixed in PaddleVideo's `bmn.py` and arguments of MMAction2's `BMN`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BmnSpec {
    /// Feature width of the input sequence (400 in PaddleVideo's ActivityNet features).
    pub feat_dim: usize,
    /// Steps of the (rescaled) feature sequence.
    pub tscale: usize,
    /// Longest proposal, in steps.
    pub dscale: usize,
    pub prop_boundary_ratio: f64,
    pub num_sample: usize,
    pub num_sample_perbin: usize,
    /// Channels of the base module and the TEM (a multiple of 4: grouped convolutions).
    pub hidden_1d: usize,
    /// Channels of the PEM's 1-D and 2-D convolutions.
    pub hidden_2d: usize,
    /// Channels of the PEM's 3-D convolution over the samples.
    pub hidden_3d: usize,
    /// Whose BMN: `paddlevideo` (the default) or `mmaction2`. MMAction2's differs in its PEM's
    /// 1-D convolution (`hidden_1d` wide, not `hidden_2d`), its candidate proposals (an end
    /// index one step later, boundaries only inside the sequence), its soft-NMS (low threshold
    /// 0.5, 101 kept) and its times (scaled by the duration of the whole snippets,
    /// `feature_extraction_interval`); see `proposals::mmaction2_bmn_proposals`.
    pub variant: BmnVariant,
    /// MMAction2: frames per snippet in feature extraction (its `post_processing` scales
    /// proposals by `duration_frame // interval · interval / duration_frame · duration_second`).
    pub feature_extraction_interval: usize,
}

/// The reference a BMN model follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BmnVariant {
    #[default]
    PaddleVideo,
    MMAction2,
}

impl BmnSpec {
    /// Channels of the PEM's 1-D convolution, the boundary-matching layer's input.
    pub fn pem_1d_channels(&self) -> usize {
        match self.variant {
            BmnVariant::PaddleVideo => self.hidden_2d,
            BmnVariant::MMAction2 => self.hidden_1d,
        }
    }
}

impl Default for BmnSpec {
    fn default() -> Self {
        Self {
            feat_dim: 400,
            tscale: 100,
            dscale: 100,
            prop_boundary_ratio: 0.5,
            num_sample: 32,
            num_sample_perbin: 3,
            hidden_1d: 256,
            hidden_2d: 128,
            hidden_3d: 512,
            variant: BmnVariant::PaddleVideo,
            feature_extraction_interval: 16,
        }
    }
}

/// The boundary-matching sampling mask, sparse: for map position (duration d, start t) and
/// sample n, the steps τ and weights with which sample n reads the sequence. Positions with
/// t + d ≥ T read nothing.
#[derive(Clone, Debug)]
pub struct SampleMask {
    pub tscale: usize,
    pub dscale: usize,
    pub num_sample: usize,
    /// `entries[((d * T) + t) * N + n]` = (τ, weight).
    pub entries: Vec<Vec<(u32, f32)>>,
}

impl SampleMask {
    /// `get_interp1d_mask(tscale, dscale, prop_boundary_ratio, num_sample, num_sample_perbin)`:
    /// proposal [t, t + d] widened by `ratio` of its length on both sides, N·P points evenly
    /// from start to end, each read by linear interpolation (`math.modf` / `math.ceil` of the
    /// point, in float64, kept where the index lies in [0, T - 1]), P points per sample averaged
    /// (`1.0 / P * bin_vector`), then float32.
    pub fn new(spec: &BmnSpec) -> Self {
        let (tn, dn, n, p) = (spec.tscale, spec.dscale, spec.num_sample, spec.num_sample_perbin);
        let mut entries = vec![Vec::new(); dn * tn * n];
        for d in 0..dn {
            for t in 0..tn {
                if t + d >= tn {
                    continue;
                }
                let (p_xmin, p_xmax) = (t as f64, (t + d) as f64);
                let center_len = (p_xmax - p_xmin) + 1.0;
                let xmin = p_xmin - center_len * spec.prop_boundary_ratio;
                let xmax = p_xmax + center_len * spec.prop_boundary_ratio;
                let plen_sample = (xmax - xmin) / ((n * p) as f64 - 1.0);
                for k in 0..n {
                    // bin_vector's non-zero entries, in the order they are first touched.
                    let mut bin: Vec<(i64, f64)> = Vec::with_capacity(2 * p);
                    let mut add = |i: i64, v: f64| match bin.iter_mut().find(|(j, _)| *j == i) {
                        Some((_, acc)) => *acc += v,
                        None => bin.push((i, v)),
                    };
                    for ii in k * p..(k + 1) * p {
                        let sample = xmin + plen_sample * ii as f64;
                        let upper = sample.ceil() as i64;
                        let (decimal, down) = (sample.fract(), sample.trunc() as i64);
                        if (0..tn as i64).contains(&down) {
                            add(down, 1.0 - decimal);
                        }
                        if (0..tn as i64).contains(&upper) {
                            add(upper, decimal);
                        }
                    }
                    let scale = 1.0 / p as f64;
                    entries[(d * tn + t) * n + k] =
                        bin.into_iter().map(|(i, v)| (i as u32, (scale * v) as f32)).collect();
                }
            }
        }
        Self { tscale: tn, dscale: dn, num_sample: n, entries }
    }

    /// The reference's dense `sample_mask` [T, N·D·T] (row τ, column (n·D + d)·T + t), for tests.
    pub fn dense(&self) -> Vec<f32> {
        let (tn, dn, n) = (self.tscale, self.dscale, self.num_sample);
        let cols = n * dn * tn;
        let mut m = vec![0f32; tn * cols];
        for d in 0..dn {
            for t in 0..tn {
                for k in 0..n {
                    for &(tau, w) in &self.entries[(d * tn + t) * n + k] {
                        m[tau as usize * cols + (k * dn + d) * tn + t] += w;
                    }
                }
            }
        }
        m
    }
}

/// A 1-D convolution as Paddle's `Conv1D` (weight [out, in / groups, k], bias [out]).
#[derive(Clone, Debug)]
pub(super) struct Conv1d {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    groups: usize,
}

impl Conv1d {
    pub(super) fn new(vb: VarBuilder, cin: usize, cout: usize, k: usize, groups: usize) -> Result<Self> {
        let weight = vb.get((cout, cin / groups, k), "weight")?;
        let bias = vb.get(cout, "bias")?;
        Ok(Self { weight, bias, padding: k / 2, groups })
    }

    /// `differentiable`: through [`crate::nn::conv1d_differentiable`] (candle's own conv1d
    /// computes wrong gradients), else candle's.
    pub(super) fn forward(&self, x: &Tensor, differentiable: bool) -> candle_core::Result<Tensor> {
        let y = if differentiable {
            crate::nn::conv1d_differentiable(x, &self.weight, self.padding, 1, self.groups)?
        } else {
            x.conv1d(&self.weight, self.padding, 1, 1, self.groups)?
        };
        y.broadcast_add(&self.bias.reshape((1, (), 1))?)
    }
}

/// A 2-D convolution as Paddle's `Conv2D` (stride 1, padding k / 2).
#[derive(Clone, Debug)]
struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
}

impl Conv2d {
    fn new(vb: VarBuilder, cin: usize, cout: usize, k: usize) -> Result<Self> {
        Ok(Self { weight: vb.get((cout, cin, k, k), "weight")?, bias: vb.get(cout, "bias")?, padding: k / 2 })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.conv2d(&self.weight, self.padding, 1, 1, 1)?.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

/// BMN's outputs for a batch: the boundary-matching map [B, 2, D, T] (channel 0 the regression
/// score, 1 the classification score; entry (d, t) the proposal starting at step t lasting d + 1
/// steps), start and end probabilities [B, T].
pub struct BmnOutput {
    pub bm: Tensor,
    pub start: Tensor,
    pub end: Tensor,
}

/// PaddleVideo's BMN; parameter names as its `BMN` layer's (`b_conv1.weight`, ...).
#[derive(Clone, Debug)]
pub struct Bmn {
    pub config: ModelConfig,
    pub spec: BmnSpec,
    b_conv1: Conv1d,
    b_conv2: Conv1d,
    ts_conv1: Conv1d,
    ts_conv2: Conv1d,
    te_conv1: Conv1d,
    te_conv2: Conv1d,
    p_conv1: Conv1d,
    /// `p_conv3d1.weight` [H3, H2, N, 1, 1] as [H3, H2·N] (column c·N + n), a view of the
    /// parameter (so a model being trained is always read at its current values).
    w3_flat: Tensor,
    b3: Tensor,
    p_conv2d1: Conv2d,
    p_conv2d2: Conv2d,
    p_conv2d3: Conv2d,
    p_conv2d4: Conv2d,
    mask: Arc<SampleMask>,
    /// The reference's dense mask [T, N·D·T], built on the first differentiable forward.
    dense_mask: Arc<OnceLock<Tensor>>,
}

impl Bmn {
    pub fn new(config: ModelConfig, spec: BmnSpec, vb: VarBuilder) -> Result<Self> {
        if spec.tscale == 0
            || spec.dscale == 0
            || spec.dscale > spec.tscale
            || spec.num_sample == 0
            || spec.num_sample_perbin == 0
            || spec.hidden_2d == 0
            || spec.hidden_3d == 0
        {
            bail!(
                "bmn: tscale, dscale (<= tscale), num_sample, num_sample_perbin and the hidden widths \
                 must be positive"
            );
        }
        for (what, n) in [("feat_dim", spec.feat_dim), ("hidden_1d", spec.hidden_1d)] {
            if n == 0 || n % 4 != 0 {
                bail!("bmn: {what} {n} must be a positive multiple of 4 (the base module's 4 groups)");
            }
        }
        let (h1, h2, h3, n) = (spec.hidden_1d, spec.hidden_2d, spec.hidden_3d, spec.num_sample);
        let p1 = spec.pem_1d_channels();
        let w3_flat = vb.get((h3, p1, n, 1, 1), "p_conv3d1.weight")?.reshape((h3, p1 * n))?;
        let b3 = vb.get(h3, "p_conv3d1.bias")?;
        Ok(Self {
            b_conv1: Conv1d::new(vb.pp("b_conv1"), spec.feat_dim, h1, 3, 4)?,
            b_conv2: Conv1d::new(vb.pp("b_conv2"), h1, h1, 3, 4)?,
            ts_conv1: Conv1d::new(vb.pp("ts_conv1"), h1, h1, 3, 4)?,
            ts_conv2: Conv1d::new(vb.pp("ts_conv2"), h1, 1, 1, 1)?,
            te_conv1: Conv1d::new(vb.pp("te_conv1"), h1, h1, 3, 4)?,
            te_conv2: Conv1d::new(vb.pp("te_conv2"), h1, 1, 1, 1)?,
            p_conv1: Conv1d::new(vb.pp("p_conv1"), h1, p1, 3, 1)?,
            w3_flat,
            b3,
            p_conv2d1: Conv2d::new(vb.pp("p_conv2d1"), h3, h2, 1)?,
            p_conv2d2: Conv2d::new(vb.pp("p_conv2d2"), h2, h2, 3)?,
            p_conv2d3: Conv2d::new(vb.pp("p_conv2d3"), h2, h2, 3)?,
            p_conv2d4: Conv2d::new(vb.pp("p_conv2d4"), h2, 2, 1)?,
            mask: Arc::new(SampleMask::new(&spec)),
            dense_mask: Arc::new(OnceLock::new()),
            config,
            spec,
        })
    }

    /// Outputs for features [B, feat_dim, T] (PaddleVideo's layout: channels first), without
    /// gradients through the boundary-matching layer (inference).
    pub fn forward(&self, x: &Tensor) -> Result<BmnOutput> {
        self.forward_with(x, false)
    }

    /// As [`Bmn::forward`], differentiable end to end (training): the boundary-matching layer
    /// as the reference computes it, a product with the dense mask and then the 3-D
    /// convolution as a matrix product. The same numbers to float rounding, more work.
    /// Where its parameters are.
    pub fn device(&self) -> &Device {
        self.b3.device()
    }

    pub fn forward_differentiable(&self, x: &Tensor) -> Result<BmnOutput> {
        self.forward_with(x, true)
    }

    fn forward_with(&self, x: &Tensor, differentiable: bool) -> Result<BmnOutput> {
        let (_, c, t) = x.dims3()?;
        if c != self.spec.feat_dim || t != self.spec.tscale {
            bail!("bmn takes features [B, {}, {}], got {:?}", self.spec.feat_dim, self.spec.tscale, x.dims());
        }
        let d = differentiable;
        let x = self.b_conv1.forward(x, d)?.relu()?;
        let x = self.b_conv2.forward(&x, d)?.relu()?;
        let xs = self.ts_conv2.forward(&self.ts_conv1.forward(&x, d)?.relu()?, d)?;
        let start = candle_nn::ops::sigmoid(&xs)?.squeeze(1)?;
        let xe = self.te_conv2.forward(&self.te_conv1.forward(&x, d)?.relu()?, d)?;
        let end = candle_nn::ops::sigmoid(&xe)?.squeeze(1)?;
        let xp = self.p_conv1.forward(&x, d)?.relu()?;
        // The sparse BM layer is CPU code; elsewhere the dense one (the same values).
        let xp = if differentiable || !xp.device().is_cpu() {
            self.boundary_matching_dense(&xp)?
        } else {
            self.boundary_matching(&xp)?
        };
        let xp = xp.relu()?;
        let xp = self.p_conv2d1.forward(&xp)?.relu()?;
        let xp = self.p_conv2d2.forward(&xp)?.relu()?;
        let xp = self.p_conv2d3.forward(&xp)?.relu()?;
        let bm = candle_nn::ops::sigmoid(&self.p_conv2d4.forward(&xp)?)?;
        Ok(BmnOutput { bm, start, end })
    }

    /// The BM layer and `p_conv3d1` as bmn.py: samples `x · mask` [B, H2, N, D, T], then the
    /// (N, 1, 1) kernel with stride N, i.e. `W3 [H3, H2·N] · samples [H2·N, D·T]`.
    fn boundary_matching_dense(&self, xp: &Tensor) -> Result<Tensor> {
        let (b, h2, tn) = xp.dims3()?;
        let (dn, n, h3) = (self.spec.dscale, self.spec.num_sample, self.spec.hidden_3d);
        let mask = match self.dense_mask.get() {
            Some(m) => m.clone(),
            None => {
                let m = Tensor::from_vec(self.mask.dense(), (tn, n * dn * tn), xp.device())?;
                self.dense_mask.get_or_init(|| m).clone()
            }
        };
        let samples = xp.reshape((b * h2, tn))?.matmul(&mask)?.reshape((b, h2 * n, dn * tn))?;
        let y = self.w3_flat.unsqueeze(0)?.broadcast_matmul(&samples)?;
        Ok(y.broadcast_add(&self.b3.reshape((1, h3, 1))?)?.reshape((b, h3, dn, tn))?)
    }

    /// The BM layer and `p_conv3d1` together: [B, H2, T] to [B, H3, D, T] (before the ReLU).
    fn boundary_matching(&self, xp: &Tensor) -> Result<Tensor> {
        let (b, _, tn) = xp.dims3()?;
        let (dn, n, h3) = (self.spec.dscale, self.spec.num_sample, self.spec.hidden_3d);
        let h2 = self.spec.pem_1d_channels();
        // W3 as [H2, N·H3] (column n·H3 + o) and the bias, at the parameters' current values.
        let w3 = self.w3_flat.reshape((h3, h2, n))?.permute((1, 2, 0))?.reshape((h2, n * h3))?;
        let b3: Vec<f32> = self.b3.to_dtype(DType::F32)?.to_vec1()?;
        let mut out = vec![0f32; b * h3 * dn * tn];
        for (bi, out_b) in out.chunks_mut(h3 * dn * tn).enumerate() {
            // Y[τ][n·H3 + o] = Σ_c x[c, τ] · W3[o, c, n]
            let y: Vec<f32> = xp.get(bi)?.t()?.contiguous()?.matmul(&w3)?.flatten_all()?.to_vec1()?;
            let row = n * h3;
            // One map position at a time, all H3 channels together; positions split by duration.
            let sums: Vec<Vec<f32>> = (0..dn)
                .into_par_iter()
                .map(|d| {
                    let mut plane = vec![0f32; tn * h3];
                    for t in 0..tn {
                        let acc = &mut plane[t * h3..(t + 1) * h3];
                        acc.copy_from_slice(&b3);
                        for k in 0..n {
                            for &(tau, w) in &self.mask.entries[(d * tn + t) * n + k] {
                                let src = &y[tau as usize * row + k * h3..][..h3];
                                for (a, s) in acc.iter_mut().zip(src) {
                                    *a += w * s;
                                }
                            }
                        }
                    }
                    plane
                })
                .collect();
            for (d, plane) in sums.iter().enumerate() {
                for t in 0..tn {
                    for o in 0..h3 {
                        out_b[(o * dn + d) * tn + t] = plane[t * h3 + o];
                    }
                }
            }
        }
        Ok(Tensor::from_vec(out, (b, h3, dn, tn), &Device::Cpu)?)
    }
}

/// The config key (in `ModelConfig::extra`) that holds a BMN model file's `BmnSpec`.
pub const LOCALIZER_KEY: &str = "localizer";

/// The 24 parameter names of a BMN layer.
fn bmn_parameter_names() -> Vec<String> {
    let convs = [
        "b_conv1",
        "b_conv2",
        "ts_conv1",
        "ts_conv2",
        "te_conv1",
        "te_conv2",
        "p_conv1",
        "p_conv3d1",
        "p_conv2d1",
        "p_conv2d2",
        "p_conv2d3",
        "p_conv2d4",
    ];
    convs.iter().flat_map(|c| [format!("{c}.weight"), format!("{c}.bias")]).collect()
}

/// A BMN config for `spec` (the recognizer fields are unused; `num_classes` 1: proposals are
/// class-agnostic).
pub fn bmn_config(spec: &BmnSpec) -> Result<ModelConfig> {
    let mut cfg = ModelConfig::defaults("bmn");
    cfg.num_classes = 1;
    cfg.extra.insert(LOCALIZER_KEY.into(), serde_json::to_value(spec)?);
    Ok(cfg)
}

/// The `BmnSpec` of a config, or why it is not a BMN config.
pub fn bmn_spec(cfg: &ModelConfig) -> Result<BmnSpec> {
    if cfg.arch != "bmn" {
        bail!("a {} model: vpropose runs temporal localizers (bmn)", cfg.arch);
    }
    let v = cfg.extra.get(LOCALIZER_KEY).cloned().unwrap_or(serde_json::Value::Object(Default::default()));
    Ok(serde_json::from_value(v)?)
}

/// A BMN from named tensors; the names and shapes must be exactly the layer's.
pub fn bmn_from_tensors(cfg: ModelConfig, tensors: std::collections::HashMap<String, Tensor>) -> Result<Bmn> {
    let names = bmn_parameter_names();
    if let Some(extra) = tensors.keys().filter(|k| !names.contains(k)).min() {
        bail!("weights do not fit bmn: unexpected tensor {extra:?}");
    }
    if let Some(missing) = names.iter().find(|n| !tensors.contains_key(*n)) {
        bail!("weights do not fit bmn: no tensor {missing:?}");
    }
    let spec = bmn_spec(&cfg)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    Bmn::new(cfg, spec, vb).map_err(|e| anyhow::anyhow!("weights do not fit bmn: {e:#}"))
}

/// Loads a BMN model file (`vconvert --arch bmn`).
pub fn load_bmn(path: &std::path::Path) -> Result<Bmn> {
    let (cfg, tensors) = super::file::read_model_file(path, |cfg| bmn_spec(cfg).map(|_| ()))?;
    bmn_from_tensors(cfg, tensors).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
}

/// PaddleVideo's initialisation of a fresh BMN (`bmn.py`): every 1-D convolution's weight and
/// bias `U(-k, k)` with k = 1/√(in_channels · kernel) (its `init_params`, which counts all input
/// channels even in the grouped ones), the 2-D and 3-D convolutions Paddle's default
/// `Normal(0, √(2 / (in_channels · kernel elements)))` with zero biases. Drawn from our Rng in
/// name order.
pub fn init_bmn(varmap: &candle_nn::VarMap, spec: &BmnSpec, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = crate::rng::Rng::new(seed ^ 0xB411_5EED);
    let one_d_fan_in = |layer: &str| -> Option<usize> {
        let (h1, k3) = (spec.hidden_1d, 3);
        Some(match layer {
            "b_conv1" => spec.feat_dim * k3,
            "b_conv2" | "ts_conv1" | "te_conv1" | "p_conv1" => h1 * k3,
            "ts_conv2" | "te_conv2" => h1,
            _ => return None,
        })
    };
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let (layer, leaf) = name.rsplit_once('.').unwrap_or((name, ""));
        let values: Vec<f32> = match (one_d_fan_in(layer), leaf) {
            (Some(fan_in), _) => {
                let k = 1.0 / (fan_in as f64).sqrt();
                (0..n).map(|_| rng.uniform_range(-k, k) as f32).collect()
            }
            (None, "weight") => {
                let std = (2.0 / dims[1..].iter().product::<usize>() as f64).sqrt();
                (0..n).map(|_| (rng.normal() * std) as f32).collect()
            }
            _ => vec![0.0; n],
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    fn small() -> (VarMap, Bmn) {
        let spec = BmnSpec {
            feat_dim: 8,
            tscale: 12,
            dscale: 10,
            num_sample: 4,
            hidden_1d: 16,
            hidden_2d: 8,
            hidden_3d: 12,
            ..Default::default()
        };
        let varmap = VarMap::new();
        let cfg = bmn_config(&spec).unwrap();
        let model =
            Bmn::new(cfg, spec.clone(), VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        init_bmn(&varmap, &spec, 5).unwrap();
        // Biases start at zero for the 2-D/3-D convolutions: give them values so they count.
        for (name, var) in crate::nn::vars_by_name(&varmap) {
            if name.ends_with("bias") {
                var.set(&crate::rng::randn(0f32, 0.1, var.dims(), &Device::Cpu).unwrap()).unwrap();
            }
        }
        // Rebuild so that the inference path's copies see the values just set.
        let model = Bmn::new(
            model.config.clone(),
            model.spec.clone(),
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .unwrap();
        (varmap, model)
    }

    /// The training path (the reference's dense mask, then the 3-D convolution) gives the
    /// inference path's numbers, and every parameter receives a gradient through it.
    #[test]
    fn differentiable_forward_equals_inference_and_reaches_every_parameter() {
        let (varmap, model) = small();
        let x = crate::rng::randn(0f32, 1., (2, 8, 12), &Device::Cpu).unwrap();
        let a = model.forward(&x).unwrap();
        let b = model.forward_differentiable(&x).unwrap();
        for (p, q) in [(&a.bm, &b.bm), (&a.start, &b.start), (&a.end, &b.end)] {
            let e = (p - q)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(e < 1e-5, "{e}");
        }
        let loss = ((b.bm.sqr().unwrap().sum_all().unwrap() + b.start.sum_all().unwrap()).unwrap()
            + b.end.sum_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
            let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0, "{name}: zero gradient");
        }
    }

    /// The GPU's path (candle's ops only) trains BMN as the kernels do: the same outputs and
    /// every parameter's gradient within 1e-4 of its largest (BMN has no BatchNorm before its
    /// ReLUs to put a pre-activation at rounding's reach of zero).
    #[test]
    fn candle_only_training_step_equals_the_kernels() {
        let (varmap, model) = small();
        let mut rng = crate::rng::Rng::new(3);
        let xs: Vec<f32> = (0..2 * 8 * 12).map(|_| rng.normal() as f32).collect();
        let x = Tensor::from_vec(xs, (2, 8, 12), &Device::Cpu).unwrap();
        let step = || {
            let b = model.forward_differentiable(&x).unwrap();
            let loss = ((b.bm.sqr().unwrap().sum_all().unwrap() + b.start.sum_all().unwrap()).unwrap()
                + b.end.sum_all().unwrap())
            .unwrap();
            let grads = loss.backward().unwrap();
            let data = varmap.data().lock().unwrap();
            let mut named: Vec<(String, Tensor)> =
                data.iter().map(|(n, v)| (n.clone(), grads.get(v.as_tensor()).unwrap().clone())).collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            (b.bm, named)
        };
        let (bm_k, grads_k) = step();
        let (bm_p, grads_p) = crate::nn::with_portable_ops(step);
        let max_abs = |t: &Tensor| t.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(max_abs(&(&bm_p - &bm_k).unwrap()) <= 1e-5 * max_abs(&bm_k));
        for ((name, k), (_, p)) in grads_k.iter().zip(&grads_p) {
            let e = max_abs(&(p - k).unwrap()) / max_abs(k).max(f32::MIN_POSITIVE);
            assert!(e <= 1e-4, "{name}: gradient {e:.1e} off the kernels'");
        }
    }

    #[test]
    fn initialisation_follows_paddlevideo() {
        let (varmap, _) = small();
        let data = varmap.data().lock().unwrap();
        let w = data["b_conv1.weight"].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let k = 1.0 / (8.0f32 * 3.0).sqrt();
        assert!(w.iter().all(|v| v.abs() <= k) && w.iter().any(|v| v.abs() > 0.5 * k));
        let w = data["p_conv2d2.weight"].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        let want = (2.0f32 / (8.0 * 9.0)).sqrt();
        assert!((std / want - 1.0).abs() < 0.15, "{std} vs {want}");
    }
}
