//! Models: backbones, heads and recognizers, a registry by name, and the model file format
//! (one `.safetensors` with the config in its metadata, DESIGN.md §2.4).

mod bmn;
mod bsn;
mod captioner;
mod config;
mod ctcn;
mod ets;
mod file;
#[cfg(test)]
mod gradcheck;
mod grounder;
mod import;
mod import_3d;
mod import_bmn;
mod import_bsn;
mod import_ctcn;
mod import_ets;
mod import_mmaction2_3d;
mod import_mvit;
mod import_paddle;
mod import_stnet;
mod import_tall;
mod import_vit;
mod init;
mod localizer;
mod mvit;
mod pdparams;
#[cfg(test)]
mod portable_tests;
mod pplcnet_v2;
mod recognizer;
mod recognizer2d;
mod registry;
mod resnet;
mod resnet3d;
mod resnet_vd;
mod sequence;
mod slowfast;
mod stnet;
mod tall;
mod timesformer;
mod x3d;

pub use bmn::{
    bmn_config, bmn_from_tensors, bmn_spec, init_bmn, load_bmn, Bmn, BmnOutput, BmnSpec, BmnVariant,
    SampleMask, LOCALIZER_KEY,
};
pub use bsn::{
    bsn_config, bsn_from_tensors, bsn_scored, bsn_spec, init_bsn, load_bsn, Bsn, BsnSpec, BsnVideoOutput,
    BSN_KEY,
};
pub use captioner::{load_captioner, Caption, Captioner, CaptionerLoader};
pub use config::{ModelConfig, SequenceSpec};
pub use ctcn::{
    ctcn_config, ctcn_from_tensors, ctcn_parameter_names, ctcn_spec, init_ctcn, load_ctcn, resize_nearest,
    Ctcn, CtcnOutput, CtcnSpec, CTCN_KEY, CTCN_STEPS,
};
pub use ets::{
    ets_config, ets_from_tensors, ets_parameter_shapes, ets_spec, init_ets, load_ets, Encoded, Ets, EtsSpec,
    ETS_KEY,
};
pub use file::{
    from_tensors, frozen, load_model, load_model_bytes, read_config, save_model, save_tensors, LoadedModel,
    CONFIG_KEY,
};
pub use grounder::{load_grounder, sliding_windows, Candidate, Grounder, GrounderLoader, GroundingVideo};
pub use import::{
    import_checkpoint, import_torch, read_torch_state_dict, Imported, NamedTensors, STATE_DICT_KEYS,
};
pub use import_bmn::{import_bmn_mmaction2, import_bmn_pdparams};
pub use import_bsn::import_bsn_mmaction2;
pub use import_ctcn::import_ctcn_pdparams;
pub use import_ets::{import_ets_pdparams, read_ets_vocabulary};
pub use import_mmaction2_3d::MMACTION2_3D_ARCHS;
pub use import_paddle::{import_paddle, PADDLE_ARCHS};
pub use import_stnet::import_stnet_pdparams;
pub use import_tall::import_tall_pdparams;
pub use import_vit::import_timesformer;
pub use init::{init_weights, init_weights_for};
pub use localizer::{load_localizer, Localizer, LocalizerLoader, RawOutput, VideoTiming};
pub use mvit::{Mvit, MvitOptions};
pub use pdparams::{
    parse_pdparams, pickled_array_from_bytes, read_pdparams, read_pickled_array, torch_state_dict_from_bytes,
};
pub use recognizer::{Model, Recognizer, RecognizerBuilder};
pub use recognizer2d::Recognizer2d;
pub use registry::{
    arch_info, arch_names, archs_for, require_task, ArchInfo, Builder, Task, ZooInput, REGISTRY,
};
pub use resnet::{resnet_layout, ResNet, ShiftSpec};
pub use resnet3d::{ResNet3d, ResNet3dSpec};
pub use sequence::{batch_sequences, Padded, SeqBatch, SequenceModel};
pub use slowfast::SlowFast;
pub use stnet::Stnet;
pub use tall::{
    init_tall, load_tall, tall_config, tall_from_tensors, tall_loss, tall_spec, Tall, TallSpec, TALL_KEY,
};
pub use timesformer::{TimeSformer, VitOptions};
pub use x3d::X3d;

