//! Non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018) for [N, C, T, H, W]
//! maps, as pytorchvideo's `NonLocal` / `create_nonlocal` (pytorchvideo/layers/nonlocal_net.py)
//! computes it and with its parameter names (`conv_theta`, `conv_phi`, `conv_g`, `conv_out`, all
//! 1×1×1 with bias, and `norm`, a BatchNorm3d after `conv_out`):
//!
//!   θ = conv_theta(x), φ = conv_phi(x'), g = conv_g(x'), x' = x or max-pooled x
//!   A = θᵀφ  [N, THW, T'H'W']
//!   softmax:     A ← softmax(A · dim_inner^-½) over the pooled positions
//!   dot_product: A ← A / (number of pooled positions)
//!   y = x + norm(conv_out(g Aᵀ))
//!
//! mmcv's `NonLocal3d` (mmcv/cnn/bricks/non_local.py), which mmaction2's ResNet3d inserts, is the
//! same computation with three differences that [`NonLocalConfig`] expresses: its
//! `embedded_gaussian` mode may skip the scale (`use_scale=False`, as every mmaction2 non-local
//! config sets), its `sub_sample` max-pools φ and g after their convolutions (non_local.py
//! L302-306: `nn.Sequential(self.g, MaxPool3d((1, 2, 2)))`) where pytorchvideo pools x before
//! them, and its `conv_out` ConvModule has no bias when it has a norm (mmcv's `bias='auto'`).
//! Its `gaussian` and `concatenation` modes are not supported.
//!
//! All ops are candle's differentiable ones (softmax through `ops::softmax`, whose gradient is
//! kept, not `softmax_last_dim`), and the norm follows BatchNorm's train mode.

use super::{batch_norm2d, max_pool3d, BatchNorm2d, Conv3d, Conv3dConfig};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// How the affinity matrix is normalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonLocalMode {
    /// pytorchvideo `dot_product`, mmcv `dot_product`: divide by the number of pooled positions.
    DotProduct,
    /// pytorchvideo `softmax`, mmcv `embedded_gaussian`: softmax over the pooled positions.
    #[serde(alias = "embedded_gaussian")]
    Softmax,
}

/// The settings of a non-local block that the weights do not show (mode, scale, pooling) and
/// those they do (width, norm, bias). Defaults: pytorchvideo `create_nonlocal`'s, with
/// `dim_inner = dim_in / 2` (PySlowFast's choice).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NonLocalConfig {
    pub mode: NonLocalMode,
    /// Softmax mode: scale the affinity by dim_inner^-½ first (pytorchvideo always does; mmcv
    /// `use_scale`).
    pub use_scale: bool,
    /// dim_inner = channels / reduction.
    pub reduction: usize,
    /// Max-pool kernel (= stride) over the positions φ and g see; [1, 1, 1]: no pooling.
    pub pool: [usize; 3],
    /// Pool φ and g after their convolutions (mmcv `sub_sample`) rather than x before them
    /// (pytorchvideo).
    pub pool_after_conv: bool,
    /// BatchNorm after `conv_out`.
    pub norm: bool,
    /// `conv_out` has a bias (pytorchvideo: always; mmcv: only without a norm).
    pub out_bias: bool,
}

impl Default for NonLocalConfig {
    fn default() -> Self {
        Self {
            mode: NonLocalMode::Softmax,
            use_scale: true,
            reduction: 2,
            pool: [1, 1, 1],
            pool_after_conv: false,
            norm: true,
            out_bias: true,
        }
    }
}

