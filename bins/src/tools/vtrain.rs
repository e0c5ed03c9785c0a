//! `vtrain`: train a registered model from list files (decoded on the fly) or clip streams;
//! localizers from per-video features and segment annotations.

use crate::Outcome;
use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vidkit::clips::VideoItem;
use vidkit::featstore::{read_features, VideoFeatures};
use vidkit::model::{ModelConfig, SequenceSpec};
use vidkit::stream::Label;
use vidkit::train::loader::{decode_sample, feature_samples, read_clip_stream, Sample, Source};
use vidkit::train::trainer::{train, TrainConfig, TrainRun};

const EXAMPLES: &str = "\
Examples:
  # a narrow TSM-R18 on a vsynth set (lists' paths are relative to the list's directory)
  vtrain --arch tsm_r18 --train-list synth/train.list --val-list synth/val.list --out runs/tsm \\
      -o frames=8 -o base_width=16 -o short_side=64 -o crop_size=64 -o epochs=12 -o optimizer.lr=0.05

  # a 3D CNN with pytorchvideo's structure, shallower and narrower: Slow with ResNet-18's
  # blocks per stage at a quarter width, sampled densely as the zoo's slow_r50 (8 frames every 8)
  vtrain --arch slow_r50 --train-list synth/train.list --val-list synth/val.list --out runs/slow \
      -o stage_depths=[2,2,2,2] -o base_width=16 -o short_side=32 -o crop_size=32 -o epochs=8

  # a JSON config, any key overridden on the command line (PaddleVideo style)
  vtrain --arch tsm_r50 --config tsm_k400.json --train-list train.list --val-list val.list --out runs/k400 \\
      -o schedule='{\"name\":\"cosine\",\"epochs\":50}' -o label_smoothing=0.1 -j 2

  # training augmentation by config key: pytorchvideo's RandAugment (its parameter names; or
  # augmix), PaddleVideo's colour jitter
  vtrain --arch mvit_base_16x4 --train-list train.list --out runs/mvit -o rand_augment.magnitude=7 \\
      -o rand_augment.num_layers=4 -o color_jitter='{\"brightness\":0.4,\"contrast\":0.4,\"saturation\":0.4,\"hue\":0.1,\"style\":\"paddlevideo\"}'

  # continue exactly where the last run stopped (a DML run's peer and its optimiser too)
  vtrain --arch tsm_r50 --config tsm_k400.json --train-list train.list --val-list val.list --out runs/k400 --resume

  # on a GPU (a build with --features cuda), products in bf16, weights and optimiser in f32
  vtrain --arch tsm_r50 --train-list train.list --out runs/gpu --device cuda -o amp=bf16

  # fine-tune a pretrained model on UCF101: import it, then start from it (a new 101-class head)
  vconvert --arch tsm_r50 tsm_r50_1x1x8_50e_kinetics400_rgb.pth k400.safetensors
  vtrain --arch tsm_r50 --init k400.safetensors --train-list ucf101/train.list --out runs/ucf

  # PP-TimeSformer from ImageNet ViT-B weights (spatial attention copied into the temporal one)
  vconvert --arch pptimesformer_vit_b ViT_base_patch16_224.pdparams vit_init.safetensors
  vtrain --arch pptimesformer_vit_b --init vit_init.safetensors --train-list train.list \\
      --out runs/ptf -o optimizer.layer_decay=0.75 -o clip_grad=1.0

  # mmaction2's fc_lr5: the classifier at 5× the LR (its bias 10×, undecayed), and any
  # parameters by name pattern at their own LR and decay multipliers (longest pattern wins)
  vtrain --arch tsm_r50 --train-list train.list --out runs/tsm -o optimizer.fc_lr5=true \\
      -o optimizer.param_groups='[{\"match\":\"backbone.conv1\",\"lr_mult\":0.1,\"decay_mult\":1}]'

  # a feature-sequence model (VideoTag's second stage) on vfeat's HDF5 features
  vtrain --arch attention_lstm --train-list feats/train.h5 --val-list feats/val.h5 --out runs/lstm \
      -o sequence.lstm_size=256 -o optimizer='{\"name\":\"adamw\",\"lr\":0.001}'

  # a temporal localizer (BMN, as PaddleVideo trains it) on snippet features resampled to 100
  # steps and ActivityNet annotations; validation proposes and scores AR@AN AUC every epoch
  vtrain --arch bmn --train-list anet_feats.h5 --gt activity_net.v1-3.min.json \
      --train-subset training --val-subset validation --out runs/bmn

  # PaddleVideo's own layout: fix_feat_100/*.npy and its per-video annotation file
  vtrain --arch bmn --train-list fix_feat_100 --gt activitynet_1.3_annotations.json \
      --train-subset training --val-subset validation --out runs/bmn -o batch_size=4

  # C-TCN on per-video class-score features of any length, labelled ActivityNet segments
  vtrain --arch ctcn --train-list anet_scores.h5 --gt activity_net.v1-3.min.json \
      --train-subset training --val-subset validation --out runs/ctcn

  # BSN as MMAction2 trains it: the TEM, then the PGM over the training videos, then the PEM
  vtrain --arch bsn --train-list csv_mean_100 --gt anet_anno_train_val.json \
      --train-subset training --val-subset validation --out runs/bsn

  # TALL (sentence grounding) on snippet features and query files with embeddings and gt
  vtrain --arch tall --train-list train.h5 --gt train_queries.jsonl --val-list test.h5 \
      --val-queries test_queries.jsonl --out runs/tall

  # ETS (captioning) on 5 fps frame features and ActivityNet Captions (events cut by timestamps)
  vtrain --arch ets --train-list anet_5fps.h5 --gt captions/train.json --val-list anet_5fps.h5 \
      --val-gt captions/val_1.json --out runs/ets

