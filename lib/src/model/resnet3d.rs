//! ResNet-3D recognizers with pytorchvideo's structure and parameter names (so a pytorchvideo
//! state dict imports as it is): C2D-R50, I3D-R50 and Slow-R50 as `pytorchvideo.models.hub.resnet`
//! builds them through `create_resnet` (pytorchvideo/models/resnet.py), R(2+1)D-R50 as
//! `create_r2plus1d` (models/r2plus1d.py) and ir-CSN-R101 as `create_csn` (models/csn.py):
//!
//! * `blocks.0`: stem `conv` (k = stem kernel, stride (1, 2, 2), padding k/2), `norm`, ReLU,
//!   max pool (1, 3, 3) stride (1, 2, 2) padding (0, 1, 1) (none in R(2+1)D, whose first stage
//!   strides spatially instead);
//! * `blocks.{i}.res_blocks.{j}`: bottlenecks `branch2.conv_a` (temporal kernel per block) /
//!   `norm_a` / `conv_b` / `norm_b` / `conv_c` / `norm_c`, the stage's stride on the first
//!   block's `conv_b`; `branch1_conv`/`branch1_norm` on the first block of a stage; ReLU after
//!   the sum. `conv_b` is (1, 3, 3) in the ResNets, a depthwise (3, 3, 3) in CSN, and in
//!   R(2+1)D a (2+1)D conv: `conv_b.conv_t` (3, 1, 1) with the temporal stride, `conv_b.norm`,
//!   ReLU, `conv_b.conv_xy` (1, 3, 3) with the spatial stride (`Conv2plus1d`, temporal first);
//! * temporal strides per stage: none in the ResNets, (1, 1, 2, 2) in R(2+1)D, (1, 2, 2, 2) in
//!   CSN;
//! * C2D and I3D: a (2, 1, 1) max pool after the first stage, which takes a `blocks` index;
//! * head `blocks.{last}.proj` after average pooling and dropout.
//!
//! The config's `stage_depths` replaces the depth's blocks per stage (`create_resnet` knows
//! only 50, 101 and 152): `[2, 2, 2, 2]` gives a shallow variant with the same names.
//!
//! The hub's head pools with a fixed kernel ((8, 7, 7) for Slow, (4, 7, 7) for the others) made
//! to cover the whole feature map at the zoo input, followed by a global average of the
//! projected map; here the head pools globally, which is the same at the zoo input and defined at
//! every other size (3-crop testing at 256² and the reduced sizes of the tests). R(2+1)D's hub
//! head ends in a softmax in eval mode; here the model outputs logits, as X3D.
//!
//! Options beyond pytorchvideo's hub models, all off by default (config keys, see
//! [`ResNet3dOptions`]):
//!
//! * `non_local`: per stage, one 0/1 flag per residual block (mmaction2's
//!   `non_local=((0, 0, 0), (0, 1, 0, 1), ...)`); a flagged block is followed by a non-local
//!   block ([`crate::nn::NonLocal`], set up by `non_local_cfg`). pytorchvideo's ResNets have no
//!   place for one, so the names are ours, chosen so that a pytorchvideo model extended the
//!   obvious way imports as it is: the flagged block and its non-local block form an
//!   `nn.Sequential`, `res_blocks.{j}.0.branch2...` and `res_blocks.{j}.1.conv_theta...`
//!   (`scripts/export_zoo_parity.py --non-local` builds it so);
//! * `stem_stride_t`, `stem_pool_stride_t`: temporal strides of the stem conv and of its max
//!   pool (mmaction2 `conv1_stride_t`, `pool1_stride_t`; 2 and 2 in its I3D);
//! * `bn_eps`: the epsilon of every BN of the stem, the residual blocks and the shortcuts
//!   (PyTorch's 1e-5 when absent; mmaction2's ResNet3dCSN builds its norms with 1e-3,
//!   resnet3d_csn.py L120). The non-local blocks' norm keeps 1e-5, as mmcv builds it from
//!   `non_local_cfg`, not from the backbone's `norm_cfg`.

use super::ModelConfig;
use crate::nn::int8::{feeds_next_conv, read_by_convs, residual_only};
use crate::nn::{
    add_act, batch_norm2d, conv_bn_act_3d, conv_bn_train_act, conv_fusable, depthwise_bn_act_3d, fusable,
    max_pool3d, BatchNorm2d, Conv3d, Conv3dConfig, NonLocal, NonLocalConfig,
};
use crate::rng::Rng;
use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use serde::Deserialize;

