//! Building blocks candle lacks or that we need with exact reference semantics.

mod activation;
mod attention_cpu;
mod autocast;
mod batchnorm;
mod bf16_act;
mod conv;
mod conv1d;
mod conv3d;
#[cfg(target_arch = "x86_64")]
mod conv_bn_train;
mod conv_direct;
mod conv_gemm;
mod depthwise;
mod depthwise3d;
mod fused;
mod gated_swish;
pub mod gemm;
mod im2col;
pub mod int8;
mod lstm;
mod nonlocal;
pub mod observer;
mod plane_mean;
mod pool;
mod pool3d;
mod pooling_attention;
mod portable;
pub mod qgemm;
mod scoped;
mod shift;
pub(crate) mod simd;
mod token_pool;
mod transformer;
mod transpose;
mod vol2col;

pub use activation::{add_leaky_relu, add_relu, leaky_relu, relu};
pub use autocast::with_autocast;
pub use batchnorm::BatchNorm2d;
pub use bf16_act::{
    block_output_to_convs, handovers as bf16_handovers, through_max_pool, with_f32_activations,
    with_handovers, Handovers,
};
pub use conv::Conv2d;
pub use conv1d::conv1d_differentiable;
pub use conv3d::{Conv3d, Conv3dConfig};
pub use depthwise::DepthwiseConv2d;
pub use fused::{
    conv_bn_act_3d, conv_fusable, depthwise_bn_act_3d, depthwise_branches_bn_act_3d, fusable, portable,
    with_portable_ops,
};
pub use gated_swish::{channel_scale_inference, gated_swish, swish_inference};
pub use lstm::Lstm;
pub use nonlocal::{NonLocal, NonLocalConfig, NonLocalMode};
pub use plane_mean::plane_mean;
pub use pool::{avg_pool2d_ceil, max_pool2d};
pub use pool3d::{adaptive_avg_pool3d, avg_pool3d, max_pool3d};
pub use pooling_attention::{AttentionPool, MultiscaleAttention, PoolingSpec, Thw};
pub use shift::{temporal_shift, temporal_shift_paddle};
pub use token_pool::max_pool_tokens;
pub use transformer::{
    attend, drop_path, drop_path_rates, gelu, linear, softmax_last, LayerNorm, Mlp, MultiHeadAttention,
};
pub use vol2col::Geometry3d;

use crate::rng::Rng;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// Keeps freed tensor buffers in the process (glibc: no `mmap` for large blocks, no trimming).
/// Every op allocates its output afresh; with glibc's defaults each large buffer is a new mapping
/// whose pages fault in zeroed — a fifth of a training step's time. Call once at start-up, before
/// threads exist; a no-op elsewhere.
pub fn retain_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_MAX: i32 = -4;
        // SAFETY: mallopt only changes allocator tunables; called before other threads allocate.
        unsafe {
            mallopt(M_MMAP_MAX, 0);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

/// Inverted dropout (PyTorch's and Paddle's `upscale_in_train`): zero with probability `p`,
/// scale the rest by 1/(1-p). Only when `rng` is given (training), drawn from that seeded
/// generator so runs repeat (candle's own RNG cannot be seeded); the identity otherwise.
pub fn dropout(x: &Tensor, p: f64, rng: Option<&mut Rng>) -> Result<Tensor> {
    match rng {
        Some(rng) if p > 0.0 => {
            let scale = (1.0 / (1.0 - p)) as f32;
            let keep: Vec<f32> =
                (0..x.elem_count()).map(|_| if rng.uniform() < p { 0.0 } else { scale }).collect();
            x * Tensor::from_vec(keep, x.shape(), x.device())?.to_dtype(x.dtype())?
        }
        _ => Ok(x.clone()),
    }
}

/// Parameter names that are state, not parameters: optimisers and weight decay skip them.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var") || name.ends_with("num_batches_tracked")
}