Writes OUT/last.safetensors and OUT/best.safetensors (model files for vclassify),
OUT/last.ckpt.safetensors (the training state for --resume) and OUT/log.jsonl. Inputs ending
in .vks are pre-sampled clip streams (vsample --train ... -o train.vks), reused every epoch.
Feature-sequence models (attention_lstm, attention_cluster, nextvlad) train from per-video
features: an HDF5 feature store or a features stream (vfeat); class count, feature widths and
multi-label mode (any video with a label list) come from the data unless set with -o.
Localizers (bmn, bsn, ctcn) train from per-video features [T, C] (an HDF5 store, a features stream, .npy/.csv
files or directories) and --gt annotations; the defaults are bmn.yaml's (T = D = 100, 9 epochs,
16 videos a step, Adam with L2 1e-4, 1e-3 then 1e-4 after epoch 7), any BMN size by -o
(tscale=..., hidden_1d=...; variant=mmaction2 with clip_grad=40 trains MMAction2's BMN and loss);
the feature width comes from the data. Videos missing from the
annotations or of the wrong size are reported and skipped. best.safetensors has the best
validation AUC (ActivityNet's AR@AN, AN up to 100), as veval --proposals scores it. BSN
(MMAction2's configs): 20 TEM epochs (Adam 1e-3, L2 1e-4, x0.1 at 7 and 14), then the best 500
candidates of every training video with their tIoU, then 20 PEM epochs (Adam 1e-2, L2 1e-5, x0.1
at 10), gradients clipped at 40; -o tem_epochs=, pem_epochs=, temporal_dim=, pem_balanced=true
(BSN's paper weighting, which MMAction2's loss cancels); validation after each PEM epoch. Its
proposals scale by the plain duration (feature_extraction_interval 1: the features cover the whole
video). C-TCN (ctcn.yaml): features of any length, the classes the annotations' labels (sorted),
35 epochs of 16 videos, momentum SGD 5e-4 (x0.1 at epoch 15), L2 1e-4, the reader's random crop,
targets by BoxCoder.encode, smooth-L1 x2 + cross-entropy with 3:1 hard negatives; validation
scores ActivityNet's detection mAP; -o width=16 makes every layer 4x narrower for small data.
TALL (tall.yaml) trains from snippet features and --gt queries ({\"query_id\", \"video\",
\"embedding\", \"gt\": [t0, t1]}; --val-queries for validation): windows of 64-512 frames
(overlap 0.8) paired with the queries they match (IoU > 0.5, nIoL < 0.15), batches of 56 whose
other pairs are the negatives, the alignment + 0.01 x L1 offset loss, Adam 1e-3, clip norm 5, 25
epochs; validation scores R@1 at IoU 0.5 (TALL's NMS protocol); sizes and windows by -o
(semantic_size=, hidden_size=, windows=[..], train_windows=[..], context_size=).
ETS (ets.yaml) trains from per-frame features and --gt captions (ActivityNet Captions: each
sentence with the rows of its timestamps, int(t0 * r) to int(t1 * r + 0.5) at r rows per second
as the reader slices its 5 fps features; MSR-VTT or {video: [sentences]}: whole videos), PTB-
tokenized, the vocabulary the words seen 3 times (min_count=), stored in the model; 40 epochs of
256 sentences, teacher-forced cross-entropy, Adam with L2 1e-4, global norm clip 5, Noam's rate
(d = gru_hidden_dim, warmup_steps=1000, lr_scale=1); validation (--val-list with --val-gt, or
--gt) scores the loss; sizes by -o (fc_dim=, gru_hidden_dim=, decoder_size=, word_emb_dim=).";

#[derive(Parser, Debug)]
#[command(name = "vtrain", version, about = "Train a video model from list files or clip streams", after_help = EXAMPLES)]
pub struct Args {
    /// Registered architecture (see `vconvert --list-archs`).
    #[arg(long)]
    pub arch: String,
    /// Training list (`path label` lines), clip stream (.vks), or for sequence models features
    /// (.h5 store or features stream).
    #[arg(long)]
    pub train_list: PathBuf,
    /// Validation list, clip stream or features.
    #[arg(long)]
    pub val_list: Option<PathBuf>,
    /// Directory the lists' relative paths start from [default: each list's own directory].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Output directory for models, checkpoint and log.
    #[arg(long)]
    pub out: PathBuf,
    /// JSON training config (model, optimizer, schedule, epochs, batch_size, ...).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config key: `-o optimizer.lr=0.01`, `-o num_classes=4`; values are JSON.
    #[arg(short = 'o', long = "override", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Continue from OUT/last.ckpt.safetensors.
    #[arg(long)]
    pub resume: bool,
    /// Start from this model file's weights (vconvert's import of a pretrained checkpoint, an
    /// earlier run's best): its config is the base that -o changes; every tensor must fit but
    /// the classifier, which starts fresh when the class count differs.
    #[arg(long, value_name = "MODEL.safetensors")]
    pub init: Option<PathBuf>,
    /// Stop after this many epochs of this run (the schedule still spans `epochs`).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Where the model trains: cpu, cuda, cuda:N (a build with `--features cuda`; every op then
    /// takes candle's own path, clips decoded and batches built on CPU threads), or cpu-portable
    /// (the CPU through that same path, the GPU's code checked on a machine without one).
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: String,
    /// Parallel decoders (overrides the config's `jobs`).
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// Seed (overrides the config's `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Localizers (bmn, bsn, ctcn): the segment annotations, an ActivityNet JSON, PaddleVideo's /
    /// MMAction2's per-video JSON (id -> {duration_second, annotations}) or a THUMOS14
    /// annotation directory (subsets validation and test; durations from the features).
    /// Grounders (tall): the training queries (JSON Lines with "gt", as vground reads).
    /// Captioners (ets): the training captions (ActivityNet Captions, MSR-VTT or {video: [sentences]}).
    #[arg(long, value_name = "FILE")]
    pub gt: Option<PathBuf>,
    /// Localizers: train on the annotated videos of this subset only (e.g. training).
    #[arg(long, value_name = "SUBSET")]
    pub train_subset: Option<String>,
    /// Localizers: validate on the annotated videos of this subset, taken from --val-list or,
    /// without one, from the training features.
    #[arg(long, value_name = "SUBSET")]
    pub val_subset: Option<String>,
    /// Grounders (tall): the validation queries (their videos from --val-list, else from the
    /// training features, then not trained on).
    #[arg(long, value_name = "FILE")]
    pub val_queries: Option<PathBuf>,
    /// Captioners (ets): the validation captions for --val-list's videos [default: --gt].
    #[arg(long, value_name = "FILE")]
    pub val_gt: Option<PathBuf>,
    /// Grounders: the frame rate of videos whose features carry none.
    #[arg(long)]
    pub fps: Option<f64>,
    /// Localizers: the features modality to read.
    #[arg(long, default_value = "rgb")]
    pub modality: String,
    /// Only errors on stderr.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

fn is_stream(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "vks")
}

fn read_items(list: &Path, root: Option<&Path>) -> Result<Vec<VideoItem>> {
    let base = root
        .map(Path::to_path_buf)
        .unwrap_or_else(|| list.parent().map(Path::to_path_buf).unwrap_or_default());
    let entries = vidkit::data::read_list(list)?;
    entries
        .into_iter()
        .map(|e| {
            let label = match e.labels.as_slice() {
                [] => bail!("{}: line {}: vtrain needs a label per video", list.display(), e.line),
                [l] => Label::Single(*l),
                ls => Label::Multi(ls.to_vec()),
            };
            Ok(VideoItem { id: e.path.clone(), path: e.resolve(Some(&base)), label: Some(label) })
        })
        .collect()
}

/// `--device`: the candle device, and whether the CPU runs candle's own ops only.
pub(super) fn train_device(name: &str) -> Result<(candle_core::Device, bool)> {
    match name {
        "cpu-portable" => Ok((candle_core::Device::Cpu, true)),
        name => Ok((super::vclassify::device(name)?, false)),
    }
}

pub fn main(args: Args) -> Result<Outcome> {
    let task = vidkit::model::arch_info(&args.arch)?.task;
    train_device(&args.device)?; // a bad or unavailable device fails before any data is read
    if task == vidkit::model::Task::Grounder {
        return super::vtrain_tall::train(args);
    }
    if task == vidkit::model::Task::Captioner {
        return super::vtrain_ets::train(args);
    }
    if task == vidkit::model::Task::Localizer {
        if args.init.is_some() {
            bail!("--init starts recognizers of frames; {} trains from its initialisation", args.arch);
        }
        return train_localizer(args);
    }
    if args.gt.is_some() {
        let localizers: Vec<&str> = vidkit::model::archs_for(vidkit::model::Task::Localizer).collect();
        bail!("--gt is for localizers ({}); {} learns from list labels", localizers.join(", "), args.arch);
    }
    let mut cfg = match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("{}: cannot read config", p.display()))?;
            serde_json::from_str::<TrainConfig>(&text)
                .with_context(|| format!("{}: bad training config", p.display()))?
        }
        // Without a config the architecture's own defaults (PP-TSMv2's dropout 0.2, a zoo
        // model's dense sampling and normalisation), not those of the default tsm_r50.
        None => TrainConfig { model: ModelConfig::defaults(&args.arch), ..TrainConfig::default() },
    };
    if let Some(p) = &args.init {
        // The model as the file has it (sizes, input spec, normalisation); -o changes it below.
        cfg.model = vidkit::model::read_config(p)?;
        if cfg.model.arch != args.arch {
            bail!("{}: --init is a {} model, not {}", p.display(), cfg.model.arch, args.arch);
        }
        // Its class names belong to its classes; this run's come from the data.
        cfg.model.labels = None;
    }
    if cfg.model.arch != args.arch {
        // A config written for another architecture keeps its shared keys; the
        // architecture's own section comes from its defaults.
        cfg.model.sequence = SequenceSpec::defaults(&args.arch);
    }
    cfg.model.arch = args.arch.clone();
    if ModelConfig::is_sequence_arch(&args.arch) {
        if args.init.is_some() {
            bail!("--init starts recognizers of frames; {} trains from its initialisation", args.arch);
        }
        return train_on_features(args, cfg);
    }
    // Class count and names from the data unless the config says otherwise.
    let mut overrides = args.overrides.clone();
    let train_items = if is_stream(&args.train_list) {
        None
    } else {
        Some(read_items(&args.train_list, args.root.as_deref())?)
    };
    let given = args.overrides.clone();
    let user_set = |k: &str| {
        given.iter().any(|o| o.starts_with(&format!("{k}=")) || o.starts_with(&format!("model.{k}=")))
    };
    if let Some(items) = &train_items {
        if !user_set("num_classes") && args.config.is_none() {
            let max =
                items.iter().filter_map(|i| i.label.as_ref().and_then(Label::single)).max().unwrap_or(0);
            let names = args.train_list.parent().map(|d| d.join("labels.txt")).filter(|p| p.is_file());
            let n = match &names {
                Some(p) => vidkit::data::read_label_names(p)?.len().max(max as usize + 1),
                None => max as usize + 1,
            };
            overrides.insert(0, format!("num_classes={n}"));
            if let Some(p) = names {
                let labels = vidkit::data::read_label_names(&p)?;
                if labels.len() == n && !user_set("labels") {
                    overrides.insert(1, format!("labels={}", serde_json::to_string(&labels)?));
                }
            }
        }
    }
    if let Some(j) = args.jobs {
        overrides.push(format!("jobs={j}"));
    }
    if let Some(s) = args.seed {
        overrides.push(format!("seed={s}"));
    }
    cfg.apply_overrides(&overrides)?;
    let (mean, std) = (cfg.model.mean, cfg.model.std);
    let train_source = match train_items {
        Some(items) => Source::Videos(Arc::new(items)),
        None => Source::Samples(Arc::new(read_clip_stream(&args.train_list, &mean, &std)?)),
    };
    check_labels(&train_source, &cfg.model, &args.train_list)?;
    let val: Option<Vec<Sample>> = match &args.val_list {
        None => None,
        Some(p) if is_stream(p) => Some(read_clip_stream(p, &mean, &std)?),
        Some(p) => {
            // Validation clips never change: decode them once, with the test protocol.
            let items = read_items(p, args.root.as_deref())?;
            let spec = cfg.val_spec()?;
            let mut out = Vec::new();
            let mut failed = 0;
            vidkit::parallel::map_ordered(
                &items,
                cfg.jobs,
                |i, it| decode_sample(&spec, it, i, &mean, &std),
                |_, r| {
                    match r {
                        Ok(s) => out.push(s),
                        Err(e) => {
                            eprintln!("vtrain: validation video skipped: {e:#}");
                            failed += 1;
                        }
                    }
                    Ok(())
                },
            )?;
            if out.is_empty() {
                bail!("{}: no validation video could be decoded", p.display());
            }
            Some(out)
        }
    };
    run(args, cfg, train_source, val)
}

fn check_labels(source: &Source, model: &ModelConfig, path: &Path) -> Result<()> {
    let classes = model.num_classes;
    for (i, l) in source.labels().iter().enumerate() {
        if l.iter().any(|c| *c >= classes) || (l.is_empty() && matches!(source, Source::Videos(_))) {
            bail!("{}: sample {i} has label {l:?}, outside 0..{classes}", path.display());
        }
        if l.len() > 1 && !model.multilabel {
            bail!(
                "{}: sample {i} has labels {l:?}: several labels per video need -o multilabel=true",
                path.display()
            );
        }
    }
    Ok(())
}

fn run(args: Args, cfg: TrainConfig, train_source: Source, val: Option<Vec<Sample>>) -> Result<Outcome> {
    let (device, portable_ops) = train_device(&args.device)?;
    let summary = train(TrainRun {
        config: cfg,
        train: train_source,
        val,
        out_dir: args.out.clone(),
        resume: args.resume,
        stop_after: args.stop_after,
        quiet: args.quiet,
        init: args.init.clone(),
        device,
        portable_ops,
    })?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(Outcome::Success)
}

/// Sequence models: samples from per-video features; the class count, feature widths and
/// multi-label mode are read off the training data unless the config or `-o` sets them.
fn train_on_features(args: Args, mut cfg: TrainConfig) -> Result<Outcome> {
    let read = |p: &Path| -> Result<Vec<VideoFeatures>> {
        let v = read_features(p)?;
        if v.is_empty() {
            bail!("{}: no videos", p.display());
        }
        Ok(v)
    };
    let train_videos = read(&args.train_list)?;
    let given = args.overrides.clone();
    let user_set = |k: &str| {
        given.iter().any(|o| o.starts_with(&format!("{k}=")) || o.starts_with(&format!("model.{k}=")))
    };
    let mut overrides = Vec::new();
    if args.config.is_none() {
        let multi = train_videos.iter().any(|v| matches!(v.label, Some(Label::Multi(_))));
        if multi && !user_set("multilabel") {
            overrides.push("multilabel=true".to_string());
            if !user_set("aggregate") {
                overrides.push("aggregate=\"sigmoid\"".to_string());
            }
        }
        if !user_set("num_classes") {
            let max = train_videos
                .iter()
                .flat_map(|v| match &v.label {
                    Some(Label::Single(l)) => vec![*l],
                    Some(Label::Multi(ls)) => ls.clone(),
                    None => vec![],
                })
                .max()
                .unwrap_or(0);
            let names = args.train_list.parent().map(|d| d.join("labels.txt")).filter(|p| p.is_file());
            let mut n = max.max(0) as usize + 1;
            if let Some(p) = &names {
                let labels = vidkit::data::read_label_names(p)?;
                n = n.max(labels.len());
                if labels.len() == n && !user_set("labels") {
                    overrides.push(format!("labels={}", serde_json::to_string(&labels)?));
                }
            }
            overrides.insert(0, format!("num_classes={n}"));
        }
        // Feature widths of the named modalities, from the first video.
        let spec = cfg.model.sequence.clone().unwrap_or_default();
        let first = &train_videos[0];
        if !given.iter().any(|o| o.contains("feature_dims")) {
            let mods: Vec<String> = given
                .iter()
                .find_map(|o| o.strip_prefix("sequence.modalities="))
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or(spec.modalities.clone());
            let dims: Option<Vec<usize>> =
                mods.iter().map(|m| first.modality(m).map(|a| a.ncols())).collect();
            if let Some(d) = dims {
                overrides.push(format!("sequence.feature_dims={}", serde_json::to_string(&d)?));
            }
        }
    }
    overrides.extend(args.overrides.iter().cloned());
    if let Some(j) = args.jobs {
        overrides.push(format!("jobs={j}"));
    }
    if let Some(s) = args.seed {
        overrides.push(format!("seed={s}"));
    }
    cfg.apply_overrides(&overrides)?;
    let modalities = cfg.model.sequence.as_ref().map(|s| s.modalities.clone()).unwrap_or_default();
    let name = |p: &Path| p.display().to_string();
    let train_source =
        Source::Samples(Arc::new(feature_samples(train_videos, &modalities, &name(&args.train_list))?));
    check_labels(&train_source, &cfg.model, &args.train_list)?;
    let val = match &args.val_list {
        None => None,
        Some(p) => {
            let v = feature_samples(read(p)?, &modalities, &name(p))?;
            check_labels(&Source::Samples(Arc::new(v.clone())), &cfg.model, p)?;
            Some(v)
        }
    };
    run(args, cfg, train_source, val)
}

/// A localizer's training data before it is checked against the model: features and the
/// annotations of their subsets.
struct LocalizerData {
    train: Vec<vidkit::featstore::VideoFeatures>,
    train_annotations: Vec<vidkit::data::AnnotatedVideo>,
    /// Validation features, their annotations and where they came from.
    val: Option<(Vec<vidkit::featstore::VideoFeatures>, Vec<vidkit::data::AnnotatedVideo>, String)>,
    /// `-o` overrides, the feature width of the data first (unless the config or -o sets it).
    overrides: Vec<String>,
}

fn localizer_data(args: &Args, section: &str, width_key: &str) -> Result<LocalizerData> {
    let gt_path = args
        .gt
        .as_deref()
        .with_context(|| format!("{} trains from segment annotations: give --gt FILE", args.arch))?;
    let annotations = vidkit::data::read_annotations(gt_path)?;
    let subset = |s: &Option<String>| -> Result<Vec<vidkit::data::AnnotatedVideo>> {
        let Some(s) = s else { return Ok(annotations.clone()) };
        let v: Vec<_> =
            annotations.iter().filter(|a| a.subset.as_deref() == Some(s.as_str())).cloned().collect();
        if v.is_empty() {
            bail!("{}: no annotated video in subset {s:?}", gt_path.display());
        }
        Ok(v)
    };
    let mut train_videos = read_features(&args.train_list)?;
    let given = |k: &str| {
        args.overrides
            .iter()
            .any(|o| o.starts_with(&format!("{k}=")) || o.starts_with(&format!("{section}.{k}=")))
    };
    let mut overrides = Vec::new();
    if args.config.is_none() {
        // The width most videos have (one odd file should not set it).
        let mut widths: Vec<usize> =
            train_videos.iter().filter_map(|v| v.modality(&args.modality).map(|a| a.ncols())).collect();
        widths.sort_unstable();
        let common = widths.chunk_by(|a, b| a == b).max_by_key(|c| c.len()).map(|c| c[0]);
        if let (Some(w), false) = (common, given(width_key)) {
            overrides.push(format!("{section}.{width_key}={w}"));
        }
    }
    overrides.extend(args.overrides.iter().cloned());
    if let Some(s) = args.seed {
        overrides.push(format!("seed={s}"));
    }
    let val = match (&args.val_list, &args.val_subset) {
        (Some(p), s) => Some((read_features(p)?, subset(s)?, p.display().to_string())),
        (None, Some(_)) => {
            // The validation subset's videos among the training features; they are not trained on.
            let anns = subset(&args.val_subset)?;
            let ids: std::collections::HashSet<&str> = anns.iter().map(|a| a.id.as_str()).collect();
            let (val, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut train_videos)
                .into_iter()
                .partition(|v| vidkit::data::find_video_id(&v.id, |f| ids.contains(f)).is_some());
            train_videos = rest;
            Some((val, anns, args.train_list.display().to_string()))
        }
        (None, None) => None,
    };
    Ok(LocalizerData { train: train_videos, train_annotations: subset(&args.train_subset)?, val, overrides })
}

/// A localizer training config from --config or the defaults.
fn localizer_config<T: serde::de::DeserializeOwned + Default>(args: &Args) -> Result<T> {
    Ok(match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("{}: cannot read config", p.display()))?;
            serde_json::from_str::<T>(&text)
                .with_context(|| format!("{}: bad localizer training config", p.display()))?
        }
        None => T::default(),
    })
}

