//! `vfeat`: run a model's backbone as a feature extractor over a clip stream; per-video
//! features as a `features` stream or an HDF5 feature store.

use crate::Outcome;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Parser;
use half::f16;
use ndarray::Array2;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vidkit::data::{Shard, VideoOrdinals};
use vidkit::extract::{Extractor, Layer, VideoAccumulator};
use vidkit::featstore::rescale::{pool_steps, step_times, StepPool};
use vidkit::featstore::{
    header_times, merge, StoreOptions, StoreWriter, VideoBuilder, DEFAULT_MODALITY, TIMES,
};
use vidkit::io::{open_input, Output};
use vidkit::model::{load_model, Model};
use vidkit::precision::Precision;
use vidkit::progress::Progress;
use vidkit::stream::{Array, Record, RecordHeader, StreamReader, StreamWriter};

const EXAMPLES: &str = "\
Examples:
  # ResNet-50 features at 1 frame per second for a list, into an HDF5 store
  vsample --list train.list --root data/ --fps 1 -j 2 | vfeat --model tsn_r50.safetensors -o train.h5

  # a fixed 300 frames per video (VideoTag), float16, stage-3 features
  vsample --list val.list --root data/ --frames 300 | vfeat --model m.safetensors --layer layer3 --f16 -o val.h5

  # 4 shards (Slurm array task K = 0..3), then one store
  vsample --list all.list --root data/ --frames 300 --shard $K/4 | vfeat --model m.safetensors -o part$K.h5
  vfeat --merge -o all.h5 part0.h5 part1.h5 part2.h5 part3.h5

  # snippet features of an untrimmed video, resampled to 100 steps for BMN
  vsample long.mp4 --sampler untrimmed --frames 1 --interval 16 | vfeat --model tsn.safetensors --rescale 100 -o anet.h5

  # the per-video files PaddleVideo (.npy) or MMAction2 (.csv) keep for BMN, into one store
  vfeat --merge -o anet.h5 data/activitynet/fix_feat_100/

  # on the GPU (a build with --features cuda)
  vsample --list train.list --root data/ --fps 1 -j 2 | vfeat --model m.safetensors --device cuda -o train.h5

  # a features stream on stdout, read back in Python
  vsample clip.mp4 --frames 8 | vfeat --model m.safetensors | python3 -c 'import io, sys, json, numpy as np
  f = io.BytesIO(sys.stdin.buffer.read()); h = json.loads(f.readline()); print(h[\"video\"], np.lib.format.read_array(f).shape)'

Reads uint8 THWC frame records (see vidkit-stream(5)), normalises them with the model's mean and
std, and writes one [T, C] float matrix per video: per-frame features, the pooled output of the
last stage (--layer pool) or of stage N (--layer layerN), globally average-pooled. The records of
one video (clips x views) are combined: the views of a clip are averaged, the clips are
concatenated in clip order, so K clips of F frames give K*F rows. TSN frames are independent and
run --batch frames per forward pass; TSM shifts features across the F frames of a clip, so its
records must hold a multiple of the model's frames and run in whole groups.

Output: with -o FILE.h5 (or .hdf5) the HDF5 feature store of vidkit-features(5) (group
/videos/<id> with `/` in ids escaped as %2F, dataset rgb [T, C], attributes video, label or
labels, fps, duration, source); otherwise a features stream: one record per video, header kind
features, layout TC, video, label, fps, indices, t0, t1, layer, and the input's other keys.

--shard K/N keeps the videos whose 0-based ordinal in the input (distinct videos, in order of
first appearance) is K modulo N; --merge joins shard stores (an id in two of them is an error),
features streams, and per-video feature files: PaddleVideo's .npy ([T, C], rows are time) and
MMAction2's .csv (a header line, then one row per step), or directories of them (the file name
without its extension is the video id).
Features streams merge with cat. A video that fails (wrong kind of record, frames the model
cannot take) is reported on stderr and skipped; the exit status is then 1.";

#[derive(Parser, Debug)]
#[command(name = "vfeat", version, about = "Extract per-video features from a clip stream with a vidkit model", after_help = EXAMPLES)]
pub struct Args {
    /// Clip-stream files (`-` or none reads stdin); with --merge, the feature stores, features
    /// streams, .npy/.csv files or directories of them to join.
    pub inputs: Vec<PathBuf>,
    /// The model (.safetensors with its vidkit config; see vconvert).
    #[arg(long, required_unless_present = "merge")]
    pub model: Option<PathBuf>,
    /// Features to take: pool (the pooled last stage, what the classifier sees) or layer1..layer4
    /// (the globally average-pooled output of that ResNet stage).
    #[arg(long, default_value = "pool")]
    pub layer: String,
    /// Output: FILE.h5 / FILE.hdf5 for a feature store, another name for a features stream
    /// (written atomically); default a stream on stdout.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Store float16 instead of float32.
    #[arg(long)]
    pub f16: bool,
    /// Frames per forward pass (TSM: rounded down to whole clips, at least one).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Also write the videos (and unreadable inputs) that failed to FILE, one `id<TAB>reason`
    /// line each in input order (empty when none failed).
    #[arg(long, value_name = "FILE")]
    pub failures: Option<PathBuf>,
    /// Keep only shard K of N (K = 0..N-1) of the input's videos.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Join the feature stores given as inputs into -o FILE.h5 instead of extracting.
    #[arg(long, conflicts_with_all = ["model", "shard"])]
    pub merge: bool,
    /// cpu, or cuda / cuda:N when built with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Arithmetic of the model's products: f32, bf16 (operands rounded to bfloat16, f32
    /// accumulation) or int8 (dense convolutions and Linear layers, as `vconvert --quantize int8` calibrated
    /// the model); see vclassify --precision [default: the model config's `precision`, else f32].
    #[arg(long, value_name = "P")]
    pub precision: Option<Precision>,
    /// Resample each video's sequence to N steps, as temporal localizers take it (BMN, BSN:
    /// 100): MMAction2's activitynet_feature_postprocessing.py pool_feature (linear
    /// interpolation, 3 samples per step, mean). Row times become N equal shares of the span.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub rescale: Option<u32>,
    /// Say nothing on stderr but errors (no progress, no summary). Progress (frames, videos,
    /// rate) is drawn only when stderr is a terminal.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `--rescale`: the rows and their times resampled to `steps`.
fn rescale(mut h: RecordHeader, rows: Array2<f32>, steps: u32) -> Result<(RecordHeader, Array2<f32>)> {
    let steps = steps as usize;
    let pooled = pool_steps(rows.view(), steps, 3, StepPool::Mean)?;
    let times = match header_times(&h)? {
        Some(t) if !t.is_empty() => {
            let t = Array2::from_shape_vec((t.len(), 2), t.into_iter().flatten().collect())?;
            let s = step_times(t.view(), steps);
            Some(s.rows().into_iter().map(|r| [r[0], r[1]]).collect::<Vec<_>>())
        }
        _ => None,
    };
    match times {
        Some(t) => h.extra.insert(TIMES.into(), serde_json::json!(t)),
        None => h.extra.remove(TIMES),
    };
    h.extra.insert("rescaled_from".into(), rows.nrows().into());
    // Source frame numbers no longer name rows.
    h.indices = None;
    Ok((h, pooled))
}

fn is_store_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("h5") || e.eq_ignore_ascii_case("hdf5"))
}

