//! `vclassify`: classify clips from a clip stream with a model file; predictions as JSON Lines.

use crate::Outcome;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::Parser;
use std::path::PathBuf;
use vidkit::infer::{check_record, clip_tensor, record_context, score_batch, Aggregate, VideoAverager};
use vidkit::io::{open_input, Output};
use vidkit::model::load_model;
use vidkit::stream::{write_prediction, Prediction, Record, StreamReader};

const EXAMPLES: &str = "\
Examples:
  # classify the validation set, 8 frames per clip as the model expects
  vsample --list val.list --root data/ --frames 8 -j 2 | vclassify --model tsm_r50.safetensors > pred.jsonl

  # 10 clips x 3 crops per video, averaged per video; class names from a label file
  vsample video.mp4 --frames 8 --clips 10 --crop three | vclassify --model m.safetensors --labels labels.txt --topk 3

  # one line per clip and view instead of per video
  vclassify --model m.safetensors --per-clip clips.vks

Reads uint8 THWC frame records (see vidkit-stream(5)), normalises them with the model's mean
and std, and writes one JSON object per video: video, label (when the stream has one), scores
(all classes: averaged softmax probabilities, or logits with --avg logits) and top.";

#[derive(Parser, Debug)]
#[command(name = "vclassify", version, about = "Classify clips from a clip stream with a vidkit model", after_help = EXAMPLES)]
pub struct Args {
    /// Clip-stream files; `-` or none reads stdin.
    pub inputs: Vec<PathBuf>,
    /// The model (.safetensors with its vidkit config; see vconvert).
    #[arg(long)]
    pub model: PathBuf,
    /// Class names, one per line (default: the model's own, if it has them).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Entries in `top`.
    #[arg(long, default_value_t = 5)]
    pub topk: usize,
    /// Aggregation over a video's clips and views: softmax (average probabilities) or logits
    /// [default: the model config's].
    #[arg(long, value_parser = ["softmax", "logits"])]
    pub avg: Option<String>,
    /// One prediction per record (clip x view) instead of per video.
    #[arg(long)]
    pub per_clip: bool,
    /// Clips per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// cpu, or cuda / cuda:N when built with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Output file (written atomically); default stdout.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
}

/// The compute device named by `--device` (shared with vfeat).
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        s if s.starts_with("cuda") => {
            let ordinal =
                s.strip_prefix("cuda:").map(str::parse).transpose().context("--device cuda:N")?.unwrap_or(0);
            Device::new_cuda(ordinal)
                .context("--device cuda: this build has no CUDA support (build with --features cuda)")
        }
        other => bail!("unknown device {other:?} (cpu, cuda, cuda:N)"),
    }
}

pub fn main(args: Args) -> Result<Outcome> {
    let dev = device(&args.device)?;
    let loaded = load_model(&args.model, &dev)?;
    let cfg = loaded.model.config().clone();
    let aggregate: Aggregate = args.avg.as_deref().unwrap_or(&cfg.aggregate).parse()?;
    let names: Option<Vec<String>> = match &args.labels {
        Some(p) => {
            let n = vidkit::data::read_label_names(p)?;
            if n.len() != cfg.num_classes {
                bail!("{}: {} class names for a model of {} classes", p.display(), n.len(), cfg.num_classes);
            }
            Some(n)
        }
        None => cfg.labels.clone(),
    };
    let names = names.as_deref();
    let inputs = if args.inputs.is_empty() { vec![PathBuf::from("-")] } else { args.inputs.clone() };
    let mut out = Output::open(args.output.as_deref())?;
    let mut averager = VideoAverager::default();
    let mut pending: Vec<(Record, Tensor)> = Vec::new();
    let batch = args.batch.max(1);
    let emit = |preds: Vec<Prediction>, out: &mut Output| -> Result<()> {
        for p in preds {
            write_prediction(&mut *out, &p).context("writing predictions")?;
        }
        Ok(())
    };
    let flush =
        |pending: &mut Vec<(Record, Tensor)>, averager: &mut VideoAverager, out: &mut Output| -> Result<()> {
            if pending.is_empty() {
                return Ok(());
            }
            let clips: Vec<Tensor> = pending.iter().map(|(_, t)| t.clone()).collect();
            let scores = score_batch(&loaded.model, &clips, aggregate)?;
            for ((rec, _), s) in pending.drain(..).zip(scores) {
                if args.per_clip {
                    let mut p = Prediction::from_scores(
                        rec.header.video.clone().unwrap_or_default(),
                        rec.header.label.clone(),
                        s,
                        args.topk,
                        names,
                    );
                    p.extra.insert("clip".into(), rec.header.clip.unwrap_or(0).into());
                    p.extra.insert("view".into(), rec.header.view.unwrap_or(0).into());
                    emit(vec![p], out)?;
                } else {
                    emit(averager.push(&rec, &s, args.topk, names), out)?;
                }
            }
            Ok(())
        };
    let mut records = 0usize;
    for input in &inputs {
        let name = if input.as_os_str() == "-" { "<stdin>".to_string() } else { input.display().to_string() };
        let mut reader = StreamReader::new(open_input(input)?, name.clone());
        while let Some(rec) = reader.next_record()? {
            let ctx = record_context(&name, records, &rec);
            check_record(&rec, cfg.frames).with_context(|| ctx.clone())?;
            let t = clip_tensor(&rec, &cfg.mean, &cfg.std, &dev).with_context(|| ctx.clone())?;
            if let Some((_, first)) = pending.first() {
                if first.dims() != t.dims() {
                    flush(&mut pending, &mut averager, &mut out)?;
                }
            }
            pending.push((rec, t));
            records += 1;
            if pending.len() >= batch {
                flush(&mut pending, &mut averager, &mut out)?;
            }
        }
    }
    flush(&mut pending, &mut averager, &mut out)?;
    if let Some(p) = averager.finish(args.topk, names) {
        emit(vec![p], &mut out)?;
    }
    if records == 0 {
        bail!("no records in the input");
    }
    out.finish()?;
    Ok(Outcome::Success)
}
