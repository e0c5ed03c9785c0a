//! `vsynth`: writes a labelled synthetic video dataset whose classes differ only in temporal order.
use crate::Outcome;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use vidkit::progress::Progress;
use vidkit::synth::{self, SynthOptions, SynthVideo, UntrimmedOptions, UntrimmedVideo};

const DEFAULT_CLASSES: &str = "left,right,up,down,grow,shrink,appear,disappear";

#[derive(clap::Parser, Debug)]
#[command(
    name = "vsynth",
    version,
    about = "Write a labelled synthetic video dataset whose classes differ only in temporal order",
    long_about = "Write a labelled synthetic video dataset whose classes differ only in temporal order.\n\n\
Each video shows one object (circle, square, triangle, diamond, ring or cross; random colour, size \
and spin) over a solid, gradient, blob, stripe or checker background, sometimes with per-frame \
noise, for 24-64 frames at 12-30 fps. Classes come in pairs that are one motion played forwards \
or backwards: left/right and up/down (the object crosses the frame), grow/shrink (it changes \
size), appear/disappear (it is there only in the last or only in the first part of the clip). \
The frames of a clip, taken as a set, have the same distribution in both classes of a pair, so \
a model that ignores frame order (TSN averaging) is at chance within each pair and can at best \
name the pair (50% on all eight classes). The one cue besides order is h264's: the first frame \
is a keyframe, coded a little better than the rest.\n\n\
Output, in DIR: CLASS/CLASS_NNN.mp4 (h264, yuv420p, MP4, encoded by the system ffmpeg with \
libx264 -preset veryfast -crf 20), train.list and val.list (lines `CLASS/CLASS_NNN.mp4 LABEL`, \
paths relative to DIR, as PaddleVideo and MMAction2 read them; sorted by label, then number), \
and labels.txt (line i names label i, in --classes order). Of the K clips of each class the last \
round(K/4) go to val.list, the rest to train.list (16 -> 12 + 4). Every file is written under a \
temporary name and renamed into place; files of an earlier, larger run are left as they are.\n\n\
The same seed gives byte-identical videos and lists (with the same ffmpeg build), whatever -j. A \
clip depends only on the seed, its class and its number, not on --classes or --per-class, and \
its content scales with --size.\n\n\
stdout: one line of JSON, {\"out\", \"classes\", \"videos\", \"train\", \"val\", \"frames\", \
\"seed\", \"size\"}. stderr: progress (-v: one line per video) and a closing line with the time \
taken; -q silences it. Exit status 0 on success, 2 on bad arguments or any failure (no lists are \
written then).",
    after_help = "Examples:\n  \
vsynth --out data/synth\n      all eight classes, 16 videos each (12 train, 4 val), 128x96\n  \
vsynth --out data/lr --classes left,right,up,down --per-class 20 --size 112x112 --seed 7 -j 2\n  \
vsynth -o /tmp/t --classes appear,disappear --per-class 4 --size 64x48 -q && cat /tmp/t/val.list\n      \
a tiny set: 3 train and 1 val video per class\n  \
vsynth --segments -o data/untrimmed --classes left,right,grow --videos 8 --duration 20-40 --size 112x112\n      \
untrimmed videos with several actions each, and their ActivityNet ground truth"
)]
pub struct Args {
    /// Output directory (created if missing).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,

    /// Comma-separated classes, in label order: left, right, up, down, grow, shrink, appear,
    /// disappear.
    #[arg(long, value_name = "LIST", default_value = DEFAULT_CLASSES)]
    pub classes: String,

    /// Videos per class.
    #[arg(long, value_name = "K", default_value_t = 16)]
    pub per_class: usize,

    /// Frame size, even width and height in 16..4096.
    #[arg(long, value_name = "WxH", default_value = "128x96")]
    pub size: String,

    /// Random seed; the same seed gives the same bytes.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,

    /// Parallel encoders (default: the number of CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<usize>,

    /// Plain scenes: every object white on a black background, no noise (the same shapes,
    /// sizes and motions as the default scenes). For models that embed patches linearly: a ViT
    /// trained from scratch on a few hundred default clips does not get past their random
    /// colours and textures.
    #[arg(long, conflicts_with = "segments")]
    pub plain: bool,

    /// Also write DIR/captions.json: {"CLASS/CLASS_NNN.mp4": ["a red circle moves left"]}, one
    /// sentence per clip from what it renders (the object's colour by hue, its shape, its
    /// class's motion), as vtrain --arch ets and veval --captions read it.
    #[arg(long, conflicts_with = "segments")]
    pub captions: bool,

    /// Print nothing on stderr but errors.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print a line per video on stderr.
    #[arg(short, long)]
    pub verbose: bool,

    /// Untrimmed videos for temporal localization instead: --videos videos of --duration
    /// seconds, each one scene in which several actions of the classes happen (each a clip as
    /// above, held 1-3 times slower) between stretches of the empty scene; DIR/videos/v_NNNN.mp4,
    /// DIR/videos.list (training.list and validation.list: each subset's), and
    /// DIR/activity_net.json (ActivityNet 1.3 ground truth: segments in seconds and labels; the
    /// last quarter of the videos in subset validation), and the segments as grounding queries
    /// for vground and vtrain --arch tall, DIR/training.queries.jsonl and
    /// DIR/validation.queries.jsonl ({"query_id", "video", "sentence", "embedding", "gt"}: a
    /// sentence per class, "the object moves to the left", embedded by a fixed encoder: the
    /// unit-length sum of 64-d random N(0, 1) word vectors seeded by each word's FNV-1a hash).
    #[arg(long, conflicts_with = "per_class")]
    pub segments: bool,

