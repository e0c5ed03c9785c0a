//! A (bi)directional single-layer LSTM over padded batches, as PyTorch's `nn.LSTM`
//! (`batch_first=True`, gate order i, f, g, o; parameter names `weight_ih_l0`, `weight_hh_l0`,
//! `bias_ih_l0`, `bias_hh_l0`, `…_reverse`) fed a packed sequence, and as Paddle's
//! `paddle.nn.LSTM(direction="bidirectional")` given `sequence_length` (same gates and order).
//!
//! Built from differentiable candle ops, so the backward pass is candle's autograd; the input
//! projection of all steps is one matmul, leaving one [B, H]×[H, 4H] product per step.
//! Padding is at the end of each sequence (`mask` [B, T], 1 = valid): the state stops changing
//! after a sequence's last step, the reverse direction starts at that step, and outputs at
//! padded steps are zero, as `pad_packed_sequence` returns them.

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;

#[derive(Clone, Debug)]
struct Direction {
    /// [4H, D], [4H, H], [4H], [4H]. The biases are summed at each forward, never at
    /// construction: the variables change under the optimiser (and when weights are loaded).
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
}

impl Direction {
    fn new(input: usize, hidden: usize, suffix: &str, vb: &VarBuilder) -> Result<Self> {
        let w_ih = vb.get((4 * hidden, input), &format!("weight_ih_l0{suffix}"))?;
        let w_hh = vb.get((4 * hidden, hidden), &format!("weight_hh_l0{suffix}"))?;
        let b_ih = vb.get(4 * hidden, &format!("bias_ih_l0{suffix}"))?;
        let b_hh = vb.get(4 * hidden, &format!("bias_hh_l0{suffix}"))?;
        Ok(Self { w_ih, w_hh, b_ih, b_hh })
    }

    /// Outputs [B, T, H] of one direction.
    fn run(&self, x: &Tensor, mask: Option<&Tensor>, reverse: bool) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let h4 = self.w_hh.dim(0)?;
        let hidden = h4 / 4;
        let projected = x
            .reshape((b * t, d))?
            .matmul(&self.w_ih.t()?)?
            .broadcast_add(&(&self.b_ih + &self.b_hh)?)?
            .reshape((b, t, h4))?;
        let w_hh_t = self.w_hh.t()?;
        let mut h = Tensor::zeros((b, hidden), x.dtype(), x.device())?;
        let mut c = h.clone();
        let mut outputs: Vec<Option<Tensor>> = vec![None; t];
        let steps: Vec<usize> = if reverse { (0..t).rev().collect() } else { (0..t).collect() };
        for step in steps {
            let gates = (projected.narrow(1, step, 1)?.squeeze(1)? + h.matmul(&w_hh_t)?)?;
            let i = candle_nn::ops::sigmoid(&gates.narrow(D::Minus1, 0, hidden)?)?;
            let f = candle_nn::ops::sigmoid(&gates.narrow(D::Minus1, hidden, hidden)?)?;
            let g = gates.narrow(D::Minus1, 2 * hidden, hidden)?.tanh()?;
            let o = candle_nn::ops::sigmoid(&gates.narrow(D::Minus1, 3 * hidden, hidden)?)?;
            let c_new = ((f * &c)? + (i * g)?)?;
            let h_new = (o * c_new.tanh()?)?;
            match mask {
                Some(m) => {
                    // valid → new state; padded → keep the old one (zeros before a reverse start).
                    let m = m.narrow(1, step, 1)?;
                    let keep = (1.0 - &m)?;
                    c = (c_new.broadcast_mul(&m)? + c.broadcast_mul(&keep)?)?;
                    h = (h_new.broadcast_mul(&m)? + h.broadcast_mul(&keep)?)?;
                    outputs[step] = Some(h_new.broadcast_mul(&m)?);
                }
                None => {
                    c = c_new;
                    outputs[step] = Some(h_new.clone());
                    h = h_new;
                }
            }
        }
        let outputs: Vec<Tensor> = outputs.into_iter().map(|o| o.expect("every step ran")).collect();
        Tensor::stack(&outputs, 1)
    }
}

