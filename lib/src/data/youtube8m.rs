//! YouTube-8M (Abu-El-Haija et al. 2016; the 2017 and 2018 releases) from its TFRecord files
//! into vidkit feature stores, without TensorFlow. What google/youtube-8m's starter code reads
//! (`readers.py`) and PaddleVideo's `tf2pkl.py` converts for the 2019 zoo:
//! - frame-level `SequenceExample`s: context `id` (`video_id` in the 2017 release) and `labels`
//!   (int64 list), feature lists `rgb` and `audio` with one bytes entry per frame (1024 / 128
//!   uint8s, one frame per second), dequantised as `utils.Dequantize` with max 2 and min -2
//!   (`x * 4/255 + 4/512 - 2` in float32) and cut to the first 300 frames (`max_frames`);
//! - video-level `Example`s: `id`/`video_id`, `labels`, `mean_rgb` (1024 floats) and
//!   `mean_audio` (128 floats), already dequantised averages, stored as one row;
//! - `vocabulary.csv` (`Index,TrainVideoCount,KnowledgeGraphId,Name,WikiUrl,Vertical1,...`):
//!   class names by index (3862 classes in 2018, 4716 in 2017).
//!
//! Each video becomes a store group with its modalities under the feature names without the
//! `mean_` prefix (`rgb`, `audio`: what the sequence models read) and its label set as
//! `labels`. A damaged record (bad CRC, cut short) ends its file: the records after it cannot be
//! found, so that file's rest is skipped and counted, and the other files go on. A record that
//! frames correctly but does not hold a YouTube-8M video is skipped alone.

use super::datasets::split_csv;
use super::tfrecord::{Features, Kind, SequenceExample, TfRecordReader};
use crate::featstore::{StoreOptions, StoreWriter, VideoFeatures};
use crate::io::AtomicFile;
use crate::stream::Label;
use anyhow::{bail, Context, Result};
use ndarray::Array2;
use prost::Message;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The starter code's default `max_frames` (and `tf2pkl.py`'s): frames kept per video.
pub const MAX_FRAMES: usize = 300;

/// `utils.Dequantize(x, max_quantized_value=2, min_quantized_value=-2)` in float32, as the
/// starter code's graph computes it on `tf.cast(x, tf.float32)`.
pub fn dequantize(q: u8) -> f32 {
    const RANGE: f64 = 2.0 - -2.0;
    let scalar = (RANGE / 255.0) as f32;
    let bias = (RANGE / 512.0 + -2.0) as f32;
    q as f32 * scalar + bias
}

/// How `youtube8m_lists` converts.
#[derive(Clone, Debug, PartialEq)]
pub struct Youtube8mOptions {
    /// Frames kept per video (the first ones); 0 keeps all.
    pub max_frames: usize,
    /// Store float16 (half the size; the 256 dequantised levels stay distinct, within 5e-4).
    pub f16: bool,
    /// Frame-level rgb as the 2019 Paddle zoo's NeXtVLAD takes it, with these per-dimension
    /// factors ([`read_nextvlad_eigen_scale`]); `None`: the starter code's values.
    pub nextvlad_eigen_scale: Option<Vec<f32>>,
}

impl Default for Youtube8mOptions {
    fn default() -> Self {
        Self { max_frames: MAX_FRAMES, f16: false, nextvlad_eigen_scale: None }
    }
}

/// The factors the 2019 Paddle zoo's NeXtVLAD multiplies rgb by (PaddleCV/video/models/nextvlad/
/// nextvlad.py `build_model`: `sqrt(eigenvals[:1024, 0]) + 1e-4` in float32), from its
/// `data/dataset/youtube8m/yt8m_pca/eigenvals.npy` ([2048, 1] float32).
pub fn read_nextvlad_eigen_scale(path: &Path) -> Result<Vec<f32>> {
    let rows = crate::featstore::read_feature_file(path)?.modalities.remove(0).1;
    if let Some(e) = rows.column(0).iter().find(|e| **e < 0.0) {
        bail!("{}: negative eigenvalue {e}", path.display());
    }
    Ok(rows.column(0).iter().map(|e| e.sqrt() + 1e-4).collect())
}

