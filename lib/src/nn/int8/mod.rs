//! Post-training int8 quantization of the dense convolutions and Linear layers (issue 24): every
//! inference convolution goes through `fused::conv_bn_act_3d_shifted` and every transformer
//! Linear layer through `transformer::linear`, which ask this module what to do while a closure
//! runs under [`calibrate`] or [`with_int8`] (both numbered together, in call order).
//!
//! - Calibration observes each convolution's input over as many forwards as given (min/max, a
//!   histogram searched for the least L2 error as PyTorch's, or percentiles: `observer.rs`). A
//!   convolution is known by its weight buffer (a loaded model's weights stay put) and numbered
//!   in the order forwards first call them, the same in every process for an architecture.
//! - An int8 run quantizes each convolution's input with its calibrated range (7-bit u8, as
//!   `qgemm` wants), its weights with BatchNorm's scale folded in per output channel (symmetric
//!   s8, done once per plan), multiplies through `qgemm` and adds bias, residual and ReLU in the
//!   epilogue (BN's bias and the residual are added at full precision).
//! - Outputs travel in u8 where they can: once the first forward has shown which convolution
//!   reads a convolution's output first, the epilogue also requantizes it with that reader's
//!   range, and the reader (and any other with the same range) takes those bytes instead of
//!   quantizing; where a model says that reader is the only one (`feeds_next_conv`) the f32
//!   output is not written at all. The bytes are those quantizing the f32 output gives.
//! - A residual block's output that only the next block reads (`read_by_convs`: its first
//!   convolutions and its residual) goes in u8 alone too, and the next block's last convolution
//!   adds it dequantized, as PyTorch's quantized ResNets add theirs: the one place the int8
//!   path rounds beyond quantizing each convolution's input (the logits move by 1–3 % relative
//!   L2 against f32 residuals in the model test).
//! - A shortcut convolution's output, which only the block's last convolution adds
//!   (`residual_only`), goes in u8 alone too, quantized with the range calibration observed for
//!   that residual (PyTorch's quantized ResNets quantize theirs before `add_relu`): f32, 4 bytes
//!   written and read back per value, was 1.2–2.5× PyTorch's time for those convolutions. A
//!   calibration stored before residual ranges keeps f32 shortcuts.
//! - A 2D model's convolutions over frames run with the frames as time where the model says so
//!   (`frames_as_time`: a 2D ResNet's, TSN's and TSM's): one product over all frames'
//!   positions, u8 frames inside channel groups (TSM's shift moves frames inside each group).
//!
//! u8 travels in channel groups of 4 ([N, C/4, T, H, W, 4]: one k group of the next product per
//! position), so a 1×1 stride-1 convolution reads its input in place as the kernel's B and any
//! other packs its columns with u32 copies from it (`columns.rs`); an input quantized here (f32
//! from elsewhere) is in channel planes, its columns packed a group of 4 column-matrix rows at a
//! time (the matrix is never built whole).
//!
//! The products run on AMX tiles where the CPU has AMX-INT8 (`qgemm::QIsa::Amx`), else on
//! AVX-512 VNNI or AVX2.

mod columns;
mod layers;
mod pool;

use super::observer::{RangeMethod, RangeObserver};
use super::qgemm::{ActivationQuant, QuantizedMatrix};
pub(in crate::nn) use layers::{conv, linears};
use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};

/// Input ranges of a model's convolutions in call order, as the calibration method chose them,
/// and the ranges of the residuals they add (None: no residual; empty in a calibration made
/// before residuals were observed, whose shortcuts then stay f32).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calibration {
    pub ranges: Vec<(f32, f32)>,
    pub residual_ranges: Vec<Option<(f32, f32)>>,
}

/// What calibration records: one observer per convolution's input and one per residual it
/// adds, in call order.
#[derive(Clone, Debug)]
pub struct Calibrator {
    method: RangeMethod,
    observers: Vec<RangeObserver>,
    residual_observers: Vec<Option<RangeObserver>>,
}

impl Calibrator {
    pub fn new(method: RangeMethod) -> Self {
        Self { method, observers: vec![], residual_observers: vec![] }
    }