/// A 3D conv padded by k/2 per axis (pytorchvideo's convention for odd kernels).
pub fn conv3d(
    cin: usize,
    cout: usize,
    k: [usize; 3],
    stride: [usize; 3],
    groups: usize,
    bias: bool,
    vb: VarBuilder,
) -> Result<Conv3d> {
    let cfg = Conv3dConfig { stride, padding: k.map(|k| k / 2), groups, bias, ..Default::default() };
    Conv3d::new(cin, cout, k, cfg, vb)
}

/// conv → BN over [N, C, T, H, W], the pair every pytorchvideo layer here is made of.
#[derive(Clone, Debug)]
pub struct ConvBn3d {
    pub conv: Conv3d,
    pub bn: BatchNorm2d,
}

impl ConvBn3d {
    /// A bias-free conv named `conv` and its BN named `norm` under the two builders, padding k/2
    /// per axis (pytorchvideo's convention for odd kernels).
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: [usize; 3],
        stride: [usize; 3],
        groups: usize,
        conv_vb: VarBuilder,
        norm_vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            conv: conv3d(cin, cout, kernel, stride, groups, false, conv_vb)?,
            bn: batch_norm2d(cout, norm_vb)?,
        })
    }

    /// BN(conv(x)); fused in eval mode on the CPU (see `forward_act`).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, None, false)
    }

    /// BN(conv(x)) (+ `residual`) (then ReLU): one fused pass in eval mode on the CPU for dense
    /// convolutions (`nn::conv_bn_act_3d`), the differentiable ops otherwise.
    pub fn forward_act(
        &self,
        x: &Tensor,
        train: bool,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Result<Tensor> {
        if !train && conv_fusable(x) && self.conv.cfg.groups == 1 {
            let g = self.conv.geometry_of(x)?;
            return conv_bn_act_3d(
                x,
                g,
                &self.conv.weight,
                self.conv.bias.as_ref(),
                &self.bn,
                residual,
                relu,
            );
        }
        if train && fusable(x) && self.conv.cfg.groups == 1 && self.conv.bias.is_none() {
            let g = self.conv.geometry_of(x)?;
            return conv_bn_train_act(x, &self.conv.weight, g, &self.bn, residual, relu);
        }
        let depthwise = self.conv.cfg.groups > 1 && self.conv.weight.dim(1)? == 1;
        if !train && conv_fusable(x) && depthwise && residual.is_none() && self.conv.bias.is_none() {
            let g = self.conv.geometry_of(x)?;
            if self.conv.weight.dim(0)? == g.c {
                return depthwise_bn_act_3d(x, g, &self.conv.weight, &self.bn, relu);
            }
        }
        match residual {
            None => self.bn.forward_act_t(&self.conv.forward(x)?, train, relu),
            Some(_) => add_act(self.bn.forward_t(&self.conv.forward(x)?, train)?, residual, relu),
        }
    }
}

/// A bottleneck's middle conv (`branch2.conv_b`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvB {
    /// (1, 3, 3), dense (the ResNets, SlowFast).
    Spatial,
    /// (3, 3, 3), one group per channel (ir-CSN).
    Depthwise,
    /// (3, 1, 1) then (1, 3, 3) with BN and ReLU between (R(2+1)D).
    TwoPlusOne,
}

/// The per-architecture settings of `create_resnet` / `create_r2plus1d` / `create_csn` that the
/// hub functions change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNet3dSpec {
    pub depth: usize,
    pub stem_kernel: [usize; 3],
    /// Max pool (1, 3, 3) stride (1, 2, 2) after the stem (all but R(2+1)D).
    pub stem_pool: bool,
    /// Max pool (2, 1, 1) after the first stage (C2D, I3D).
    pub stage1_pool: bool,
    /// conv_a kernels per stage, repeated over the stage's blocks.
    pub conv_a: [Vec<[usize; 3]>; 4],
    pub conv_b: ConvB,
    /// (temporal, spatial) stride of each stage's first block.
    pub strides: [(usize, usize); 4],
}

