//! `matmul`: the candle op on `sgemm`, forward and backward.

use super::*;

/// `a` [M, K] × `b` [K, N] for f32 CPU tensors of any strides, through `sgemm`, differentiable;
/// other dtypes and devices go to candle's `matmul`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !crate::nn::fusable(a) || b.dtype() != candle_core::DType::F32 {
        return crate::nn::autocast::matmul(a, b);
    }
    a.apply_op2(b, MatMul { bf16: crate::nn::autocast::bf16_products() })
}

/// `bf16`: the forward ran under bf16 autocast, and so does the backward's products.
struct MatMul {
    bf16: bool,
}

/// The 2D view of a CPU tensor's storage.
fn view<'a>(s: &'a CpuStorage, l: &Layout) -> Result<MatRef<'a>> {
    let data = s.as_slice::<f32>()?;
    let dims = l.dims();
    if dims.len() != 2 {
        candle_core::bail!("matmul: expected 2D operands, got {dims:?}")
    }
    let st = l.stride();
    let data = &data[l.start_offset()..];
    let (rows, cols) = (dims[0], dims[1]);
    // Singleton dimensions may carry any stride; make them harmless.
    let rs = if rows == 1 { 0 } else { st[0] };
    let cs = if cols == 1 { 0 } else { st[1] };
    Ok(MatRef { data, rows, cols, rs, cs })
}

impl CustomOp2 for MatMul {
    fn name(&self) -> &'static str {
        "vidkit-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        crate::nn::fused::kernel_allowed(self.name())?;
        let (a, b) = (view(s1, l1)?, view(s2, l2)?);
        if a.cols != b.rows {
            candle_core::bail!("matmul: shapes {:?} and {:?} do not chain", l1.dims(), l2.dims())
        }
        b.check();
        let out = sgemm_columns_new(a, b, Columns::single(b.cols), b.cols, Epilogue::default());
        Ok((CpuStorage::F32(out), Shape::from((a.rows, b.cols))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // dA = dC·Bᵀ, dB = Aᵀ·dC: transposed views, no copies.
        crate::nn::autocast::bf16_if(self.bf16, || {
            let da = matmul(grad, &b.t()?)?;
            let db = matmul(&a.t()?, grad)?;
            Ok((Some(da), Some(db)))
        })
    }
}
