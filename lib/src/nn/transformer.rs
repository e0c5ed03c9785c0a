//! Transformer building blocks, written once for every video transformer: LayerNorm, multi-head
//! self-attention with a joint q/k/v projection, the GELU MLP and stochastic depth (drop path).
//! Semantics as timm's `vision_transformer.py`, which facebookresearch's TimeSformer
//! (`timesformer/models/vit.py`) and PaddleVideo's `backbones/vit.py` restate.
//!
//! Inference uses candle's fused LayerNorm and last-axis softmax; training composes them from
//! differentiable ops, since candle gives its fused kernels no backward pass.

use crate::rng::Rng;
use candle_core::{Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

/// LayerNorm over the last axis with a learned scale and shift (`weight`, `bias`).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            // (x - mean) / sqrt(var + eps), the biased variance, as torch.nn.LayerNorm.
            let n = x.dim(D::Minus1)? as f64;
            let centred = x.broadcast_sub(&(x.sum_keepdim(D::Minus1)? / n)?)?;
            let var = (centred.sqr()?.sum_keepdim(D::Minus1)? / n)?;
            let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
            normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
        } else {
            candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps as f32)
        }
    }
}

/// A Linear layer on `x` [..., in] → [..., out] through our GEMM (2D, differentiable): the
/// leading axes are folded into the rows.
pub fn linear(x: &Tensor, layer: &Linear) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (rows, k) = (dims[..dims.len() - 1].iter().product::<usize>(), dims[dims.len() - 1]);
    if super::int8::engaged() && super::fusable(x) {
        if let Some(y) = linears_int8(x, &[layer], rows)? {
            let mut out = dims;
            *out.last_mut().expect("rank ≥ 1") = layer.weight().dim(0)?;
            return Tensor::from_vec(y, out, x.device());
        }
    }
    let y = times_weight_t(&x.reshape((rows, k))?, layer.weight())?;
    let y = match layer.bias() {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out = dims;
    *out.last_mut().expect("rank ≥ 1") = y.dim(1)?;
    y.reshape(out)
}

/// x · Wᵀ, W marked as the model's weight (`gemm::as_weight`): an inference run's bf16 tile
/// products then pair it once instead of packing its transposed view every time.
fn times_weight_t(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let product = || super::gemm::matmul(x, &weight.t()?);
    if !weight.is_contiguous() || weight.dtype() != candle_core::DType::F32 {
        return product();
    }
    let (storage, layout) = weight.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else { return product() };
    // The buffer as `matmul` views it (from the tensor's offset on).
    let data = &cpu.as_slice::<f32>()?[layout.start_offset()..];
    super::gemm::as_weight(weight.id(), data, product)
}

/// Linear layers that read one input (attention's q, k and v): [..., Σ out], their outputs side
/// by side. In an int8 run x is quantized and packed once and one product covers them all
/// (`int8::linears`); elsewhere each layer runs in turn.
pub fn linears_side_by_side(x: &Tensor, layers: &[&Linear]) -> Result<Tensor> {
    if super::int8::active() && super::fusable(x) {
        let dims = x.dims().to_vec();
        let rows = dims[..dims.len() - 1].iter().product::<usize>();
        if let Some(y) = linears_int8(x, layers, rows)? {
            let mut out = dims;
            *out.last_mut().expect("rank ≥ 1") = y.len() / rows.max(1);
            return Tensor::from_vec(y, out, x.device());
        }
    }
    let parts = layers.iter().map(|l| linear(x, l)).collect::<Result<Vec<_>>>()?;
    Tensor::cat(&parts, D::Minus1)
}

/// Linear layers on one input under int8 (`linears_side_by_side`, or `linear` of one layer):
/// calibrating, records `x`'s range and returns None (the f32 product runs); in an int8 run the
/// product through `int8::linears`, None where a layer is not a plain CPU buffer or the layers'
/// ranges differ (then each runs alone). A layer is known by its weight buffer, as a
/// convolution is.
fn linears_int8(x: &Tensor, layers: &[&Linear], rows: usize) -> Result<Option<Vec<f32>>> {
    let x = x.contiguous()?;
    let (x_storage, x_layout) = x.storage_and_layout();
    let candle_core::Storage::Cpu(xc) = &*x_storage else { return Ok(None) };
    let Some((xlo, xhi)) = x_layout.contiguous_offsets() else { return Ok(None) };
    let x_data = &xc.as_slice::<f32>()?[xlo..xhi];
    let guards: Vec<_> =
        layers.iter().map(|l| (l.weight().is_contiguous(), l.weight().storage_and_layout())).collect();
    let mut weights = Vec::with_capacity(layers.len());
    let mut int8 = Vec::with_capacity(layers.len());
    for (own, (storage, layout)) in &guards {
        let candle_core::Storage::Cpu(cpu) = &**storage else { return Ok(None) };
        let Some((lo, hi)) = layout.contiguous_offsets() else { return Ok(None) };
        let w = &cpu.as_slice::<f32>()?[lo..hi];
        let Some(layer) = super::int8::next_conv(super::int8::ConvIn::F32(x_data), None, w, *own)? else {
            return Ok(None);
        };
        weights.push(w);
        int8.push(layer);
    }
    let biases = layers
        .iter()
        .map(|l| l.bias().map(|b| b.flatten_all()?.to_vec1::<f32>()).transpose())
        .collect::<Result<Vec<_>>>()?;
    super::int8::linears(&int8, x_data, rows, &weights, &biases)
}

