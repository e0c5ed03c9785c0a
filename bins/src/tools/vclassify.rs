//! `vclassify`: classify clips from a clip stream with a model file; predictions as JSON Lines.

use crate::tools::merge_shards;
use crate::Outcome;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::Parser;
use std::path::{Path, PathBuf};
use vidkit::data::{Shard, VideoOrdinals};
use vidkit::featstore::{
    is_feature_file, is_hdf5, read_features, FeatureStore, FeatureStreamReader, VideoFeatures,
};
use vidkit::infer::{
    check_record, clip_tensor, record_context, score_batch, score_sequences, Aggregate, VideoAverager,
};
use vidkit::io::{open_input, Output};
use vidkit::model::{load_model, Model, ModelConfig};
use vidkit::precision::{Inference, Precision};
use vidkit::progress::Progress;
use vidkit::stream::{write_prediction, Label, Prediction, Record, StreamReader};
use vidkit::window::{Window, WindowBuilder, WindowSpec};

const EXAMPLES: &str = "\
Examples:
  # classify the validation set, 8 frames per clip as the model expects
  vsample --list val.list --root data/ --frames 8 -j 2 | vclassify --model tsm_r50.safetensors > pred.jsonl

  # 10 clips x 3 crops per video, averaged per video; class names from a label file
  vsample video.mp4 --frames 8 --clips 10 --crop three | vclassify --model m.safetensors --labels labels.txt --topk 3

  # one line per clip and view instead of per video
  vclassify --model m.safetensors --per-clip clips.vks

  # a feature-sequence model (VideoTag: TSN features, then AttentionLSTM)
  vsample clip.mp4 --sampler uniform --frames 300 | vfeat --model tsn.safetensors | vclassify --model lstm.safetensors
  vclassify --model lstm.safetensors feats.h5

  # a 2-hour video, window by window: 8-second windows every second, 4 frames per second in
  vsample movie.mp4 --fps 4 | vclassify --model tsm_r50.safetensors --window 8 --stride 1 > windows.jsonl

  # 4 shards (a Slurm array's tasks, GNU parallel's jobs), then one output as if unsharded
  vsample --list val.list --root data/ --frames 8 --shard $K/4 | vclassify --model m.safetensors -o part$K.jsonl
  vclassify --merge part0.jsonl part1.jsonl part2.jsonl part3.jsonl -o pred.jsonl

  # on the first GPU (a build with --features cuda)
  vsample video.mp4 --frames 8 | vclassify --model m.safetensors --device cuda

Reads uint8 THWC frame records (see vidkit-stream(5)), normalises them with the model's mean
and std, and writes one JSON object per video: video, label (when the stream has one), scores
(all classes: averaged softmax probabilities, or logits with --avg logits) and top.
Feature-sequence models (attention_lstm, attention_cluster, nextvlad) read features instead:
a features stream (vfeat) or an HDF5 feature store, one prediction per video; multi-label
models give per-class sigmoid probabilities and carry a video's label list as `labels`.

With --window W --stride S, the frames of each video (in time order, with the indices and fps
vsample writes, e.g. from --fps R) are grouped into windows of W seconds every S seconds, as
MMAction2's long_video_demo.py does; each window, as soon as it is complete, gives the model's
frames by the model's own sampler over the window's frames and one JSON line: video, window,
t0, t1 (seconds), scores, top. Only the open windows' frames are held. A video shorter than
one window is one window.

--shard K/N keeps the videos whose 0-based ordinal in the input (distinct videos, in order of
first appearance) is K modulo N, as vsample --shard and vfeat --shard do (sharding upstream, in
vsample, saves the decoding); --merge puts the outputs of shards 0..N-1 back in input order, byte
for byte the unsharded output. A shard that lost videos to failures exits 1 and cannot be merged
in order: rerun it (see recipes/cluster.mk).";

