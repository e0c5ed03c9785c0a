//! `vsample`: decode, sample and transform video frames into a clip stream.

use crate::Outcome;
use anyhow::{bail, Context, Result};
use clap::Parser;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use vidkit::clips::{sample_video_each, ClipSpec, VideoItem};
use vidkit::data::{parse_line, Shard};
use vidkit::io::Output;
use vidkit::live::LiveSpec;
use vidkit::parallel::Piece;
use vidkit::progress::Progress;
use vidkit::sample::{SamplerConfig, SamplerKind};
use vidkit::stream::{Array, Label, Norm, Record, RecordHeader, StreamWriter};
use vidkit::transform::{CropMode, IMAGENET_MEAN, IMAGENET_STD};

const EXAMPLES: &str = "\
Examples:
  # TSN test protocol: 8 segments, short side 256, centre crop 224, uint8 frames to a file
  vsample clip.mp4 --frames 8 -o clip.vks

  # a whole list (`path label` lines) with paths relative to a root, 2 decoders
  vsample --list val.list --root data/ --frames 8 -j 2 -o val.vks

  # SlowFast/X3D test protocol: 10 dense clips of 32 frames every 2, three crops
  vsample video.mp4 --sampler dense --frames 32 --interval 2 --clips 10 --crop three --size 256 --crop-size 256

  # the 30-view test protocol of a zoo model, its input spec read from the model file
  vsample video.mp4 --spec-from x3d_m.safetensors --clips 10 --crop three | vclassify --model x3d_m.safetensors

  # training augmentation, reproducible by seed
  vsample --list train.list --root data/ --train --crop multiscale --size 128 --crop-size 112 --seed 7

  # MMAction2's MViT recipe: pytorchvideo's RandAugment (magnitude 7, 4 ops) before the crop
  vsample --list train.list --root data/ --train --crop random-resized --rand-augment --rand-augment-magnitude 7 --rand-augment-num-layers 4

  # AugMix, or PaddleVideo's colour jitter (Pillow's arithmetic) on the crops
  vsample --list train.list --root data/ --train --augmix --augmix-magnitude 5
  vsample --list train.list --root data/ --train --color-jitter 0.4 0.4 0.4 0.1 --color-jitter-style paddlevideo

  # one frame per second over the whole video, the 2nd of 4 shards of a list, for vfeat
  vsample --list all.list --root data/ --fps 1 --shard 1/4 | vfeat --model m.safetensors -o part1.h5

  # an untrimmed video for temporal localization: a 1-frame snippet every 16 frames, streamed
  vsample long.mp4 --sampler untrimmed --frames 1 --interval 16 | vfeat --model tsn_r50.safetensors -o feats.h5

  # StNet's test protocol (the 2019 Paddle zoo): 25 segments of 5 frames, 4:3 at 256, crop 256
  vsample video.mp4 --sampler stnet --frames 125 --seglen 5 --fixed-ratio --size 256 --crop-size 256

  # 5 frames per second over a 2-hour video, 32 frames per record, in bounded memory
  vsample movie.mp4 --fps 5 --chunk 32 | vfeat --model tsn_r50.safetensors -o movie.h5

  # a video over HTTP, as a file
  vsample https://example.org/clip.mp4 --frames 8 | vclassify --model m.safetensors

  # a live recognizer: a camera (or --live with a stream URL), 2 frames per second, 4-second
  # windows every second, for ten minutes
  vsample /dev/video0 --fps 2 --chunk 2 --duration 600 | vclassify --model m.safetensors --window 4 --stride 1

  # native-size frames at fixed indices, read back in Python
  vsample clip.mp4 --indices 0,10,20 --crop none | python3 -c 'import io, sys, json, numpy as np
  f = io.BytesIO(sys.stdin.buffer.read()); h = json.loads(f.readline()); a = np.lib.format.read_array(f); print(h[\"indices\"], a.shape)'

Each record is one JSON header line and one NPY array (see vidkit-stream(5)): one record per
clip x view, THWC uint8 RGB unless --normalize. A video that fails (missing, corrupt, too
short for --indices) is reported on stderr and skipped; the exit status is then 1.

--fps and --sampler untrimmed stream: records leave as their frames are decoded, so memory is
bounded by a few records whatever the video's length. If such a video breaks part-way, the
records already written stay and a record of kind \"error\" (header keys video and error, an
empty array) follows them, so the tools downstream drop the video and report it. The other
samplers take a bounded number of frames per video and write a video's records only once all
of them are decoded.

Live sources (/dev/video* devices, and any input with --live or --duration) have no length to
probe: ffmpeg reads them as they arrive, its fps filter takes --fps R frames per second, and
records of --chunk frames leave as they fill, frame k numbered k at R frames per second (t = k/R,
as vclassify --window reads them), until the source ends or --duration seconds have been read.";

#[derive(Parser, Debug)]
#[command(name = "vsample", version, about = "Decode, sample and transform video frames into a clip stream", after_help = EXAMPLES)]
pub struct Args {
    /// Video files or http(s) URLs; `-` reads one path per line (optionally `path label`) from
    /// stdin.
    pub inputs: Vec<PathBuf>,
    /// A list file of `path label` lines (PaddleVideo / MMAction2 format).
    #[arg(long)]
    pub list: Option<PathBuf>,
    /// Directory that relative paths in --list and on stdin are relative to.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Frame sampler: segment (PaddleVideo), segment-mmaction, dense, uniform, untrimmed
    /// (MMAction2's UntrimmedSampleFrames: a snippet of --frames consecutive frames centred every
    /// --interval frames over the whole video, one record per snippet, in time order), stnet (the
    /// 2019 Paddle zoo's StNet reader: --frames / --seglen segments of --seglen consecutive
    /// frames).
    #[arg(long, default_value = "segment", value_parser = ["segment", "segment-mmaction", "dense", "uniform", "untrimmed", "stnet"])]
    pub sampler: String,
    /// Frames per clip: segments (segment, uniform), clip length (dense), snippet length
    /// (untrimmed), segments × --seglen (stnet).
    #[arg(long, default_value_t = 8)]
    pub frames: usize,
    /// With --sampler stnet: consecutive frames per segment (StNet's T; 5 in the zoo).
    #[arg(long, default_value_t = 1)]
    pub seglen: usize,
    /// Frame interval inside a dense clip; for untrimmed, frames between snippet centres.
    #[arg(long, default_value_t = 1)]
    pub interval: usize,
    /// Temporal clips per video.
    #[arg(long, default_value_t = 1)]
    pub clips: usize,
    /// Spatial views: center, three (mmaction2 ThreeCrop = PaddleVideo UniformCrop), uniform
    /// (PySlowFast/TimeSformer uniform_crop), ten (test); random-resized, multiscale (train); none.
    #[arg(long, default_value = "center", value_parser = ["center", "three", "uniform", "ten", "random-resized", "multiscale", "none"])]
    pub crop: String,
    /// Short side in pixels after resizing [default: 256, or native size with --crop none].
    #[arg(long)]
    pub size: Option<u32>,
    /// Side of the square crops.
    #[arg(long, default_value_t = 224)]
    pub crop_size: u32,
    /// Resize to --size by int(--size × 4/3) whatever the aspect (the 2019 Paddle zoo's
    /// group_scale; a frame whose short side is already --size stays as it is).
    #[arg(long)]
    pub fixed_ratio: bool,
    /// Random sampling (training); the default is the deterministic test protocol.
    #[arg(long)]
    pub train: bool,
    /// Random horizontal flip with p = 0.5 per clip (off by default: it swaps left and right).
    #[arg(long)]
    pub flip: bool,
    /// With --train: torchvision's ColorJitter, BRIGHTNESS CONTRAST SATURATION HUE (factors from
    /// [1 - x, 1 + x], hue shift from [-h, h]; 0 leaves one out), drawn once per clip, the four
    /// in a random order (as MMAction2's ColorJitter).
    #[arg(long, num_args = 4, value_names = ["B", "C", "S", "H"], requires = "train")]
    pub color_jitter: Option<Vec<f64>>,
    /// Whose arithmetic --color-jitter uses: torchvision's on uint8 tensors (MMAction2's
    /// ColorJitter), or paddlevideo's (paddle.vision's ColorJitter on PIL images: Pillow's
    /// rounded grey, integer mean and 8-bit HSV).
    #[arg(long, value_name = "STYLE", default_value = "torchvision", value_parser = ["torchvision", "paddlevideo"])]
    pub color_jitter_style: String,
    /// With --train: the clip in grey with probability P (torchvision's RandomGrayscale; after
    /// any colour jitter).
    #[arg(long, value_name = "P", requires = "train")]
    pub grayscale: Option<f64>,
    /// Seed for every random choice; the same seed gives the same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Take these source frame numbers (comma-separated, one clip) instead of a sampler.
    #[arg(long, value_delimiter = ',')]
    pub indices: Option<Vec<usize>>,
    /// Take R frames per second over the whole video instead of a sampler (one clip; --frames
    /// and --sampler are ignored). Indices as torchvision's VideoClips(frame_rate=R): every
    /// (fps/R)-th frame from frame 0 when fps/R is a whole number, else floor(L*R/fps) frames at
    /// floor(i*fps/R).
    #[arg(long, value_name = "R", conflicts_with_all = ["train", "indices"])]
    pub fps: Option<f64>,
    /// With --fps: at most N frames per record (the video's frames in time order, record k
    /// holding frames kN to kN+N-1), so records stream out as they are decoded; 0 puts all
    /// frames in one record (memory then grows with the video).
    #[arg(long, value_name = "N", default_value_t = 32, requires = "fps")]
    pub chunk: usize,
    /// Read the inputs as live sources (an http(s) stream, a FIFO, a growing file): nothing is
    /// probed or seeked; ffmpeg's fps filter takes --fps R frames per second as they arrive, until
    /// the source ends or --duration. /dev/video* capture devices are always read so.
    #[arg(long, requires = "fps")]
    pub live: bool,
    /// Read a live source (implies --live) for at most S seconds.
    #[arg(long, value_name = "S", requires = "fps")]
    pub duration: Option<f64>,
    /// Keep only shard K of N (K = 0..N-1): the inputs whose 0-based position in the input list
    /// is K modulo N. Shards keep the seeds of the unsharded run.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Emit float32 (x - mean) / std instead of uint8 pixels.
    #[arg(long)]
    pub normalize: bool,
    /// Per-channel mean on the 0-255 scale, for --normalize [default: ImageNet's].
    #[arg(long, value_delimiter = ',', num_args = 3)]
    pub mean: Option<Vec<f32>>,
    /// Per-channel std on the 0-255 scale, for --normalize [default: ImageNet's].
    #[arg(long, value_delimiter = ',', num_args = 3)]
    pub std: Option<Vec<f32>>,
    /// Decoder: libav (the system FFmpeg libraries in-process) or cli (an ffmpeg process per
    /// video); both give the same frames.
    #[arg(long, default_value = "libav", value_parser = ["libav", "cli"])]
    pub decoder: String,
    /// Parallel decoders; output stays in input order.
    #[arg(short = 'j', long, default_value_t = 1)]
    pub jobs: usize,
    /// Output file (written atomically); default stdout.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Also write the inputs that failed to FILE, one `path<TAB>reason` line each in input order
    /// (empty when none failed), for a scheduler to retry exactly those.
    #[arg(long, value_name = "FILE")]
    pub failures: Option<PathBuf>,
    /// Say nothing on stderr but errors (no progress bar, no summary). The bar is drawn only
    /// when stderr is a terminal.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Take the sampler, frames, interval, short side and crop size from a model file's config
    /// (its test protocol), instead of --sampler/--frames/--interval/--size/--crop-size.
    #[arg(long, value_name = "MODEL.safetensors", conflicts_with_all = ["sampler", "frames", "interval", "seglen", "size", "crop_size", "fixed_ratio"])]
    pub spec_from: Option<PathBuf>,
    #[command(flatten)]
    pub augment: super::vsample_augment::AugmentArgs,
}

/// An input that could not even become a video item (a bad list line).
type InputItem = Result<VideoItem, String>;

fn label_of(labels: Vec<i64>) -> Option<Label> {
    match labels.len() {
        0 => None,
        1 => Some(Label::Single(labels[0])),
        _ => Some(Label::Multi(labels)),
    }
}

fn items_from_lines(text: &str, source: &str, root: Option<&Path>) -> Vec<InputItem> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line, i + 1) {
            Ok(Some(e)) => out.push(Ok(VideoItem {
                id: e.path.clone(),
                path: e.resolve(root),
                label: label_of(e.labels),
            })),
            Ok(None) => {}
            Err(err) => out.push(Err(format!("{source}: {err:#}"))),
        }
    }
    out
}

