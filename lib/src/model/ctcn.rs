//! C-TCN, the 2019 PaddlePaddle video zoo's temporal action detector (PaddlePaddle/models
//! release/1.8, `PaddleCV/video/models/ctcn/fpn_ctcn.py`, `ctcn.py`, `configs/ctcn.yaml`). Its
//! input is a video's class-score sequence as a one-channel image [1, T = 512, W = 402] (time ×
//! concepts: the RGB and flow classifiers' 201 scores each); every backbone kernel is (k, 1), so
//! the concept columns run through a ResNet-50 of temporal bottlenecks independently, sharing
//! weights: here they are a batch of 1-D sequences, [N·W, C, T]. Two strided (7, 1) stems, the
//! four bottleneck stages (3, 4, 6, 3; strides 1, 2, 2, 2), four more strided (3, 1) levels on
//! top (p6–p9) and a top-down path (1×1 laterals, `image_resize` BILINEAR with Paddle's default
//! `align_corners=True`, (3, 1) smoothing) give 8 levels of 128 … 1 steps. Shared heads on every
//! level: dropout 0.5 (Paddle's default `downgrade_in_infer`: a plain mask in training, ×0.5 at
//! inference), a (3, 1) convolution, then a (1, W) convolution that reads all concepts at once:
//! per step 7 anchors' (centre, width) offsets through `10·sigmoid − 5`, and 7 anchors' class
//! logits (`num_classes`, background 0 included).

use super::ModelConfig;
use crate::nn::BatchNorm2d;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// C-TCN's sizes and its test-time decoding settings (`configs/ctcn.yaml`'s MODEL and TEST).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CtcnSpec {
    /// Steps the features are resized to (nearest neighbour, as the reader's `cv2.resize`).
    pub img_size: usize,
    /// Feature width (`concept_size`).
    pub concept_size: usize,
    /// Classes including the background (class 0).
    pub num_classes: usize,
    /// Anchor scales per side (`BoxCoder.anchor_num`): 1 + 2·anchor_num anchors per step.
    pub anchor_num: usize,
    /// Decoding: class scores above this are kept.
    pub score_thresh: f64,
    /// Decoding: hard NMS overlap threshold, then Gaussian soft-NMS with `sigma_thresh`,
    /// dropping what decays below `soft_thresh`.
    pub nms_thresh: f64,
    pub sigma_thresh: f64,
    pub soft_thresh: f64,
    pub dropout: f64,
    pub bn_eps: f64,
    /// The first stage's bottleneck width (64, ResNet-50's); every other width follows it (stems
    /// width/2 and width, stages ×2 each, pyramid 8·width, location head 4·width, class head
    /// 8·width). Not the reference's option: smaller values are for small data and tests.
    pub width: usize,
}

impl Default for CtcnSpec {
    fn default() -> Self {
        Self {
            img_size: 512,
            concept_size: 402,
            num_classes: 201,
            anchor_num: 3,
            score_thresh: 0.001,
            nms_thresh: 0.8,
            sigma_thresh: 0.9,
            soft_thresh: 0.004,
            dropout: 0.5,
            bn_eps: 1e-5,
            width: 64,
        }
    }
}

/// Stride of each of the 8 levels (`BoxCoder.steps`).
pub const CTCN_STEPS: [usize; 8] = [4, 8, 16, 32, 64, 128, 256, 512];

impl CtcnSpec {
    pub fn anchors_per_step(&self) -> usize {
        1 + 2 * self.anchor_num
    }

    /// Steps of each level for the input length (strided convolutions: ⌈L / 2⌉ each).
    pub fn level_lengths(&self) -> [usize; 8] {
        let mut l = self.img_size;
        let mut out = [0; 8];
        // Two stems halve twice; c2 keeps that length; each later level halves again.
        l = l.div_ceil(2).div_ceil(2);
        for o in out.iter_mut() {
            *o = l;
            l = l.div_ceil(2);
        }
        out
    }

    /// Anchors over all levels.
    pub fn total_anchors(&self) -> usize {
        self.level_lengths().iter().sum::<usize>() * self.anchors_per_step()
    }