    /// With --segments: how many videos.
    #[arg(long, value_name = "N", default_value_t = 16, requires = "segments")]
    pub videos: usize,

    /// With --segments: the range of video lengths, MIN-MAX seconds (MIN >= 10).
    #[arg(long, value_name = "MIN-MAX", default_value = "20-60", requires = "segments")]
    pub duration: String,
}

/// DIR/captions.json, written atomically.
fn write_captions(opts: &SynthOptions) -> anyhow::Result<()> {
    let map: serde_json::Map<String, serde_json::Value> =
        synth::captions::captions(opts).into_iter().map(|(path, c)| (path, serde_json::json!([c]))).collect();
    let file = vidkit::io::AtomicFile::create(opts.out.join("captions.json"))?;
    std::fs::write(file.temp_path(), serde_json::to_string_pretty(&map)? + "\n")?;
    file.commit()
}

fn untrimmed(
    args: &Args,
    classes: Vec<synth::Class>,
    width: u32,
    height: u32,
    jobs: usize,
) -> anyhow::Result<Outcome> {
    let range = args
        .duration
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?)));
    let Some(duration_s) = range else {
        anyhow::bail!("--duration {:?} is not MIN-MAX seconds", args.duration)
    };
    let opts = UntrimmedOptions {
        out: args.out.clone(),
        classes,
        videos: args.videos,
        duration_s,
        width,
        height,
        seed: args.seed,
        jobs,
    };
    let started = Instant::now();
    let bar = Progress::new(Some(args.videos as u64), "videos", args.quiet);
    let videos = synth::generate_untrimmed(&opts, &|v: &UntrimmedVideo| {
        bar.inc(1);
        if args.verbose {
            bar.eprintln(&format!(
                "vsynth: {} {:.1} s, {} actions",
                v.path,
                v.duration_s(),
                v.segments.len()
            ));
        }
    })?;
    bar.finish();
    let actions: usize = videos.iter().map(|v| v.segments.len()).sum();
    if !args.quiet {
        eprintln!(
            "vsynth: wrote {} untrimmed videos ({actions} actions) and activity_net.json to {} in {:.1} s",
            videos.len(),
            opts.out.display(),
            started.elapsed().as_secs_f64()
        );
    }
    let line = serde_json::json!({
        "out": opts.out.display().to_string(),
        "classes": opts.classes.iter().map(|c| c.name()).collect::<Vec<_>>(),
        "videos": videos.len(),
        "actions": actions,
        "validation": videos.iter().filter(|v| v.validation).count(),
        "seconds": videos.iter().map(|v| v.duration_s()).sum::<f64>(),
        "seed": opts.seed,
        "size": [width, height],
    });
    print_summary(&line)
}

/// The summary object, one line on stdout.
fn print_summary(line: &serde_json::Value) -> anyhow::Result<Outcome> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(Outcome::Success)
}

pub fn main(args: Args) -> anyhow::Result<Outcome> {
    let classes = synth::parse_classes(&args.classes)?;
    let (width, height) = synth::parse_size(&args.size)?;
    if args.per_class == 0 {
        anyhow::bail!("--per-class must be at least 1");
    }
    let jobs = match args.jobs {
        Some(0) => anyhow::bail!("-j must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if args.segments {
        return untrimmed(&args, classes, width, height, jobs);
    }
    let opts = SynthOptions {
        out: args.out.clone(),
        classes,
        per_class: args.per_class,
        width,
        height,
        seed: args.seed,
        jobs,
        plain: args.plain,
    };
    let total = opts.classes.len() * opts.per_class;
    let started = Instant::now();
    let finished = AtomicUsize::new(0);
    let bar = Progress::new(Some(total as u64), "videos", args.quiet);
    let progress = |v: &SynthVideo| {
        let n = finished.fetch_add(1, Ordering::Relaxed) + 1;
        bar.inc(1);
        if args.verbose {
            bar.eprintln(&format!(
                "vsynth: [{n}/{total}] {} label {} ({} frames at {} fps)",
                v.path, v.label, v.frames, v.fps
            ));
        }
    };
    let summary = synth::generate_with_progress(&opts, &progress)?;
    bar.finish();
    if args.captions {
        write_captions(&opts)?;
    }
    let frames: usize = summary.videos.iter().map(|v| v.frames).sum();
    if !args.quiet {
        eprintln!(
            "vsynth: wrote {} videos ({} train, {} val, {frames} frames) to {} in {:.1} s",
            summary.videos.len(),
            summary.train,
            summary.val,
            opts.out.display(),
            started.elapsed().as_secs_f64()
        );
    }
    let line = serde_json::json!({
        "out": opts.out.display().to_string(),
        "classes": opts.classes.iter().map(|c| c.name()).collect::<Vec<_>>(),
        "videos": summary.videos.len(),
        "train": summary.train,
        "val": summary.val,
        "frames": frames,
        "seed": opts.seed,
        "size": [width, height],
    });
    print_summary(&line)
}