/// Rows the starter code dequantised (`q·4/255 + 4/512 − 2`) as the zoo's NeXtVLAD computes its
/// rgb input instead: `(q·4/255 − 2)·scale[c]` (nextvlad.py moves the dequantisation into the
/// network, with bias −2 for rgb and −2 + 4/512 for audio, then multiplies rgb by the factors).
fn nextvlad_zoo_rgb(rows: &mut Array2<f32>, scale: &[f32]) -> Result<()> {
    if rows.ncols() > scale.len() {
        bail!("rgb has {} dimensions, the eigenvalues only {}", rows.ncols(), scale.len());
    }
    let (step, bias) = ((4.0f64 / 255.0) as f32, (4.0f64 / 512.0 - 2.0) as f32);
    for mut row in rows.rows_mut() {
        for (v, f) in row.iter_mut().zip(scale) {
            let q = ((*v - bias) / step).round();
            *v = (q * step + -2.0) * f;
        }
    }
    Ok(())
}

/// Frame-level (`SequenceExample`) or video-level (`Example`) records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Frame,
    Video,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Frame => "frame-level",
            Level::Video => "video-level",
        }
    }
}

fn single_bytes(ctx: &Features, key: &str) -> Result<Option<String>> {
    let Some(f) = ctx.feature.get(key) else { return Ok(None) };
    match &f.kind {
        Some(Kind::BytesList(b)) if b.value.len() == 1 => String::from_utf8(b.value[0].clone())
            .map(Some)
            .map_err(|_| anyhow::anyhow!("context feature {key:?} is not UTF-8")),
        _ => bail!("context feature {key:?} is not a single bytes value"),
    }
}

