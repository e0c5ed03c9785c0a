//! Untrimmed synthetic videos with known action segments, for temporal localization
//! (`vsynth --segments`): each video is one scene (a background with per-frame noise) in which
//! several actions of the dataset's classes happen, each an ordinary synthetic clip held 1-3
//! times slower, separated by stretches of the empty scene. The segments are written as an
//! ActivityNet 1.3 ground-truth JSON beside the videos, and as grounding queries
//! (`training.queries.jsonl`, `validation.queries.jsonl`: [`super::queries`]).

use super::render::{sample_clip, sample_scene, ClipSpec};
use super::{encode_sequence, Class};
use crate::io::AtomicFile;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Clone, Debug)]
pub struct UntrimmedOptions {
    pub out: PathBuf,
    pub classes: Vec<Class>,
    pub videos: usize,
    /// Shortest and longest video, seconds.
    pub duration_s: (f64, f64),
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    pub jobs: usize,
}

/// One written video: where, how long, its actions (start, end in seconds, class) and subset.
#[derive(Clone, Debug)]
pub struct UntrimmedVideo {
    pub id: String,
    /// Relative to the output directory: `videos/v_0003.mp4`.
    pub path: String,
    pub fps: u32,
    pub frames: usize,
    pub segments: Vec<(f64, f64, Class)>,
    pub validation: bool,
}

impl UntrimmedVideo {
    pub fn duration_s(&self) -> f64 {
        self.frames as f64 / self.fps as f64
    }
}

/// The pieces of video `index` (empty scene and actions alternating) and its description.
fn plan(opts: &UntrimmedOptions, index: usize) -> (Vec<ClipSpec>, UntrimmedVideo) {
    let mut rng = Rng::derive(opts.seed, (1 << 40) | index as u64);
    let fps = [24u32, 25, 30][rng.below(3)];
    let (lo, hi) = opts.duration_s;
    let target = (rng.uniform_range(lo, hi) * fps as f64) as usize;
    let (background, noise) = sample_scene(&mut rng, opts.width, opts.height);
    let gap = |rng: &mut Rng| (rng.uniform_range(1.0, 6.0) * fps as f64) as usize;
    let mut pieces: Vec<ClipSpec> = Vec::new();
    let mut segments = Vec::new();
    let mut t = gap(&mut rng);
    loop {
        let class = opts.classes[rng.below(opts.classes.len())];
        let slow = 1 + rng.below(3);
        let action = sample_clip(class, &mut rng, opts.width, opts.height).in_scene(
            &background,
            noise,
            fps,
            slow,
            &mut rng,
        );
        let n = action.num_frames();
        // Always one action; more while they fit before the end (leaving a last gap of 1 s).
        if !segments.is_empty() && t + n + fps as usize > target {
            break;
        }
        let lead = t - pieces.iter().map(ClipSpec::num_frames).sum::<usize>();
        if lead > 0 {
            pieces.push(action.empty_scene(lead));
        }
        segments.push((t as f64 / fps as f64, (t + n) as f64 / fps as f64, class));
        pieces.push(action);
        t += n + gap(&mut rng);
    }
    let used: usize = pieces.iter().map(ClipSpec::num_frames).sum();
    let tail = target.max(used + fps as usize) - used;
    let last = pieces.last().expect("one action").empty_scene(tail);
    pieces.push(last);
    let frames = used + tail;
    let id = format!("v_{index:04}");
    let video = UntrimmedVideo {
        path: format!("videos/{id}.mp4"),
        id,
        fps,
        frames,
        segments,
        validation: index >= opts.videos - super::val_count(opts.videos),
    };
    (pieces, video)
}

/// Writes the videos and `activity_net.json` (ActivityNet 1.3 ground truth: the last quarter of
/// the videos in subset `validation`, the rest in `training`), `videos.list` and the subsets'
/// `training.list` and `validation.list` (paths relative to `opts.out`) into `opts.out`;
/// `done` is called (from a worker) as each video is written.
pub fn generate_untrimmed(
    opts: &UntrimmedOptions,
    done: &(dyn Fn(&UntrimmedVideo) + Sync),
) -> Result<Vec<UntrimmedVideo>> {
    if opts.classes.is_empty() || opts.videos == 0 {
        bail!("--segments needs at least one class and one video");
    }
    let (lo, hi) = opts.duration_s;
    if !(lo >= 10.0 && hi >= lo && hi.is_finite()) {
        bail!("--duration must be MIN-MAX seconds with 10 <= MIN <= MAX");
    }
    let dir = opts.out.join("videos");
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create directory", dir.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".vsynth.")
        .tempdir_in(&opts.out)
        .with_context(|| format!("{}: cannot create a temporary directory", opts.out.display()))?;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<UntrimmedVideo>>>> =
        Mutex::new((0..opts.videos).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.clamp(1, opts.videos) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= opts.videos {
                    return;
                }
                let (pieces, video) = plan(opts, i);
                let temp = scratch.path().join(format!("{i}.mp4"));
                let refs: Vec<&ClipSpec> = pieces.iter().collect();
                let dest = opts.out.join(&video.path);
                let r = encode_sequence(&refs, &temp)
                    .and_then(|()| std::fs::rename(&temp, &dest).map_err(Into::into))
                    .with_context(|| format!("{}: encoding", dest.display()))
                    .map(|()| {
                        done(&video);
                        video
                    });
                results.lock().expect("poisoned")[i] = Some(r);
            });
        }
    });
    let videos: Vec<UntrimmedVideo> = results
        .into_inner()
        .expect("poisoned")
        .into_iter()
        .map(|r| r.expect("every video ran"))
        .collect::<Result<_>>()?;
    scratch.close().ok();
    let mut database = serde_json::Map::new();
    for v in &videos {
        let annotations: Vec<_> = v
            .segments
            .iter()
            .map(|&(t0, t1, c)| serde_json::json!({"segment": [t0, t1], "label": c.name()}))
            .collect();
        database.insert(
            v.id.clone(),
            serde_json::json!({
                "subset": if v.validation { "validation" } else { "training" },
                "duration": v.duration_s(),
                "fps": v.fps,
                "url": v.path,
                "annotations": annotations,
            }),
        );
    }
    let taxonomy: Vec<_> = opts
        .classes
        .iter()
        .map(|c| serde_json::json!({"nodeName": c.name(), "parentName": "Root"}))
        .collect();
    let gt = serde_json::json!({"version": "VERSION 1.3", "taxonomy": taxonomy, "database": database});
    let path = opts.out.join("activity_net.json");
    let mut f = AtomicFile::create(&path)?;
    writeln!(f, "{gt}").with_context(|| format!("{}: cannot write", path.display()))?;
    f.commit()?;
    // Every video, and each subset's videos (the lists recipes/activitynet.mk reads).
    for (name, keep) in [("videos", None), ("training", Some(false)), ("validation", Some(true))] {
        let path = opts.out.join(format!("{name}.list"));
        let mut f = AtomicFile::create(&path)?;
        for v in videos.iter().filter(|v| keep.is_none_or(|k| v.validation == k)) {
            writeln!(f, "{}", v.path).with_context(|| format!("{}: cannot write", path.display()))?;
        }
        f.commit()?;
    }
    super::queries::write_queries(&opts.out, &videos)?;
    Ok(videos)
}