    /// The ranges the observers give (a convolution that saw no finite value: 0..0).
    pub fn finish(&self) -> Calibration {
        let range = |o: &RangeObserver| o.range().unwrap_or((0.0, 0.0));
        let mut residual_ranges: Vec<_> =
            self.residual_observers.iter().map(|o| o.as_ref().map(range)).collect();
        residual_ranges.resize(self.observers.len(), None);
        Calibration { ranges: self.observers.iter().map(range).collect(), residual_ranges }
    }
}

/// What an int8 run uses: the calibration, each convolution's quantized weights, made on first
/// use, and which convolution reads each one's output, learned on the first forward.
pub struct Int8Plan {
    calibration: Calibration,
    weights: Vec<OnceLock<Arc<QuantizedMatrix>>>,
    /// The same weights, columns in the order of a channel-grouped input's packed columns
    /// (`QuantizedMatrix::grouped_taps`), made when such an input first comes.
    grouped_weights: Vec<OnceLock<Arc<QuantizedMatrix>>>,
    /// The convolution that first reads convolution i's output, learned on the first forward:
    /// then i requantizes that output in its epilogue with the reader's range, as u8 alone where
    /// it is the only reader ([`feeds_next_conv`]), beside the f32 output elsewhere (a block's
    /// output, which the next block's first convolutions read and its residual adds).
    consumers: Vec<OnceLock<usize>>,
    /// The convolution that adds convolution i's output as its residual, learned on the first
    /// forward: then i, a shortcut's convolution ([`residual_only`]), requantizes its output
    /// with that residual's calibrated range and hands over u8 alone.
    residual_readers: Vec<OnceLock<usize>>,
    /// Whether convolution i runs with its frames as time ([`frames_as_time`]), learned on its
    /// first call: u8 goes from one convolution to another only where both lay it out so.
    frames_folded: Vec<OnceLock<bool>>,
    /// Stacked weights of Linear layers run as one (`linears`), by the first one's number.
    stacked: Mutex<std::collections::HashMap<usize, Arc<QuantizedMatrix>>>,
}

impl Int8Plan {
    pub fn new(calibration: Calibration) -> Arc<Self> {
        let weights = calibration.ranges.iter().map(|_| OnceLock::new()).collect();
        let grouped_weights = calibration.ranges.iter().map(|_| OnceLock::new()).collect();
        let consumers = calibration.ranges.iter().map(|_| OnceLock::new()).collect();
        let residual_readers = calibration.ranges.iter().map(|_| OnceLock::new()).collect();
        let frames_folded = calibration.ranges.iter().map(|_| OnceLock::new()).collect();
        Arc::new(Self {
            calibration,
            weights,
            grouped_weights,
            consumers,
            residual_readers,
            frames_folded,
            stacked: Default::default(),
        })
    }

    /// How many convolutions hand their output to the next in u8 (learned so far).
    pub fn chained(&self) -> usize {
        self.consumers.iter().filter(|c| c.get().is_some()).count()
    }

    /// How many convolutions ran with their frames as time ([`frames_as_time`]).
    pub fn frames_folded(&self) -> usize {
        self.frames_folded.iter().filter(|f| f.get() == Some(&true)).count()
    }

    /// How many shortcut convolutions hand their output to the convolution adding it in u8
    /// (learned so far, with a calibrated range).
    pub fn residuals_in_u8(&self) -> usize {
        let calibrated = |j: &usize| self.residual_quant(*j).is_some();
        self.residual_readers.iter().filter(|r| r.get().is_some_and(calibrated)).count()
    }

    /// How convolution j's input is quantized.
    fn input_quant(&self, j: usize) -> ActivationQuant {
        let (lo, hi) = self.calibration.ranges[j];
        ActivationQuant::from_range(lo, hi)
    }

    /// How the residual convolution j adds is quantized, where the calibration observed it.
    fn residual_quant(&self, j: usize) -> Option<ActivationQuant> {
        let (lo, hi) = (*self.calibration.residual_ranges.get(j)?)?;
        Some(ActivationQuant::from_range(lo, hi))
    }

