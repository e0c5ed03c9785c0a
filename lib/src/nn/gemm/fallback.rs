//! Without a blocked kernel (no AVX2 + FMA, or `VIDKIT_GEMM=portable`): the `gemm` crate does the
//! product through buffers, then the epilogue.

use super::*;

/// `a` row-major with row `i` times `s[i]`.
pub(super) fn scale_rows(a: &MatRef, s: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.rows * a.cols);
    for (i, &si) in s.iter().enumerate().take(a.rows) {
        let row = &a.data[i * a.rs..];
        if a.cs == 1 {
            out.extend(row[..a.cols].iter().map(|&v| v * si));
        } else {
            out.extend((0..a.cols).map(|j| row[j * a.cs] * si));
        }
    }
    out
}

/// The `gemm` crate's product (its AVX2/FMA kernels where available), then the epilogue.
pub(super) fn fallback(a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, accumulate: bool, epi: Epilogue) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let scaled: Vec<f32>;
    let a = match epi.row_scale {
        Some(s) => {
            scaled = scale_rows(&a, s);
            MatRef::row_major(&scaled, m, k)
        }
        None => a,
    };
    let threads = threads_for(m * n * k);
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the views and the output were bounds-checked by `sgemm`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        )
    };
    if epi.row_bias.is_some() || epi.residual.is_some() || epi.relu {
        for i in 0..m {
            let bias = epi.row_bias.map_or(0.0, |b| b[i]);
            for j in 0..n {
                let at = i * ldc + j;
                c[at] = finish(c[at], bias + epi.residual.map_or(0.0, |r| r[at]), epi.relu);
            }
        }
    }
}