    pub fn validate(&self) -> Result<()> {
        if self.img_size < 4 || self.concept_size == 0 || self.num_classes < 2 {
            bail!("ctcn: img_size must be at least 4, concept_size positive, num_classes at least 2 (background and one class)");
        }
        if self.width < 2 || !self.width.is_multiple_of(2) {
            bail!("ctcn: width must be an even number of at least 2");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("ctcn: dropout must be in [0, 1)");
        }
        if self.sigma_thresh <= 0.0 {
            bail!("ctcn: sigma_thresh must be positive");
        }
        Ok(())
    }
}

/// A (k, 1) convolution without bias, then batch norm (`conv_bn_layer`).
#[derive(Clone, Debug)]
struct ConvBn {
    weight: Tensor,
    bn: BatchNorm2d,
    stride: usize,
    padding: usize,
}

impl ConvBn {
    fn new(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize, eps: f64) -> Result<Self> {
        let weight = vb.pp("conv").get((cout, cin, k), "weight")?;
        let mut bn = BatchNorm2d::new(cout, vb.pp("bn"))?;
        bn.eps = eps;
        Ok(Self { weight, bn, stride, padding: k / 2 })
    }

    fn forward(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let y = conv1d(x, &self.weight, self.padding, self.stride, train)?;
        Ok(self.bn.forward_act_t(&y.unsqueeze(3)?, train, relu)?.squeeze(3)?)
    }
}

/// A (k, 1) convolution with bias (the pyramid's and the heads' first).
#[derive(Clone, Debug)]
struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv {
    fn new(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get((cout, cin, k), "weight")?,
            bias: vb.get(cout, "bias")?,
            stride,
            padding: k / 2,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = conv1d(x, &self.weight, self.padding, self.stride, train)?;
        Ok(y.broadcast_add(&self.bias.reshape((1, (), 1))?)?)
    }
}

/// A 1-D convolution: candle's at inference, [`crate::nn::conv1d_differentiable`] in training
/// (candle's backward is wrong).
fn conv1d(x: &Tensor, w: &Tensor, padding: usize, stride: usize, train: bool) -> Result<Tensor> {
    if !train {
        return Ok(x.conv1d(w, padding, stride, 1, 1)?);
    }
    Ok(crate::nn::conv1d_differentiable(x, w, padding, stride, 1)?)
}

#[derive(Clone, Debug)]
struct Bottleneck {
    conv0: ConvBn,
    conv1: ConvBn,
    conv2: ConvBn,
    shortcut: Option<ConvBn>,
}

impl Bottleneck {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv0.forward(x, train, true)?;
        let y = self.conv1.forward(&y, train, true)?;
        let y = self.conv2.forward(&y, train, false)?;
        let short = match &self.shortcut {
            Some(s) => s.forward(x, train, false)?,
            None => x.clone(),
        };
        Ok((short + y)?.relu()?)
    }
}

/// Outputs for a batch: anchor offsets [N, A, 2] (centre, width; after `10·sigmoid − 5`) and
/// class logits [N, A, K], anchors level by level, step by step, 7 per step.
pub struct CtcnOutput {
    pub loc: Tensor,
    pub cls: Tensor,
}

/// The 2019 zoo's C-TCN (`FPNCTCN`); parameter names are vidkit's (`stem1.conv.weight`,
/// `layer1.0.conv0.bn.running_mean`, `p6.weight`, `lat5.weight`, `smooth4.weight`,
/// `loc1.weight`, `cls2.weight`, ...), the (1, W) head kernels stored as [O, C, W].
#[derive(Clone, Debug)]
pub struct Ctcn {
    pub config: ModelConfig,
    pub spec: CtcnSpec,
    stem1: ConvBn,
    stem2: ConvBn,
    layers: Vec<Vec<Bottleneck>>,
    pyramid: Vec<Conv>,
    laterals: Vec<Conv>,
    smooth: Vec<Conv>,
    loc1: Conv,
    loc2_weight: Tensor,
    loc2_bias: Tensor,
    cls1: Conv,
    cls2_weight: Tensor,
    cls2_bias: Tensor,
}

/// ResNet-50's stages: planes (for width 64) and blocks.
pub(super) const STAGES: [(usize, usize); 4] = [(64, 3), (128, 4), (256, 6), (512, 3)];

impl Ctcn {
    /// Where its parameters are.
    pub fn device(&self) -> &candle_core::Device {
        self.loc2_bias.device()
    }