/// A bias-free convolution as torchvision's ResNets use (`conv{k}x{k}`).
pub fn conv2d(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    Conv2d::new(cin, cout, k, stride, padding, vb)
}

/// BatchNorm2d with PyTorch's defaults (eps 1e-5, momentum 0.1, affine, unbiased running
/// variance); weight 1, bias 0, running stats 0/1 when created fresh.
pub fn batch_norm2d(c: usize, vb: VarBuilder) -> Result<BatchNorm2d> {
    BatchNorm2d::new(c, vb)
}

/// conv → BN, the pair every ResNet layer is made of.
#[derive(Clone, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
}

impl ConvBn {
    /// BN(conv(x)); fused in eval mode on the CPU (see `forward_act`).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        conv2d_bn_act(&self.conv, &self.bn, x, train, None, false)
    }

    /// BN(conv(x)) (+ `residual`) (then ReLU): one fused pass in eval mode on the CPU (see
    /// `fused.rs`), the separate differentiable ops otherwise.
    pub fn forward_act(
        &self,
        x: &Tensor,
        train: bool,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Result<Tensor> {
        conv2d_bn_act(&self.conv, &self.bn, x, train, residual, relu)
    }
}

/// BN(conv(x)) (+ `residual`) (then ReLU) for a 2D conv and its BN, fused when `!train` on the
/// CPU (as a 3D convolution over one frame), the differentiable ops otherwise.
pub fn conv2d_bn_act(
    conv: &Conv2d,
    bn: &BatchNorm2d,
    x: &Tensor,
    train: bool,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    if train && fusable(x) {
        return conv_bn_train_act(x, &conv.weight, conv.geometry(x)?, bn, residual, relu);
    }
    if !train && conv_fusable(x) {
        let g = conv.geometry(x)?;
        let res = residual.map(|r| r.unsqueeze(2)).transpose()?;
        let y = conv_bn_act_3d(&x.unsqueeze(2)?, g, &conv.weight, None, bn, res.as_ref(), relu)?;
        return y.squeeze(2);
    }
    match residual {
        None => bn.forward_act_t(&conv.forward(x)?, train, relu),
        Some(_) => add_act(bn.forward_t(&conv.forward(x)?, train)?, residual, relu),
    }
}

/// ReLU(BN(conv(temporal_shift(x)))) for TSM's first conv of a block (mmaction2's shift:
/// `segments` frames per clip as x's batch, 1/`shift_div` of the channels each way). On the CPU
/// no shifted copy is a graph node: in training the conv's node shifts its input, in inference
/// a 1×1 conv's GEMM reads x shifted. The separate shift op elsewhere.
pub fn conv2d_bn_relu_shifted(
    conv: &Conv2d,
    bn: &BatchNorm2d,
    x: &Tensor,
    train: bool,
    segments: usize,
    shift_div: usize,
) -> Result<Tensor> {
    if !conv_fusable(x) || x.dim(0)? % segments.max(1) != 0 {
        return conv2d_bn_act(conv, bn, &temporal_shift(x, segments, shift_div)?, train, None, true);
    }
    let shift = shift::FrameShift::mmaction(x.dim(1)?, segments, shift_div);
    let g = conv.geometry(x)?;
    if train {
        return bn.forward_after_conv(x, &conv.weight, g, x.rank(), None, true, Some(&shift));
    }
    fused::conv_bn_act_3d_shifted(&x.unsqueeze(2)?, g, &conv.weight, None, bn, None, true, Some(&shift))?
        .squeeze(2)
}

/// Training BN(conv(x)) (+ `residual`) (then ReLU) on the CPU for a dense convolution without
/// bias over `g` (`weight` [C_out, C, kt, kh, kw], or [C_out, C, kh, kw] for a 4D x): the conv,
/// the BN, the residual and the ReLU as one graph node, see `conv_bn_train.rs`.
pub fn conv_bn_train_act(
    x: &Tensor,
    weight: &Tensor,
    g: Geometry3d,
    bn: &BatchNorm2d,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    match residual {
        Some(r) if !fusable(r) => {
            add_act(bn.forward_after_conv(x, weight, g, x.rank(), None, false, None)?, residual, relu)
        }
        _ => bn.forward_after_conv(x, weight, g, x.rank(), residual, relu, None),
    }
}