impl ResNet3dSpec {
    pub fn for_arch(arch: &str) -> Option<Self> {
        let (t1, t3) = ([1, 1, 1], [3, 1, 1]);
        let resnet = |stem_t: usize, stage1_pool: bool, conv_a| Self {
            depth: 50,
            stem_kernel: [stem_t, 7, 7],
            stem_pool: true,
            stage1_pool,
            conv_a,
            conv_b: ConvB::Spatial,
            strides: [(1, 1), (1, 2), (1, 2), (1, 2)],
        };
        Some(match arch {
            // hub/resnet.py c2d_r50
            "c2d_r50" => resnet(1, true, [vec![t1], vec![t1], vec![t1], vec![t1]]),
            // hub/resnet.py i3d_r50
            "i3d_r50" => resnet(5, true, [vec![t3], vec![t3, t1], vec![t3, t1], vec![t1, t3]]),
            // hub/resnet.py slow_r50 (create_resnet's default conv_a kernels)
            "slow_r50" => resnet(1, false, [vec![t1], vec![t1], vec![t3], vec![t3]]),
            // hub/r2plus1d.py r2plus1d_r50: create_r2plus1d's defaults
            "r2plus1d_r50" => Self {
                stem_pool: false,
                conv_b: ConvB::TwoPlusOne,
                strides: [(1, 2), (1, 2), (2, 2), (2, 2)],
                ..resnet(1, false, [vec![t1], vec![t1], vec![t1], vec![t1]])
            },
            // hub/csn.py csn_r101: create_csn's defaults with depth 101 and a stem pool
            "csn_r101" => Self {
                depth: 101,
                conv_b: ConvB::Depthwise,
                strides: [(1, 1), (2, 2), (2, 2), (2, 2)],
                ..resnet(3, false, [vec![t1], vec![t1], vec![t1], vec![t1]])
            },
            _ => return None,
        })
    }
}

impl ResNet3dSpec {
    /// The `blocks` index of each stage and of the head: the stem is 0, and C2D/I3D's pool after
    /// the first stage takes an index of its own.
    pub fn block_indices(&self) -> ([usize; 4], usize) {
        let p = usize::from(self.stage1_pool);
        ([1, 2 + p, 3 + p, 4 + p], 5 + p)
    }
}

/// Blocks per stage of a bottleneck ResNet (pytorchvideo `_MODEL_STAGE_DEPTH`).
pub fn stage_depths(depth: usize) -> Option<[usize; 4]> {
    match depth {
        50 => Some([3, 4, 6, 3]),
        101 => Some([3, 4, 23, 3]),
        152 => Some([3, 8, 36, 3]),
        _ => None,
    }
}

/// The ResNet-3D options a config may carry besides the architecture (keys of its `extra`
/// map); absent keys keep pytorchvideo's structure.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ResNet3dOptions {
    /// Per stage, a 0/1 flag per residual block: a non-local block after each flagged one.
    pub non_local: Option<Vec<Vec<u8>>>,
    /// The non-local blocks' settings (defaults: pytorchvideo `create_nonlocal`'s).
    pub non_local_cfg: Option<NonLocalConfig>,
    /// Temporal stride of the stem conv (mmaction2 `conv1_stride_t`); 1 when absent.
    pub stem_stride_t: Option<usize>,
    /// Temporal stride of the stem's max pool (mmaction2 `pool1_stride_t`); 1 when absent.
    pub stem_pool_stride_t: Option<usize>,
    /// Epsilon of the backbone's BNs (not the non-local blocks'); PyTorch's 1e-5 when absent.
    pub bn_eps: Option<f64>,
}