use anyhow::{bail, Result};
use candle_nn::VarBuilder;

/// The input a zoo model was trained on ([`REGISTRY`]'s `input`), for the 3D CNNs of
/// pytorchvideo's model zoo.
pub fn zoo_input(arch: &str) -> Option<ZooInput> {
    arch_info(arch).ok().and_then(|a| a.input)
}

/// Builds `config.arch` (a recognizer: of frames or of feature sequences) with parameters from
/// `vb` (fresh ones when it wraps an empty VarMap), by its registry row's builder.
pub fn build(config: &ModelConfig, vb: VarBuilder) -> Result<Model> {
    let info = require_task(&config.arch, &[Task::Recognizer, Task::SequenceRecognizer])?;
    config.validate()?;
    match info.builder {
        Builder::Recognizer(build) => build(config, vb),
        Builder::Localizer(_) | Builder::Grounder(_) | Builder::Captioner(_) => {
            bail!("{}: a {}, not built as a recognizer", config.arch, info.task.noun())
        }
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// `cargo test -p vidkit --lib timing -- --ignored --nocapture`: where a training step goes
    /// (`VK_ARCH`, `VK_WIDTH`, `VK_FRAMES`, `VK_SIDE`, `VK_BATCH` set the model and input).
    #[test]
    #[ignore]
    fn time_small_tsm_step() {
        let arch = std::env::var("VK_ARCH").unwrap_or_else(|_| "tsm_r18".into());
        let mut cfg = ModelConfig::defaults(&arch);
        cfg.num_classes = 4;
        let env = |k: &str| std::env::var(k).ok().and_then(|s| s.parse::<usize>().ok());
        cfg.base_width = env("VK_WIDTH").unwrap_or(16);
        cfg.frames = env("VK_FRAMES").unwrap_or(8);
        let batch = env("VK_BATCH").unwrap_or(8);
        let varmap = VarMap::new();
        let model = build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        let side = env("VK_SIDE").unwrap_or(64);
        let x = crate::rng::randn(0f32, 1., (batch, cfg.frames, 3, side, side), &Device::Cpu).unwrap();
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let y = model.forward_t(&x, true).unwrap();
            let f = t.elapsed();
            let _g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            eprintln!("forward {:?}, backward {:?}", f, t.elapsed() - f);
            let t = std::time::Instant::now();
            let _ = model.forward_t(&x, false).unwrap();
            eprintln!("eval forward {:?}", t.elapsed());
        }
    }
}

