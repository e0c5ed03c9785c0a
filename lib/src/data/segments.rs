//! Temporal segments for localization: ground truth from an ActivityNet 1.3 JSON (`database`:
//! id → {`subset`, `duration`, `annotations`: [{`segment`: [t0, t1], `label`}]}) or a THUMOS14
//! annotation directory (one `<Class>_<val|test>.txt` per class, lines `video start end`), and
//! proposals or detections as the ActivityNet result JSON (`results`: id → [{`segment`,
//! `score`, `label`?}]) or vpropose's JSON Lines (`{"video", "segments": [...]}` per line).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;

/// One segment in seconds, with its class and (for predictions) score.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub t0: f64,
    pub t1: f64,
    pub label: Option<String>,
    pub score: f64,
}

/// The ground truth of one subset: videos in file order, each with its segments, and the
/// classes in order of first appearance (ActivityNet's `activity_index`).
#[derive(Clone, Debug, Default)]
pub struct SegmentGroundTruth {
    pub videos: Vec<(String, Vec<Segment>)>,
    pub classes: Vec<String>,
}

/// Predicted segments per video, in file order.
pub type SegmentPredictions = Vec<(String, Vec<Segment>)>;

fn segment_of(v: &Value, what: &str) -> Result<(f64, f64)> {
    let pair = v
        .get("segment")
        .and_then(Value::as_array)
        .with_context(|| format!("{what}: no `segment` [start, end]"))?;
    let num = |i: usize| pair.get(i).and_then(Value::as_f64);
    match (pair.len(), num(0), num(1)) {
        (2, Some(a), Some(b)) if a.is_finite() && b.is_finite() => {
            if a > b {
                bail!("{what}: segment [{a}, {b}] starts after it ends");
            }
            Ok((a, b))
        }
        _ => bail!("{what}: `segment` must be two numbers [start, end]"),
    }
}

/// Reads localization ground truth: an ActivityNet JSON file (videos of `subset`) or a THUMOS14
/// annotation directory (files `*_val.txt` for subset `validation`, `*_test.txt` for `test`;
/// `Ambiguous_*.txt`, the segments THUMOS excludes from scoring, is left out).
pub fn read_segment_ground_truth(path: &Path, subset: &str) -> Result<SegmentGroundTruth> {
    if path.is_dir() {
        return read_thumos(path, subset);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let data: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let db = data.get("database").and_then(Value::as_object).with_context(|| {
        format!("{}: no `database` object: not an ActivityNet ground-truth file", path.display())
    })?;
    let mut gt = SegmentGroundTruth::default();
    for (id, v) in db {
        if v.get("subset").and_then(Value::as_str) != Some(subset) {
            continue;
        }
        let anns = v.get("annotations").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        let mut segs = Vec::with_capacity(anns.len());
        for (k, a) in anns.iter().enumerate() {
            let what = format!("{}: video {id:?} annotation {k}", path.display());
            let (t0, t1) = segment_of(a, &what)?;
            let label =
                a.get("label").and_then(Value::as_str).with_context(|| format!("{what}: no `label`"))?;
            if !gt.classes.iter().any(|c| c == label) {
                gt.classes.push(label.to_string());
            }
            segs.push(Segment { t0, t1, label: Some(label.to_string()), score: 1.0 });
        }
        // ActivityNet's evaluation has no row for a video without annotations.
        if !segs.is_empty() {
            gt.videos.push((id.clone(), segs));
        }
    }
    if gt.videos.is_empty() {
        bail!("{}: no annotated video in subset {subset:?}", path.display());
    }
    Ok(gt)
}

fn read_thumos(dir: &Path, subset: &str) -> Result<SegmentGroundTruth> {
    let suffix = match subset {
        "validation" | "val" => "_val.txt",
        "test" => "_test.txt",
        other => {
            bail!("{}: THUMOS14 annotations have subsets validation and test, not {other:?}", dir.display())
        }
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(suffix)))
        .collect();
    files.sort();
    let mut gt = SegmentGroundTruth::default();
    for f in files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let class = name.trim_end_matches(suffix).to_string();
        if class == "Ambiguous" {
            continue;
        }
        let text = std::fs::read_to_string(&f).with_context(|| format!("{}: cannot read", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            let bad = || format!("{}: line {}: expected `video start end`", f.display(), n + 1);
            if fields.len() != 3 {
                bail!("{}", bad());
            }
            let t0: f64 = fields[1].parse().with_context(bad)?;
            let t1: f64 = fields[2].parse().with_context(bad)?;
            if t0 > t1 {
                bail!("{}: line {}: segment [{t0}, {t1}] starts after it ends", f.display(), n + 1);
            }
            if !gt.classes.contains(&class) {
                gt.classes.push(class.clone());
            }
            let seg = Segment { t0, t1, label: Some(class.clone()), score: 1.0 };
            match gt.videos.iter_mut().find(|(v, _)| v == fields[0]) {
                Some((_, segs)) => segs.push(seg),
                None => gt.videos.push((fields[0].to_string(), vec![seg])),
            }
        }
    }
    if gt.videos.is_empty() {
        bail!("{}: no `*{suffix}` annotation files with segments", dir.display());
    }
    Ok(gt)
}