#[derive(Parser, Debug)]
#[command(name = "vclassify", version, about = "Classify clips from a clip stream with a vidkit model", after_help = EXAMPLES)]
pub struct Args {
    /// Clip-stream files; `-` or none reads stdin.
    pub inputs: Vec<PathBuf>,
    /// The model (.safetensors with its vidkit config; see vconvert).
    #[arg(long, required_unless_present = "merge")]
    pub model: Option<PathBuf>,
    /// Class names, one per line (default: the model's own, if it has them).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Entries in `top`.
    #[arg(long, default_value_t = 5)]
    pub topk: usize,
    /// Aggregation over a video's clips and views: softmax (average probabilities) or logits
    /// [default: the model config's].
    #[arg(long, value_parser = ["softmax", "logits", "sigmoid"])]
    pub avg: Option<String>,
    /// One prediction per record (clip x view) instead of per video, with the clip's t0/t1
    /// (seconds) when the stream has them.
    #[arg(long)]
    pub per_clip: bool,
    /// Clips per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Classify window by window: windows of W seconds (see --stride).
    #[arg(long, value_name = "W", requires = "stride", conflicts_with = "per_clip")]
    pub window: Option<f64>,
    /// With --window: a window starts every S seconds.
    #[arg(long, value_name = "S", requires = "window")]
    pub stride: Option<f64>,
    /// cpu, or cuda / cuda:N when built with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Arithmetic of the model's products: f32, or bf16 (convolutions, linear layers and
    /// attention on operands rounded to bfloat16, accumulated in f32; normalisation, softmax and
    /// the rest in f32). On the CPU vidkit's f32 kernels compute the rounded values: a bf16
    /// matrix unit's results, not yet its speed. Or int8 (dense convolutions and Linear layers on int8 weights
    /// and activations, with the calibration `vconvert --quantize int8` stored in the model)
    /// [default: the model config's `precision`, else f32].
    #[arg(long, value_name = "P")]
    pub precision: Option<Precision>,
    /// Keep only shard K of N (K = 0..N-1) of the input's videos (see --merge).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Merge the outputs of --shard 0/N .. N-1/N, given in that order, into the unsharded run's
    /// output (byte for byte).
    #[arg(long, conflicts_with_all = ["model", "shard", "labels", "window", "per_clip"])]
    pub merge: bool,
    /// Output file (written atomically); default stdout.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Say nothing on stderr but errors. Progress (records, rate) is drawn only when stderr is
    /// a terminal.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// The compute device named by `--device` (shared with vfeat).
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        s if s.starts_with("cuda") => {
            let ordinal =
                s.strip_prefix("cuda:").map(str::parse).transpose().context("--device cuda:N")?.unwrap_or(0);
            if !cfg!(feature = "cuda") {
                bail!("--device {s}: this build has no CUDA support (build with --features cuda)");
            }
            Device::new_cuda(ordinal).map_err(|e| {
                // candle's error carries a backtrace when RUST_BACKTRACE is set: keep one line.
                let e = match e {
                    candle_core::Error::WithBacktrace { inner, .. } => *inner,
                    e => e,
                };
                anyhow::anyhow!("--device {s}: cannot open CUDA device {ordinal}: {e}")
            })
        }
        other => bail!("unknown device {other:?} (cpu, cuda, cuda:N)"),
    }
}

pub fn main(args: Args) -> Result<Outcome> {
    if args.merge {
        return merge_shards::merge("vclassify", &args.inputs, args.output.as_deref(), "video", args.quiet);
    }
    let dev = device(&args.device)?;
    let model_path = args.model.as_deref().context("--model is required")?;
    let model = load_model(model_path, &dev)?.for_inference()?;
    let precision = model_precision(args.precision, model.config(), model_path)?;
    precision.run(|| classify(args, model, dev))
}

/// `--precision` when given, else the model config's `precision`, else f32 (shared with vfeat),
/// with the model's int8 calibration when that is int8.
pub fn model_precision(
    flag: Option<Precision>,
    config: &ModelConfig,
    model_path: &Path,
) -> Result<Inference> {
    let from_config = config.precision().with_context(|| model_path.display().to_string())?;
    let precision = Precision::resolve(flag, from_config);
    Inference::new(precision, &config.extra).with_context(|| model_path.display().to_string())
}

