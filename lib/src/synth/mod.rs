//! Labelled synthetic video datasets whose classes can be told apart only by temporal order.
//!
//! Eight classes in four pairs: `left`/`right` and `up`/`down` (an object crossing the frame),
//! `grow`/`shrink` (an object changing size), `appear`/`disappear` (an object present only in the
//! second or the first part of the clip). The two classes of a pair are the same random motion
//! played forwards or backwards, so the set of frames of a clip says which pair it belongs to but
//! never which class (see `render`): the dataset tests that a model uses time.
//!
//! `generate` renders every clip in Rust and encodes it through the system ffmpeg (h264, yuv420p,
//! MP4), and writes `train.list`/`val.list` (`path label`, paths relative to the output directory,
//! as PaddleVideo and MMAction2 read them) and `labels.txt`. Everything is a function of the seed.

pub mod captions;
mod encode;
pub mod queries;
pub mod render;
mod untrimmed;

pub use encode::{encode_batch, encode_clip, encode_sequence};
pub use render::{sample_clip, ClipSpec, ObjectState, Renderer, Shape};
pub use untrimmed::{generate_untrimmed, UntrimmedOptions, UntrimmedVideo};

use crate::io::AtomicFile;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Left,
    Right,
    Up,
    Down,
    Grow,
    Shrink,
    Appear,
    Disappear,
}

impl Class {
    /// Every class, in the default order (which is also each class's stable id).
    pub const ALL: [Class; 8] = [
        Class::Left,
        Class::Right,
        Class::Up,
        Class::Down,
        Class::Grow,
        Class::Shrink,
        Class::Appear,
        Class::Disappear,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::Left => "left",
            Class::Right => "right",
            Class::Up => "up",
            Class::Down => "down",
            Class::Grow => "grow",
            Class::Shrink => "shrink",
            Class::Appear => "appear",
            Class::Disappear => "disappear",
        }
    }

    pub fn from_name(name: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The class that is this one played backwards.
    pub fn reverse(self) -> Class {
        match self {
            Class::Left => Class::Right,
            Class::Right => Class::Left,
            Class::Up => Class::Down,
            Class::Down => Class::Up,
            Class::Grow => Class::Shrink,
            Class::Shrink => Class::Grow,
            Class::Appear => Class::Disappear,
            Class::Disappear => Class::Appear,
        }
    }

    /// Position in `ALL`: fixed whatever `--classes` says, so a clip's content depends only on
    /// the seed, its class and its number within the class.
    fn id(self) -> u64 {
        Class::ALL.iter().position(|&c| c == self).unwrap() as u64
    }
}

/// Parses `left,right,...`: known names, no repeats, at least one.
pub fn parse_classes(list: &str) -> Result<Vec<Class>> {
    let mut out: Vec<Class> = Vec::new();
    for name in list.split(',').map(str::trim) {
        let Some(class) = Class::from_name(name) else {
            let known: Vec<&str> = Class::ALL.iter().map(|c| c.name()).collect();
            bail!("unknown class {name:?} (known: {})", known.join(","));
        };
        if out.contains(&class) {
            bail!("class {name:?} given twice");
        }
        out.push(class);
    }
    Ok(out)
}

/// Parses `WxH`; both even (yuv420p halves them) and in 16..=4096.
pub fn parse_size(text: &str) -> Result<(u32, u32)> {
    let parsed = text
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?)));
    let Some((w, h)) = parsed else { bail!("size {text:?} is not WxH (e.g. 128x96)") };
    if !(16..=4096).contains(&w) || !(16..=4096).contains(&h) {
        bail!("size {text:?}: width and height must be in 16..4096");
    }
    if w % 2 != 0 || h % 2 != 0 {
        bail!("size {text:?}: width and height must be even (yuv420p)");
    }
    Ok((w, h))
}

#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub out: PathBuf,
    /// Classes in label order: label i is `classes[i]`.
    pub classes: Vec<Class>,
    pub per_class: usize,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    /// Parallel encoders.
    pub jobs: usize,
    /// White objects on black, no noise ([`ClipSpec::plain`]).
    pub plain: bool,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            out: PathBuf::from("synth"),
            classes: Class::ALL.to_vec(),
            per_class: 16,
            width: 128,
            height: 96,
            seed: 0,
            jobs: 1,
            plain: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

/// How many of a class's `per_class` clips go to validation: a quarter, rounded to nearest
/// (16 → 12 train + 4 val, 20 → 15 + 5, 2 → 1 + 1, 1 → 1 + 0). The last clips of each class are
/// the validation ones; clips are independent draws, so this is as good as a shuffle.
pub fn val_count(per_class: usize) -> usize {
    (per_class + 2) / 4
}

#[derive(Clone, Debug)]
pub struct SynthVideo {
    /// Relative to the output directory, `/`-separated: `left/left_003.mp4`.
    pub path: String,
    pub label: usize,
    pub class: Class,
    pub split: Split,
    pub frames: usize,
    pub fps: u32,
}

#[derive(Clone, Debug)]
pub struct SynthSummary {
    /// In list order: by label, then by number within the class.
    pub videos: Vec<SynthVideo>,
    pub train: usize,
    pub val: usize,
}