/// Where the features go: a stream, or a feature store.
enum Sink {
    Stream(StreamWriter<Output>),
    Store(StoreWriter),
}

impl Sink {
    fn write(&mut self, header: RecordHeader, rows: Array2<f32>, f16: bool) -> Result<()> {
        let array =
            if f16 { Array::F16(rows.mapv(f16::from_f32).into_dyn()) } else { Array::F32(rows.into_dyn()) };
        match self {
            Sink::Stream(w) => w.write_record(&header, &array).context("writing the features stream"),
            Sink::Store(w) => {
                let id = header.video.clone().unwrap_or_default();
                let mut video = VideoBuilder::new(&header, &id);
                video.push(&Record { header, array })?;
                w.write(&video.finish()?)
            }
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Sink::Stream(w) => w.into_inner().finish(),
            Sink::Store(w) => w.finish(),
        }
    }
}

/// The video whose records are arriving.
struct Incoming {
    id: String,
    acc: VideoAccumulator,
    /// Its group in the store was begun (rows written as they come).
    begun: bool,
    /// Why the video fails; its remaining records are read past.
    error: Option<anyhow::Error>,
    /// Not in this shard.
    skipped: bool,
    frames: usize,
    /// Records seen, and how many the headers announce (num_clips × num_views).
    seen: usize,
    expected: Option<usize>,
}