#[derive(Clone, Debug)]
pub struct Lstm {
    forward: Direction,
    backward: Option<Direction>,
    pub hidden: usize,
}

impl Lstm {
    pub fn new(input: usize, hidden: usize, bidirectional: bool, vb: VarBuilder) -> Result<Self> {
        let forward = Direction::new(input, hidden, "", &vb)?;
        let backward =
            if bidirectional { Some(Direction::new(input, hidden, "_reverse", &vb)?) } else { None };
        Ok(Self { forward, backward, hidden })
    }

    /// Width of the output: H, or 2H when bidirectional.
    pub fn out_dim(&self) -> usize {
        self.hidden * if self.backward.is_some() { 2 } else { 1 }
    }

    /// Outputs [B, T, H·dirs] (forward then reverse halves) of inputs [B, T, D]; `mask` [B, T]
    /// of 1 (valid) and 0 (padding after the end), or `None` when every sequence is full.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let fw = self.forward.run(x, mask, false)?;
        match &self.backward {
            None => Ok(fw),
            Some(bw) => Tensor::cat(&[fw, bw.run(x, mask, true)?], D::Minus1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    /// One step by hand: with zero state, h = σ(o)·tanh(σ(i)·tanh(g)), gates = W_ih x + b.
    #[test]
    fn one_step_matches_the_lstm_equations() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        Lstm::new(1, 1, false, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        for (name, v) in vm.data().lock().expect("varmap").iter() {
            let vals: Vec<f32> = match name.as_str() {
                "weight_ih_l0" => vec![0.5, -0.25, 1.0, 2.0],
                "bias_ih_l0" => vec![0.1, 0.2, 0.3, 0.4],
                _ => vec![0.0; v.elem_count()],
            };
            v.set(&Tensor::from_vec(vals, v.shape(), &dev)?)?;
        }
        let lstm = Lstm::new(1, 1, false, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        let y = lstm.forward(&Tensor::new(&[[[2.0f32]]], &dev)?, None)?.flatten_all()?.to_vec1::<f32>()?;
        let s = |v: f32| 1.0 / (1.0 + (-v).exp());
        let (i, g, o) = (s(2.0 * 0.5 + 0.1), (2.0f32 * 1.0 + 0.3).tanh(), s(2.0 * 2.0 + 0.4));
        let want = o * (i * g).tanh();
        assert!((y[0] - want).abs() < 1e-6, "{} vs {want}", y[0]);
        Ok(())
    }

    /// Padding never leaks: a padded sequence gives the outputs of the same sequence alone.
    #[test]
    fn padded_steps_do_not_change_valid_outputs() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let lstm = Lstm::new(3, 4, true, vb)?;
        for (_, v) in crate::nn::vars_by_name(&vm) {
            v.set(&crate::rng::randn(0f32, 0.5, v.shape(), &dev)?)?;
        }
        let full = crate::rng::randn(0f32, 1., (1, 5, 3), &dev)?;
        let short = full.narrow(1, 0, 3)?;
        let padded = Tensor::cat(&[short.clone(), Tensor::full(9f32, (1, 2, 3), &dev)?], 1)?;
        let mask = Tensor::new(&[[1f32, 1., 1., 0., 0.]], &dev)?;
        let alone = lstm.forward(&short, None)?;
        let with_pad = lstm.forward(&padded, Some(&mask))?;
        let diff = (with_pad.narrow(1, 0, 3)? - &alone)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "padding changed valid outputs by {diff}");
        let tail = with_pad.narrow(1, 3, 2)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(tail, 0.0, "outputs at padded steps must be zero");
        // And every parameter gets a gradient through the masked path.
        let x = Var::from_tensor(&padded)?;
        let grads = lstm.forward(x.as_tensor(), Some(&mask))?.sqr()?.sum_all()?.backward()?;
        for v in vm.all_vars() {
            let g = grads.get(v.as_tensor()).expect("gradient");
            assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        }
        Ok(())
    }
}