impl ResNet3dOptions {
    pub const KEYS: [&'static str; 5] =
        ["non_local", "non_local_cfg", "stem_stride_t", "stem_pool_stride_t", "bn_eps"];

    pub fn from_config(config: &ModelConfig) -> Result<Self> {
        let opts: Self = config.extra_options(&Self::KEYS)?;
        if opts.stem_stride_t == Some(0) || opts.stem_pool_stride_t == Some(0) {
            candle_core::bail!("{}: stem_stride_t and stem_pool_stride_t must be positive", config.arch);
        }
        if opts.bn_eps.is_some_and(|e| !(e > 0.0 && e.is_finite())) {
            candle_core::bail!("{}: bn_eps must be positive", config.arch);
        }
        if opts.non_local_cfg.is_some() && opts.non_local.is_none() {
            candle_core::bail!("{}: non_local_cfg is set but no block has non_local", config.arch);
        }
        Ok(opts)
    }

    /// The flags of each stage as booleans, checked against the stages' block counts.
    pub fn non_local_flags(&self, arch: &str, depths: &[usize]) -> Result<Option<Vec<Vec<bool>>>> {
        let Some(flags) = &self.non_local else { return Ok(None) };
        let counts: Vec<usize> = flags.iter().map(Vec::len).collect();
        if counts != depths {
            candle_core::bail!(
                "{arch}: non_local has stages of {counts:?} flags, the model stages of {depths:?} blocks"
            );
        }
        if flags.iter().flatten().any(|f| *f > 1) {
            candle_core::bail!("{arch}: non_local flags are 0 or 1");
        }
        Ok(Some(flags.iter().map(|s| s.iter().map(|f| *f == 1).collect()).collect()))
    }
}

/// Blocks per stage of a model of `depth`: the config's `stage_depths` where set, else
/// pytorchvideo's for the depth.
pub fn config_stage_depths(config: &ModelConfig, depth: usize) -> Result<[usize; 4]> {
    match config.stage_depths.or_else(|| stage_depths(depth)) {
        Some(d) => Ok(d),
        None => candle_core::bail!("{}: no ResNet of depth {depth}", config.arch),
    }
}

/// pytorchvideo `ResBlock` with a `BottleneckBlock` branch.
#[derive(Clone, Debug)]
pub struct Bottleneck3d {
    branch1: Option<ConvBn3d>,
    a: ConvBn3d,
    /// R(2+1)D: `conv_b.conv_t` with `conv_b.norm`, ReLU'd before `b`.
    b_t: Option<ConvBn3d>,
    b: ConvBn3d,
    c: ConvBn3d,
    /// Applied after the block's final ReLU (mmaction2 `Bottleneck3d.forward`, resnet3d.py
    /// L328-331).
    non_local: Option<NonLocal>,
}

impl Bottleneck3d {
    pub fn new(
        cin: usize,
        inner: usize,
        cout: usize,
        kernel_a: [usize; 3],
        conv_b: ConvB,
        stride: [usize; 3],
        vb: VarBuilder,
    ) -> Result<Self> {
        let br = vb.pp("branch2");
        let branch1 = if cin != cout || stride != [1; 3] {
            Some(ConvBn3d::new(
                cin,
                cout,
                [1, 1, 1],
                stride,
                1,
                vb.pp("branch1_conv"),
                vb.pp("branch1_norm"),
            )?)
        } else {
            None
        };
        let (b_t, b) = match conv_b {
            ConvB::Spatial | ConvB::Depthwise => {
                let (k, groups) = if conv_b == ConvB::Spatial { ([1, 3, 3], 1) } else { ([3; 3], inner) };
                (None, ConvBn3d::new(inner, inner, k, stride, groups, br.pp("conv_b"), br.pp("norm_b"))?)
            }
            ConvB::TwoPlusOne => {
                let [st, sh, sw] = stride;
                let cb = br.pp("conv_b");
                let t =
                    ConvBn3d::new(inner, inner, [3, 1, 1], [st, 1, 1], 1, cb.pp("conv_t"), cb.pp("norm"))?;
                let xy = ConvBn3d::new(
                    inner,
                    inner,
                    [1, 3, 3],
                    [1, sh, sw],
                    1,
                    cb.pp("conv_xy"),
                    br.pp("norm_b"),
                )?;
                (Some(t), xy)
            }
        };
        Ok(Self {
            branch1,
            a: ConvBn3d::new(cin, inner, kernel_a, [1, 1, 1], 1, br.pp("conv_a"), br.pp("norm_a"))?,
            b_t,
            b,
            c: ConvBn3d::new(inner, cout, [1, 1, 1], [1, 1, 1], 1, br.pp("conv_c"), br.pp("norm_c"))?,
            non_local: None,
        })
    }

    /// Sets the epsilon of the block's BNs (its non-local block's excepted).
    fn set_bn_eps(&mut self, eps: f64) {
        let convs = [Some(&mut self.a), self.b_t.as_mut(), Some(&mut self.b), Some(&mut self.c)];
        for cb in convs.into_iter().chain([self.branch1.as_mut()]).flatten() {
            cb.bn.eps = eps;
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_to_t(x, train, false)
    }

    /// `forward_t`; `to_next_block`: only the next block reads the output (its convolutions and
    /// its residual: handed over in u8 alone under int8), unless a non-local block follows.
    pub fn forward_to_t(&self, x: &Tensor, train: bool, to_next_block: bool) -> Result<Tensor> {
        let to_next_block = to_next_block && self.non_local.is_none();
        self.forward_with(x, train, |out| if to_next_block { read_by_convs(out) } else { out() })
    }

    /// `forward_t` whose output only convolutions read, as their input or their residual
    /// (SlowFast's, concatenated with a lateral connection first): handed over in bf16 under
    /// bf16 (`nn::bf16_act`), unless a non-local block follows; f32 under int8.
    pub fn forward_to_convs_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let to_convs = self.non_local.is_none();
        self.forward_with(
            x,
            train,
            |out| if to_convs { crate::nn::block_output_to_convs(out) } else { out() },
        )
    }