/// Reads predicted segments: an ActivityNet result JSON (`results`) or JSON Lines of
/// `{"video", "segments"}` (vpropose's output). `-` reads stdin.
pub fn read_segment_predictions(path: &Path) -> Result<SegmentPredictions> {
    let name = if path.as_os_str() == "-" { "<stdin>".to_string() } else { path.display().to_string() };
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("<stdin>: cannot read")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("{name}: cannot read"))?
    };
    parse_segment_predictions(&text, &name)
}

/// Parses predicted segments from text (see `read_segment_predictions`); `name` names the
/// input in errors.
pub fn parse_segment_predictions(text: &str, name: &str) -> Result<SegmentPredictions> {
    let parse_list = |id: &str, list: &Value, what: &str| -> Result<Vec<Segment>> {
        let items =
            list.as_array().with_context(|| format!("{what}: video {id:?}: segments must be a list"))?;
        items
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let what = format!("{what}: video {id:?} segment {k}");
                let (t0, t1) = segment_of(r, &what)?;
                let score =
                    r.get("score").and_then(Value::as_f64).with_context(|| format!("{what}: no `score`"))?;
                if !score.is_finite() {
                    bail!("{what}: score {score} is not a finite number");
                }
                let label = r.get("label").and_then(Value::as_str).map(str::to_string);
                Ok(Segment { t0, t1, label, score })
            })
            .collect()
    };
    // The whole text as one JSON object with `results`: the ActivityNet form.
    if let Ok(data) = serde_json::from_str::<Value>(text) {
        if let Some(results) = data.get("results").and_then(Value::as_object) {
            return results.iter().map(|(id, list)| Ok((id.clone(), parse_list(id, list, name)?))).collect();
        }
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let what = format!("{name}: line {}", n + 1);
        let v: Value = serde_json::from_str(line).with_context(|| format!("{what}: not JSON"))?;
        let id = v.get("video").and_then(Value::as_str).with_context(|| format!("{what}: no `video`"))?;
        let segs = v
            .get("segments")
            .with_context(|| format!("{what}: no `segments` (and the file has no ActivityNet `results`)"))?;
        out.push((id.to_string(), parse_list(id, segs, &what)?));
    }
    if out.is_empty() {
        bail!("{name}: no predictions (an empty result list)");
    }
    Ok(out)
}

/// The ways one video's id is written across tools and datasets, best first: as given; the file
/// name without directories and extension (`videos/v_0003.mp4` → `v_0003`, the id a video given
/// by path gets); each of those without or with ActivityNet's `v_` prefix (PaddleVideo's and
/// MMAction2's annotation files have it; the official ground truth and BMN's result files,
/// which write `video_name[2:]`, do not).
pub fn video_id_forms(id: &str) -> Vec<String> {
    let mut bases = vec![id.to_string()];
    let stem = Path::new(id).file_stem().and_then(|s| s.to_str()).unwrap_or(id);
    if stem != id && !stem.is_empty() {
        bases.push(stem.to_string());
    }
    let mut out = Vec::new();
    for b in bases {
        let other = match b.strip_prefix("v_") {
            Some(bare) => bare.to_string(),
            None => format!("v_{b}"),
        };
        out.push(b);
        out.push(other);
    }
    out
}

/// The first form of `id` ([`video_id_forms`]) that `known` contains.
pub fn find_video_id(id: &str, known: impl Fn(&str) -> bool) -> Option<String> {
    video_id_forms(id).into_iter().find(|f| known(f))
}

/// Renames predicted videos to the ground truth's id where only another form of it matches
/// (`videos/v_0003.mp4` predicted, `v_0003` annotated); other ids stay as they are.
pub fn align_prediction_ids(gt: &SegmentGroundTruth, preds: SegmentPredictions) -> SegmentPredictions {
    let ids: std::collections::HashSet<&str> = gt.videos.iter().map(|(v, _)| v.as_str()).collect();
    preds
        .into_iter()
        .map(|(id, segs)| match find_video_id(&id, |f| ids.contains(f)) {
            Some(g) => (g, segs),
            None => (id, segs),
        })
        .collect()
}

/// One annotated video for training a localizer: its subset (when the file names one), duration
/// in seconds (THUMOS14's annotations have none: it comes from the features then) and segments.
#[derive(Clone, Debug)]
pub struct AnnotatedVideo {
    pub id: String,
    pub subset: Option<String>,
    pub duration: Option<f64>,
    pub segments: Vec<Segment>,
}

