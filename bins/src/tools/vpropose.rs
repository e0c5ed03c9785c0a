//! `vpropose`: temporal action proposals from per-video feature sequences with a localizer model
//! (BMN, BSN) or detections with a detector (C-TCN); one JSON line per video, or the ActivityNet result JSON.

use crate::tools::merge_shards;
use crate::tools::vclassify::in_shard;
use crate::Outcome;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vidkit::data::VideoOrdinals;
use vidkit::featstore::{read_features, VideoFeatures};
use vidkit::io::Output;
use vidkit::model::{load_localizer, Localizer, RawOutput, VideoTiming};
use vidkit::progress::Progress;
use vidkit::stream::{Array, RecordHeader, StreamWriter};

const EXAMPLES: &str = "\
Examples:
  # an untrimmed video to proposals in one pipe (snippet features, resampled to BMN's 100 steps)
  vsample long.mp4 --sampler untrimmed --frames 1 --interval 16 | vfeat --model tsn.safetensors --rescale 100 \\
      | vpropose --model bmn.safetensors

  # a feature store, as the ActivityNet result JSON, scored against the ground truth
  vpropose --model bmn.safetensors anet_val.h5 --format activitynet -o proposals.json
  veval --proposals --pred proposals.json --gt activity_net.v1-3.min.json

  # PaddleVideo's per-video .npy features ([100, 400]) with the durations from the annotations
  vpropose --model bmn.safetensors fix_feat_100/ --durations activitynet_1.3_annotations.json

  # the raw maps (start, end, boundary-matching) for your own post-processing
  vpropose --model bmn.safetensors fix_feat_100/v_abc.npy --raw -o v_abc.vks

  # C-TCN detections (labelled) as the ActivityNet result JSON, scored by detection mAP
  vpropose --model ctcn.safetensors scores.h5 --format activitynet -o det.json
  veval --detection --pred det.json --gt activity_net.v1-3.min.json

  # MMAction2's BSN (TEM + PGM + PEM) on its per-video CSV features
  vpropose --model bsn.safetensors csv_mean_100/ --durations anet_anno_val.json --format activitynet -o bsn.json