/// Writes the rows of a video's complete clips to the store, beginning its group first.
fn write_complete(extractor: &Extractor, video: &mut Incoming, store: &mut StoreWriter) -> Result<()> {
    if let Some(rows) = extractor.take_complete(&mut video.acc)? {
        if !video.begun {
            let header = extractor.features_header(&video.acc)?;
            store.begin_video(&VideoBuilder::new(&header, &video.id).finish()?, "the input")?;
            video.begun = true;
        }
        store.append(DEFAULT_MODALITY, rows.rows.view(), rows.times.as_deref())?;
    }
    Ok(())
}

fn run_merge(args: &Args) -> Result<Outcome> {
    let out = match &args.output {
        Some(o) if is_store_path(o) => o,
        _ => bail!("--merge writes a feature store: give -o FILE.h5 (features streams merge with cat)"),
    };
    if args.inputs.is_empty() {
        bail!("--merge needs the feature stores (or streams, .npy/.csv files, directories) to join");
    }
    let n = merge(&args.inputs, out, StoreOptions { f16: args.f16, ..Default::default() })?;
    if !args.quiet {
        eprintln!("vfeat: merged {} inputs, {n} videos, into {}", args.inputs.len(), out.display());
    }
    Ok(Outcome::Success)
}

pub fn main(args: Args) -> Result<Outcome> {
    if args.merge {
        return run_merge(&args);
    }
    let layer: Layer = args.layer.parse()?;
    let dev = super::vclassify::device(&args.device)?;
    let model_path = args.model.as_deref().context("--model is required")?;
    let model = load_model(model_path, &dev)?.for_inference()?;
    let precision = super::vclassify::model_precision(args.precision, model.config(), model_path)?;
    precision.run(|| extract(args, layer, model, dev))
}