/// One record as a video: its features, label set and level. `max_frames` 0 keeps every frame.
pub fn parse_video(record: &[u8], max_frames: usize) -> Result<(VideoFeatures, Level)> {
    let seq = SequenceExample::decode(record).map_err(|e| anyhow::anyhow!("not a tf.train.Example: {e}"))?;
    let ctx = seq.context.unwrap_or_default();
    let id = match single_bytes(&ctx, "id")? {
        Some(id) => id,
        None => single_bytes(&ctx, "video_id")?.context("no `id` (or `video_id`) in the context")?,
    };
    if id.is_empty() {
        bail!("empty video id");
    }
    let at = |what: String| anyhow::anyhow!("video {id:?}: {what}");
    let labels = match ctx.feature.get("labels").map(|f| &f.kind) {
        None => vec![],
        Some(Some(Kind::Int64List(l))) => l.value.clone(),
        Some(_) => return Err(at("`labels` is not an int64 list".into())),
    };
    if let Some(l) = labels.iter().find(|l| **l < 0) {
        return Err(at(format!("negative label {l}")));
    }
    let mut modalities = Vec::new();
    let lists = seq.feature_lists.map(|l| l.feature_list).unwrap_or_default();
    let level = if lists.is_empty() { Level::Video } else { Level::Frame };
    if level == Level::Frame {
        for (name, list) in lists {
            modalities.push((
                name.clone(),
                frames(&list.feature, max_frames).map_err(|e| at(format!("{name}: {e}")))?,
            ));
        }
        modalities.sort_by(|a, b| a.0.cmp(&b.0));
        let counts: Vec<String> = modalities.iter().map(|(n, a)| format!("{n} {}", a.nrows())).collect();
        if modalities.iter().any(|(_, a)| a.nrows() != modalities[0].1.nrows()) {
            return Err(at(format!("modalities of different lengths ({})", counts.join(", "))));
        }
    } else {
        for (key, f) in &ctx.feature {
            if let (Some(name), Some(Kind::FloatList(v))) = (key.strip_prefix("mean_"), &f.kind) {
                if v.value.is_empty() {
                    return Err(at(format!("empty {key}")));
                }
                let row = Array2::from_shape_vec((1, v.value.len()), v.value.clone()).expect("one row");
                modalities.push((name.to_string(), row));
            }
        }
        if modalities.is_empty() {
            return Err(at("neither feature lists (frame-level) nor mean_* features (video-level)".into()));
        }
        modalities.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let video = VideoFeatures {
        id,
        label: if labels.is_empty() { None } else { Some(Label::Multi(labels)) },
        fps: (level == Level::Frame).then_some(1.0),
        duration: None,
        source: None,
        modalities,
        times: None,
    };
    Ok((video, level))
}

/// A feature list's frames as rows: one bytes entry per frame (uint8s, dequantised) or a float
/// list per frame (as they are); all frames of one width.
fn frames(list: &[super::tfrecord::Feature], max_frames: usize) -> Result<Array2<f32>> {
    let t = if max_frames == 0 { list.len() } else { list.len().min(max_frames) };
    if t == 0 {
        bail!("no frames");
    }
    let table: Vec<f32> = (0..=255u8).map(dequantize).collect();
    let mut data = Vec::new();
    let mut width = None;
    for (i, f) in list[..t].iter().enumerate() {
        let before = data.len();
        match &f.kind {
            Some(Kind::BytesList(b)) if b.value.len() == 1 => {
                data.extend(b.value[0].iter().map(|&q| table[q as usize]))
            }
            Some(Kind::FloatList(v)) => data.extend_from_slice(&v.value),
            _ => bail!("frame {i} is neither one bytes value nor a float list"),
        }
        let w = data.len() - before;
        match width {
            None if w == 0 => bail!("frame {i} is empty"),
            None => width = Some(w),
            Some(c) if c != w => bail!("frame {i} has {w} values, frame 0 {c}"),
            _ => {}
        }
    }
    let c = width.expect("t > 0");
    Ok(Array2::from_shape_vec((t, c), data).expect("t rows of c"))
}

/// Class names from `vocabulary.csv` by its `Index` column (which must run 0..N-1), from its
/// `Name` column; an empty name becomes the `KnowledgeGraphId`, else `class_<index>`.
pub fn read_vocabulary(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let header = lines.next().map(|(_, h)| split_csv(h.trim_start_matches('\u{feff}'))).unwrap_or_default();
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let (Some(index_col), Some(name_col)) = (col("Index"), col("Name")) else {
        bail!(
            "{}: the header has no Index and Name columns (expected YouTube-8M's vocabulary.csv)",
            path.display()
        );
    };
    let kg_col = col("KnowledgeGraphId");
    let mut names: Vec<Option<String>> = Vec::new();
    for (n, line) in lines {
        let f = split_csv(line);
        let at = || format!("{}: line {}", path.display(), n + 1);
        let index: usize = f
            .get(index_col)
            .and_then(|i| i.trim().parse().ok())
            .with_context(|| format!("{}: Index is not a non-negative integer", at()))?;
        let name = f.get(name_col).map(|s| s.trim().to_string()).unwrap_or_default();
        let name = match (name.is_empty(), kg_col.and_then(|k| f.get(k)).map(|k| k.trim())) {
            (false, _) => name,
            (true, Some(kg)) if !kg.is_empty() => kg.to_string(),
            _ => format!("class_{index}"),
        };
        if index >= names.len() {
            names.resize(index + 1, None);
        }
        if names[index].replace(name).is_some() {
            bail!("{}: index {index} appears twice", at());
        }
    }
    if names.is_empty() {
        bail!("{}: no classes", path.display());
    }
    names
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            n.with_context(|| format!("{}: no row for index {i} (indices must run 0..N-1)", path.display()))
        })
        .collect()
}