/// `y` (+ `residual`) (then ReLU) with the differentiable ops: the unfused tail of `forward_act`.
pub fn add_act(y: Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
    match (residual, relu) {
        (Some(r), true) => add_relu(&y, r),
        (Some(r), false) => y + r,
        (None, true) => self::relu(&y),
        (None, false) => Ok(y),
    }
}

#[cfg(test)]
mod graph {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    /// Every graph node costs the backward a zeroed buffer and an add of its gradient's size
    /// (candle's `GradStore::or_insert`), so a training conv → BN → ReLU is one node over the
    /// input, in 2D and 3D; the conv and the BN apart are two, with no reshapes around them.
    #[test]
    fn training_conv_bn_relu_is_one_node() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let cb = ConvBn {
            conv: conv2d(4, 6, 3, 1, 1, vb.pp("c")).unwrap(),
            bn: batch_norm2d(6, vb.pp("b")).unwrap(),
        };
        let x = Var::from_tensor(&crate::rng::randn(0f32, 1., (2, 4, 8, 8), &dev).unwrap()).unwrap();
        let activations = |y: &Tensor, x: &Tensor| -> Vec<Vec<usize>> {
            let nodes = y.sorted_nodes();
            nodes
                .into_iter()
                .filter(|t| t.elem_count() >= x.elem_count())
                .map(|t| t.dims().to_vec())
                .collect()
        };
        let y = cb.forward_act(x.as_tensor(), true, None, true).unwrap();
        assert_eq!(activations(&y, x.as_tensor()), vec![vec![2, 6, 8, 8], vec![2, 4, 8, 8]], "2D");
        // A residual joins the same node: no separate sum before the ReLU.
        let r = Var::from_tensor(&crate::rng::randn(0f32, 1., (2, 6, 8, 8), &dev).unwrap()).unwrap();
        let y = cb.forward_act(x.as_tensor(), true, Some(r.as_tensor()), true).unwrap();
        let nodes = activations(&y, x.as_tensor());
        assert_eq!(nodes, vec![vec![2, 6, 8, 8], vec![2, 6, 8, 8], vec![2, 4, 8, 8]], "2D + residual");