    /// The map a u8 `output` is quantized with (None: f32 alone).
    fn output_quant(&self, output: Output) -> Option<ActivationQuant> {
        match output {
            Output::Learn | Output::LearnResidual => None,
            Output::U8For(j) | Output::U8Shared(j) | Output::F32AndU8For(j) => Some(self.input_quant(j)),
            Output::U8ForResidual(j) => self.residual_quant(j),
        }
    }
}

enum Mode {
    Calibrate(Arc<Mutex<Calibrator>>),
    Run(Arc<Int8Plan>),
}

/// A mode and the convolutions met so far: weight buffer address → number.
struct State {
    mode: Mode,
    seen: std::collections::HashMap<usize, usize>,
    /// Set by `feeds_next_conv` for the first convolution run inside it.
    feeds_next: bool,
    /// Set by `read_by_convs` for the first convolution run inside it.
    to_convs: bool,
    /// Set by `residual_only` for the first convolution run inside it.
    to_residual: bool,
    /// Set by `frames_as_time` for every convolution run inside it.
    fold_frames: bool,
    /// Recent convolutions' outputs, for the convolutions that read them.
    handoffs: Vec<Handoff>,
    /// Layers run so far.
    calls: usize,
}

/// A convolution's output kept for its readers: the tensor (held, so that its address stays its
/// own), its data's address and length, its writer, what it carries, and the layer call it came
/// from.
struct Handoff {
    _held: candle_core::Tensor,
    addr: usize,
    len: usize,
    producer: usize,
    kind: Handed,
    call: usize,
}

enum Handed {
    /// f32 whose reader is not known yet (the first forward learns it).
    Learn,
    /// A shortcut convolution's f32 output whose adder is not known yet (the first forward
    /// learns it).
    LearnResidual,
    /// The u8 tensor itself, quantized with this map: made for its one reader (`shared`
    /// false), or for any convolution with that range and residuals (`read_by_convs`).
    U8 { quant: ActivationQuant, shared: bool },
    /// f32, with the same values in u8 quantized with this map for the readers that use it.
    Shadow(Arc<Vec<u8>>, ActivationQuant),
}

/// Layer calls a handoff waits for its readers: a 3D bottleneck's shortcut convolution reads the
/// block's input 4 calls after the block's first convolution (a, b_t, b, then the shortcut).
/// Past that it is dropped; a convolution whose output no convolution read (a depthwise one,
/// which stays f32, or a pooling did) stays f32.
const HANDOFF_CALLS: usize = 4;

/// A convolution's input: f32, or u8 written by the convolution before it (already quantized
/// with this one's range), in channel groups of 4 ([N, C/4, T, H, W, 4]: `qgemm::QOutput`'s
/// layout, which the next product reads in place or packs with u32 copies).
#[derive(Clone, Copy)]
pub(super) enum ConvIn<'a> {
    F32(&'a [f32]),
    U8(&'a [u8]),
}

impl ConvIn<'_> {
    fn addr_len(&self) -> (usize, usize) {
        match self {
            ConvIn::F32(x) => (x.as_ptr() as usize, x.len()),
            ConvIn::U8(x) => (x.as_ptr() as usize, x.len()),
        }
    }
}