/// The TFRecord files of one split: the first of `dirs` (under `data`) holding `*.tfrecord`
/// files, else `data`'s own files starting with one of `prefixes` (the flat folder the official
/// download script fills). Sorted by name.
fn split_files(data: &Path, dirs: &[&str], prefixes: &[&str]) -> Result<Vec<PathBuf>> {
    let records = |dir: &Path, prefixes: &[&str]| -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        out.retain(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            p.is_file()
                && name.ends_with(".tfrecord")
                && (prefixes.is_empty() || prefixes.iter().any(|pre| name.starts_with(pre)))
        });
        out.sort();
        out
    };
    for d in dirs {
        let files = records(&data.join(d), &[]);
        if !files.is_empty() {
            return Ok(files);
        }
    }
    let files = records(data, prefixes);
    if files.is_empty() {
        let tried: Vec<String> = dirs.iter().map(|d| format!("{}/", data.join(d).display())).collect();
        bail!("no {}*.tfrecord files: looked in {} and {}", prefixes[0], tried.join(", "), data.display());
    }
    Ok(files)
}

/// What one split's conversion did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SplitSummary {
    pub files: usize,
    pub videos: usize,
    /// Records skipped: damaged ones (the rest of their file is not counted: it cannot be
    /// framed), ones that hold no valid video, and files that cannot be opened.
    pub bad_records: usize,
    /// Files whose framing broke, so their remaining records were skipped.
    pub damaged_files: usize,
    pub level: Option<Level>,
}

/// The videos of `files` into a store (left unfinished: the caller commits it with the other
/// outputs). Returns the writer, each video's `(id, labels)` and the summary. Problems with
/// one record or file are passed to `report` and counted; only output errors are returned.
pub fn convert_split(
    files: &[PathBuf],
    store: &Path,
    num_classes: usize,
    opts: &Youtube8mOptions,
    report: &mut dyn FnMut(&str),
) -> Result<(StoreWriter, Vec<(String, Vec<i64>)>, SplitSummary)> {
    let options = StoreOptions {
        root_attrs: vec![("source".into(), "YouTube-8M TFRecords (vconvert --lists youtube8m)".into())]
            .into_iter()
            .chain(opts.nextvlad_eigen_scale.as_ref().map(|_| {
                (
                    "rgb".to_string(),
                    "the 2019 Paddle zoo's NeXtVLAD input: (q*4/255 - 2)*(sqrt(eigenvalue) + 1e-4)"
                        .to_string(),
                )
            }))
            .collect(),
        f16: opts.f16,
    };
    let mut writer = StoreWriter::create(store, options)?;
    let mut list = Vec::new();
    let mut seen = HashSet::new();
    let mut s = SplitSummary { files: files.len(), ..Default::default() };
    for file in files {
        let mut reader = match TfRecordReader::open(file) {
            Ok(r) => r,
            Err(e) => {
                report(&format!("{e:#}; file skipped"));
                s.bad_records += 1;
                s.damaged_files += 1;
                continue;
            }
        };
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        loop {
            let record = match reader.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    report(&format!("{e:#}; the file's remaining records skipped"));
                    s.bad_records += 1;
                    s.damaged_files += 1;
                    break;
                }
            };
            let at = || format!("{}: record {}", file.display(), reader.records_read());
            let parsed = parse_video(&record, opts.max_frames).and_then(|(mut v, level)| {
                if let Some(scale) = &opts.nextvlad_eigen_scale {
                    if level == Level::Video {
                        bail!("video {:?}: the zoo's NeXtVLAD input is for frame-level records", v.id);
                    }
                    let id = v.id.clone();
                    for (_, rows) in v.modalities.iter_mut().filter(|(m, _)| m == "rgb") {
                        nextvlad_zoo_rgb(rows, scale).with_context(|| format!("video {id:?}"))?;
                    }
                }
                Ok((v, level))
            });
            let (mut video, level) = match parsed {
                Ok(v) => v,
                Err(e) => {
                    report(&format!("{}: {e:#}; record skipped", at()));
                    s.bad_records += 1;
                    continue;
                }
            };
            let labels = match &video.label {
                Some(Label::Multi(l)) => l.clone(),
                _ => vec![],
            };
            let problem = if s.level.is_some_and(|l| l != level) {
                Some(format!(
                    "a {} record among {} ones",
                    level.name(),
                    s.level.map(Level::name).unwrap_or("")
                ))
            } else if let Some(l) = labels.iter().find(|l| **l as usize >= num_classes) {
                Some(format!(
                    "video {:?}: label {l} is not among the {num_classes} classes of the vocabulary",
                    video.id
                ))
            } else if !seen.insert(video.id.clone()) {
                Some(format!("video {:?} appears twice", video.id))
            } else {
                None
            };
            if let Some(p) = problem {
                report(&format!("{}: {p}; record skipped", at()));
                s.bad_records += 1;
                continue;
            }
            s.level = Some(level);
            video.source = Some(name.clone());
            writer.write_from(&video, &name)?;
            list.push((video.id, labels));
            s.videos += 1;
        }
    }
    Ok((writer, list, s))
}