Reads per-video feature sequences [T, C] (a features stream, an HDF5 store, .npy/.csv files or a
directory of them; see vidkit-features(5)); each must have the model's T steps and C channels
(rescale with vfeat --rescale T). BMN (PaddleVideo's bmn.py and bmn_metric.py): the
boundary-matching map, start and end probabilities; candidate boundaries where a probability is
above half its maximum or a peak (the first start and last end always); each candidate scored
start * end * regression * classification; Gaussian soft-NMS (alpha 0.4, t1 0.55, t2 0.9); the
best --top. Segments are in seconds, [xmin * duration, xmax * duration] clipped to the video, with
the duration from the features (store attribute, stream header) or --durations; without one they
stay on the [0, 1] scale and the line says \"normalized\": true. A BMN imported from MMAction2's
.pth follows MMAction2 instead (bmn.py forward_test, proposal_utils.py): boundaries inside the
sequence only, the end one step after the map position's, soft-NMS 0.4/0.5/0.9, and times over
the whole snippets, duration_frame // 16 * 16 / duration_frame * seconds (frames from the features'
fps or the durations file's duration_frame).

BSN (MMAction2's bsn.py, bsn_utils.py, proposal_utils.py): the TEM's actionness, start and end
probabilities; candidates pairing every boundary step (a peak or above half the maximum; the
first and last always) with each later one, scored start * end, the best 1000; each candidate's
32 boundary-sensitive features (the actionness sampled over its start region, end region and
body) scored by the PEM; score = PEM * start * end; soft-NMS 0.75/0.65/0.9 and times as
MMAction2's BMN above. --raw writes the TEM's action, start and end [T] and the candidates [N, 6]
(tmin, tmax, tmin_score, tmax_score, PEM score, score).

C-TCN (the 2019 Paddle zoo's detector: fpn_ctcn.py, ctcn_utils.py, detection_metrics.py) takes
features of any length (concept scores per step), resized to its 512 steps (nearest, as its
reader); per class, anchors scoring above 0.001, NMS at 0.8, Gaussian soft-NMS (sigma 0.9,
dropped below 0.004); segments [d * start / 512, d * end / 512] clipped to the video, each with
its \"label\" (the model's class name, or its index), best first. --raw writes loc [A, 2] and cls
[A, K] (class probabilities, background first).

Output: one JSON line per video {\"video\", \"duration\"?, \"segments\": [{\"segment\": [t0, t1],
\"score\", \"label\"?}]} (best first), or with --format activitynet {\"version\", \"results\": {video: [...]},
\"external_data\"}. A video that cannot be processed is reported and skipped (exit 1).

--shard K/N keeps the videos whose 0-based ordinal in the input is K modulo N (as vsample, vfeat
and vclassify); --merge puts the outputs of shards 0..N-1 back together, byte for byte the
unsharded output (lines in input order; result JSONs joined).";

#[derive(clap::Parser, Debug)]
#[command(name = "vpropose", version, about = "Temporal action proposals or detections from feature sequences with a localizer model (BMN, BSN, C-TCN)", after_help = EXAMPLES)]
pub struct Args {
    /// Features: streams, HDF5 stores, .npy/.csv files or directories; `-` or none reads stdin.
    pub inputs: Vec<PathBuf>,
    /// The localizer model (vconvert or vtrain --arch bmn|bsn|ctcn).
    #[arg(long, required_unless_present = "merge")]
    pub model: Option<PathBuf>,
    /// Keep only shard K of N (K = 0..N-1) of the input's videos (see --merge).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<vidkit::data::Shard>,
    /// Merge the outputs of --shard 0/N .. N-1/N, given in that order, into the unsharded run's
    /// output (byte for byte).
    #[arg(long, conflicts_with_all = ["model", "shard", "raw", "durations"])]
    pub merge: bool,
    /// Output file (written atomically); default stdout.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// jsonl (one line per video) or activitynet (one result JSON).
    #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "activitynet"])]
    pub format: String,
    /// Proposals kept per video.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub top: u32,
    /// Video durations in seconds: an ActivityNet JSON (`database`: id -> {duration}) or a
    /// per-video JSON (id -> {duration_second} or {duration}), as PaddleVideo's and MMAction2's
    /// annotation files have them. Ids also match by file name and with or without `v_`.
    #[arg(long, value_name = "FILE")]
    pub durations: Option<PathBuf>,
    /// Write the model's raw outputs instead of proposals: per video one features-stream record
    /// (vidkit-stream(5)) per output, its header naming it, with the video's `duration` when
    /// known. BMN: `"output": "start"` [T], `"end"` [T] and `"bm"` [2, D, T] (regression and
    /// classification maps; entry (d, t) the proposal from step t lasting d + 1 steps); BSN:
    /// `action`, `start`, `end` [T] and `candidates` [N, 6]; C-TCN: `loc` [A, 2] and `cls` [A, K].
    #[arg(long, conflicts_with_all = ["top"])]
    pub raw: bool,
    /// The features modality to read.
    #[arg(long, default_value = "rgb")]
    pub modality: String,
    /// Arithmetic of the model's products: f32, bf16 (operands rounded to bfloat16, f32
    /// accumulation) or int8 (dense convolutions and Linear layers, as `vconvert --quantize int8` calibrated
    /// the model); see vclassify --precision [default: the model config's `precision`, else f32].
    #[arg(long, value_name = "P")]
    pub precision: Option<vidkit::precision::Precision>,
    /// Say nothing on stderr but errors.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// Durations (seconds, and frames where the file has MMAction2's `duration_frame`) by video id
/// from either annotation form.
fn read_durations(path: &Path) -> Result<HashMap<String, VideoTiming>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let videos = v
        .get("database")
        .unwrap_or(&v)
        .as_object()
        .with_context(|| format!("{}: not an object of videos", path.display()))?;
    let mut out = HashMap::new();
    for (id, entry) in videos {
        let d = entry.get("duration_second").or_else(|| entry.get("duration")).and_then(Value::as_f64);
        if let Some(d) = d.filter(|d| *d > 0.0 && d.is_finite()) {
            let frames = entry.get("duration_frame").and_then(Value::as_f64).filter(|f| *f > 0.0);
            out.insert(id.clone(), VideoTiming { seconds: Some(d), frames });
        }
    }
    if out.is_empty() {
        bail!("{}: no video with a positive duration (duration or duration_second)", path.display());
    }
    Ok(out)
}

pub fn main(args: Args) -> Result<Outcome> {
    if args.merge {
        return merge_shards::merge("vpropose", &args.inputs, args.output.as_deref(), "video", args.quiet);
    }
    let model_path = args.model.as_deref().context("--model is required")?;
    let model = load_localizer(model_path)?;
    let config = vidkit::model::read_config(model_path)?;
    let precision = crate::tools::vclassify::model_precision(args.precision, &config, model_path)?;
    precision.run(|| propose_all(args, model))
}

/// The rest of `main`, in the run's precision.
fn propose_all(args: Args, model: Box<dyn Localizer>) -> Result<Outcome> {
    let durations = args.durations.as_deref().map(read_durations).transpose()?;
    let inputs = if args.inputs.is_empty() { vec![PathBuf::from("-")] } else { args.inputs.clone() };
    let mut out = Output::open(args.output.as_deref())?;
    let progress = Progress::new(None, "videos", args.quiet);
    let (mut done, mut failed) = (0usize, 0usize);
    let mut results = serde_json::Map::new();
    let mut ordinals = VideoOrdinals::default();
    for input in &inputs {
        for v in read_features(input)? {
            if !in_shard(args.shard, &mut ordinals, Some(&v.id)) {
                continue;
            }
            let id = v.id.clone();
            let timing = video_timing(&v, durations.as_ref());
            if args.raw {
                match features_of(&v, &args.modality).and_then(|f| model.raw_outputs(f)) {
                    Ok(outputs) => {
                        done += 1;
                        write_raw(&mut out, &v.id, timing.seconds, outputs).context("writing raw outputs")?;
                    }
                    Err(e) => {
                        failed += 1;
                        progress.eprintln(&format!("vpropose: {}: video {id:?}: {e:#}", input.display()));
                    }
                }
                progress.inc(1);
                continue;
            }
            match propose(model.as_ref(), &v, &args, &timing) {
                Ok(line) => {
                    done += 1;
                    if args.format == "activitynet" {
                        results.insert(id, line["segments"].clone());
                    } else {
                        use std::io::Write;
                        writeln!(out, "{line}").context("writing proposals")?;
                    }
                }
                Err(e) => {
                    failed += 1;
                    progress.eprintln(&format!("vpropose: {}: video {id:?}: {e:#}", input.display()));
                }
            }
            progress.inc(1);
        }
    }
    progress.finish();
    if done == 0 && (failed > 0 || args.shard.is_none()) {
        bail!("no video could be processed ({failed} failed)");
    }
    if args.format == "activitynet" && !args.raw {
        use std::io::Write;
        let j = json!({"version": "VERSION 1.3", "results": results, "external_data": {"used": true, "details": "vidkit vpropose"}});
        writeln!(out, "{j}").context("writing proposals")?;
    }
    out.finish()?;
    if !args.quiet {
        eprintln!("vpropose: {done} videos, {failed} failed");
    }
    Ok(if failed > 0 { Outcome::PartialFailure { failed, total: done + failed } } else { Outcome::Success })
}

/// A video's length: from its features (frames from their rate), else from `--durations` (any
/// written form of its id).
fn video_timing(v: &VideoFeatures, durations: Option<&HashMap<String, VideoTiming>>) -> VideoTiming {
    if let Some(s) = v.duration {
        return VideoTiming { seconds: Some(s), frames: v.fps.map(|f| (f * s).round()) };
    }
    durations
        .and_then(|d| d.get(&vidkit::data::find_video_id(&v.id, |f| d.contains_key(f))?).copied())
        .unwrap_or_default()
}

fn features_of<'a>(v: &'a VideoFeatures, modality: &str) -> Result<&'a ndarray::Array2<f32>> {
    v.modality(modality).with_context(|| format!("no {modality:?} features"))
}

/// `--raw`: each output as a features-stream record whose header names it.
fn write_raw(out: &mut Output, id: &str, duration: Option<f64>, outputs: Vec<RawOutput>) -> Result<()> {
    let mut w = StreamWriter::new(out);
    for o in outputs {
        let mut h = RecordHeader::features(id);
        h.layout = Some(o.layout.into());
        h.extra.insert("output".into(), o.name.into());
        if let Some(s) = duration {
            h.extra.insert("duration".into(), s.into());
        }
        w.write_record(&h, &Array::F32(o.array))?;
    }
    w.flush()?;
    Ok(())
}

/// One video's proposals as its output line.
fn propose(model: &dyn Localizer, v: &VideoFeatures, args: &Args, timing: &VideoTiming) -> Result<Value> {
    let props = model.propose(features_of(v, &args.modality)?, timing, args.top as usize)?;
    let duration = timing.seconds;
    let labels = model.config().labels.as_deref();
    let segments: Vec<Value> = props
        .iter()
        .map(|p| {
            let mut seg = json!({"segment": [p.xmin, p.xmax], "score": p.score});
            if let Some(i) = p.label {
                // The class name where the model has its labels, else its index.
                seg["label"] = match labels.and_then(|l| l.get(i)) {
                    Some(name) => name.clone().into(),
                    None => i.to_string().into(),
                };
            }
            seg
        })
        .collect();
    let mut line = json!({"video": v.id, "segments": segments});
    match duration {
        Some(d) => line["duration"] = d.into(),
        None => line["normalized"] = true.into(),
    }
    Ok(line)
}