        let cfg = Conv3dConfig { padding: [1; 3], ..Default::default() };
        let conv3 = Conv3d::new(4, 6, [3, 3, 3], cfg, vb.pp("c3")).unwrap();
        let x3 = Var::from_tensor(&crate::rng::randn(0f32, 1., (2, 4, 3, 8, 8), &dev).unwrap()).unwrap();
        let g = conv3.geometry_of(x3.as_tensor()).unwrap();
        let y3 = conv_bn_train_act(x3.as_tensor(), &conv3.weight, g, &cb.bn, None, true).unwrap();
        assert_eq!(activations(&y3, x3.as_tensor()), vec![vec![2, 6, 3, 8, 8], vec![2, 4, 3, 8, 8]], "3D");
        let apart = cb.bn.forward_act_t(&conv3.forward(x3.as_tensor()).unwrap(), true, true).unwrap();
        let ranks: Vec<usize> = activations(&apart, x3.as_tensor()).iter().map(Vec::len).collect();
        assert_eq!(ranks, vec![5, 5, 5], "3D conv, then BN");
    }

    /// TSM's first conv with the shift inside its node equals the shift node followed by the
    /// conv node, bit for bit: output, and the gradients of sum(y · r) for x, the weight, γ and
    /// β; and the shifted copy is no node of its own. In inference, likewise the output.
    #[test]
    fn shift_inside_the_conv_node_equals_the_shift_node() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        crate::model::init_weights(&vm, 3).unwrap();
        for (kernel, pad, segments, shift_div) in [(1, 0, 4, 8), (3, 1, 3, 4)] {
            let cb = ConvBn {
                conv: conv2d(16, 6, kernel, 1, pad, vb.pp(format!("c{kernel}"))).unwrap(),
                bn: batch_norm2d(6, vb.pp(format!("b{kernel}"))).unwrap(),
            };
            crate::model::init_weights(&vm, 3).unwrap();
            let x = Var::from_tensor(&crate::rng::randn(0f32, 1., (2 * segments, 16, 5, 7), &dev).unwrap())
                .unwrap();
            let r = crate::rng::randn(0f32, 1., (2 * segments, 6, 5, 7), &dev).unwrap();
            let inside =
                conv2d_bn_relu_shifted(&cb.conv, &cb.bn, x.as_tensor(), true, segments, shift_div).unwrap();
            let shifted = temporal_shift(x.as_tensor(), segments, shift_div).unwrap();
            let apart = cb.forward_act(&shifted, true, None, true).unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat(&inside), flat(&apart), "k{kernel}: output");
            // Inference: the 1×1 conv's GEMM reads x shifted (the 3×3 one shifts a copy first).
            let plain = x.as_tensor().detach();
            let read_shifted =
                conv2d_bn_relu_shifted(&cb.conv, &cb.bn, &plain, false, segments, shift_div).unwrap();
            let copy_shifted = temporal_shift(&plain, segments, shift_div).unwrap();
            let copy_shifted = cb.forward_act(&copy_shifted, false, None, true).unwrap();
            assert_eq!(flat(&read_shifted), flat(&copy_shifted), "k{kernel}: inference output");
            let nodes =
                inside.sorted_nodes().into_iter().filter(|t| t.elem_count() >= x.elem_count()).count();
            assert_eq!(nodes, 1, "k{kernel}: x the only input-sized node, no shifted copy");
            let (gi, ga) = (
                (&inside * &r).unwrap().sum_all().unwrap().backward().unwrap(),
                (&apart * &r).unwrap().sum_all().unwrap().backward().unwrap(),
            );
            for (what, t) in
                [("x", x.as_tensor()), ("w", &cb.conv.weight), ("γ", &cb.bn.weight), ("β", &cb.bn.bias)]
            {
                let (a, b) = (gi.get(t).expect("gradient"), ga.get(t).expect("gradient"));
                assert_eq!(flat(a), flat(b), "k{kernel}: gradient of {what}");
            }
        }
    }
}

#[cfg(test)]
mod op_timing {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    #[test]
    #[ignore]
    fn time_op_backwards() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&crate::rng::randn(0f32, 1., (64, 16, 16, 16), &dev).unwrap()).unwrap();
        let vm = VarMap::new();
        let bn = batch_norm2d(16, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let conv = conv2d(16, 16, 3, 1, 1, VarBuilder::from_varmap(&vm, DType::F32, &dev).pp("c")).unwrap();
        for _ in 0..2 {
            let t = std::time::Instant::now();
            let y = bn.forward_t(x.as_tensor(), true).unwrap();
            let f = t.elapsed();
            y.sum_all().unwrap().backward().unwrap();
            eprintln!("bn fwd {f:?} total {:?}", t.elapsed());
            let t = std::time::Instant::now();
            let y = max_pool2d(x.as_tensor(), 3, 2, 1).unwrap();
            let f = t.elapsed();
            y.sum_all().unwrap().backward().unwrap();
            eprintln!("pool fwd {f:?} total {:?}", t.elapsed());
            let t = std::time::Instant::now();
            let y = conv.forward(x.as_tensor()).unwrap();
            let f = t.elapsed();
            y.sum_all().unwrap().backward().unwrap();
            eprintln!("conv fwd {f:?} total {:?}", t.elapsed());
            let t = std::time::Instant::now();
            let y = temporal_shift(x.as_tensor(), 8, 8).unwrap();
            let f = t.elapsed();
            y.sum_all().unwrap().backward().unwrap();
            eprintln!("shift fwd {f:?} total {:?}", t.elapsed());
            let t = std::time::Instant::now();
            let y = x.as_tensor().relu().unwrap();
            y.sum_all().unwrap().backward().unwrap();
            eprintln!("relu total {:?}", t.elapsed());
        }
    }
}

