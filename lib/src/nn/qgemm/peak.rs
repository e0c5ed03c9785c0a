//! The int8 multiply-add rate this CPU's dot-product instructions reach with nothing but
//! independent sums in registers: the ceiling `make bench` reports the kernels against (the
//! ports' rate at the clock they run at here, where a nominal figure would need the clock and
//! the port count, neither of which a virtual machine reports).

use super::QIsa;

/// Multiply-adds per second (in 10⁹) that `isa`'s instruction sequence reaches on every thread
/// of the rayon pool at once, over about `seconds`. `None`: the portable kernel, no figure.
pub fn peak_gmacs(isa: Option<QIsa>, seconds: f64) -> Option<f64> {
    let isa = isa.filter(|i| i.supported())?;
    let macs_per_iter = CHAINS as f64 * macs_per_step(isa);
    Some(gmacs_on_every_thread(seconds, macs_per_iter, |iters| run(isa, iters)))
}

/// Multiply-adds per second (in 10⁹) of `run(iters)` (`macs_per_iter` each iteration) on every
/// thread of the rayon pool at once, its loop count calibrated to about `seconds` / 4 on one
/// thread first.
pub(in crate::nn) fn gmacs_on_every_thread(
    seconds: f64,
    macs_per_iter: f64,
    run: impl Fn(u64) + Sync,
) -> f64 {
    let mut iters = 1u64 << 10;
    loop {
        let t = std::time::Instant::now();
        run(iters);
        if t.elapsed().as_secs_f64() > seconds / 4.0 {
            break;
        }
        iters *= 2;
    }
    let t = std::time::Instant::now();
    rayon::broadcast(|_| run(iters));
    let macs = iters as f64 * macs_per_iter * rayon::current_num_threads() as f64;
    macs / t.elapsed().as_secs_f64() / 1e9
}

/// Independent sums per loop step: more than latency × ports for both instruction sets.
const CHAINS: usize = 12;

fn macs_per_step(isa: QIsa) -> f64 {
    match isa {
        // vpdpbusd: 16 lanes × 4 products.
        QIsa::Avx512Vnni => 64.0,
        // tdpbsud: 16 × 16 sums of 64 products.
        QIsa::Amx => 16384.0,
        // vpmaddubsw + vpmaddwd + vpaddd: 8 lanes × 4 products.
        QIsa::Avx2 => 32.0,
    }
}

fn run(isa: QIsa, iters: u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `peak_gmacs` checked that the CPU has the instructions.
    unsafe {
        match isa {
            QIsa::Avx512Vnni => vnni(iters),
            QIsa::Avx2 => avx2(iters),
            QIsa::Amx => crate::nn::gemm::with_tiles(|| amx(iters)),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (isa, iters);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn vnni(iters: u64) {
    use std::arch::x86_64::*;
    let (a, b) = (_mm512_set1_epi8(3), _mm512_set1_epi8(-5));
    let mut acc = [_mm512_setzero_si512(); CHAINS];
    for _ in 0..iters {
        for s in acc.iter_mut() {
            *s = _mm512_dpbusd_epi32(*s, a, b);
            // An empty asm that "changes" the sum: the loop cannot be folded into a
            // multiplication, and the sums stay in registers.
            std::arch::asm!("/* {0} */", inout(zmm_reg) * s, options(pure, nomem, nostack, preserves_flags));
        }
    }
    std::hint::black_box(acc);
}

/// `CHAINS` tile products a step, spread over four accumulator tiles.
///
/// # Safety
/// Tiles configured on this thread.
#[cfg(target_arch = "x86_64")]
unsafe fn amx(iters: u64) {
    std::arch::asm!("tilezero tmm4", "tilezero tmm6", options(nostack, nomem));
    for _ in 0..iters {
        std::arch::asm!(
            "tdpbsud tmm0, tmm4, tmm6",
            "tdpbsud tmm1, tmm4, tmm6",
            "tdpbsud tmm2, tmm4, tmm6",
            "tdpbsud tmm3, tmm4, tmm6",
            "tdpbsud tmm0, tmm4, tmm6",
            "tdpbsud tmm1, tmm4, tmm6",
            "tdpbsud tmm2, tmm4, tmm6",
            "tdpbsud tmm3, tmm4, tmm6",
            "tdpbsud tmm0, tmm4, tmm6",
            "tdpbsud tmm1, tmm4, tmm6",
            "tdpbsud tmm2, tmm4, tmm6",
            "tdpbsud tmm3, tmm4, tmm6",
            options(nostack, nomem),
        );
    }
    const { assert!(CHAINS == 12) };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2(iters: u64) {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut a = _mm256_set1_epi8(3);
    let b: [__m256i; CHAINS] = std::array::from_fn(|i| _mm256_set1_epi8(i as i8 - 6));
    let mut acc = [_mm256_setzero_si256(); CHAINS];
    for _ in 0..iters {
        // `a` "changes" every step, so the products cannot be hoisted out of the loop.
        std::arch::asm!("/* {0} */", inout(ymm_reg) a, options(pure, nomem, nostack, preserves_flags));
        for (s, b) in acc.iter_mut().zip(&b) {
            *s = _mm256_add_epi32(*s, _mm256_madd_epi16(_mm256_maddubs_epi16(a, *b), ones));
        }
    }
    std::hint::black_box(acc);
}
