//! `vtrain`: train a registered model from list files (decoded on the fly) or clip streams.

use crate::Outcome;
use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vidkit::clips::VideoItem;
use vidkit::stream::Label;
use vidkit::train::loader::{decode_sample, read_clip_stream, Sample, Source};
use vidkit::train::trainer::{train, TrainConfig, TrainRun};

const EXAMPLES: &str = "\
Examples:
  # a narrow TSM-R18 on a vsynth set (lists' paths are relative to the list's directory)
  vtrain --arch tsm_r18 --train-list synth/train.list --val-list synth/val.list --out runs/tsm \\
      -o frames=8 -o base_width=16 -o short_side=64 -o crop_size=64 -o epochs=12 -o optimizer.lr=0.05

  # a JSON config, any key overridden on the command line (PaddleVideo style)
  vtrain --arch tsm_r50 --config tsm_k400.json --train-list train.list --val-list val.list --out runs/k400 \\
      -o schedule='{\"name\":\"cosine\",\"epochs\":50}' -o label_smoothing=0.1 -j 2

  # continue exactly where the last run stopped
  vtrain --arch tsm_r50 --config tsm_k400.json --train-list train.list --val-list val.list --out runs/k400 --resume

Writes OUT/last.safetensors and OUT/best.safetensors (model files for vclassify),
OUT/last.ckpt.safetensors (the training state for --resume) and OUT/log.jsonl. Inputs ending
in .vks are pre-sampled clip streams (vsample --train ... -o train.vks), reused every epoch.";

#[derive(Parser, Debug)]
#[command(name = "vtrain", version, about = "Train a video model from list files or clip streams", after_help = EXAMPLES)]
pub struct Args {
    /// Registered architecture (see `vconvert --list-archs`).
    #[arg(long)]
    pub arch: String,
    /// Training list (`path label` lines) or clip stream (.vks).
    #[arg(long)]
    pub train_list: PathBuf,
    /// Validation list or clip stream.
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
    /// Stop after this many epochs of this run (the schedule still spans `epochs`).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Parallel decoders (overrides the config's `jobs`).
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// Seed (overrides the config's `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
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
                [l] => Label::Single(*l),
                _ => bail!("{}: line {}: vtrain needs exactly one label per video", list.display(), e.line),
            };
            Ok(VideoItem { id: e.path.clone(), path: e.resolve(Some(&base)), label: Some(label) })
        })
        .collect()
}

pub fn main(args: Args) -> Result<Outcome> {
    let mut cfg = match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("{}: cannot read config", p.display()))?;
            serde_json::from_str::<TrainConfig>(&text)
                .with_context(|| format!("{}: bad training config", p.display()))?
        }
        None => TrainConfig::default(),
    };
    cfg.model.arch = args.arch.clone();
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
        None => Source::Clips(Arc::new(read_clip_stream(&args.train_list, &mean, &std)?)),
    };
    for (i, l) in train_source.labels().iter().enumerate() {
        match l {
            Some(l) if *l < cfg.model.num_classes => {}
            _ => bail!(
                "{}: sample {i} has label {l:?}, outside 0..{}",
                args.train_list.display(),
                cfg.model.num_classes
            ),
        }
    }
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
    let summary = train(TrainRun {
        config: cfg,
        train: train_source,
        val,
        out_dir: args.out.clone(),
        resume: args.resume,
        stop_after: args.stop_after,
        quiet: args.quiet,
    })?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(Outcome::Success)
}