/// Softmax over the last axis; differentiable when `train`.
pub fn softmax_last(x: &Tensor, train: bool) -> Result<Tensor> {
    if train {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}

/// Scaled dot-product attention of q [.., N_q, d] over k, v [.., N_k, d]:
/// softmax(q kᵀ · scale) v, [.., N_q, d].
///
/// Inference on the CPU runs one fused op (`attention_cpu`): tiles of query rows through our
/// GEMM, the softmax on each tile's scores while they are in cache, so the score matrix never
/// exists whole (MViT-B's first block at 32 × 224²: 50 177 × 785 scores, 158 MB). Training, and
/// other devices, compose candle's ops, whose backward candle derives.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, train: bool) -> Result<Tensor> {
    if !train && super::fusable(q) {
        return super::attention_cpu::attention_cpu(q, k, v, scale);
    }
    let scores = super::autocast::matmul(&(q.contiguous()? * scale)?, &k.t()?)?;
    super::autocast::matmul(&softmax_last(&scores, train)?, &v.contiguous()?)
}

/// Multi-head self-attention with one `qkv` projection (q, k, v stacked on the output axis, as
/// timm) and an output projection `proj`; scale head_dim^-1/2.
#[derive(Clone, Debug)]
pub struct MultiHeadAttention {
    pub qkv: Linear,
    pub proj: Linear,
    pub heads: usize,
    pub scale: f64,
}

impl MultiHeadAttention {
    pub fn new(dim: usize, heads: usize, qkv_bias: bool, vb: VarBuilder) -> Result<Self> {
        if heads == 0 || dim % heads != 0 {
            candle_core::bail!("attention: width {dim} is not a multiple of {heads} heads");
        }
        let qkv = if qkv_bias {
            candle_nn::linear(dim, 3 * dim, vb.pp("qkv"))?
        } else {
            candle_nn::linear_no_bias(dim, 3 * dim, vb.pp("qkv"))?
        };
        let proj = candle_nn::linear(dim, dim, vb.pp("proj"))?;
        Ok(Self { qkv, proj, heads, scale: ((dim / heads) as f64).powf(-0.5) })
    }

    /// [B, N, C] → [B, N, C]: every token attends to the N tokens of its row.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let (h, d) = (self.heads, c / self.heads);
        // [B, N, 3, h, d] → [3, B, h, N, d]
        let qkv = linear(x, &self.qkv)?.reshape((b, n, 3, h, d))?.permute((2, 0, 3, 1, 4))?;
        let (q, k, v) = (qkv.get(0)?.contiguous()?, qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?);
        let y = attend(&q, &k, &v, self.scale, train)?.transpose(1, 2)?.reshape((b, n, c))?;
        linear(&y, &self.proj)
    }
}

/// exact GELU (erf), torch's and Paddle's `nn.GELU()` default, in vectors on the CPU.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    super::activation::gelu_erf(x)
}

/// fc1 → GELU → fc2.
#[derive(Clone, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    pub fn new(dim: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(dim, hidden, vb.pp("fc1"))?,
            fc2: candle_nn::linear(hidden, dim, vb.pp("fc2"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(&gelu(&linear(x, &self.fc1)?)?, &self.fc2)
    }
}

/// Stochastic depth (timm's `drop_path`): each row of the leading axis is zeroed with
/// probability `p` and the others scaled by 1/(1-p), drawn from `rng`; the identity when `rng`
/// is `None` (inference) or `p` is 0.
pub fn drop_path(x: &Tensor, p: f64, rng: Option<&mut Rng>) -> Result<Tensor> {
    match rng {
        Some(rng) if p > 0.0 => {
            let rows = x.dim(0)?;
            let keep = 1.0 - p;
            // floor(keep + U[0, 1)) is 1 with probability keep, as the references draw it.
            let mask: Vec<f32> = (0..rows).map(|_| ((keep + rng.uniform()).floor() / keep) as f32).collect();
            let mut shape = vec![1usize; x.rank()];
            shape[0] = rows;
            x.broadcast_mul(&Tensor::from_vec(mask, shape, x.device())?.to_dtype(x.dtype())?)
        }
        _ => Ok(x.clone()),
    }
}