/// `VK_ARCH=x3d_xs cargo test -p vidkit --lib time_zoo_forward -- --ignored --nocapture`: eval
/// forward of a zoo model at its input size (frames × crop²), batch 1, median of 3.
#[cfg(test)]
mod zoo_timing {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    #[ignore]
    fn time_zoo_forward() {
        let arch = std::env::var("VK_ARCH").unwrap_or_else(|_| "x3d_xs".into());
        let cfg = ModelConfig::defaults(&arch);
        let varmap = VarMap::new();
        build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        let model = frozen(&varmap, &cfg).unwrap();
        let s = cfg.crop_size as usize;
        let x = crate::rng::randn(0f32, 1., (1, cfg.frames, 3, s, s), &Device::Cpu).unwrap();
        let mut times: Vec<f64> = (0..3)
            .map(|_| {
                let t = std::time::Instant::now();
                model.forward_t(&x, false).unwrap();
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        eprintln!("{arch} {}x{s}: forward {:.3} s (median of 3)", cfg.frames, times[1]);
    }
}

/// `arch`'s config at a width tests can afford: CNNs 8 channels wide at the stem (PP-TSMv2 as
/// it is), transformers 24 wide, 3 heads, 2 blocks, 8-pixel patches over a 40-pixel crop.
#[cfg(test)]
fn narrow_config(arch: &str) -> ModelConfig {
    let mut cfg = ModelConfig::defaults(arch);
    if VitOptions::for_arch(arch).is_some() {
        let o: Vec<String> = ["embed_dim=24", "num_heads=3", "depth=2", "patch_size=8", "crop_size=40"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        cfg.apply_overrides(&o).unwrap();
    } else if MvitOptions::for_arch(arch).is_some() {
        let o: Vec<String> =
            ["embed_dim=16", "depth=3", "stage_starts=[1]", "frames=4", "crop_size=40", "kv_stride=[1,4,4]"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        cfg.apply_overrides(&o).unwrap();
    } else if !arch.starts_with("pptsmv2") {
        cfg.base_width = cfg.base_width.min(8);
    }
    cfg
}

#[cfg(test)]
mod classifier_names {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// `fc_lr5` finds the head through `Model::classifier`: it must name a [classes, C] weight
    /// and a [classes] bias in every architecture.
    #[test]
    fn every_architecture_names_its_classifier() {
        for arch in archs_for(Task::Recognizer).chain(archs_for(Task::SequenceRecognizer)) {
            let mut cfg = narrow_config(arch);
            cfg.num_classes = 3;
            let varmap = VarMap::new();
            let model = build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
            let head = model.classifier();
            let data = varmap.data().lock().unwrap();
            let w = data.get(&format!("{head}.weight")).unwrap_or_else(|| panic!("{arch}: no {head}.weight"));
            let b = data.get(&format!("{head}.bias")).unwrap_or_else(|| panic!("{arch}: no {head}.bias"));
            assert_eq!((w.dim(0).unwrap(), b.dims()), (3, &[3][..]), "{arch}");
        }
    }
}

#[cfg(test)]
mod learning_sanity {
    use super::*;
    use crate::train::{cross_entropy, trainable_vars, OptimizerConfig, SgdConfig, Targets};
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarMap;

    /// The first and last loss of 40 SGD steps of a narrow TSM on 8 random clips, every op on
    /// candle's own path (as on a GPU) when `portable`.
    fn memorise_fixed_batch(portable: bool) -> (f32, f32) {
        let mut cfg = ModelConfig::defaults("tsm_r18");
        cfg.num_classes = 4;
        cfg.base_width = 8;
        cfg.frames = 4;
        cfg.dropout = 0.0;
        let varmap = VarMap::new();
        let model = build(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        init_weights(&varmap, 1).unwrap();
        let x = crate::rng::randn(0f32, 1., (8, 4, 3, 32, 32), &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 1, 2, 3, 0, 1, 2, 3], &Device::Cpu).unwrap();
        let sgd = OptimizerConfig::Sgd(SgdConfig { lr: 0.01, momentum: 0.9, ..Default::default() });
        let mut opt = sgd.build(trainable_vars(&varmap)).unwrap();
        let mut run = || {
            let losses: Vec<f32> = (0..40)
                .map(|_| {
                    let logits = model.forward_t(&x, true).unwrap();
                    let loss = cross_entropy(&logits, Targets::Labels(&labels), 0.0).unwrap();
                    opt.step(&loss.backward().unwrap()).unwrap();
                    loss.to_scalar::<f32>().unwrap()
                })
                .collect();
            (losses[0], losses[losses.len() - 1])
        };
        if portable {
            crate::nn::with_portable_ops(run)
        } else {
            run()
        }
    }

    /// A model must be able to memorise a handful of random clips: if the loss does not fall,
    /// some op drops or corrupts gradients.
    #[test]
    fn tsm_memorises_a_fixed_batch() {
        let (first, last) = memorise_fixed_batch(false);
        eprintln!("loss {first} → {last}");
        assert!(last < 0.1 * first, "loss {first} → {last}");
    }

    /// Training learns through the candle-only path too (was 1.60 → 0.0025).
    #[test]
    fn tsm_memorises_a_fixed_batch_on_the_candle_only_path() {
        let (first, last) = memorise_fixed_batch(true);
        eprintln!("candle-only path: loss {first} → {last}");
        assert!(last < 0.1 * first, "loss {first} → {last}");
    }
}