fn gather_inputs(args: &Args) -> Result<Vec<InputItem>> {
    let root = args.root.as_deref();
    let mut items = Vec::new();
    if let Some(list) = &args.list {
        let text = std::fs::read_to_string(list)
            .with_context(|| format!("{}: cannot read list file", list.display()))?;
        items.extend(items_from_lines(&text, &list.display().to_string(), root));
    }
    for p in &args.inputs {
        if p.as_os_str() == "-" {
            let mut text = String::new();
            for line in std::io::stdin().lock().lines() {
                text.push_str(&line.context("<stdin>: cannot read paths")?);
                text.push('\n');
            }
            items.extend(items_from_lines(&text, "<stdin>", root));
        } else {
            items.push(Ok(VideoItem { id: p.display().to_string(), path: p.clone(), label: None }));
        }
    }
    if items.is_empty() {
        bail!("no input videos (give paths, --list FILE, or - for paths on stdin)");
    }
    Ok(items)
}

/// The record that ends a streamed video which broke part-way (vidkit-stream(5), kind error).
fn error_record(video: &str, message: &str) -> Record {
    let mut header =
        RecordHeader { kind: "error".into(), video: Some(video.to_string()), ..Default::default() };
    header.extra.insert("error".into(), message.into());
    Record { header, array: Array::U8(ndarray::ArrayD::zeros(ndarray::IxDyn(&[0]))) }
}