/// What `youtube8m_lists` wrote.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Youtube8mSummary {
    pub classes: usize,
    pub train: SplitSummary,
    pub val: SplitSummary,
}

/// YouTube-8M as downloaded (`DATA/vocabulary.csv` and the `train*`/`validate*` TFRecords in
/// `frame/train/` + `frame/validate/`, `video/train/` + `video/validate/`, `train/` +
/// `validate/`, PaddleVideo's `tf/train/` + `tf/val/`, or all in `DATA`) into `out`: `train.h5`,
/// `val.h5` (feature stores), `train.list`, `val.list` (`id l1,l2,...` lines) and `labels.txt`.
/// Nothing is written unless everything is (train.list last).
pub fn youtube8m_lists(
    data: &Path,
    out: &Path,
    opts: &Youtube8mOptions,
    report: &mut dyn FnMut(&str),
) -> Result<Youtube8mSummary> {
    let vocabulary = data.join("vocabulary.csv");
    if !vocabulary.is_file() {
        bail!(
            "{}: not found (YouTube-8M's class names, downloaded beside the TFRecords)",
            vocabulary.display()
        );
    }
    let labels = read_vocabulary(&vocabulary)?;
    let train_files = split_files(data, &["frame/train", "video/train", "train", "tf/train"], &["train"])?;
    let val_files = split_files(
        data,
        &["frame/validate", "video/validate", "validate", "val", "tf/val"],
        &["validate", "val"],
    )?;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let (train_store, train_list, train) =
        convert_split(&train_files, &out.join("train.h5"), labels.len(), opts, report)?;
    let (val_store, val_list, val) =
        convert_split(&val_files, &out.join("val.h5"), labels.len(), opts, report)?;
    if let (Some(a), Some(b)) = (train.level, val.level) {
        if a != b {
            bail!(
                "{}: the training files are {} and the validation files {}",
                data.display(),
                a.name(),
                b.name()
            );
        }
    }
    for (what, s) in [("training", &train), ("validation", &val)] {
        if s.videos == 0 {
            bail!("{}: no {what} videos could be read ({} files)", data.display(), s.files);
        }
    }
    let list_file = |name: &str, rows: &[(String, Vec<i64>)]| -> Result<AtomicFile> {
        let mut f = AtomicFile::create(out.join(name))?;
        for (id, l) in rows {
            let l: Vec<String> = l.iter().map(i64::to_string).collect();
            writeln!(f, "{id} {}", l.join(","))?;
        }
        Ok(f)
    };
    let mut names = AtomicFile::create(out.join("labels.txt"))?;
    for l in &labels {
        writeln!(names, "{l}")?;
    }
    let (val_file, train_file) = (list_file("val.list", &val_list)?, list_file("train.list", &train_list)?);
    train_store.finish()?;
    val_store.finish()?;
    names.commit()?;
    val_file.commit()?;
    train_file.commit()?;
    Ok(Youtube8mSummary { classes: labels.len(), train, val })
}

