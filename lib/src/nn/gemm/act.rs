//! The element types a product on the bf16 tile paths reads its B and residual in and writes its
//! C in: f32, or bfloat16 bits (`u16`), the form a convolution hands its output over in when
//! only convolutions read it (`nn::bf16_act`). Reading bf16 widens it (exact); writing rounds to
//! nearest even as the packers round B (`simd::bf16_round`), so a reader of a bf16 output packs
//! the bits it would have rounded the f32 output to: the same product, bit for bit.

use super::*;

/// An activation element: f32 or bf16 bits.
pub(in crate::nn) trait Act: Copy + Default + Send + Sync + std::fmt::Debug + 'static {
    /// The value as f32 (bf16 widened: exact).
    fn to_f32(self) -> f32;

    /// `dst[q]` = `src[q]` as f32 (a panel row's run: at most `NR` values).
    fn copy_run(dst: &mut [f32], src: &[Self]);

    /// `src`'s even values into `even`, its odd ones into `odd` (`simd::deinterleave`).
    fn deinterleave(src: &[Self], even: &mut [Self], odd: &mut [Self]);

    /// `v` with lanes `m` read from `p` (as f32), the others kept.
    ///
    /// # Safety
    /// AVX-512 F, BW and VL available (`Isa::supported` for the AVX-512 paths); the lanes in
    /// `m` readable at `p`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn mask_load(v: std::arch::x86_64::__m512, m: u16, p: *const Self) -> std::arch::x86_64::__m512;

    /// `v` (16 bf16) with lanes `m` read from `p` rounded to bf16 (`round_bits`; bf16 read as
    /// it is), the others kept: a row of B as the pairs take it, without widening bf16.
    ///
    /// # Safety
    /// As [`Act::mask_load`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn mask_load_bits(
        v: std::arch::x86_64::__m256i,
        m: u16,
        p: *const Self,
    ) -> std::arch::x86_64::__m256i;

    /// Lanes `m` of `v` written at `p` (bf16: rounded to nearest even).
    ///
    /// # Safety
    /// As [`Act::mask_load`]; the lanes in `m` writable at `p`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn mask_store(p: *mut Self, m: u16, v: std::arch::x86_64::__m512);
}

impl Act for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[inline(always)]
    fn copy_run(dst: &mut [f32], src: &[f32]) {
        copy_run(dst, src)
    }

    fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
        crate::nn::simd::deinterleave(src, even, odd)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn mask_load(v: std::arch::x86_64::__m512, m: u16, p: *const f32) -> std::arch::x86_64::__m512 {
        std::arch::x86_64::_mm512_mask_loadu_ps(v, m, p)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn mask_load_bits(
        v: std::arch::x86_64::__m256i,
        m: u16,
        p: *const f32,
    ) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        let x = _mm512_maskz_loadu_ps(m, p);
        _mm256_mask_mov_epi16(v, m, _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(round_bits(x))))
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn mask_store(p: *mut f32, m: u16, v: std::arch::x86_64::__m512) {
        std::arch::x86_64::_mm512_mask_storeu_ps(p, m, v)
    }
}

impl Act for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits((self as u32) << 16)
    }

    #[inline(always)]
    fn copy_run(dst: &mut [f32], src: &[u16]) {
        assert!(dst.len() == src.len() && dst.len() <= NR, "a run is at most a panel row");
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }

    fn deinterleave(src: &[u16], even: &mut [u16], odd: &mut [u16]) {
        for (pair, (e, o)) in src.chunks_exact(2).zip(even.iter_mut().zip(odd.iter_mut())) {
            (*e, *o) = (pair[0], pair[1]);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn mask_load(v: std::arch::x86_64::__m512, m: u16, p: *const u16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let bits = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p as *const i16));
        _mm512_mask_mov_ps(v, m, _mm512_castsi512_ps(_mm512_slli_epi32::<16>(bits)))
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn mask_load_bits(
        v: std::arch::x86_64::__m256i,
        m: u16,
        p: *const u16,
    ) -> std::arch::x86_64::__m256i {
        std::arch::x86_64::_mm256_mask_loadu_epi16(v, m, p as *const i16)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn mask_store(p: *mut u16, m: u16, v: std::arch::x86_64::__m512) {
        use std::arch::x86_64::*;
        let bits = _mm512_srli_epi32::<16>(round_bits(v));
        _mm512_mask_cvtepi32_storeu_epi16(p as *mut i16, m, bits)
    }
}

/// `simd::bf16_round` in 16 lanes: ties to even, NaN kept NaN; the rounded bits, the low half
/// not yet cleared.
///
/// # Safety
/// AVX-512F available.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn round_bits(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let b = _mm512_castps_si512(x);
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
    let r = _mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(b, _mm512_set1_epi32(0x0040_0000)))
}

/// Where a product on the tile paths writes C: f32, or bf16 bits.
#[derive(Clone, Copy, Debug)]
pub(super) enum CPtr {
    F32(*mut f32),
    Bf16(*mut u16),
}

/// A residual as the epilogue reads it: f32, or bf16 bits.
#[derive(Clone, Copy, Debug)]
pub(super) enum Res<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

impl<'a> Epilogue<'a> {
    /// The residual, of either type.
    pub(super) fn res(&self) -> Option<Res<'a>> {
        match (self.residual, self.residual_bf16) {
            (Some(r), None) => Some(Res::F32(r)),
            (None, Some(r)) => Some(Res::Bf16(r)),
            (None, None) => None,
            (Some(_), Some(_)) => panic!("an epilogue with two residuals"),
        }
    }
}

/// A convolution's input (or a matrix product's B) as the bf16 tile paths read it.
#[derive(Clone, Copy, Debug)]
pub enum Activations<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

/// A product's output: f32, or bf16.
pub enum Product {
    F32(Vec<f32>),
    Bf16(Vec<half::bf16>),
}