fn spec_from(args: &Args) -> Result<ClipSpec> {
    let sampler = SamplerConfig {
        kind: args.sampler.parse::<SamplerKind>()?,
        frames: args.frames,
        interval: args.interval,
        clips: args.clips,
        train: args.train,
        seglen: args.seglen,
    };
    sampler.validate()?;
    let crop: CropMode = args.crop.parse()?;
    let short_side_px = match (args.size, crop) {
        (Some(0), _) => bail!("--size must be positive"),
        (Some(s), _) => Some(s),
        (None, CropMode::None) => None,
        (None, _) => Some(256),
    };
    if args.crop_size == 0 {
        bail!("--crop-size must be positive");
    }
    if args.fps.is_some() && args.clips != 1 {
        bail!("--fps takes one clip over the whole video; leave --clips at 1");
    }
    if args.indices.as_ref().is_some_and(|v| v.is_empty()) {
        bail!("--indices needs at least one frame number");
    }
    let normalize = args.normalize.then(|| Norm {
        mean: args.mean.clone().unwrap_or(IMAGENET_MEAN.to_vec()),
        std: args.std.clone().unwrap_or(IMAGENET_STD.to_vec()),
    });
    if let Some(n) = &normalize {
        if n.std.iter().any(|&s| s <= 0.0) {
            bail!("--std values must be positive");
        }
    }
    Ok(ClipSpec {
        decoder: args.decoder.parse()?,
        sampler,
        short_side_px,
        fixed_ratio: args.fixed_ratio,
        crop,
        crop_px: args.crop_size,
        flip: args.flip,
        grayscale: match args.grayscale {
            Some(p) if !(0.0..=1.0).contains(&p) => bail!("--grayscale {p}: a probability in [0, 1]"),
            p => p.unwrap_or(0.0),
        },
        color_jitter: match &args.color_jitter {
            Some(v) => {
                let j = vidkit::transform::ColorJitter {
                    brightness: v[0],
                    contrast: v[1],
                    saturation: v[2],
                    hue: v[3],
                    style: args.color_jitter_style.parse()?,
                };
                j.validate()?;
                Some(j)
            }
            None => None,
        },
        rand_augment: args.augment.rand_augment()?,
        augmix: args.augment.augmix()?,
        normalize,
        seed: args.seed,
        indices: args.indices.clone(),
        rate_fps: args.fps,
        chunk_frames: (args.chunk > 0).then_some(args.chunk),
    })
}

