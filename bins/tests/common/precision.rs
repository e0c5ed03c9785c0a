#![allow(dead_code)]
//! `--precision bf16` against PyTorch's bf16 CPU mode on a parity fixture: the export scripts
//! also run the reference under `torch.autocast("cpu", dtype=torch.bfloat16)` (`logits_bf16.npy`),
//! and vidkit's bf16 logits must drift from its own f32 logits (root mean square of the
//! differences over that of the logits) by no more than three times PyTorch's drift from its f32
//! logits on the same weights and input.
//!
//! Paddle fixtures (export_paddle_parity.py's `bf16_emulated`) give the same reference from
//! Paddle: each convolution's, Linear layer's and matmul's operands rounded to bf16, sums in f32
//! (Paddle's own CPU bf16 mode needs AVX512-BF16).
//!
//! Why that bound: bf16 keeps 8 bits of mantissa, so each rounded operand is off by up to 2^-9
//! relative, and how that sums through a random network's depth is what the reference's own
//! drift measures. vidkit rounds the same operands (every convolution's and linear layer's input
//! and weight, accumulating in f32) but keeps its classifier head and BatchNorm in f32, so it
//! should drift about as much. How much one rounding pattern moves the logits is itself a random
//! draw: on the I3D non-local dot-product fixture (logits up to 78, the most chaotic one)
//! PyTorch's drift is 3.4e-2 with only the input rounded, 5.4e-2 with only the weights rounded
//! and 4.8e-2 under autocast, and vidkit's is 1.1e-1 whether or not the non-local products are
//! rounded (over the other fixtures, 0.5–1.1 × PyTorch's). Three times covers that spread;
//! below a fifth of PyTorch's drift, products were left unrounded, and that fails too.

use candle_core::{DType, Device, Tensor};
use std::path::Path;

/// How far bf16 logits are from f32 ones: vidkit's (`ours`) and PyTorch's (`torch`), as the root
/// mean square of the differences over that of the f32 logits, and the top-1 checks.
#[derive(Debug)]
pub struct Bf16Drift {
    pub ours: f32,
    pub torch: f32,
    /// Rows whose f32 top-1 leads its runner-up by more than 6 × PyTorch's largest absolute
    /// drift (so a bf16 drifting within the bound cannot swap them), and how many in all.
    pub rows_checked: usize,
    pub rows: usize,
    /// Of the checked rows, those whose top-1 changed in vidkit's bf16.
    pub top1_changed: usize,
}

fn rms(v: impl Iterator<Item = f32>) -> f32 {
    let (sum, n) = v.fold((0f64, 0usize), |(s, n), x| (s + (x as f64) * (x as f64), n + 1));
    (sum / n.max(1) as f64).sqrt() as f32
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
}

/// vidkit's bf16 drift beside PyTorch's for `logits` (vidkit's f32 logits of `forward`'s input,
/// [rows, classes]) and the fixture's `logits.npy` / `logits_bf16.npy`; None when the fixture has
/// no bf16 logits (exported before they were added).
pub fn bf16_drift(fixture: &Path, logits: &[f32], forward: impl FnOnce() -> Tensor) -> Option<Bf16Drift> {
    let path = fixture.join("logits_bf16.npy");
    if !path.exists() {
        return None;
    }
    let (shape, torch_bf16) = super::read_npy_f32(&path);
    let (_, torch_f32) = super::read_npy_f32(&fixture.join("logits.npy"));
    let ours_bf16 = vidkit::nn::with_autocast(Some(DType::BF16), forward);
    let ours_bf16 =
        ours_bf16.to_device(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(ours_bf16.len(), logits.len());
    let scale = rms(logits.iter().copied());
    let ours = rms(ours_bf16.iter().zip(logits).map(|(a, b)| a - b)) / scale;
    let torch = rms(torch_bf16.iter().zip(&torch_f32).map(|(a, b)| a - b)) / rms(torch_f32.iter().copied());
    let torch_abs = torch_bf16.iter().zip(&torch_f32).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let classes = *shape.last().unwrap();
    let (mut rows_checked, mut top1_changed) = (0, 0);
    for (f32_row, bf16_row) in logits.chunks(classes).zip(ours_bf16.chunks(classes)) {
        let top = argmax(f32_row);
        let runner_up = (0..classes).filter(|&i| i != top).map(|i| f32_row[i]).fold(f32::MIN, f32::max);
        if f32_row[top] - runner_up > 6.0 * torch_abs {
            rows_checked += 1;
            top1_changed += usize::from(argmax(bf16_row) != top);
        }
    }
    Some(Bf16Drift { ours, torch, rows_checked, rows: logits.len() / classes, top1_changed })
}

impl Bf16Drift {
    /// Prints the figures and asserts the bound (see the module's comment).
    pub fn check(&self, what: &str) {
        eprintln!(
            "bf16 {what}: drift from f32 {:.2e} (the reference's {:.2e}, limit {:.2e}); top-1 kept on {}/{} rows \
             ({} of {} rows clear of the reference's drift)",
            self.ours,
            self.torch,
            3.0 * self.torch,
            self.rows_checked - self.top1_changed,
            self.rows_checked,
            self.rows_checked,
            self.rows
        );
        assert!(
            self.ours >= 0.2 * self.torch,
            "{what}: bf16 drift {:.3e} is a fraction of the reference's {:.3e}: were the products rounded?",
            self.ours,
            self.torch
        );
        assert!(
            self.ours <= 3.0 * self.torch,
            "{what}: bf16 drift {:.3e} > three times the reference's {:.3e}",
            self.ours,
            self.torch
        );
        assert_eq!(self.top1_changed, 0, "{what}: bf16 changed the top-1 of a row clear of the drift");
    }
}