    pub fn new(config: ModelConfig, spec: CtcnSpec, vb: VarBuilder) -> Result<Self> {
        spec.validate()?;
        let eps = spec.bn_eps;
        let base = spec.width;
        let scale = |c: usize| c * base / 64;
        let stem1 = ConvBn::new(vb.pp("stem1"), 1, base / 2, 7, 2, eps)?;
        let stem2 = ConvBn::new(vb.pp("stem2"), base / 2, base, 7, 2, eps)?;
        let mut layers = Vec::new();
        let mut cin = base;
        for (s, &(planes, blocks)) in STAGES.iter().enumerate() {
            let planes = scale(planes);
            let vs = vb.pp(format!("layer{}", s + 1));
            let mut stage = Vec::new();
            for j in 0..blocks {
                let stride = if j == 0 && s > 0 { 2 } else { 1 };
                let vj = vs.pp(j.to_string());
                let shortcut = if cin == planes * 4 && stride == 1 {
                    None
                } else {
                    Some(ConvBn::new(vj.pp("shortcut"), cin, planes * 4, 1, stride, eps)?)
                };
                stage.push(Bottleneck {
                    conv0: ConvBn::new(vj.pp("conv0"), cin, planes, 1, 1, eps)?,
                    conv1: ConvBn::new(vj.pp("conv1"), planes, planes, 3, stride, eps)?,
                    conv2: ConvBn::new(vj.pp("conv2"), planes, planes * 4, 1, 1, eps)?,
                    shortcut,
                });
                cin = planes * 4;
            }
            layers.push(stage);
        }
        let (c2, c3, c4, c5, f) = (scale(256), scale(512), scale(1024), scale(2048), scale(512));
        let pyramid = vec![
            Conv::new(vb.pp("p6"), c5, f, 3, 2)?,
            Conv::new(vb.pp("p7"), f, f, 3, 2)?,
            Conv::new(vb.pp("p8"), f, f, 3, 2)?,
            Conv::new(vb.pp("p9"), f, f, 3, 2)?,
        ];
        let laterals = vec![
            Conv::new(vb.pp("lat5"), c5, f, 1, 1)?,
            Conv::new(vb.pp("lat4"), c4, f, 1, 1)?,
            Conv::new(vb.pp("lat3"), c3, f, 1, 1)?,
            Conv::new(vb.pp("lat2"), c2, f, 1, 1)?,
        ];
        let smooth = vec![
            Conv::new(vb.pp("smooth4"), f, f, 3, 1)?,
            Conv::new(vb.pp("smooth3"), f, f, 3, 1)?,
            Conv::new(vb.pp("smooth2"), f, f, 3, 1)?,
        ];
        let (hl, hc) = (scale(256), scale(512));
        let (a, k, w) = (spec.anchors_per_step(), spec.num_classes, spec.concept_size);
        Ok(Self {
            stem1,
            stem2,
            layers,
            pyramid,
            laterals,
            smooth,
            loc1: Conv::new(vb.pp("loc1"), f, hl, 3, 1)?,
            loc2_weight: vb.get((a * 2, hl, w), "loc2.weight")?,
            loc2_bias: vb.get(a * 2, "loc2.bias")?,
            cls1: Conv::new(vb.pp("cls1"), f, hc, 3, 1)?,
            cls2_weight: vb.get((a * k, hc, w), "cls2.weight")?,
            cls2_bias: vb.get(a * k, "cls2.bias")?,
            config,
            spec,
        })
    }