fn report_videos(quiet: bool, train: usize, val: Option<usize>) {
    if !quiet {
        eprintln!(
            "vtrain: {train} training videos{}",
            val.map(|v| format!(", {v} validation videos")).unwrap_or_default()
        );
    }
}

/// Localizers: per-video features and segment annotations.
fn train_localizer(args: Args) -> Result<Outcome> {
    if args.arch == "bsn" {
        return train_bsn(args);
    }
    if args.arch == "ctcn" {
        return train_ctcn(args);
    }
    use vidkit::train::localizer::{localizer_samples, train_localizer, LocalizerRun, LocalizerTrainConfig};
    let mut cfg: LocalizerTrainConfig = localizer_config(&args)?;
    let data = localizer_data(&args, "bmn", "feat_dim")?;
    cfg.apply_overrides(&data.overrides)?;
    let quiet = args.quiet;
    let skip = |m: String| {
        if !quiet {
            eprintln!("vtrain: {m}");
        }
    };
    let val = match data.val {
        Some((videos, anns, source)) => {
            Some(localizer_samples(videos, &anns, &cfg.bmn, &args.modality, &source, skip)?)
        }
        None => None,
    };
    let source = args.train_list.display().to_string();
    let train =
        localizer_samples(data.train, &data.train_annotations, &cfg.bmn, &args.modality, &source, skip)?;
    report_videos(quiet, train.len(), val.as_ref().map(|v| v.len()));
    let (device, portable_ops) = train_device(&args.device)?;
    let summary = train_localizer(LocalizerRun {
        config: cfg,
        train,
        val,
        out_dir: args.out.clone(),
        resume: args.resume,
        stop_after: args.stop_after,
        quiet,
        device,
        portable_ops,
    })?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(Outcome::Success)
}