/// Classifies the inputs' records with `model` (the rest of `main`, in the run's precision).
fn classify(args: Args, model: Model, dev: Device) -> Result<Outcome> {
    let cfg = model.config().clone();
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
    if model.takes_features() {
        return classify_features(&args, &model, &inputs, aggregate, names, &dev);
    }
    if let (Some(window_s), Some(stride_s)) = (args.window, args.stride) {
        return classify_windows(&args, &model, &inputs, aggregate, names, &dev, window_s, stride_s);
    }
    let mut out = Output::open(args.output.as_deref())?;
    let progress = Progress::new(None, "records", args.quiet);
    let mut averager = VideoAverager::default();
    let mut pending: Vec<(Record, Tensor)> = Vec::new();
    let batch = args.batch.max(1);
    let written = std::cell::Cell::new(0usize);
    let emit = |preds: Vec<Prediction>, out: &mut Output| -> Result<()> {
        for p in preds {
            written.set(written.get() + 1);
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
            let scores = score_batch(&model, &clips, aggregate)?;
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
                    // Where the clip lies in the video, when the stream says.
                    if let (Some(t0), Some(t1)) = (rec.header.t0, rec.header.t1) {
                        p.extra.insert("t0".into(), t0.into());
                        p.extra.insert("t1".into(), t1.into());
                    }
                    emit(vec![p], out)?;
                } else {
                    emit(averager.push(&rec, &s, args.topk, names), out)?;
                }
            }
            Ok(())
        };
    let (mut records, mut failed) = (0usize, 0usize);
    let mut ordinals = VideoOrdinals::default();
    for input in &inputs {
        let name = if input.as_os_str() == "-" { "<stdin>".to_string() } else { input.display().to_string() };
        let mut reader = StreamReader::new(open_input(input)?, name.clone());
        while let Some(rec) = reader.next_record()? {
            if !in_shard(args.shard, &mut ordinals, rec.header.video.as_deref()) {
                continue;
            }
            if rec.header.kind == "error" {
                // The producer broke part-way through this video (vidkit-stream(5)): what came
                // of it is not the whole video, so it gets no prediction.
                let video = rec.header.video.clone().unwrap_or_default();
                pending.retain(|(r, _)| r.header.video.as_deref() != Some(video.as_str()));
                averager.discard(&video);
                let why = rec.header.extra.get("error").and_then(|e| e.as_str()).unwrap_or("no reason given");
                progress.eprintln(&format!(
                    "vclassify: {name}: video {video:?}: no prediction: the producer failed: {why}"
                ));
                failed += 1;
                continue;
            }
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
            progress.inc(1);
            if pending.len() >= batch {
                flush(&mut pending, &mut averager, &mut out)?;
            }
        }
    }
    flush(&mut pending, &mut averager, &mut out)?;
    if let Some(p) = averager.finish(args.topk, names) {
        emit(vec![p], &mut out)?;
    }
    progress.finish();
    if records == 0 && failed == 0 {
        return empty_shard(&args, out);
    }
    if records == 0 {
        bail!("no video could be classified ({failed} failed)");
    }
    out.finish()?;
    let total = failed + written.get();
    Ok(if failed > 0 { Outcome::PartialFailure { failed, total } } else { Outcome::Success })
}