/// Reads every annotated video of a localization annotation file: an ActivityNet JSON
/// (`database`: id → {`subset`, `duration`, `annotations`}) or the per-video form PaddleVideo's
/// and MMAction2's files use (id → {`duration_second`, `annotations`, `subset`?}). Videos without
/// segments are left out; a video without a positive duration is an error. A THUMOS14
/// annotation directory gives its `validation` and `test` subsets, without durations.
pub fn read_annotations(path: &Path) -> Result<Vec<AnnotatedVideo>> {
    if path.is_dir() {
        let mut out = Vec::new();
        for subset in ["validation", "test"] {
            // A directory with one of the two subsets is fine; with neither, the error says so.
            if let Ok(gt) = read_thumos(path, subset) {
                out.extend(gt.videos.into_iter().map(|(id, segments)| AnnotatedVideo {
                    id,
                    subset: Some(subset.to_string()),
                    duration: None,
                    segments,
                }));
            }
        }
        if out.is_empty() {
            bail!(
                "{}: no THUMOS14 annotation files (`*_val.txt`, `*_test.txt`) with segments",
                path.display()
            );
        }
        return Ok(out);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let data: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let videos = data.get("database").unwrap_or(&data).as_object().with_context(|| {
        format!("{}: not an object of videos (ActivityNet `database` or per-video)", path.display())
    })?;
    let mut out = Vec::new();
    for (id, v) in videos {
        let Some(anns) = v.get("annotations").and_then(Value::as_array) else {
            bail!("{}: video {id:?} has no `annotations` list", path.display());
        };
        let duration = v.get("duration_second").or_else(|| v.get("duration")).and_then(Value::as_f64);
        let duration = match duration {
            Some(d) if d > 0.0 && d.is_finite() => d,
            _ => bail!("{}: video {id:?} has no positive `duration` (or `duration_second`)", path.display()),
        };
        let mut segments = Vec::with_capacity(anns.len());
        for (k, a) in anns.iter().enumerate() {
            let (t0, t1) = segment_of(a, &format!("{}: video {id:?} annotation {k}", path.display()))?;
            let label = a.get("label").and_then(Value::as_str).map(str::to_string);
            segments.push(Segment { t0, t1, label, score: 1.0 });
        }
        if !segments.is_empty() {
            let subset = v.get("subset").and_then(Value::as_str).map(str::to_string);
            out.push(AnnotatedVideo { id: id.clone(), subset, duration: Some(duration), segments });
        }
    }
    if out.is_empty() {
        bail!("{}: no annotated video", path.display());
    }
    Ok(out)
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn id_forms_cover_paths_and_the_v_prefix() {
        assert_eq!(
            video_id_forms("videos/v_0003.mp4"),
            ["videos/v_0003.mp4", "v_videos/v_0003.mp4", "v_0003", "0003"]
        );
        assert_eq!(video_id_forms("abc"), ["abc", "v_abc"]);
        let gt = SegmentGroundTruth { videos: vec![("0003".into(), vec![])], classes: vec![] };
        let preds =
            align_prediction_ids(&gt, vec![("u/videos/v_0003.mp4".into(), vec![]), ("x".into(), vec![])]);
        assert_eq!(preds[0].0, "0003");
        assert_eq!(preds[1].0, "x");
    }
}

#[cfg(test)]
mod annotation_tests {
    use super::*;

    /// A THUMOS14 annotation directory gives both subsets' videos, without durations; an
    /// ActivityNet JSON gives its durations and subsets.
    #[test]
    fn thumos_dirs_and_activitynet_json_read_as_annotations() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("Diving_val.txt"), "video_validation_1 1.0 2.5\nvideo_validation_1 4 5\n")
            .unwrap();
        std::fs::write(p.join("Diving_test.txt"), "video_test_9 0.5 1.5\n").unwrap();
        std::fs::write(p.join("Ambiguous_val.txt"), "video_validation_1 3 4\n").unwrap();
        let a = read_annotations(p).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[0].id.as_str(), a[0].subset.as_deref(), a[0].duration),
            ("video_validation_1", Some("validation"), None)
        );
        assert_eq!(a[0].segments.len(), 2);
        assert_eq!(a[1].subset.as_deref(), Some("test"));
        let j = p.join("anet.json");
        std::fs::write(&j, r#"{"database": {"v_a": {"subset": "training", "duration": 20.5, "annotations": [{"segment": [1, 2], "label": "x"}]}}}"#).unwrap();
        let a = read_annotations(&j).unwrap();
        assert_eq!((a[0].duration, a[0].subset.as_deref()), (Some(20.5), Some("training")));
        std::fs::write(
            &j,
            r#"{"v_a": {"annotations": [{"segment": [3, 2], "label": "x"}], "duration_second": 9}}"#,
        )
        .unwrap();
        assert!(read_annotations(&j).unwrap_err().to_string().contains("starts after it ends"));
    }
}