    /// The 8 pyramid levels for features [N, T, W] (T = img_size), each [N·W, 512, L].
    fn levels(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let (n, t, w) = x.dims3()?;
        if t != self.spec.img_size || w != self.spec.concept_size {
            bail!(
                "ctcn takes features [N, {}, {}], got {:?}",
                self.spec.img_size,
                self.spec.concept_size,
                x.dims()
            );
        }
        let x = x.transpose(1, 2)?.contiguous()?.reshape((n * w, 1, t))?;
        let x = self.stem1.forward(&x, train, true)?;
        let mut x = self.stem2.forward(&x, train, true)?;
        let mut c = Vec::new();
        for stage in &self.layers {
            for block in stage {
                x = block.forward(&x, train)?;
            }
            c.push(x.clone());
        }
        let p6 = self.pyramid[0].forward(&c[3], train)?;
        let p7 = self.pyramid[1].forward(&p6.relu()?, train)?;
        let p8 = self.pyramid[2].forward(&p7.relu()?, train)?;
        let p9 = self.pyramid[3].forward(&p8.relu()?, train)?;
        let p5 = self.laterals[0].forward(&c[3], train)?;
        let p4 = (upsample_linear(&p5, c[2].dim(2)?)? + self.laterals[1].forward(&c[2], train)?)?;
        let p3 = (upsample_linear(&p4, c[1].dim(2)?)? + self.laterals[2].forward(&c[1], train)?)?;
        let p2 = (upsample_linear(&p3, c[0].dim(2)?)? + self.laterals[3].forward(&c[0], train)?)?;
        let p4 = self.smooth[0].forward(&p4, train)?;
        let p3 = self.smooth[1].forward(&p3, train)?;
        let p2 = self.smooth[2].forward(&p2, train)?;
        Ok(vec![p2, p3, p4, p5, p6, p7, p8, p9])
    }

    /// Dropout as Paddle's default `downgrade_in_infer`: kept entries unscaled in training
    /// (masks drawn from `rng`), everything ×(1 − p) at inference.
    fn dropout(&self, x: &Tensor, rng: Option<&mut crate::rng::Rng>) -> Result<Tensor> {
        let p = self.spec.dropout;
        let Some(rng) = rng else {
            return Ok((x * (1.0 - p))?);
        };
        if p == 0.0 {
            return Ok(x.clone());
        }
        let keep: Vec<f32> =
            (0..x.elem_count()).map(|_| if rng.uniform() >= p { 1.0 } else { 0.0 }).collect();
        Ok((x * Tensor::from_vec(keep, x.shape(), x.device())?)?)
    }

    /// The (1, W) convolution: [N·W, C, L] → [N, L, O].
    fn across_concepts(&self, x: &Tensor, weight: &Tensor, bias: &Tensor, n: usize) -> Result<Tensor> {
        let (nw, c, l) = x.dims3()?;
        let w = nw / n;
        let o = weight.dim(0)?;
        let rows = x.reshape((n, w, c, l))?.permute((0, 3, 2, 1))?.contiguous()?.reshape((n * l, c * w))?;
        let y = rows.matmul(&weight.reshape((o, c * w))?.t()?)?.broadcast_add(bias)?;
        Ok(y.reshape((n, l, o))?)
    }

    /// Offsets and class logits for features [N, T, W] (time × concepts) at inference (or in
    /// training mode with dropout off when `train`, for tests).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<CtcnOutput> {
        self.forward_with(x, train, None)
    }

    /// The training forward: batch statistics, the differentiable convolutions, dropout masks
    /// from `seed`.
    pub fn forward_train(&self, x: &Tensor, seed: u64) -> Result<CtcnOutput> {
        self.forward_with(x, true, Some(seed))
    }

    fn forward_with(&self, x: &Tensor, train: bool, seed: Option<u64>) -> Result<CtcnOutput> {
        let n = x.dim(0)?;
        let (a, k) = (self.spec.anchors_per_step(), self.spec.num_classes);
        let mut rng = seed.map(crate::rng::Rng::new);
        let mut locs = Vec::new();
        let mut clss = Vec::new();
        for level in self.levels(x, train)? {
            let l = level.dim(2)?;
            let dropped = |rng: &mut Option<crate::rng::Rng>| -> Result<Tensor> {
                match (train, rng.as_mut()) {
                    (true, Some(r)) => self.dropout(&level, Some(r)),
                    (true, None) => Ok(level.clone()),
                    (false, _) => self.dropout(&level, None),
                }
            };
            let h = self.loc1.forward(&dropped(&mut rng)?, train)?;
            let loc = self.across_concepts(&h, &self.loc2_weight, &self.loc2_bias, n)?;
            let loc = ((candle_nn::ops::sigmoid(&loc)? * 10.0)? - 5.0)?;
            locs.push(loc.reshape((n, l * a, 2))?);
            let h = self.cls1.forward(&dropped(&mut rng)?, train)?;
            let cls = self.across_concepts(&h, &self.cls2_weight, &self.cls2_bias, n)?;
            clss.push(cls.reshape((n, l * a, k))?);
        }
        Ok(CtcnOutput { loc: Tensor::cat(&locs, 1)?, cls: Tensor::cat(&clss, 1)? })
    }
}