pub fn main(mut args: Args) -> Result<Outcome> {
    if let Some(model) = &args.spec_from {
        let cfg = vidkit::model::read_config(model)?;
        args.sampler = cfg.sampler.clone();
        args.frames = cfg.frames;
        args.interval = cfg.interval.unwrap_or(1);
        args.seglen = cfg.seglen();
        args.fixed_ratio = cfg.fixed_ratio();
        args.size = Some(cfg.short_side);
        args.crop_size = cfg.crop_size;
    }
    let spec = spec_from(&args)?;
    // Each input keeps its position in the whole list: it seeds the input's randomness, so a
    // shard samples exactly what the unsharded run does.
    let items: Vec<(usize, InputItem)> = gather_inputs(&args)?
        .into_iter()
        .enumerate()
        .filter(|(i, _)| args.shard.is_none_or(|s| s.keeps(*i)))
        .collect();
    let mut out = Output::open(args.output.as_deref())?;
    // Unbounded samplers stream; the others keep a video's records until all are decoded, so
    // a video that fails leaves nothing behind.
    let streaming = spec.rate_fps.is_some() || spec.sampler.kind == SamplerKind::Untrimmed;
    let mut failed = 0usize;
    let mut failures = vidkit::io::FailureList::default();
    let mut records = 0usize;
    let progress = Progress::new(Some(items.len() as u64), "videos", args.quiet);
    {
        let mut writer = StreamWriter::new(&mut out);
        vidkit::parallel::stream_ordered(
            &items,
            args.jobs,
            4,
            |_, (position, item), emit| -> std::result::Result<(String, usize), (String, String)> {
                // An unreadable list line has no path of its own: the message names the line.
                let v = item.as_ref().map_err(|e| (e.clone(), e.clone()))?;
                let failed = |msg: String| (v.id.clone(), msg);
                let mut emitted = 0usize;
                let mut held = Vec::new();
                let live = args.live || args.duration.is_some() || vidkit::live::is_capture_device(&v.path);
                let mut take = |r| {
                    if streaming || live {
                        emitted += 1;
                        emit(r)
                    } else {
                        held.push(r);
                        Ok(())
                    }
                };
                let result = if live {
                    let spec_live = LiveSpec {
                        rate: args.fps.unwrap_or(0.0),
                        duration: args.duration,
                        chunk: if args.chunk == 0 { 32 } else { args.chunk },
                    };
                    vidkit::live::sample_live(&spec, &spec_live, v, &mut take)
                } else {
                    sample_video_each(&spec, v, *position, &mut take)
                };
                match result {
                    Ok(_) => {
                        for r in held {
                            emit(r).map_err(|e| failed(format!("{e:#}")))?;
                            emitted += 1;
                        }
                        Ok((v.id.clone(), emitted))
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        if emitted > 0 {
                            // Tell the tools downstream that the records before this one are
                            // not the whole video.
                            let _ = emit(error_record(&v.id, &msg));
                            return Err(failed(format!(
                                "{msg} (after {emitted} records; an error record follows them)"
                            )));
                        }
                        Err(failed(msg))
                    }
                }
            },
            |_, piece| {
                match piece {
                    Piece::Part(r) => {
                        writer.write_record(&r.header, &r.array).context("writing the stream")?;
                        records += 1;
                    }
                    Piece::Done(Ok(_)) => progress.inc(1),
                    Piece::Done(Err((path, msg))) => {
                        failed += 1;
                        failures.push(&path, &msg);
                        progress.inc(1);
                        progress.set_message(format!("{failed} failed"));
                        progress.eprintln(&format!("vsample: {msg}"));
                    }
                }
                Ok(())
            },
        )?;
    }
    progress.finish();
    if let Some(path) = &args.failures {
        failures.write(path)?;
    }
    if items.is_empty() {
        // More shards than inputs: this shard is legitimately empty.
        out.finish()?;
        if !args.quiet {
            eprintln!("vsample: no inputs in this shard");
        }
        return Ok(Outcome::Success);
    }
    if failed == items.len() {
        bail!("all {} inputs failed; no output written", items.len());
    }
    out.finish()?;
    if !args.quiet {
        eprintln!("vsample: {} videos, {records} records, {failed} failed", items.len() - failed);
    }
    Ok(if failed > 0 { Outcome::PartialFailure { failed, total: items.len() } } else { Outcome::Success })
}
