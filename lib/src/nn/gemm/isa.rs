//! Which kernel the blocked product runs (detected at run time, or chosen for a test), and the
//! column block it packs B in, sized to this CPU's L2.

#[cfg(target_arch = "x86_64")]
use super::amx;
use super::{KC, NR};

/// The micro-kernel behind the blocked product (packing, implicit im2col, fused epilogue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512's kernel for f32 products, AMX tiles for bf16 ones (`amx`).
    Amx,
    /// AVX-512's kernel for f32 products, VDPBF16PS on the tiles' layouts for bf16 ones
    /// (`amx::dpbf16`): CPUs with AVX-512 BF16 but no AMX (Cooper Lake, Zen 4).
    Avx512Bf16,
    /// 12×32 tiles in 24 zmm accumulators.
    Avx512,
    /// The same 12×32 panels as four 6×16 sub-tiles in 12 ymm accumulators.
    Avx2,
}

impl Isa {
    /// Widest first.
    const ALL: [Isa; 4] = [Isa::Amx, Isa::Avx512Bf16, Isa::Avx512, Isa::Avx2];

    /// Whether bf16 products run on the tiles' layouts (`amx::ATiles`, paired B) rather than the
    /// f32 kernel's panels rounded.
    pub(crate) fn bf16_pairs(self) -> bool {
        matches!(self, Isa::Amx | Isa::Avx512Bf16)
    }

    /// The widest kernel this CPU runs, detected at run time (`VIDKIT_GEMM=avx512bf16`,
    /// `avx512`, `avx2` or `portable` picks a narrower one, to compare them on one machine);
    /// None: the `gemm` crate's path.
    pub fn detected() -> Option<Isa> {
        static DETECTED: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            let widest = Isa::ALL.into_iter().find(|i| i.supported());
            match std::env::var("VIDKIT_GEMM").as_deref() {
                Ok("portable") => None,
                Ok("avx512bf16") if Isa::Avx512Bf16.supported() => Some(Isa::Avx512Bf16),
                Ok("avx512") if Isa::Avx512.supported() => Some(Isa::Avx512),
                Ok("avx2") if Isa::Avx2.supported() => Some(Isa::Avx2),
                _ => widest,
            }
        })
    }

    /// Whether this CPU has the instructions.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Isa::Amx => amx::amx_bf16_available(),
                Isa::Avx512Bf16 => amx::dpbf16_available(),
                Isa::Avx512 => has_avx512(),
                Isa::Avx2 => {
                    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Every path this CPU can run, the `gemm` crate's (None) included: what tests go through.
    pub fn paths() -> Vec<Option<Isa>> {
        Isa::ALL.into_iter().filter(|i| i.supported()).map(Some).chain([None]).collect()
    }
}

thread_local! {
    /// A path chosen for the products this thread starts ([`with_isa`]).
    static CHOSEN_ISA: std::cell::Cell<Option<Option<Isa>>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with the products it starts on this thread taking `isa`'s path (None: the `gemm`
/// crate's), for tests that go through every path the machine has.
///
/// # Panics
/// When this CPU lacks `isa`'s instructions.
pub fn with_isa<T>(isa: Option<Isa>, f: impl FnOnce() -> T) -> T {
    assert!(isa.is_none_or(|i| i.supported()), "this CPU cannot run the {isa:?} kernel");
    let was = CHOSEN_ISA.with(|c| c.replace(Some(isa)));
    let out = f();
    CHOSEN_ISA.with(|c| c.set(was));
    out
}

/// The blocked product's kernel for a product started now on this thread; None: no blocked path.
pub fn blocked_isa() -> Option<Isa> {
    CHOSEN_ISA.with(|c| c.get()).unwrap_or_else(Isa::detected)
}

/// Whether this CPU has AVX-512 F, BW and VL (the direct convolution and the AVX-512 packers use
/// them whatever kernel the product runs; the packers read bf16 activations with BW's 16-bit
/// moves). Every AVX-512 CPU since Skylake-SP has all three.
pub(in crate::nn) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Columns of B packed per block at most (`KC × NC_MAX` floats, 1 MB), measured best on Ice Lake
/// and Sapphire Rapids (L2 of 1.25 and 2 MB).
const NC_MAX: usize = 1024;

/// Columns of B packed per block: the block (`KC × nc` floats) is read again for every A panel
/// of the rows, so it must stay in L2. Where the L2 is under 1 MB, half of it: on a Zen 3 EPYC
/// (512 KB) the 1 MB block came from L3 for every A panel, and 256 columns ran TSN-R50's f32
/// forward 8 % faster than 1024 (and than 128 or 512; alternating rounds).
pub(super) fn nc() -> usize {
    static NC: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *NC.get_or_init(|| match l2_bytes() {
        Some(l2) if l2 < 1 << 20 => (l2 / 2 / (KC * 4) / NR * NR).clamp(4 * NR, NC_MAX),
        _ => NC_MAX,
    })
}

/// This core's L2 cache in bytes, from CPUID leaf 0x8000_0006 (ECX bits 31–16, in KB), which
/// AMD and Intel CPUs both report; None where the leaf is absent.
fn l2_bytes() -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        // Leaf 0x8000_0006 is asked only where the highest extended leaf reaches it.
        if __cpuid(0x8000_0000).eax < 0x8000_0006 {
            return None;
        }
        let kb = __cpuid(0x8000_0006).ecx >> 16;
        (kb > 0).then_some(kb as usize * 1024)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}