/// BSN: the TEM, then the PGM over the training videos, then the PEM (MMAction2's two configs).
fn train_bsn(args: Args) -> Result<Outcome> {
    use vidkit::train::bsn::{train_bsn, BsnRun, BsnTrainConfig};
    use vidkit::train::localizer::localizer_videos;
    let mut cfg: BsnTrainConfig = localizer_config(&args)?;
    let data = localizer_data(&args, "bsn", "feat_dim")?;
    cfg.apply_overrides(&data.overrides)?;
    let quiet = args.quiet;
    let skip = |m: String| {
        if !quiet {
            eprintln!("vtrain: {m}");
        }
    };
    let shape = (Some(cfg.bsn.temporal_dim), cfg.bsn.feat_dim);
    let val = match data.val {
        Some((videos, anns, source)) => {
            Some(localizer_videos(videos, &anns, shape, &args.modality, &source, skip, Ok)?)
        }
        None => None,
    };
    let source = args.train_list.display().to_string();
    let train =
        localizer_videos(data.train, &data.train_annotations, shape, &args.modality, &source, skip, Ok)?;
    report_videos(quiet, train.len(), val.as_ref().map(|v| v.len()));
    let (device, portable_ops) = train_device(&args.device)?;
    let summary = train_bsn(BsnRun {
        config: cfg,
        train,
        val,
        out_dir: args.out.clone(),
        resume: args.resume,
        stop_after: args.stop_after,
        quiet,
        device,
        portable_ops,
    })?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(Outcome::Success)
}

