//! Training components: optimisers, LR schedules, losses, batch mixes and checkpoints. The loop
//! itself lives with `vtrain`; these pieces are called from it:
//! `loss.backward()` → (accumulate, clip) → `optimizer.step(&grads)` → `set_lr(schedule.lr(..))`.

pub mod amp;
pub mod bmn;
pub mod bsn;
pub mod checkpoint;
pub mod config;
pub mod ctcn;
pub mod ets;
pub mod loader;
pub mod localizer;
pub mod loss;
pub mod mix;
pub mod optim;
pub mod schedule;
pub mod tall;
pub mod trainer;

pub use amp::{Amp, LossScaler};

/// Runs `f` with every op on candle's own path when `portable_ops` (`--device cpu-portable`:
/// the GPU's code on the CPU, see `nn::with_portable_ops`), as it is otherwise.
pub fn on_path<T>(portable_ops: bool, f: impl FnOnce() -> T) -> T {
    match portable_ops {
        true => crate::nn::with_portable_ops(f),
        false => f(),
    }
}
pub use checkpoint::{
    load_checkpoint, resume_from, save_checkpoint, save_checkpoint_with_peer, Checkpoint, PeerCheckpoint,
    PeerRef, TrainState, TRAIN_KEY,
};
pub use loss::{bce_with_logits, cross_entropy, kl_div, log_softmax, one_hot, softmax, Targets};
pub use mix::{one_hot_targets, sample_beta, sample_gamma, BatchMix, MixBox, Mixed, Pairing};
pub use optim::{
    clip_grad_norm, trainable_vars, AdamW, AdamWConfig, GradAccumulator, NoDecay, OptimState, Optimizer,
    OptimizerConfig, ParamGroup, RmsProp, RmsPropConfig, Sgd, SgdConfig,
};
pub use schedule::{Decay, LrSchedule, WarmupMode};
