//! Captions files for training: ActivityNet Captions (`{video: {"duration", "timestamps",
//! "sentences"}}`: one sentence per event, its span in seconds), MSR-VTT (`{"sentences":
//! [{"video_id", "caption"}]}`: sentences of whole videos) or `{video: [sentences]}` (whole
//! videos, as `veval --captions` reads references), and the reference's per-video feature files.

use crate::featstore::VideoFeatures;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One training sentence: its video, and the span it describes where the file gives one.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptionEntry {
    pub video: String,
    pub sentence: String,
    /// Seconds (ActivityNet Captions' timestamps).
    pub span: Option<(f64, f64)>,
    /// The video's duration where the file gives it (ActivityNet Captions).
    pub duration: Option<f64>,
}

fn string(v: &Value, at: impl Fn() -> String) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => bail!("{}: must be a string, not {other}", at()),
    }
}

/// Every sentence of a captions file, in file order.
pub fn read_captions(path: &Path) -> Result<Vec<CaptionEntry>> {
    let src = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("{src}: cannot read"))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| anyhow!("{src}: not JSON: {e}"))?;
    let Value::Object(map) = v else {
        bail!("{src}: captions must be ActivityNet Captions, MSR-VTT or {{video: [sentences]}} JSON")
    };
    let mut out = Vec::new();
    if let Some(Value::Array(list)) = map.get("sentences") {
        // MSR-VTT's train_val_videodatainfo.json.
        for (i, s) in list.iter().enumerate() {
            let at = |k: &str| format!("{src}: sentences[{i}].{k}");
            let video = s.get("video_id").with_context(|| format!("{}: missing", at("video_id")))?;
            let caption = s.get("caption").with_context(|| format!("{}: missing", at("caption")))?;
            out.push(CaptionEntry {
                video: string(video, || at("video_id"))?,
                sentence: string(caption, || at("caption"))?,
                span: None,
                duration: None,
            });
        }
        return Ok(out);
    }
    for (id, entry) in &map {
        let (list, times, duration) = match entry {
            Value::Array(a) => (a, None, None),
            Value::Object(o) => match o.get("sentences") {
                Some(Value::Array(a)) => (a, o.get("timestamps"), o.get("duration").and_then(Value::as_f64)),
                _ => bail!("{src}: {id:?}: an ActivityNet Captions entry needs a \"sentences\" list"),
            },
            other => bail!("{src}: {id:?}: sentences must be a list, not {other}"),
        };
        let times = match times {
            None => None,
            Some(Value::Array(t)) if t.len() == list.len() => Some(t),
            Some(_) => bail!("{src}: {id:?}: \"timestamps\" must list one [start, end] per sentence"),
        };
        for (j, s) in list.iter().enumerate() {
            let sentence = string(s, || format!("{src}: {id:?}: sentence {j}"))?;
            let span = match times.map(|t| &t[j]) {
                None => None,
                Some(t) => match t.as_array().map(|a| a.iter().map(Value::as_f64).collect::<Vec<_>>()) {
                    Some(p) if p.len() == 2 && p.iter().all(|x| x.is_some_and(f64::is_finite)) => {
                        Some((p[0].unwrap_or(0.0), p[1].unwrap_or(0.0)))
                    }
                    _ => bail!("{src}: {id:?}: timestamp {j} must be [start, end] in seconds, not {t}"),
                },
            };
            out.push(CaptionEntry { video: id.clone(), sentence, span, duration });
        }
    }
    Ok(out)
}

/// Whether `path` holds a pickle (by its first byte: PROTO, or protocol 0's GLOBAL or MARK).
fn is_pickle(path: &Path) -> bool {
    let mut b = [0u8; 1];
    std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).is_ok()
        && [0x80, b'c', b'('].contains(&b[0])
}

/// A pickled [T, C] array as one video's `rgb` features, its id the file name.
fn pickled_video(path: &Path) -> Result<VideoFeatures> {
    let id = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(VideoFeatures {
        id,
        label: None,
        fps: None,
        duration: None,
        source: None,
        modalities: vec![("rgb".into(), crate::model::read_pickled_array(path)?)],
        times: None,
    })
}

/// Per-video features as [`crate::featstore::read_features`] reads them, and also the ETS
/// reference's own layout: a directory of per-video pickled numpy arrays named by video id, no
/// extension (`generate_train_pickle.py`'s `feat_data/`), or one such file.
pub fn read_caption_features(path: &Path) -> Result<Vec<VideoFeatures>> {
    if path.is_dir() && crate::featstore::feature_files(path).is_err() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("{}: cannot list", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        files.sort();
        if files.is_empty() || !files.iter().all(|f| is_pickle(f)) {
            bail!(
                "{}: neither .npy/.csv feature files nor the reference's pickled per-video arrays",
                path.display()
            );
        }
        return files.iter().map(|f| pickled_video(f)).collect();
    }
    if path.is_file() && !crate::featstore::is_feature_file(path) && is_pickle(path) {
        return Ok(vec![pickled_video(path)?]);
    }
    crate::featstore::read_features(path)
}

/// The rows of a [T, C] feature sequence a span covers, as the ETS reader slices its 5 fps
/// features (`datas[int(stime * 5):int(etime * 5 + 0.5)]`) with `rate` rows per second; the whole
/// sequence without a span.
pub fn span_rows(t: usize, span: Option<(f64, f64)>, rate: f64) -> std::ops::Range<usize> {
    match span {
        None => 0..t,
        Some((t0, t1)) => {
            let a = ((t0 * rate).max(0.0) as usize).min(t);
            let b = ((t1 * rate + 0.5).max(0.0) as usize).min(t);
            a..b.max(a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_and_their_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.json");
        std::fs::write(
            &p,
            r#"{"v1": {"duration": 10, "timestamps": [[0, 2.5], [3, 9]], "sentences": ["a b", "c"]}}"#,
        )
        .unwrap();
        let c = read_captions(&p).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!((c[1].span, c[1].duration), (Some((3.0, 9.0)), Some(10.0)));
        assert_eq!(span_rows(50, c[0].span, 5.0), 0..13);
        std::fs::write(&p, r#"{"sentences": [{"video_id": "video1", "caption": "x y"}]}"#).unwrap();
        assert_eq!(read_captions(&p).unwrap()[0].video, "video1");
        std::fs::write(&p, r#"{"v": ["ok", 3]}"#).unwrap();
        let e = read_captions(&p).unwrap_err().to_string();
        assert!(e.contains("\"v\": sentence 1: must be a string, not 3"), "{e}");
    }
}