    /// The block, its last convolution (with the residual) run by `last`.
    fn forward_with(
        &self,
        x: &Tensor,
        train: bool,
        last: impl FnOnce(&dyn Fn() -> Result<Tensor>) -> Result<Tensor>,
    ) -> Result<Tensor> {
        // Only the next conv reads each inner conv's output (handed over in u8 under int8; the
        // shortcut's conv, run between b and c, reads x).
        let a = || feeds_next_conv(|| self.a.forward_act(x, train, None, true));
        // A depthwise b (CSN) reads its input in f32 as it is: bf16 would round it (`bf16_act`).
        let mut y = match self.b.conv.cfg.groups {
            1 => a()?,
            _ => crate::nn::with_f32_activations(a)?,
        };
        if let Some(t) = &self.b_t {
            y = feeds_next_conv(|| t.forward_act(&y, train, None, true))?;
        }
        let y = feeds_next_conv(|| self.b.forward_act(&y, train, None, true))?;
        let shortcut = match &self.branch1 {
            // Only c reads the shortcut's output, as its residual.
            Some(b) => residual_only(|| b.forward_act(x, train, None, false))?,
            None => x.clone(),
        };
        let y = last(&|| self.c.forward_act(&y, train, Some(&shortcut), true))?;
        match &self.non_local {
            Some(nl) => nl.forward_t(&y, train),
            None => Ok(y),
        }
    }
}

/// pytorchvideo `create_res_stage` of bottlenecks: `depth` blocks under `vb.res_blocks`, conv_a
/// kernels cycling through `conv_a`, the (temporal, spatial) `stride` on the first block's conv_b.
/// With `non_local`, block j flagged there is `res_blocks.{j}.0` followed by a non-local block
/// `res_blocks.{j}.1`.
#[allow(clippy::too_many_arguments)]
pub fn res_stage(
    cin: usize,
    inner: usize,
    cout: usize,
    depth: usize,
    conv_a: &[[usize; 3]],
    conv_b: ConvB,
    (st, ss): (usize, usize),
    non_local: Option<(&[bool], &NonLocalConfig)>,
    vb: VarBuilder,
) -> Result<Vec<Bottleneck3d>> {
    let vb = vb.pp("res_blocks");
    (0..depth)
        .map(|j| {
            let stride = if j == 0 { [st, ss, ss] } else { [1, 1, 1] };
            let c_in = if j == 0 { cin } else { cout };
            let ka = conv_a[j % conv_a.len()];
            let vb = vb.pp(j.to_string());
            match non_local {
                Some((flags, cfg)) if flags.get(j) == Some(&true) => {
                    let mut block = Bottleneck3d::new(c_in, inner, cout, ka, conv_b, stride, vb.pp("0"))?;
                    block.non_local = Some(NonLocal::new(cout, cfg, vb.pp("1"))?);
                    Ok(block)
                }
                _ => Bottleneck3d::new(c_in, inner, cout, ka, conv_b, stride, vb),
            }
        })
        .collect()
}

/// Clips [B, T, 3, H, W] (vidkit's layout) → [B, 3, T, H, W] (pytorchvideo's).
pub fn to_channels_first(x: &Tensor, frames: usize) -> Result<Tensor> {
    let (_, t, c, _, _) = x.dims5()?;
    if t != frames || c != 3 {
        candle_core::bail!("the model takes clips of {frames} RGB frames, got {t} frames of {c} channels");
    }
    x.permute((0, 2, 1, 3, 4))?.contiguous()
}

/// Global average pool [B, C, T, H, W] → [B, C] (`train`: as `plane_mean`).
pub fn global_pool(x: &Tensor, train: bool) -> Result<Tensor> {
    crate::nn::plane_mean(x, train)
}

#[derive(Clone, Debug)]
pub struct ResNet3d {
    pub config: ModelConfig,
    stem: ConvBn3d,
    stages: Vec<Vec<Bottleneck3d>>,
    stem_pool: bool,
    stage1_pool: bool,
    stem_pool_stride_t: usize,
    proj: Linear,
    /// `blocks.{i}.proj`, the classifier's parameter prefix.
    proj_name: String,
}

impl ResNet3d {
    pub fn new(config: ModelConfig, spec: &ResNet3dSpec, vb: VarBuilder) -> Result<Self> {
        let depths = config_stage_depths(&config, spec.depth)?;
        let opts = ResNet3dOptions::from_config(&config)?;
        let non_local = opts.non_local_flags(&config.arch, &depths)?;
        let nl_cfg = opts.non_local_cfg.clone().unwrap_or_default();
        let width = config.base_width;
        let blocks = vb.pp("blocks");
        let mut stem = ConvBn3d::new(
            3,
            width,
            spec.stem_kernel,
            [opts.stem_stride_t.unwrap_or(1), 2, 2],
            1,
            blocks.pp("0.conv"),
            blocks.pp("0.norm"),
        )?;
        let (stage_idx, head_idx) = spec.block_indices();
        let (mut cin, mut cout) = (width, width * 4);
        let mut stages = Vec::new();
        for (s, &n) in depths.iter().enumerate() {
            let vb = blocks.pp(stage_idx[s].to_string());
            stages.push(res_stage(
                cin,
                cout / 4,
                cout,
                n,
                &spec.conv_a[s],
                spec.conv_b,
                spec.strides[s],
                non_local.as_ref().map(|f| (f[s].as_slice(), &nl_cfg)),
                vb,
            )?);
            cin = cout;
            cout *= 2;
        }
        if let Some(eps) = opts.bn_eps {
            stem.bn.eps = eps;
            stages.iter_mut().flatten().for_each(|b| b.set_bn_eps(eps));
        }
        let proj = candle_nn::linear(cin, config.num_classes, blocks.pp(head_idx.to_string()).pp("proj"))?;
        Ok(Self {
            config,
            stem,
            stages,
            stem_pool: spec.stem_pool,
            stage1_pool: spec.stage1_pool,
            stem_pool_stride_t: opts.stem_pool_stride_t.unwrap_or(1),
            proj,
            proj_name: format!("blocks.{head_idx}.proj"),
        })
    }