#[cfg(test)]
mod tests {
    use super::super::tfrecord::{
        frame_record, BytesList, Feature, FeatureList, FeatureLists, FloatList, Int64List,
    };
    use super::*;

    fn bytes(v: &[u8]) -> Feature {
        Feature { kind: Some(Kind::BytesList(BytesList { value: vec![v.to_vec()] })) }
    }

    fn context(id_key: &str, id: &str, labels: &[i64]) -> Features {
        let mut c = Features::default();
        c.feature.insert(id_key.into(), bytes(id.as_bytes()));
        c.feature.insert(
            "labels".into(),
            Feature { kind: Some(Kind::Int64List(Int64List { value: labels.to_vec() })) },
        );
        c
    }

    fn frame_video(id: &str, labels: &[i64], rgb: &[Vec<u8>], audio: &[Vec<u8>]) -> Vec<u8> {
        let list = |frames: &[Vec<u8>]| FeatureList { feature: frames.iter().map(|f| bytes(f)).collect() };
        let mut lists = FeatureLists::default();
        lists.feature_list.insert("rgb".into(), list(rgb));
        lists.feature_list.insert("audio".into(), list(audio));
        SequenceExample { context: Some(context("id", id, labels)), feature_lists: Some(lists) }
            .encode_to_vec()
    }