/// C-TCN: labelled segments; the classes are the annotations' labels, sorted (the model's
/// class k + 1, background 0).
fn train_ctcn(args: Args) -> Result<Outcome> {
    use vidkit::train::ctcn::{ctcn_videos, train_ctcn, CtcnRun, CtcnTrainConfig};
    use vidkit::train::localizer::localizer_videos;
    let mut cfg: CtcnTrainConfig = localizer_config(&args)?;
    let mut data = localizer_data(&args, "ctcn", "concept_size")?;
    let mut classes: Vec<String> = data
        .train_annotations
        .iter()
        .chain(data.val.iter().flat_map(|(_, a, _)| a.iter()))
        .flat_map(|a| a.segments.iter().filter_map(|s| s.label.clone()))
        .collect();
    classes.sort();
    classes.dedup();
    if classes.is_empty() {
        bail!(
            "{}: no labelled segments (C-TCN detects classes)",
            args.gt.as_deref().unwrap_or(Path::new("")).display()
        );
    }
    let given =
        args.overrides.iter().any(|o| o.starts_with("num_classes=") || o.starts_with("ctcn.num_classes="));
    if !given && args.config.is_none() {
        data.overrides.insert(0, format!("ctcn.num_classes={}", classes.len() + 1));
    }
    cfg.apply_overrides(&data.overrides)?;
    let quiet = args.quiet;
    let skip = |m: String| {
        if !quiet {
            eprintln!("vtrain: {m}");
        }
    };
    let width = cfg.ctcn.concept_size;
    let val = match data.val {
        Some((videos, anns, source)) => Some(ctcn_videos(
            localizer_videos(videos, &anns, (None, width), &args.modality, &source, skip, Ok)?,
            &classes,
            width,
        )?),
        None => None,
    };
    let source = args.train_list.display().to_string();
    let train = localizer_videos(
        data.train,
        &data.train_annotations,
        (None, width),
        &args.modality,
        &source,
        skip,
        Ok,
    )?;
    let train = ctcn_videos(train, &classes, width)?;
    report_videos(quiet, train.len(), val.as_ref().map(|v| v.len()));
    let (device, portable_ops) = train_device(&args.device)?;
    let summary = train_ctcn(CtcnRun {
        config: cfg,
        classes,
        train,
        val,
        out_dir: args.out.clone(),
        resume: args.resume,
        stop_after: args.stop_after,
        quiet,
        device,
        portable_ops,
    })?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(Outcome::Success)
}