    /// Pooled clip features [B, 1, C] of clips [B, T, 3, H, W].
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = to_channels_first(x, self.config.frames)?;
        // Only the first block's convolutions read the stem (through its pool): u8 alone under
        // int8, pooled as bytes; bf16 under bf16 where a pool takes it, pooled into bf16
        // (`nn::bf16_act`), f32 where none does.
        let stem = || self.stem.forward_act(&x, train, None, true);
        let mut y = match self.stem_pool {
            true => read_by_convs(|| crate::nn::through_max_pool(stem))?,
            false => crate::nn::with_f32_activations(|| read_by_convs(stem))?,
        };
        if self.stem_pool {
            y = max_pool3d(&y, [1, 3, 3], [self.stem_pool_stride_t, 2, 2], [0, 1, 1])?;
        }
        // Each block's output but the last one's goes to the next block alone (through the
        // stage-1 pool, which pools bytes under int8 too).
        let blocks = self.stages.iter().map(Vec::len).sum::<usize>();
        let mut done = 0;
        for (s, stage) in self.stages.iter().enumerate() {
            for block in stage {
                done += 1;
                y = block.forward_to_t(&y, train, done < blocks)?;
            }
            if s == 0 && self.stage1_pool {
                y = max_pool3d(&y, [2, 1, 1], [2, 1, 1], [0, 0, 0])?;
            }
        }
        global_pool(&y, train)?.unsqueeze(1)
    }

    /// The classifier's parameter prefix.
    pub fn classifier(&self) -> &str {
        &self.proj_name
    }