/// What an int8 layer runs with: its number, the plan, its input in u8 when its writer made it
/// so, and what its output is.
pub(super) struct Int8Layer {
    pub index: usize,
    pub plan: Arc<Int8Plan>,
    /// A 2D convolution over frames run as a 3D one with the frames as time, its u8 frames
    /// inside channel groups ([`frames_as_time`]).
    fold_frames: bool,
    shadow: Option<Arc<Vec<u8>>>,
    /// The map a u8 input was quantized with, when it is not this layer's.
    remap: Option<ActivationQuant>,
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Output {
    /// f32, watched for its reader (a convolution's first forward).
    Learn,
    /// f32, watched for the convolution adding it (a shortcut convolution's first forward).
    LearnResidual,
    /// u8 alone, quantized with the given convolution's range.
    U8For(usize),
    /// u8 alone, quantized so, for every convolution with that range and as residuals.
    U8Shared(usize),
    /// f32 and a u8 copy quantized with the given convolution's range.
    F32AndU8For(usize),
    /// u8 alone, quantized with the range of the residual the given convolution adds.
    U8ForResidual(usize),
}

thread_local! {
    static MODE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Runs `f` with every convolution's input observed by `calibrator`.
pub fn calibrate<T>(calibrator: &Arc<Mutex<Calibrator>>, f: impl FnOnce() -> T) -> T {
    with_mode(Mode::Calibrate(calibrator.clone()), f)
}

/// Runs `f` with the convolutions in int8 as `plan` says.
pub fn with_int8<T>(plan: &Arc<Int8Plan>, f: impl FnOnce() -> T) -> T {
    with_mode(Mode::Run(plan.clone()), f)
}

fn with_mode<T>(mode: Mode, f: impl FnOnce() -> T) -> T {
    /// Restores the previous mode when dropped, also when `f` panics.
    struct Restore(Option<State>);
    impl Drop for Restore {
        fn drop(&mut self) {
            MODE.with(|m| *m.borrow_mut() = self.0.take());
        }
    }
    let state = State {
        mode,
        seen: Default::default(),
        feeds_next: false,
        to_convs: false,
        to_residual: false,
        fold_frames: false,
        handoffs: vec![],
        calls: 0,
    };
    let _restore = Restore(MODE.with(|m| m.borrow_mut().replace(state)));
    f()
}

/// Whether calibration or an int8 run is under way on this thread.
pub(super) fn engaged() -> bool {
    MODE.with(|m| m.borrow().is_some())
}

/// Whether the convolutions on this thread run in int8 (then TSM's shift is applied before).
pub(super) fn active() -> bool {
    MODE.with(|m| matches!(m.borrow().as_ref(), Some(State { mode: Mode::Run(_), .. })))
}

/// Runs `f`, whose first convolution's output only the next convolution reads (a bottleneck's
/// inner convolutions: nothing else, no residual, no other branch). In an int8 run that output
/// is then handed over in u8, requantized in the first one's epilogue with the second one's
/// calibrated range: the same bytes the second would quantize from f32, without the f32 pass.
/// The pair is learned on the first forward (the first convolution's f32 output is watched for
/// the convolution that reads it); elsewhere `f` runs as it is.
pub fn feeds_next_conv<T>(f: impl FnOnce() -> T) -> T {
    // Under bf16 products on the tile paths the output goes over in bf16 (`bf16_act`).
    super::bf16_act::handing_over(super::bf16_act::Handovers::Exact, || {
        with_run_flag(|s| &mut s.feeds_next, f)
    })
}

/// Runs `f`, whose first convolution's output only convolutions read, as their input or as the
/// residual they add (a residual block's output that the next block reads: its first
/// convolutions and its shortcut). In an int8 run that output is then handed over in u8 alone,
/// quantized with its first reader's range; readers with that range take the bytes, and a
/// residual is added from them dequantized (as PyTorch's quantized ResNets add theirs), so the
/// f32 output is never written. Elsewhere `f` runs as it is.
pub fn read_by_convs<T>(f: impl FnOnce() -> T) -> T {
    // Under bf16 products on the tile paths the output goes over in bf16 (`bf16_act`).
    super::bf16_act::handing_over(super::bf16_act::Handovers::All, || with_run_flag(|s| &mut s.to_convs, f))
}

/// Runs `f`, whose first convolution's output only a later convolution reads, as the residual
/// it adds (a residual block's shortcut convolution). In an int8 run that output is then handed
/// over in u8 alone, quantized with the range calibration observed for that residual (as
/// PyTorch's quantized ResNets hand theirs to `add_relu`), so the f32 output is never written
/// nor read back; f32 where the calibration has no such range. Elsewhere `f` runs as it is.
pub fn residual_only<T>(f: impl FnOnce() -> T) -> T {
    with_run_flag(|s| &mut s.to_residual, f)
}

/// Runs `f`, a 2D model's convolutions over N frames ([N, C, 1, H, W]), each of whose u8 outputs
/// only convolutions inside `f` (or its int8 max pool) read. In an int8 run each convolution
/// then runs as the 3D one over [1, C, N, H, W] (a kernel of one frame): one product over the
/// N·P positions of all frames, as a Slow-R50's, rather than one per frame (a ResNet-50's 7²
/// frames are 4 panels for 49 columns, and each streamed the 2.4 MB of 3×3 weights again).
/// The u8 it hands over lies frames inside channel groups ([C/4, N, H, W, 4]); f32 inputs are
/// laid out so first and f32 outputs laid back as [N, C, H, W]. Elsewhere `f` runs as it is.
pub fn frames_as_time<T>(f: impl FnOnce() -> T) -> T {
    let set = |on: bool| {
        MODE.with(|m| match m.borrow_mut().as_mut() {
            Some(state @ State { mode: Mode::Run(_), .. }) => std::mem::replace(&mut state.fold_frames, on),
            _ => false,
        })
    };
    let before = set(true);
    let out = f();
    set(before);
    out
}

/// Runs `f` with the int8 run's `flag` set (the first convolution inside takes it).
fn with_run_flag<T>(flag: fn(&mut State) -> &mut bool, f: impl FnOnce() -> T) -> T {
    let set = |on: bool| {
        MODE.with(|m| {
            if let Some(state @ State { mode: Mode::Run(_), .. }) = m.borrow_mut().as_mut() {
                *flag(state) = on;
            }
        })
    };
    set(true);
    let out = f();
    set(false);
    out
}

/// The map that quantized `r`, a u8 output handed over for convolutions to read and add
/// (`read_by_convs`); an error for any other u8 residual.
pub(super) fn residual_quant(r: &[u8]) -> candle_core::Result<ActivationQuant> {
    match shared_u8((r.as_ptr() as usize, r.len())) {
        Some((quant, _)) => Ok(quant),
        None => candle_core::bail!("int8: a u8 residual that no convolution handed over for adding"),
    }
}

/// What the handoff of the data at `at` (address, length) says, as `pick` reads it.
fn find_handoff<T>(at: (usize, usize), pick: impl Fn(&Handoff) -> Option<T>) -> Option<T> {
    MODE.with(|m| {
        let m = m.borrow();
        let handoffs = m.as_ref().map(|s| &s.handoffs[..]).unwrap_or_default();
        handoffs.iter().filter(|h| (h.addr, h.len) == at).find_map(pick)
    })
}

/// The map and writer of the u8 data at `at`, handed over for convolutions (`read_by_convs`).
fn shared_u8(at: (usize, usize)) -> Option<(ActivationQuant, usize)> {
    find_handoff(at, |h| match h.kind {
        Handed::U8 { quant, shared: true } => Some((quant, h.producer)),
        _ => None,
    })
}

/// torch's max pool of `x`, a u8 output handed over for convolutions (`read_by_convs`: a
/// ResNet stem's) in channel groups of 4: pooled as bytes, and handed over the same way to the
/// convolutions that read the pool.
pub(in crate::nn) fn max_pool(
    x: &candle_core::Tensor,
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
) -> candle_core::Result<candle_core::Tensor> {
    let (n, c, t, h, w) = x.dims5()?;
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let (candle_core::Storage::Cpu(cpu), Some((lo, hi))) = (&*storage, layout.contiguous_offsets()) else {
        candle_core::bail!("int8 max pool: not a contiguous CPU tensor")
    };
    let bytes = &cpu.as_slice::<u8>()?[lo..hi];
    let Some((quant, producer)) = shared_u8((bytes.as_ptr() as usize, bytes.len())) else {
        candle_core::bail!("int8 max pool: a u8 input that no convolution handed over for pooling")
    };
    if !c.is_multiple_of(super::qgemm::KG) {
        candle_core::bail!("int8 max pool: {c} channels in groups of {}", super::qgemm::KG)
    }
    let (pooled, [ot, oh, ow]) =
        pool::max_pool_grouped(bytes, n * c / super::qgemm::KG, [t, h, w], kernel, stride, padding)?;
    let out = candle_core::Tensor::from_vec(pooled, (n, c, ot, oh, ow), x.device())?;
    register(&out, producer, Handed::U8 { quant, shared: true });
    Ok(out)
}

/// After a max pool of `x` into `out` in an int8 run: a convolution's f32 output still learning
/// its reader passes that on, so that the convolution reading the pool is learned as the
/// reader, and the convolution then hands over u8 to the pool (`max_pool`).
pub(in crate::nn) fn pooled(x: &candle_core::Tensor, out: &candle_core::Tensor) {
    let Some(at) = data_of(x) else { return };
    if let Some(producer) = find_handoff(at, |h| matches!(h.kind, Handed::Learn).then_some(h.producer)) {
        register(out, producer, Handed::Learn);
    }
}

/// What the layer with weights `w` (`own`: its model's own buffer, not a copy) about to run on
/// `x` (adding `residual`) does: its number and the plan when it runs in int8. Records the
/// ranges of `x` and of an f32 residual when calibrating; a u8 `x` must be the output its
/// writer made for this layer.
pub(super) fn next_conv(
    x: ConvIn,
    residual: Option<ConvIn>,
    w: &[f32],
    own: bool,
) -> candle_core::Result<Option<Int8Layer>> {
    MODE.with(|m| {
        let mut m = m.borrow_mut();
        let Some(State { mode, seen, feeds_next, to_convs, to_residual, fold_frames, handoffs, calls }) = m.as_mut()
        else {
            return Ok(None);
        };
        if !own {
            candle_core::bail!("int8: a convolution whose weights are a strided view is not supported yet")
        }
        let next = seen.len();
        let index = *seen.entry(w.as_ptr() as usize).or_insert(next);
        let plan = match mode {
            Mode::Calibrate(cal) => {
                let ConvIn::F32(x) = x else { candle_core::bail!("int8: calibration met a u8 input") };
                let mut cal = cal.lock().map_err(|_| candle_core::Error::Msg("calibration poisoned".into()))?;
                let method = cal.method;
                if cal.observers.len() <= index {
                    cal.observers.resize(index + 1, RangeObserver::new(method));
                }
                cal.observers[index].observe(x);
                if let Some(ConvIn::F32(r)) = residual {
                    if cal.residual_observers.len() <= index {
                        cal.residual_observers.resize(index + 1, None);
                    }
                    cal.residual_observers[index].get_or_insert_with(|| RangeObserver::new(method)).observe(r);
                }
                return Ok(None);
            }
            Mode::Run(plan) => plan,
        };
        let layers = plan.calibration.ranges.len();
        if index >= layers {
            candle_core::bail!(
                "int8: convolution {} has no calibrated range (the calibration saw {layers}): calibrate this model",
                index + 1
            )
        }
        // The input: another convolution's output handed over?
        *calls += 1;
        handoffs.retain(|h| *calls - h.call <= HANDOFF_CALLS);
        let (addr, len) = x.addr_len();
        let handoff = handoffs.iter().position(|h| (h.addr, h.len) == (addr, len));
        let (mut shadow, mut remap) = (None, None);
        match (handoff.map(|i| (i, &handoffs[i])), x) {
            (Some((i, h)), ConvIn::U8(_))
                if matches!(h.kind, Handed::U8 { shared: false, .. })
                    && plan.consumers[h.producer].get() == Some(&index) =>
            {
                handoffs.remove(i);
            }
            // Shared: kept for the other readers and the residual; a reader whose range differs
            // (TSM's shifted convolution calibrated on the shifted input) maps the bytes to it.
            (Some((_, h)), ConvIn::U8(_)) if matches!(h.kind, Handed::U8 { shared: true, .. }) => {
                if let Handed::U8 { quant, .. } = h.kind {
                    remap = (quant != plan.input_quant(index)).then_some(quant);
                }
            }
            (Some((_, h)), ConvIn::F32(_)) => match &h.kind {
                // The first forward: learned (the first reader is the same in every forward).
                Handed::Learn => {
                    let _ = plan.consumers[h.producer].set(index);
                }
                // Another reader with the same range (a block's first convolution and its
                // shortcut's read the same input, so calibrate the same) uses the copy.
                Handed::Shadow(q, aq) if *aq == plan.input_quant(index) => shadow = Some(q.clone()),
                _ => {}
            },
            (h, ConvIn::U8(_)) => candle_core::bail!(
                "int8: convolution {} read a u8 input that {} made for another",
                index + 1,
                h.map_or("no convolution".to_string(), |(_, h)| format!("convolution {}", h.producer + 1))
            ),
            _ => {}
        }
        // The residual: a shortcut convolution's f32 output on the first forward (learned: it
        // then hands over u8 for adding).
        if let Some(at) = residual.map(|r| r.addr_len()) {
            let learning =
                handoffs.iter().find(|h| (h.addr, h.len) == at && matches!(h.kind, Handed::LearnResidual));
            if let Some(h) = learning {
                let _ = plan.residual_readers[h.producer].set(index);
            }
        }
        let to_residual = std::mem::take(to_residual);
        let fold = *plan.frames_folded[index].get_or_init(|| *fold_frames);
        // u8 only for a reader that lays it out as this one does.
        let same_layout = |j: usize| j < layers && plan.frames_folded[j].get() == Some(&fold);
        let output = match (std::mem::take(feeds_next), std::mem::take(to_convs), plan.consumers[index].get()) {
            (true, _, Some(&j)) if same_layout(j) => Output::U8For(j),
            (false, true, Some(&j)) if same_layout(j) => Output::U8Shared(j),
            (false, false, Some(&j)) if same_layout(j) => Output::F32AndU8For(j),
            _ if !to_residual => Output::Learn,
            _ => match plan.residual_readers[index].get() {
                Some(&j) if same_layout(j) && plan.residual_quant(j).is_some() => Output::U8ForResidual(j),
                Some(_) => Output::Learn,
                None => Output::LearnResidual,
            },
        };
        Ok(Some(Int8Layer { index, plan: plan.clone(), fold_frames: fold, shadow, remap, output }))
    })
}

/// Keeps `out`, layer `layer`'s output as `output` says (and `shadow`, its u8 copy), for its
/// readers.
fn hand_off(layer: &Int8Layer, output: Output, out: &candle_core::Tensor, shadow: Option<Vec<u8>>) {
    let kind = match (output, shadow, layer.plan.output_quant(output)) {
        (Output::U8For(_), _, Some(quant)) => Handed::U8 { quant, shared: false },
        (Output::U8Shared(_) | Output::U8ForResidual(_), _, Some(quant)) => {
            Handed::U8 { quant, shared: true }
        }
        (Output::F32AndU8For(_), Some(q), Some(quant)) => Handed::Shadow(Arc::new(q), quant),
        (Output::F32AndU8For(_), None, _) => return,
        (Output::LearnResidual, ..) => Handed::LearnResidual,
        _ => Handed::Learn,
    };
    register(out, layer.index, kind);
}

/// Where `t`'s data lie (a contiguous f32 or u8 CPU tensor): address and length.
fn data_of(t: &candle_core::Tensor) -> Option<(usize, usize)> {
    let (storage, layout) = t.storage_and_layout();
    let (candle_core::Storage::Cpu(cpu), Some((lo, hi))) = (&*storage, layout.contiguous_offsets()) else {
        return None;
    };
    let addr = match cpu {
        candle_core::CpuStorage::U8(v) => v[lo..].as_ptr() as usize,
        candle_core::CpuStorage::F32(v) => v[lo..].as_ptr() as usize,
        _ => return None,
    };
    Some((addr, hi - lo))
}

/// Keeps `out` (written by convolution `producer`, carrying `kind`) for its readers.
fn register(out: &candle_core::Tensor, producer: usize, kind: Handed) {
    let Some((addr, len)) = data_of(out) else { return };
    let _held = out.clone();
    MODE.with(|m| {
        if let Some(state) = m.borrow_mut().as_mut() {
            let call = state.calls;
            state.handoffs.push(Handoff { _held, addr, len, producer, kind, call });
        }
    })
}

#[cfg(test)]
mod tests;