/// Row `i` of the per-block drop path rates: `linspace(0, rate, depth)`, as timm and PaddleVideo.
pub fn drop_path_rates(rate: f64, depth: usize) -> Vec<f64> {
    match depth {
        0 => vec![],
        1 => vec![0.0],
        _ => (0..depth).map(|i| rate * i as f64 / (depth - 1) as f64).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn fused_and_composed_paths_agree() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let ln = LayerNorm::new(24, 1e-6, vb.pp("ln")).unwrap();
        let attn = MultiHeadAttention::new(24, 3, true, vb.pp("attn")).unwrap();
        crate::nn::reseed_params(&vm);
        let x = crate::rng::randn(0f32, 1., (2, 5, 24), &Device::Cpu).unwrap();
        assert!(max_diff(&ln.forward_t(&x, true).unwrap(), &ln.forward_t(&x, false).unwrap()) < 1e-5);
        let y_train = attn.forward_t(&x, true).unwrap();
        assert!(max_diff(&y_train, &attn.forward_t(&x, false).unwrap()) < 1e-5);
        // The composed path carries gradients to every parameter.
        let g = y_train.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in vm.data().lock().unwrap().iter() {
            if name.starts_with("attn") {
                assert!(g.get(var.as_tensor()).is_some(), "no gradient for {name}");
            }
        }
    }

    #[test]
    fn attention_is_softmax_of_scaled_dot_products() {
        // One head, identity projections: y = softmax(x xᵀ / sqrt(C)) x.
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let attn = MultiHeadAttention::new(2, 1, false, vb).unwrap();
        let eye = Tensor::eye(2, DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::cat(&[&eye, &eye, &eye], 0).unwrap();
        let data = vm.data().lock().unwrap();
        data["qkv.weight"].set(&w).unwrap();
        data["proj.weight"].set(&eye).unwrap();
        data["proj.bias"].set(&Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()).unwrap();
        drop(data);
        let x = Tensor::new(&[[[1f32, 0.], [0., 2.]]], &Device::Cpu).unwrap();
        let y = attn.forward_t(&x, false).unwrap().to_vec3::<f32>().unwrap();
        let s = 2f32.sqrt();
        // token 0: scores [1, 0]/s; token 1: [0, 4]/s
        let p0 = 1.0 / (1.0 + (-1.0 / s).exp());
        let p1 = 1.0 / (1.0 + (-4.0 / s).exp());
        assert!((y[0][0][0] - p0).abs() < 1e-6 && (y[0][0][1] - 2.0 * (1.0 - p0)).abs() < 1e-6);
        assert!((y[0][1][0] - (1.0 - p1)).abs() < 1e-6 && (y[0][1][1] - 2.0 * p1).abs() < 1e-6);
    }

    /// The fused inference attention equals the composed form, over tiles that do not divide
    /// the query rows (2000 keys of 64: 264-row tiles, 600 rows), within one tile and in a group
    /// of one row.
    #[test]
    fn fused_attention_equals_the_composed_ops() {
        for (nq, nk) in [(600, 2000), (43, 1000), (1, 5)] {
            let q = crate::rng::randn(0f32, 1., (1, 2, nq, 64), &Device::Cpu).unwrap();
            let k = crate::rng::randn(0f32, 1., (1, 2, nk, 64), &Device::Cpu).unwrap();
            let v = crate::rng::randn(0f32, 1., (1, 2, nk, 5), &Device::Cpu).unwrap();
            let fused = attend(&q, &k, &v, 0.125, false).unwrap();
            let composed = attend(&q, &k, &v, 0.125, true).unwrap();
            assert_eq!(fused.dims(), [1, 2, nq, 5]);
            assert!(max_diff(&fused, &composed) < 1e-5, "{nq}×{nk}: {}", max_diff(&fused, &composed));
        }
    }

    #[test]
    fn drop_path_zeroes_whole_rows_and_keeps_the_mean() {
        let x = Tensor::ones((4000, 3), DType::F32, &Device::Cpu).unwrap();
        let y = drop_path(&x, 0.25, Some(&mut Rng::new(1))).unwrap().to_vec2::<f32>().unwrap();
        assert!(y
            .iter()
            .all(|r| r.iter().all(|v| *v == r[0]) && (r[0] == 0.0 || (r[0] - 4.0 / 3.0).abs() < 1e-6)));
        let mean = y.iter().map(|r| r[0] as f64).sum::<f64>() / 4000.0;
        assert!((mean - 1.0).abs() < 0.05, "{mean}");
        assert_eq!(drop_path_rates(0.1, 3), vec![0.0, 0.05, 0.1]);
    }
}