    #[test]
    fn dequantize_is_the_starter_codes() {
        // utils.Dequantize: scalar 4/255, bias 4/512 - 2, in float32.
        assert_eq!(dequantize(0), (4.0f64 / 512.0 - 2.0) as f32);
        assert_eq!(dequantize(255), 255.0 * (4.0f64 / 255.0) as f32 + (4.0f64 / 512.0 - 2.0) as f32);
        assert!((dequantize(128) - (128.0 * 4.0 / 255.0 + 4.0 / 512.0 - 2.0)).abs() < 1e-6);
        // In float16 (`--f16`) the 256 levels stay distinct and within 5e-4.
        let halves: Vec<f32> = (0..=255u8).map(|q| half::f16::from_f32(dequantize(q)).to_f32()).collect();
        assert!(halves.iter().enumerate().all(|(q, h)| (h - dequantize(q as u8)).abs() < 5e-4));
        assert!(halves.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn frame_level_sequence_examples_become_dequantised_rows() {
        let rgb: Vec<Vec<u8>> = (0..5u8).map(|t| vec![t, 255 - t, 128]).collect();
        let audio: Vec<Vec<u8>> = (0..5u8).map(|t| vec![t * 10, 0]).collect();
        let (v, level) = parse_video(&frame_video("Ab12", &[3, 1], &rgb, &audio), 4).unwrap();
        assert_eq!(level, Level::Frame);
        assert_eq!((v.id.as_str(), v.label.clone()), ("Ab12", Some(Label::Multi(vec![3, 1]))));
        assert_eq!(v.modalities.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["audio", "rgb"]);
        let r = v.modality("rgb").unwrap();
        assert_eq!(r.dim(), (4, 3), "cut to max_frames");
        assert_eq!(r[[2, 1]], dequantize(253));
        assert_eq!(v.modality("audio").unwrap()[[3, 0]], dequantize(30));
        assert_eq!(v.fps, Some(1.0));
        // Frames of different widths, and modalities of different lengths, are refused.
        let e =
            parse_video(&frame_video("x", &[1], &[vec![1, 2], vec![1]], &[vec![0], vec![0]]), 0).unwrap_err();
        assert_eq!(e.to_string(), "video \"x\": rgb: frame 1 has 1 values, frame 0 2");
        let e = parse_video(&frame_video("x", &[1], &[vec![1], vec![1]], &[vec![0]]), 0).unwrap_err();
        assert!(e.to_string().contains("modalities of different lengths (audio 1, rgb 2)"), "{e}");
    }

    #[test]
    fn video_level_examples_and_the_2017_video_id() {
        let mut c = context("video_id", "-09K4OPZSSo", &[66]);
        for (k, n) in [("mean_rgb", 4), ("mean_audio", 2)] {
            let v: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.0).collect();
            c.feature.insert(k.into(), Feature { kind: Some(Kind::FloatList(FloatList { value: v })) });
        }
        let record = super::super::tfrecord::Example { features: Some(c) }.encode_to_vec();
        let (v, level) = parse_video(&record, MAX_FRAMES).unwrap();
        assert_eq!(level, Level::Video);
        assert_eq!(v.id, "-09K4OPZSSo");
        assert_eq!(v.modality("rgb").unwrap().row(0).to_vec(), [-1.0, -0.5, 0.0, 0.5]);
        assert_eq!(v.modality("audio").unwrap().dim(), (1, 2));
        let e = parse_video(b"\x0a\x03abc", 0).unwrap_err().to_string();
        assert!(e.contains("not a tf.train.Example"), "{e}");
        let e = parse_video(&super::super::tfrecord::Example::default().encode_to_vec(), 0).unwrap_err();
        assert_eq!(e.to_string(), "no `id` (or `video_id`) in the context");
    }

    #[test]
    fn the_zoos_nextvlad_rgb_from_the_eigenvalues() {
        let d = tempfile::tempdir().unwrap();
        let npy = d.path().join("eigenvals.npy");
        let eig = ndarray::Array2::from_shape_vec((4, 1), vec![4.0f32, 9.0, 0.25, 1.0]).unwrap();
        ndarray_npy::write_npy(&npy, &eig).unwrap();
        let scale = read_nextvlad_eigen_scale(&npy).unwrap();
        assert_eq!(scale, [2.0001f32, 3.0001, 0.5001, 1.0001]);
        let rgb: Vec<Vec<u8>> = vec![vec![0, 9, 255], vec![128, 1, 2]];
        let (mut v, _) = parse_video(&frame_video("z", &[0], &rgb, &[vec![1], vec![2]]), 0).unwrap();
        let rows = &mut v.modalities.iter_mut().find(|(m, _)| m == "rgb").unwrap().1;
        nextvlad_zoo_rgb(rows, &scale).unwrap();
        // fluid: scale(cast(q), 4/255, bias=-2) then elementwise_mul with the factors, float32.
        let zoo = |q: u8, f: f32| (q as f32 * (4.0f64 / 255.0) as f32 + -2.0) * f;
        assert_eq!(rows.row(0).to_vec(), [zoo(0, scale[0]), zoo(9, scale[1]), zoo(255, scale[2])]);
        assert_eq!(rows[[1, 0]], zoo(128, scale[0]));
        let e = nextvlad_zoo_rgb(rows, &scale[..2]).unwrap_err().to_string();
        assert_eq!(e, "rgb has 3 dimensions, the eigenvalues only 2");
    }

    #[test]
    fn vocabulary_names_by_index_with_quoted_commas() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vocabulary.csv");
        std::fs::write(
            &p,
            "Index,TrainVideoCount,KnowledgeGraphId,Name,WikiUrl,Vertical1,Vertical2,Vertical3,WikiDescription\n\
             1,5,/m/01,\"Games, Video\",https://x,Games,,,\"He said \"\"hi\"\", then left\"\n\
             0,9,/m/00,Car,https://y,Autos,,,A car.\n\
             2,1,/m/02,,,,,,\n",
        )
        .unwrap();
        assert_eq!(read_vocabulary(&p).unwrap(), ["Car", "Games, Video", "/m/02"]);
        std::fs::write(&p, "Index,Name\n0,a\n2,c\n").unwrap();
        let e = read_vocabulary(&p).unwrap_err().to_string();
        assert!(e.ends_with("vocabulary.csv: no row for index 1 (indices must run 0..N-1)"), "{e}");
        std::fs::write(&p, "id,name\n0,a\n").unwrap();
        assert!(read_vocabulary(&p).unwrap_err().to_string().contains("no Index and Name columns"));
    }