/// `image_resize(..., resample='BILINEAR')` along time with Paddle's default `align_corners=True`
/// (`align_mode` does not apply then): out[j] reads in at j·(Lin − 1)/(Lout − 1) (float32),
/// linearly between its two neighbours. As a product with the interpolation matrix, so that it
/// is differentiable.
fn upsample_linear(x: &Tensor, out_len: usize) -> Result<Tensor> {
    let (b, c, lin) = x.dims3()?;
    if lin == out_len {
        return Ok(x.clone());
    }
    let ratio = if out_len > 1 { (lin as f32 - 1.0) / (out_len as f32 - 1.0) } else { 0.0 };
    let mut m = vec![0f32; lin * out_len];
    for j in 0..out_len {
        let src = ratio * j as f32;
        let i0 = src as usize;
        let step = usize::from(i0 < lin - 1);
        let l1 = src - i0 as f32;
        m[i0 * out_len + j] += 1.0 - l1;
        m[(i0 + step) * out_len + j] += l1;
    }
    let m = Tensor::from_vec(m, (lin, out_len), x.device())?;
    Ok(x.reshape((b * c, lin))?.matmul(&m)?.reshape((b, c, out_len))?)
}

/// `cv2.resize(feats, (W, size), interpolation=INTER_NEAREST)` along time, as the C-TCN reader
/// does it at test time: row i reads row min(⌊i · T / size⌋, T − 1); unchanged when T = size.
pub fn resize_nearest(rows: &ndarray::Array2<f32>, size: usize) -> ndarray::Array2<f32> {
    let t = rows.nrows();
    if t == size || t == 0 {
        return rows.clone();
    }
    let scale = 1.0 / (size as f64 / t as f64);
    ndarray::Array2::from_shape_fn((size, rows.ncols()), |(i, c)| {
        let src = ((i as f64 * scale).floor() as usize).min(t - 1);
        rows[(src, c)]
    })
}

/// The config key (in `ModelConfig::extra`) that holds a C-TCN model file's `CtcnSpec`.
pub const CTCN_KEY: &str = "ctcn";

/// A C-TCN config for `spec`; `labels` the class names without the background.
pub fn ctcn_config(spec: &CtcnSpec) -> Result<ModelConfig> {
    let mut cfg = ModelConfig::defaults("ctcn");
    cfg.num_classes = spec.num_classes - 1;
    cfg.extra.insert(CTCN_KEY.into(), serde_json::to_value(spec)?);
    Ok(cfg)
}

/// The `CtcnSpec` of a config, or why it is not a C-TCN config.
pub fn ctcn_spec(cfg: &ModelConfig) -> Result<CtcnSpec> {
    if cfg.arch != "ctcn" {
        bail!("a {} model, not ctcn", cfg.arch);
    }
    let v = cfg.extra.get(CTCN_KEY).cloned().unwrap_or(serde_json::Value::Object(Default::default()));
    let spec: CtcnSpec = serde_json::from_value(v)?;
    spec.validate()?;
    Ok(spec)
}

/// A C-TCN from named tensors; every name of the model must be there, and no other.
pub fn ctcn_from_tensors(
    cfg: ModelConfig,
    tensors: std::collections::HashMap<String, Tensor>,
) -> Result<Ctcn> {
    let spec = ctcn_spec(&cfg)?;
    let names = ctcn_parameter_names(&spec)?;
    if let Some(extra) = tensors.keys().filter(|k| !names.contains(k)).min() {
        bail!("weights do not fit ctcn: unexpected tensor {extra:?}");
    }
    if let Some(missing) = names.iter().find(|n| !tensors.contains_key(*n)) {
        bail!("weights do not fit ctcn: no tensor {missing:?}");
    }
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    Ctcn::new(cfg, spec, vb).map_err(|e| anyhow::anyhow!("weights do not fit ctcn: {e:#}"))
}