/// The generator for clip `index` of `class`.
pub fn clip_rng(seed: u64, class: Class, index: usize) -> Rng {
    Rng::derive(seed, (class.id() << 32) | index as u64)
}

/// Writes the dataset described by `opts`; see the module documentation.
pub fn generate(opts: &SynthOptions) -> Result<SynthSummary> {
    generate_with_progress(opts, &|_| {})
}

/// As `generate`, calling `done` (from a worker thread) as each video is written.
pub fn generate_with_progress(
    opts: &SynthOptions,
    done: &(dyn Fn(&SynthVideo) + Sync),
) -> Result<SynthSummary> {
    if opts.classes.is_empty() {
        bail!("no classes");
    }
    if opts.per_class == 0 {
        bail!("--per-class must be at least 1");
    }
    parse_size(&format!("{}x{}", opts.width, opts.height))?;
    let out = &opts.out;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create directory", out.display()))?;
    for class in &opts.classes {
        let dir = out.join(class.name());
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create directory", dir.display()))?;
    }
    // Videos are encoded here and renamed into place; dropping it removes what a failure left.
    let scratch = tempfile::Builder::new()
        .prefix(".vsynth.")
        .tempdir_in(out)
        .with_context(|| format!("{}: cannot create a temporary directory", out.display()))?;

    let n_val = val_count(opts.per_class);
    let jobs: Vec<(usize, Class, usize)> = opts
        .classes
        .iter()
        .enumerate()
        .flat_map(|(label, &class)| (0..opts.per_class).map(move |k| (label, class, k)))
        .collect();
    // Consecutive clips are encoded together (one ffmpeg per batch); batches are small enough
    // that every worker gets a couple. Batching does not change a clip's bytes.
    let workers = opts.jobs.clamp(1, jobs.len());
    let batch = jobs.len().div_ceil(2 * workers).clamp(1, MAX_BATCH);
    let batches: Vec<&[(usize, Class, usize)]> = jobs.chunks(batch).collect();
    let results: Mutex<Vec<Option<SynthVideo>>> = Mutex::new(vec![None; jobs.len()]);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = || {
        while !failed.load(Ordering::Relaxed) {
            let b = next.fetch_add(1, Ordering::Relaxed);
            let Some(&group) = batches.get(b) else { break };
            let first = b * batch;
            let videos: Vec<(ClipSpec, SynthVideo)> = group
                .iter()
                .map(|&(label, class, k)| {
                    let spec =
                        sample_clip(class, &mut clip_rng(opts.seed, class, k), opts.width, opts.height);
                    let spec = if opts.plain { spec.plain() } else { spec };
                    let split = if k >= opts.per_class - n_val { Split::Val } else { Split::Train };
                    let path = format!("{0}/{0}_{1:03}.mp4", class.name(), k);
                    let video =
                        SynthVideo { path, label, class, split, frames: spec.num_frames(), fps: spec.fps };
                    (spec, video)
                })
                .collect();
            match write_batch(&videos, first, scratch.path(), out) {
                Ok(()) => {
                    for (i, (_, video)) in videos.into_iter().enumerate() {
                        done(&video);
                        results.lock().unwrap()[first + i] = Some(video);
                    }
                }
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(e);
                }
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(work);
        }
    });
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    let videos: Vec<SynthVideo> =
        results.into_inner().unwrap().into_iter().map(|v| v.expect("every job ran")).collect();
    scratch.close().with_context(|| format!("{}: cannot remove the temporary directory", out.display()))?;

    write_text(&out.join("labels.txt"), opts.classes.iter().map(|c| c.name().to_string()))?;
    for (split, name) in [(Split::Train, "train.list"), (Split::Val, "val.list")] {
        let lines = videos.iter().filter(|v| v.split == split).map(|v| format!("{} {}", v.path, v.label));
        write_text(&out.join(name), lines)?;
    }
    let train = videos.iter().filter(|v| v.split == Split::Train).count();
    Ok(SynthSummary { train, val: videos.len() - train, videos })
}

/// Most clips one ffmpeg process encodes.
const MAX_BATCH: usize = 8;

/// Encodes a batch under `scratch` (named by job number) and renames each clip into place.
fn write_batch(videos: &[(ClipSpec, SynthVideo)], first: usize, scratch: &Path, out: &Path) -> Result<()> {
    let temps: Vec<PathBuf> = (0..videos.len()).map(|i| scratch.join(format!("{}.mp4", first + i))).collect();
    let clips: Vec<(&ClipSpec, &Path)> =
        videos.iter().zip(&temps).map(|((spec, _), t)| (spec, t.as_path())).collect();
    let names: Vec<&str> = videos.iter().map(|(_, v)| v.path.as_str()).collect();
    encode_batch(&clips).with_context(|| format!("{}: encoding {}", out.display(), names.join(" ")))?;
    for ((_, video), temp) in videos.iter().zip(&temps) {
        let dest = out.join(&video.path);
        std::fs::rename(temp, &dest)
            .with_context(|| format!("{}: cannot rename into place", dest.display()))?;
    }
    Ok(())
}

fn write_text(path: &Path, lines: impl Iterator<Item = String>) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    for line in lines {
        writeln!(f, "{line}").with_context(|| format!("{}: cannot write", path.display()))?;
    }
    f.commit()
}

#[cfg(test)]
mod tests;