    #[test]
    fn a_damaged_file_loses_its_rest_and_the_others_go_on() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("frame/train")).unwrap();
        std::fs::create_dir_all(p.join("frame/validate")).unwrap();
        std::fs::write(p.join("vocabulary.csv"), "Index,Name\n0,a\n1,b\n2,c\n").unwrap();
        let rec = |id: &str, l: &[i64]| {
            frame_record(&frame_video(id, l, &vec![vec![9; 4]; 3], &vec![vec![1; 2]; 3]))
        };
        let mut good = rec("t1", &[0]);
        good.extend(rec("t2", &[1, 2]));
        std::fs::write(p.join("frame/train/train0000.tfrecord"), &good).unwrap();
        let mut damaged = rec("t3", &[2]);
        damaged.extend(rec("t4", &[7])); // label outside the vocabulary: that record alone
        damaged.extend(rec("t5", &[0]));
        let cut = damaged.len() - 10;
        damaged.extend(rec("t6", &[0]));
        damaged.truncate(cut); // t5 cut short: t6 is lost with it
        std::fs::write(p.join("frame/train/train0001.tfrecord"), &damaged).unwrap();
        std::fs::write(p.join("frame/validate/validate0000.tfrecord"), rec("v1", &[1])).unwrap();
        let mut msgs = Vec::new();
        let out = p.join("out");
        let s = youtube8m_lists(p, &out, &Default::default(), &mut |m| msgs.push(m.to_string())).unwrap();
        assert_eq!((s.train.videos, s.train.bad_records, s.train.damaged_files), (3, 2, 1), "{msgs:?}");
        assert_eq!(s.val.videos, 1);
        assert!(
            msgs[0]
                .contains("train0001.tfrecord: record 2: video \"t4\": label 7 is not among the 3 classes"),
            "{msgs:?}"
        );
        assert!(
            msgs[1].contains("train0001.tfrecord: record 3 at byte")
                && msgs[1].contains("remaining records skipped"),
            "{msgs:?}"
        );
        assert_eq!(std::fs::read_to_string(out.join("train.list")).unwrap(), "t1 0\nt2 1,2\nt3 2\n");
        assert_eq!(std::fs::read_to_string(out.join("labels.txt")).unwrap(), "a\nb\nc\n");
        let videos = crate::featstore::read_features(&out.join("train.h5")).unwrap();
        assert_eq!(videos.len(), 3);
        assert_eq!(videos[1].modality("rgb").unwrap()[[2, 3]], dequantize(9));
        assert_eq!(videos[1].label, Some(Label::Multi(vec![1, 2])));
        // float16 stores keep the levels to f16's precision.
        let opts = Youtube8mOptions { f16: true, max_frames: 2, ..Default::default() };
        youtube8m_lists(p, &p.join("out16"), &opts, &mut |_| {}).unwrap();
        let videos = crate::featstore::read_features(&p.join("out16/train.h5")).unwrap();
        let rgb = videos[1].modality("rgb").unwrap();
        assert_eq!((rgb.nrows(), rgb[[1, 3]]), (2, half::f16::from_f32(dequantize(9)).to_f32()));
        // No validation files: nothing at all is written.
        std::fs::remove_file(p.join("frame/validate/validate0000.tfrecord")).unwrap();
        let out2 = p.join("out2");
        let e = youtube8m_lists(p, &out2, &Default::default(), &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("no validate*.tfrecord files"), "{e}");
        assert!(!out2.exists() || std::fs::read_dir(&out2).unwrap().next().is_none());
    }
}