/// `--window W --stride S`: one prediction per complete window of each video, written as soon
/// as the window is complete; a video that cannot be windowed is reported and skipped.
#[allow(clippy::too_many_arguments)]
fn classify_windows(
    args: &Args,
    model: &vidkit::model::Model,
    inputs: &[PathBuf],
    aggregate: Aggregate,
    names: Option<&[String]>,
    dev: &Device,
    window_s: f64,
    stride_s: f64,
) -> Result<Outcome> {
    let cfg = model.config();
    let spec = WindowSpec { window_s, stride_s, sampler: cfg.sampler_config(false)? };
    spec.validate()?;
    let mut out = Output::open(args.output.as_deref())?;
    let progress = Progress::new(None, "records", args.quiet);
    let (mut windows, mut failed, mut records) = (0usize, 0usize, 0usize);
    let mut classify = |w: Window, out: &mut Output| -> Result<()> {
        check_record(&w.clip, cfg.frames)?;
        let t = clip_tensor(&w.clip, &cfg.mean, &cfg.std, dev)?;
        let scores = score_batch(model, &[t], aggregate)?.remove(0);
        let h = w.clip.header;
        let mut p = Prediction::from_scores(h.video.unwrap_or_default(), h.label, scores, args.topk, names);
        p.extra.insert("window".into(), w.number.into());
        p.extra.insert("t0".into(), w.t0.into());
        p.extra.insert("t1".into(), w.t1.into());
        write_prediction(&mut *out, &p).context("writing predictions")?;
        std::io::Write::flush(&mut *out).context("writing predictions")?;
        windows += 1;
        Ok(())
    };
    // The video being windowed, or the id of one that failed (its records are read past).
    let mut current: Option<std::result::Result<WindowBuilder, String>> = None;
    let mut ordinals = VideoOrdinals::default();
    for input in inputs {
        let name = if input.as_os_str() == "-" { "<stdin>".to_string() } else { input.display().to_string() };
        let mut reader = StreamReader::new(open_input(input)?, name.clone());
        while let Some(rec) = reader.next_record()? {
            if !in_shard(args.shard, &mut ordinals, rec.header.video.as_deref()) {
                continue;
            }
            records += 1;
            progress.inc(1);
            let video = rec.header.video.clone().unwrap_or_default();
            let same = match &current {
                Some(Ok(b)) => b.video() == video,
                Some(Err(v)) => *v == video,
                None => false,
            };
            if !same {
                finish_video(current.take(), &mut |w| classify(w, &mut out))?;
                current = Some(WindowBuilder::new(spec.clone(), &rec.header).map_err(|e| {
                    progress.eprintln(&format!("vclassify: {name}: video {video:?}: {e:#}"));
                    failed += 1;
                    video.clone()
                }));
            }
            if rec.header.kind == "error" {
                // The producer broke part-way: the windows already written stand, no more come.
                let why = rec.header.extra.get("error").and_then(|e| e.as_str()).unwrap_or("no reason given");
                progress.eprintln(&format!(
                    "vclassify: {name}: video {video:?}: the producer failed part-way: {why}"
                ));
                failed += 1;
                current = Some(Err(video));
                continue;
            }
            if let Some(Ok(b)) = &mut current {
                match b.push(&rec) {
                    Ok(done) => {
                        for w in done {
                            classify(w, &mut out)?;
                        }
                    }
                    Err(e) => {
                        progress.eprintln(&format!(
                            "vclassify: {}: video {video:?}: {e:#}",
                            record_context(&name, records - 1, &rec)
                        ));
                        failed += 1;
                        current = Some(Err(video));
                    }
                }
            }
        }
        finish_video(current.take(), &mut |w| classify(w, &mut out))?;
    }
    progress.finish();
    if records == 0 {
        return empty_shard(args, out);
    }
    if windows == 0 {
        bail!("no window could be classified ({failed} videos failed)");
    }
    out.finish()?;
    Ok(if failed > 0 {
        Outcome::PartialFailure { failed, total: failed + windows }
    } else {
        Outcome::Success
    })
}

/// An input with nothing in it is an error, but a shard may be empty (more shards than videos):
/// its output is empty, and merges as such.
fn empty_shard(args: &Args, out: Output) -> Result<Outcome> {
    match args.shard {
        Some(s) => {
            out.finish()?;
            if !args.quiet {
                eprintln!("vclassify: no videos in shard {}/{}", s.index, s.count);
            }
            Ok(Outcome::Success)
        }
        None => bail!("no records in the input"),
    }
}

/// Whether a record or video belongs to `--shard K/N` (all do without it): by the video's
/// ordinal among the distinct videos of the input, as vsample and vfeat count them.
pub fn in_shard(shard: Option<Shard>, ordinals: &mut VideoOrdinals, video: Option<&str>) -> bool {
    shard.is_none_or(|s| s.keeps(ordinals.ordinal(video.unwrap_or_default())))
}

/// The last windows of a video whose records have all arrived.
fn finish_video(
    video: Option<std::result::Result<WindowBuilder, String>>,
    classify: &mut dyn FnMut(Window) -> Result<()>,
) -> Result<()> {
    if let Some(Ok(b)) = video {
        let id = b.video().to_string();
        for w in b.finish().with_context(|| format!("video {id:?}"))? {
            classify(w)?;
        }
    }
    Ok(())
}