#[cfg(test)]
mod op_timing2 {
    use candle_core::{Device, Var};
    #[test]
    #[ignore]
    fn time_conv_backward_parts() {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&crate::rng::randn(0f32, 1., (16, 144), &dev).unwrap()).unwrap();
        let c = Var::from_tensor(&crate::rng::randn(0f32, 1., (144, 16384), &dev).unwrap()).unwrap();
        for _ in 0..2 {
            let t = std::time::Instant::now();
            let y = w.as_tensor().matmul(c.as_tensor()).unwrap();
            let f = t.elapsed();
            y.sum_all().unwrap().backward().unwrap();
            eprintln!("matmul fwd {f:?} total {:?}", t.elapsed());
            let x = Var::from_tensor(&crate::rng::randn(0f32, 1., (64, 16, 16, 16), &dev).unwrap()).unwrap();
            let t = std::time::Instant::now();
            let u = super::im2col::unfold(x.as_tensor(), 3, 1, 1).unwrap();
            let f = t.elapsed();
            u.sum_all().unwrap().backward().unwrap();
            eprintln!("unfold fwd {f:?} total {:?}", t.elapsed());
            let y = crate::rng::randn(0f32, 1., (16, 64, 256), &dev).unwrap();
            let t = std::time::Instant::now();
            let _ = y.transpose(0, 1).unwrap().contiguous().unwrap();
            eprintln!("transpose {:?}", t.elapsed());
        }
    }
}

/// Test helper: `vm`'s variables in name order, so seeded draws (`rng::randn`) assigned in turn
/// land on the same variables every run (a `VarMap` iterates in its hash order).
#[cfg(test)]
pub(crate) fn vars_by_name(vm: &candle_nn::VarMap) -> Vec<(String, candle_core::Var)> {
    let mut vars: Vec<_> =
        vm.data().lock().expect("var map lock").iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Test helper: each variable of `vm` (in name order) drawn again from the seeded sequence
/// (`rng::randn`), N(0, 1/fan_in) with fan_in the elements per output row (per element of a
/// vector): candle's initialisers draw from its unseedable generator, so a test on freshly built
/// layers would see new weights every run. Constant variables (a LayerNorm's ones, zero biases)
/// stay as they are.
#[cfg(test)]
pub(crate) fn reseed_params(vm: &candle_nn::VarMap) {
    for (_, var) in vars_by_name(vm) {
        let t = var.as_tensor();
        let v: Vec<f32> = t.flatten_all().and_then(|t| t.to_vec1()).expect("values");
        if v.iter().all(|&x| x == v[0]) {
            continue;
        }
        let dims = t.dims();
        let fan_in = if dims.len() >= 2 { t.elem_count() / dims[0] } else { t.elem_count() };
        let std = 1.0 / (fan_in.max(1) as f32).sqrt();
        var.set(&crate::rng::randn(0.0, std, t.shape(), t.device()).expect("draw")).expect("set");
    }
}

/// Test helper: every variable of `vm` drawn uniform in [0.5, 1.5), minus 1 for means and biases
/// (so BatchNorm statistics and affine parameters are non-trivial, variances positive).
#[cfg(test)]
pub(crate) fn randomise_params(vm: &candle_nn::VarMap) {
    for (name, var) in vars_by_name(vm) {
        let r =
            crate::rng::rand(0.5f32, 1.5, var.as_tensor().shape(), var.as_tensor().device()).expect("rand");
        let shifted = name.ends_with("mean") || name.ends_with("bias");
        var.set(&if shifted { (r - 1.0).expect("shift") } else { r }).expect("set");
    }
}