/// Every parameter and buffer name of a C-TCN, in the order the reference creates its layers
/// (`FPNCTCN.extractor`, then the heads): what its auto-named Paddle parameters map onto.
pub fn ctcn_parameter_names(spec: &CtcnSpec) -> Result<Vec<String>> {
    let varmap = candle_nn::VarMap::new();
    Ctcn::new(
        ModelConfig::defaults("ctcn"),
        spec.clone(),
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let data = varmap.data().lock().expect("varmap lock");
    Ok(data.keys().cloned().collect())
}

/// Loads a C-TCN model file (`vconvert --arch ctcn`).
pub fn load_ctcn(path: &std::path::Path) -> Result<Ctcn> {
    let (cfg, tensors) = super::file::read_model_file(path, |cfg| ctcn_spec(cfg).map(|_| ()))?;
    ctcn_from_tensors(cfg, tensors).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
}

/// The reference's initialisation (`get_ctcn_conv_initializer`): every convolution's weight
/// `U(−√(1/fan_in), √(1/fan_in))`, fan_in = in_channels · kernel elements; biases 0 (Paddle's
/// default), batch norm weight 1, bias 0, statistics 0 and 1. Drawn from our Rng in name order.
pub fn init_ctcn(varmap: &candle_nn::VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = crate::rng::Rng::new(seed ^ 0xC7C7);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.ends_with(".bn.weight") || name.ends_with("running_var") {
            vec![1.0; n]
        } else if name.ends_with("weight") && dims.len() == 3 {
            let k = (1.0 / (dims[1] * dims[2]) as f64).sqrt();
            (0..n).map(|_| rng.uniform_range(-k, k) as f32).collect()
        } else {
            vec![0.0; n]
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through the training forward (batch statistics, dropout, the differentiable convolutions)
    /// every parameter receives a finite, non-zero gradient. (The
    /// convolutions' gradients are checked exactly in `nn::conv1d`; a whole-model central
    /// difference check drowns in float32 rounding at this depth.)
    #[test]
    fn training_forward_reaches_every_parameter() {
        let spec = CtcnSpec {
            img_size: 32,
            concept_size: 3,
            num_classes: 3,
            width: 4,
            dropout: 0.0,
            ..Default::default()
        };
        let vm = candle_nn::VarMap::new();
        let m = Ctcn::new(
            ctcn_config(&spec).unwrap(),
            spec,
            VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        )
        .unwrap();
        init_ctcn(&vm, 1).unwrap();
        let x = crate::rng::randn(0f32, 1.0, (2, 32, 3), &Device::Cpu).unwrap();
        let o = m.forward_t(&x, true).unwrap();
        let loss =
            (o.loc.sqr().unwrap().sum_all().unwrap() + o.cls.sqr().unwrap().sum_all().unwrap()).unwrap();
        let g = loss.backward().unwrap();
        for (name, var) in vm.data().lock().unwrap().iter().filter(|(n, _)| !crate::nn::is_buffer(n)) {
            let gv = g.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
            let norm = gv.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0 && norm.is_finite(), "{name}: gradient norm {norm}");
        }
    }

    #[test]
    fn levels_and_anchors_follow_the_box_coder() {
        let spec = CtcnSpec::default();
        assert_eq!(spec.level_lengths(), [128, 64, 32, 16, 8, 4, 2, 1]);
        assert_eq!(spec.total_anchors(), 1785);
        let small = CtcnSpec { img_size: 64, ..Default::default() };
        assert_eq!(small.level_lengths(), [16, 8, 4, 2, 1, 1, 1, 1]);
    }

    #[test]
    fn upsampling_aligns_corners() {
        let x = Tensor::new(&[[[0f32, 1.0, 3.0]]], &Device::Cpu).unwrap();
        let y: Vec<f32> = upsample_linear(&x, 5).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(y, [0.0, 0.5, 1.0, 2.0, 3.0]);
        let one = Tensor::new(&[[[2f32]]], &Device::Cpu).unwrap();
        let y: Vec<f32> = upsample_linear(&one, 2).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(y, [2.0, 2.0]);
    }

    #[test]
    fn nearest_resize_is_cv2s() {
        let rows = ndarray::Array2::from_shape_fn((3, 1), |(i, _)| i as f32);
        let r = resize_nearest(&rows, 8);
        assert_eq!(r.column(0).to_vec(), [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0]);
        let rows = ndarray::Array2::from_shape_fn((10, 1), |(i, _)| i as f32);
        assert_eq!(resize_nearest(&rows, 4).column(0).to_vec(), [0.0, 2.0, 5.0, 7.0]);
    }
}