/// Extracts the inputs' features with `model` (the rest of `main`, in the run's precision).
fn extract(args: Args, layer: Layer, model: Model, dev: Device) -> Result<Outcome> {
    let model_path = args.model.as_deref().context("--model is required")?;
    let extractor = Extractor::new(&model, layer, args.batch, dev)
        .with_context(|| format!("{}: --layer {layer}", model_path.display()))?;
    let inputs = if args.inputs.is_empty() { vec![PathBuf::from("-")] } else { args.inputs.clone() };
    let mut sink = match &args.output {
        Some(o) if is_store_path(o) => {
            let model_name =
                model_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let root_attrs = vec![
                ("model".to_string(), model_name),
                ("arch".to_string(), model.config().arch.clone()),
                ("layer".to_string(), layer.to_string()),
            ];
            Sink::Store(StoreWriter::create(o, StoreOptions { f16: args.f16, root_attrs })?)
        }
        other => Sink::Stream(StreamWriter::new(Output::open(other.as_deref())?)),
    };
    let started = Instant::now();
    let (mut videos, mut failed, mut frames, mut records) = (0usize, 0usize, 0usize, 0usize);
    let failure_list = std::cell::RefCell::new(vidkit::io::FailureList::default());
    let mut ordinals = VideoOrdinals::default();
    let mut written: HashSet<String> = HashSet::new();
    // Records are added to their video as they arrive (a long video's frames are never all
    // held); a video ends when another begins, when its num_clips × num_views records are in,
    // or at the end of an input.
    let mut current: Option<Incoming> = None;
    // Into a store, without --rescale, rows are written as their clips complete (a long
    // video's features are never all held); otherwise a video's rows are written at its end.
    let stream_rows = matches!(sink, Sink::Store(_)) && args.rescale.is_none();
    let progress = Progress::new(None, "frames", args.quiet);
    let mut finish =
        |video: Incoming, source: &str, sink: &mut Sink, written: &mut HashSet<String>| -> Result<()> {
            let Incoming { id, acc, error, skipped, frames: n, begun, .. } = video;
            if skipped {
                return Ok(());
            }
            videos += 1;
            let result = match (stream_rows, &mut *sink) {
                (true, Sink::Store(store)) => error.map_or_else(
                    || {
                        let header = extractor.features_header(&acc)?;
                        let rest = extractor.finish_rows(acc)?;
                        if !begun {
                            store.begin_video(&VideoBuilder::new(&header, &id).finish()?, "the input")?;
                        }
                        store.append(DEFAULT_MODALITY, rest.rows.view(), rest.times.as_deref())?;
                        store.end_video()
                    },
                    Err,
                ),
                _ => error.map_or_else(|| extractor.finish(acc), Err).and_then(|(h, rows)| {
                    let (h, rows) = match args.rescale {
                        Some(steps) => rescale(h, rows, steps)?,
                        None => (h, rows),
                    };
                    sink.write(h, rows, args.f16)
                }),
            };
            match result {
                Ok(()) => {
                    frames += n;
                    written.insert(id);
                }
                Err(e) => {
                    if let Sink::Store(store) = sink {
                        store.abandon_video();
                    }
                    failed += 1;
                    failure_list.borrow_mut().push(&id, &format!("{e:#}"));
                    progress.eprintln(&format!("vfeat: {source}: video {id:?}: {e:#}"));
                }
            }
            progress.set_message(format!("{} videos", written.len()));
            if failed > 0 {
                progress.set_message(format!("{} videos, {failed} failed", written.len()));
            }
            Ok(())
        };
    let mut broken_inputs = 0usize;
    for input in &inputs {
        let name = if input.as_os_str() == "-" { "<stdin>".to_string() } else { input.display().to_string() };
        let mut reader = match open_input(input) {
            Ok(r) => StreamReader::new(r, name.clone()),
            Err(e) => {
                broken_inputs += 1;
                failure_list.borrow_mut().push(&name, &format!("{e:#}"));
                progress.eprintln(&format!("vfeat: {e:#}"));
                continue;
            }
        };
        loop {
            let rec = match reader.next_record() {
                Ok(Some(rec)) => rec,
                Ok(None) => break,
                Err(e) => {
                    // The stream cannot go on; the videos it completed stand, the open one
                    // is dropped with it.
                    broken_inputs += 1;
                    failure_list.borrow_mut().push(&name, &format!("{e:#}"));
                    progress.eprintln(&format!("vfeat: {e:#}"));
                    current = None;
                    break;
                }
            };
            records += 1;
            let id = rec.header.video.clone().unwrap_or_default();
            if current.as_ref().is_some_and(|v| v.id != id) {
                finish(current.take().expect("open video"), &name, &mut sink, &mut written)?;
            }
            let video = current.get_or_insert_with(|| {
                let skipped = args.shard.is_some_and(|s| !s.keeps(ordinals.ordinal(&id)));
                let error = if id.is_empty() {
                    Some(anyhow::anyhow!("records without a `video` key"))
                } else if written.contains(&id) {
                    Some(anyhow::anyhow!("already written: the records of a video must follow each other"))
                } else {
                    None
                };
                let expected = rec.header.num_clips.map(|c| c * rec.header.num_views.unwrap_or(1));
                Incoming {
                    id: id.clone(),
                    acc: Default::default(),
                    begun: false,
                    error,
                    skipped,
                    frames: 0,
                    seen: 0,
                    expected,
                }
            });
            if !video.skipped && video.error.is_none() {
                let t = rec.array.shape().first().copied().unwrap_or(0);
                video.frames += t;
                progress.inc(t as u64);
                let added =
                    extractor.add(&mut video.acc, rec).and_then(|()| match (&mut sink, stream_rows) {
                        (Sink::Store(store), true) => write_complete(&extractor, video, store),
                        _ => Ok(()),
                    });
                if let Err(e) = added {
                    video.error = Some(e);
                }
            }
            video.seen += 1;
            if video.expected.is_some_and(|e| video.seen >= e) {
                finish(current.take().expect("open video"), &name, &mut sink, &mut written)?;
            }
        }
        if let Some(video) = current.take() {
            finish(video, &name, &mut sink, &mut written)?;
        }
    }
    progress.finish();
    if let Some(path) = &args.failures {
        failure_list.borrow().write(path)?;
    }
    let failures = failed + broken_inputs;
    if records == 0 && broken_inputs == 0 {
        bail!("no records in the input");
    }
    if written.is_empty() && failures > 0 {
        bail!("all inputs failed ({failures} videos or streams); no output written");
    }
    sink.finish()?;
    if !args.quiet {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "vfeat: {} videos, {failed} failed, {frames} frames in {secs:.1} s ({:.1} frames/s)",
            written.len(),
            frames as f64 / secs.max(1e-9)
        );
    }
    Ok(if failures > 0 {
        Outcome::PartialFailure { failed: failures, total: videos + broken_inputs }
    } else {
        Outcome::Success
    })
}