/// A video's modalities in the model's order, or why it cannot be classified.
fn model_inputs(
    v: &VideoFeatures,
    modalities: &[String],
    dims: &[usize],
    dev: &Device,
) -> Result<Vec<Tensor>> {
    modalities
        .iter()
        .zip(dims)
        .map(|(m, &d)| {
            let a = v.modality(m).with_context(|| {
                let have: Vec<&str> = v.modalities.iter().map(|(n, _)| n.as_str()).collect();
                format!("video {}: no {m:?} features (it has: {})", v.id, have.join(", "))
            })?;
            if a.ncols() != d || a.nrows() == 0 {
                bail!("video {}: {m:?} features are {:?}, the model takes [T ≥ 1, {d}]", v.id, a.dim());
            }
            Ok(Tensor::from_vec(a.iter().copied().collect::<Vec<f32>>(), a.dim(), dev)?)
        })
        .collect()
}

/// Sequence models: one prediction per video of features streams or HDF5 stores; a video that
/// cannot be classified is reported and skipped (exit 1 at the end).
fn classify_features(
    args: &Args,
    model: &vidkit::model::Model,
    inputs: &[PathBuf],
    aggregate: Aggregate,
    names: Option<&[String]>,
    dev: &Device,
) -> Result<Outcome> {
    let cfg = model.config();
    let spec = cfg.sequence.clone().context("sequence model without a sequence section")?;
    let mut out = Output::open(args.output.as_deref())?;
    let (mut done, mut failed) = (0usize, 0usize);
    let mut pending: Vec<(VideoFeatures, Vec<Tensor>)> = Vec::new();
    let flush = |pending: &mut Vec<(VideoFeatures, Vec<Tensor>)>, out: &mut Output| -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let batch: Vec<Vec<Tensor>> = pending.iter().map(|(_, t)| t.clone()).collect();
        let scores = score_sequences(model, &batch, aggregate)?;
        for ((v, _), s) in pending.drain(..).zip(scores) {
            let (label, labels) = match v.label {
                Some(Label::Multi(ls)) => (None, Some(ls)),
                other => (other, None),
            };
            let mut p = Prediction::from_scores(v.id, label, s, args.topk, names);
            if let Some(ls) = labels {
                p.extra.insert("labels".into(), serde_json::json!(ls));
            }
            write_prediction(&mut *out, &p).context("writing predictions")?;
        }
        Ok(())
    };
    let mut ordinals = VideoOrdinals::default();
    let mut take =
        |video: Result<VideoFeatures>, source: &str, out: &mut Output, pending: &mut Vec<_>| -> Result<()> {
            let v = video?; // a malformed stream or store is fatal: what follows cannot be trusted
            if !in_shard(args.shard, &mut ordinals, Some(&v.id)) {
                return Ok(());
            }
            match model_inputs(&v, &spec.modalities, &spec.feature_dims, dev) {
                Ok(t) => {
                    pending.push((v, t));
                    done += 1;
                    if pending.len() >= args.batch.max(1) {
                        flush(pending, out)?;
                    }
                }
                Err(e) => {
                    eprintln!("vclassify: {source}: {e:#}");
                    failed += 1;
                }
            }
            Ok(())
        };
    for input in inputs {
        let name = if input.as_os_str() == "-" { "<stdin>".to_string() } else { input.display().to_string() };
        if input.is_dir() || is_feature_file(input) {
            // Per-video .npy/.csv files (PaddleVideo's, MMAction2's).
            for v in read_features(input)? {
                take(Ok(v), &name, &mut out, &mut pending)?;
            }
        } else if input.as_os_str() != "-" && is_hdf5(input)? {
            let store = FeatureStore::open(input)?;
            for v in store.iter()? {
                take(v, &name, &mut out, &mut pending)?;
            }
        } else {
            let mut reader = FeatureStreamReader::new(open_input(input)?, name.clone());
            while let Some(v) = reader.next_video().transpose() {
                take(v, &name, &mut out, &mut pending)?;
            }
        }
    }
    flush(&mut pending, &mut out)?;
    if done == 0 && failed == 0 {
        return empty_shard(args, out);
    }
    if done == 0 {
        bail!("no video could be classified ({failed} failed)");
    }
    out.finish()?;
    Ok(if failed > 0 { Outcome::PartialFailure { failed, total: done + failed } } else { Outcome::Success })
}