    /// Logits [B, classes] (pytorchvideo `ResNetBasicHead`: pool, dropout, proj).
    pub fn forward_t(&self, x: &Tensor, train: bool, dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        let f = self.features_t(x, train)?.squeeze(1)?;
        let f = crate::nn::dropout(&f, self.config.dropout as f64, dropout_rng)?;
        self.proj.forward(&f)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::model::{build, ModelConfig};
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    use std::collections::BTreeMap;

    /// Shapes of a freshly built model's parameters by name.
    pub fn param_shapes(cfg: &ModelConfig) -> BTreeMap<String, Vec<usize>> {
        let varmap = VarMap::new();
        build(cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        let data = varmap.data().lock().unwrap();
        data.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect()
    }

    /// Blocks in each stage `blocks.{s}.{within}res_blocks.{j}`, for s in `stages`.
    pub fn blocks_per_stage(
        shapes: &BTreeMap<String, Vec<usize>>,
        within: &str,
        stages: [usize; 4],
    ) -> [usize; 4] {
        stages.map(|s| {
            let prefix = format!("blocks.{s}.{within}res_blocks.");
            let mut ids: Vec<&str> =
                shapes.keys().filter_map(|k| k.strip_prefix(&prefix)?.split('.').next()).collect();
            ids.dedup();
            ids.len()
        })
    }

    #[test]
    fn stage_depths_make_a_shallow_slow_with_pytorchvideo_names() {
        let mut cfg = ModelConfig::defaults("slow_r50");
        cfg.num_classes = 4;
        cfg.base_width = 16;
        let full = param_shapes(&cfg);
        assert_eq!(blocks_per_stage(&full, "", [1, 2, 3, 4]), [3, 4, 6, 3]);
        cfg.stage_depths = Some([2, 2, 2, 2]);
        let s = param_shapes(&cfg);
        assert_eq!(blocks_per_stage(&s, "", [1, 2, 3, 4]), [2, 2, 2, 2]);
        // Widths follow base_width: stem 16, stage outputs 64/128/256/512 (inner a quarter).
        assert_eq!(s["blocks.0.conv.weight"], [16, 3, 1, 7, 7]);
        assert_eq!(s["blocks.1.res_blocks.0.branch2.conv_a.weight"], [16, 16, 1, 1, 1]);
        assert_eq!(s["blocks.1.res_blocks.1.branch2.conv_c.weight"], [64, 16, 1, 1, 1]);
        assert_eq!(s["blocks.3.res_blocks.0.branch2.conv_a.weight"], [64, 128, 3, 1, 1]);
        assert_eq!(s["blocks.4.res_blocks.1.branch2.conv_c.weight"], [512, 128, 1, 1, 1]);
        assert_eq!(s["blocks.5.proj.weight"], [4, 512]);
        // Every name of the shallow model is one of the full model's.
        assert!(s.keys().all(|k| full.contains_key(k)));

        let mut sf = ModelConfig::defaults("slowfast_r50");
        (sf.num_classes, sf.base_width, sf.stage_depths) = (4, 16, Some([1, 2, 1, 1]));
        let s = param_shapes(&sf);
        for pathway in ["multipathway_blocks.0.", "multipathway_blocks.1."] {
            assert_eq!(blocks_per_stage(&s, pathway, [1, 2, 3, 4]), [1, 2, 1, 1], "{pathway}");
        }
    }

    #[test]
    fn stage_depths_are_checked() {
        let mut cfg = ModelConfig::defaults("slow_r50");
        let err = cfg.apply_overrides(&["stage_depths=[2,0,2,2]".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("every stage needs at least one block"), "{err:#}");
        let mut cfg = ModelConfig::defaults("slow_r50");
        let err = cfg.apply_overrides(&["stage_depths=[2,2,2]".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("expected an array of length 4"), "{err:#}");
        let mut cfg = ModelConfig::defaults("tsm_r18");
        let err = cfg.apply_overrides(&["stage_depths=[2,2,2,2]".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("stage_depths applies to the 3D CNNs"), "{err:#}");
        // Absent, the key stays out of the model file's config.
        let json = serde_json::to_value(ModelConfig::defaults("slow_r50")).unwrap();
        assert!(json.get("stage_depths").is_none());
    }

    fn narrow(arch: &str, overrides: &[&str]) -> (super::super::Model, VarMap) {
        let mut cfg = ModelConfig::defaults(arch);
        cfg.num_classes = 3;
        cfg.base_width = 8;
        cfg.frames = 4;
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        cfg.apply_overrides(&o).unwrap();
        let vm = VarMap::new();
        let m = build(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        (m, vm)
    }

    fn names(vm: &VarMap) -> Vec<String> {
        let mut n: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        n.sort();
        n
    }

    /// Without the options the names are pytorchvideo's; a flagged block moves under `.0` and its
    /// non-local block sits at `.1`; every parameter of a non-local model trains.
    #[test]
    fn non_local_blocks_follow_flagged_blocks_and_train() {
        let (_, plain) = narrow("i3d_r50", &[]);
        let plain = names(&plain);
        assert!(plain.contains(&"blocks.3.res_blocks.1.branch2.conv_a.weight".to_string()));
        assert!(!plain.iter().any(|n| n.contains("conv_theta")));
        let flags = "non_local=[[0,0,0],[0,1,0,1],[0,1,0,1,0,1],[0,0,0]]";
        let (model, vm) = narrow("i3d_r50", &[flags, "non_local_cfg.mode=dot_product", "stem_stride_t=2"]);
        let nl = names(&vm);
        for n in [
            "blocks.3.res_blocks.1.0.branch2.conv_a.weight",
            "blocks.3.res_blocks.1.1.conv_theta.weight",
            "blocks.3.res_blocks.1.1.conv_out.bias",
            "blocks.3.res_blocks.1.1.norm.running_var",
            "blocks.4.res_blocks.5.1.conv_g.bias",
            "blocks.3.res_blocks.0.branch2.conv_a.weight",
        ] {
            assert!(nl.contains(&n.to_string()), "{n} missing");
        }
        assert_eq!(nl.iter().filter(|n| n.ends_with("conv_theta.weight")).count(), 5);
        let x = crate::rng::randn(0f32, 1., (2, 4, 3, 32, 32), &Device::Cpu).unwrap();
        let y = model.forward_t(&x, true).unwrap();
        assert_eq!(y.dims(), [2, 3]);
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in vm.data().lock().unwrap().iter() {
            if crate::nn::is_buffer(name)
                || name.ends_with("conv_out.bias")
                || name.ends_with("conv_phi.bias")
            {
                continue;
            }
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
            let m = g.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(m > 0.0, "zero gradient for {name}");
        }
    }

    /// `bn_eps` reaches every BN of the stem, the blocks (R(2+1)D's inner one too) and the
    /// shortcuts; without it they keep PyTorch's 1e-5.
    #[test]
    fn bn_eps_sets_every_backbone_norm() {
        let eps_of = |m: &super::ResNet3d| -> Vec<f64> {
            let mut e = vec![m.stem.bn.eps];
            for b in m.stages.iter().flatten() {
                let convs = [Some(&b.a), b.b_t.as_ref(), Some(&b.b), Some(&b.c), b.branch1.as_ref()];
                e.extend(convs.into_iter().flatten().map(|cb| cb.bn.eps));
            }
            e
        };
        let resnet3d = |arch: &str, overrides: &[&str]| {
            let mut cfg = ModelConfig::defaults(arch);
            cfg.base_width = 8;
            let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
            cfg.apply_overrides(&o).unwrap();
            let spec = super::ResNet3dSpec::for_arch(arch).unwrap();
            let vm = VarMap::new();
            super::ResNet3d::new(cfg, &spec, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap()
        };
        for arch in ["csn_r101", "r2plus1d_r50"] {
            let plain = resnet3d(arch, &["stage_depths=[1,2,1,1]"]);
            assert!(eps_of(&plain).iter().all(|e| *e == 1e-5), "{arch}");
            let m = resnet3d(arch, &["stage_depths=[1,2,1,1]", "bn_eps=0.001"]);
            let eps = eps_of(&m);
            // stem, 5 blocks of conv_a/b/c (+ conv_b's temporal norm in R(2+1)D), 4 shortcuts
            let per_block = if arch == "csn_r101" { 3 } else { 4 };
            assert_eq!(eps.len(), 1 + 5 * per_block + 4, "{arch}");
            assert!(eps.iter().all(|e| *e == 1e-3), "{arch}: {eps:?}");
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let mut cfg = ModelConfig::defaults("slow_r50");
        cfg.base_width = 8;
        let build_err = |overrides: &[&str]| {
            let mut c = cfg.clone();
            let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
            c.apply_overrides(&o).unwrap();
            let vm = VarMap::new();
            format!("{:#}", build(&c, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).err().unwrap())
        };
        let e = build_err(&["non_local=[[0,0,0],[0,1,0,1]]"]);
        assert!(e.contains("stages of [3, 4] flags"), "{e}");
        let e = build_err(&["non_local_cfg.mode=dot_product"]);
        assert!(e.contains("no block has non_local"), "{e}");
        let e = build_err(&["non_local=[[0,0,0],[0,2,0,1],[0,0,0,0,0,0],[0,0,0]]"]);
        assert!(e.contains("0 or 1"), "{e}");
        let e = build_err(&[
            "non_local=[[0,0,0],[0,1,0,1],[0,0,0,0,0,0],[0,0,0]]",
            "non_local_cfg.mode=gaussian",
        ]);
        assert!(e.contains("unknown variant `gaussian`"), "{e}");
        let e = build_err(&["bn_eps=0"]);
        assert!(e.contains("bn_eps must be positive"), "{e}");
    }
}