impl NonLocalConfig {
    pub fn validate(&self) -> Result<()> {
        if self.reduction == 0 || self.pool.contains(&0) {
            candle_core::bail!("non_local_cfg: reduction and pool sizes must be positive");
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct NonLocal {
    theta: Conv3d,
    phi: Conv3d,
    g: Conv3d,
    out: Conv3d,
    norm: Option<BatchNorm2d>,
    cfg: NonLocalConfig,
    dim_inner: usize,
}

impl NonLocal {
    /// A block over `channels` channels with parameters under `vb` (pytorchvideo's names).
    pub fn new(channels: usize, cfg: &NonLocalConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let dim_inner = channels / cfg.reduction;
        if dim_inner == 0 || channels % cfg.reduction != 0 {
            candle_core::bail!(
                "non-local block: {channels} channels are not divisible by reduction {}",
                cfg.reduction
            );
        }
        let proj = Conv3dConfig { bias: true, ..Default::default() };
        let conv = |cin, cout, bias, name: &str| {
            Conv3d::new(cin, cout, [1, 1, 1], Conv3dConfig { bias, ..proj }, vb.pp(name))
        };
        Ok(Self {
            theta: conv(channels, dim_inner, true, "conv_theta")?,
            phi: conv(channels, dim_inner, true, "conv_phi")?,
            g: conv(channels, dim_inner, true, "conv_g")?,
            out: conv(dim_inner, channels, cfg.out_bias, "conv_out")?,
            norm: if cfg.norm { Some(batch_norm2d(channels, vb.pp("norm"))?) } else { None },
            cfg: cfg.clone(),
            dim_inner,
        })
    }

    fn pool(&self, x: &Tensor) -> Result<Tensor> {
        max_pool3d(x, self.cfg.pool, self.cfg.pool, [0, 0, 0])
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, _, t, h, w) = x.dims5()?;
        let ci = self.dim_inner;
        let pooled = self.cfg.pool != [1, 1, 1];
        let theta = self.theta.forward(x)?.reshape((n, ci, t * h * w))?;
        let src = if pooled && !self.cfg.pool_after_conv { self.pool(x)? } else { x.clone() };
        let (mut phi, mut g) = (self.phi.forward(&src)?, self.g.forward(&src)?);
        if pooled && self.cfg.pool_after_conv {
            phi = self.pool(&phi)?;
            g = self.pool(&g)?;
        }
        let p = phi.elem_count() / (n * ci);
        let phi = phi.reshape((n, ci, p))?;
        let g = g.reshape((n, ci, p))?;
        // [N, THW, P]: every position against every pooled one.
        let affinity = super::autocast::matmul(&theta.transpose(1, 2)?.contiguous()?, &phi)?;
        let affinity = match self.cfg.mode {
            NonLocalMode::Softmax => {
                let a = if self.cfg.use_scale { (affinity * (ci as f64).powf(-0.5))? } else { affinity };
                candle_nn::ops::softmax(&a, 2)?
            }
            NonLocalMode::DotProduct => (affinity / p as f64)?,
        };
        // [N, Ci, P] × [N, P, THW] → [N, Ci, THW]
        let y = super::autocast::matmul(&g, &affinity.transpose(1, 2)?.contiguous()?)?
            .reshape((n, ci, t, h, w))?;
        let mut y = self.out.forward(&y)?;
        if let Some(norm) = &self.norm {
            y = norm.forward_t(&y, train)?;
        }
        x + y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    /// Seeded values in [-1, 1), so the finite differences below never meet a tie in a max pool
    /// by chance on one run and not another.
    fn uniform(rng: &mut Rng, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.uniform_range(-1.0, 1.0) as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn block(cfg: &NonLocalConfig, c: usize, rng: &mut Rng) -> (NonLocal, VarMap) {
        let vm = VarMap::new();
        let nl = NonLocal::new(c, cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let mut names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        let data = vm.data().lock().unwrap();
        for name in names {
            if !crate::nn::is_buffer(&name) {
                let var = &data[&name];
                var.set(&uniform(rng, var.dims())).unwrap();
            }
        }
        drop(data);
        (nl, vm)
    }

    /// The loss sum(y · r) in f64 for central differences.
    fn loss(nl: &NonLocal, x: &Tensor, r: &Tensor, train: bool) -> f64 {
        let y = nl.forward_t(x, train).unwrap();
        (y * r).unwrap().sum_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    fn configs() -> Vec<NonLocalConfig> {
        let mm = NonLocalConfig {
            mode: NonLocalMode::DotProduct,
            use_scale: false,
            pool: [1, 2, 2],
            pool_after_conv: true,
            out_bias: false,
            ..Default::default()
        };
        vec![
            NonLocalConfig::default(),
            NonLocalConfig { pool: [2, 2, 2], ..Default::default() },
            NonLocalConfig { mode: NonLocalMode::DotProduct, norm: false, ..Default::default() },
            mm.clone(),
            NonLocalConfig { mode: NonLocalMode::Softmax, ..mm },
        ]
    }

    /// Gradients with respect to the input and every parameter against central differences,
    /// BatchNorm in train mode (its statistics depend on the input too).
    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(7);
        for cfg in configs() {
            let (nl, vm) = block(&cfg, 4, &mut rng);
            let x = Var::from_tensor(&uniform(&mut rng, &[2, 4, 2, 4, 3])).unwrap();
            let y = nl.forward_t(x.as_tensor(), true).unwrap();
            let r = uniform(&mut rng, y.dims());
            let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let mut vars: Vec<(String, Var)> =
                vm.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            vars.retain(|(k, _)| !crate::nn::is_buffer(k));
            vars.push(("x".into(), x.clone()));
            for (name, var) in vars {
                let g =
                    grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{cfg:?}: no gradient for {name}"));
                let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
                // Zero by construction: a bias before train-mode BN is cancelled by its mean, and
                // φ's bias shifts a softmax row by a constant.
                let cancelled = (cfg.norm && name == "conv_out.bias")
                    || (cfg.mode == NonLocalMode::Softmax && name == "conv_phi.bias");
                assert!(cancelled || g.iter().any(|v| *v != 0.0), "{cfg:?}: zero gradient for {name}");
                let base: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
                // A few coordinates per tensor keep the test fast.
                for i in (0..base.len()).step_by((base.len() / 5).max(1)) {
                    let eps = 1e-3f32;
                    let mut plus = base.clone();
                    plus[i] += eps;
                    var.set(&Tensor::from_vec(plus, var.shape(), &dev).unwrap()).unwrap();
                    // Train-mode BN updates running stats; they do not enter the train output.
                    let lp = loss(&nl, x.as_tensor(), &r, true);
                    let mut minus = base.clone();
                    minus[i] -= eps;
                    var.set(&Tensor::from_vec(minus, var.shape(), &dev).unwrap()).unwrap();
                    let lm = loss(&nl, x.as_tensor(), &r, true);
                    var.set(&Tensor::from_vec(base.clone(), var.shape(), &dev).unwrap()).unwrap();
                    let fd = (lp - lm) / (2.0 * eps as f64);
                    let tol = 2e-2 * fd.abs().max(1.0);
                    assert!((fd - g[i] as f64).abs() <= tol, "{cfg:?} {name}[{i}]: fd {fd} vs {}", g[i]);
                }
            }
        }
    }

    /// Zero `conv_out` (and BN bias): the block is the identity, in both instantiations.
    #[test]
    fn zero_output_projection_is_identity_and_shapes_hold() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(3);
        for cfg in configs() {
            let (nl, vm) = block(&cfg, 6, &mut rng);
            for (name, var) in vm.data().lock().unwrap().iter() {
                if name.starts_with("conv_out") || name == "norm.bias" {
                    var.set(&var.as_tensor().zeros_like().unwrap()).unwrap();
                }
            }
            let x = uniform(&mut rng, &[1, 6, 3, 5, 4]);
            let y = nl.forward_t(&x, false).unwrap();
            let d = (y - &x).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(d, 0.0, "{cfg:?}");
        }
        let err = NonLocal::new(
            5,
            &NonLocalConfig::default(),
            VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("not divisible"), "{err}");
    }

    #[test]
    fn config_reads_mmcv_names() {
        let c: NonLocalConfig =
            serde_json::from_str(r#"{"mode": "embedded_gaussian", "use_scale": false}"#).unwrap();
        assert_eq!((c.mode, c.use_scale, c.reduction), (NonLocalMode::Softmax, false, 2));
        assert!(serde_json::from_str::<NonLocalConfig>(r#"{"mode": "gaussian"}"#).is_err());
        assert!(serde_json::from_str::<NonLocalConfig>(r#"{"sub_sample": true}"#).is_err());
    }
}
