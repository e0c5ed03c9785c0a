//! Official dataset annotations into vidkit lists (`path label` lines, paths relative to the
//! data directory) and label names, with class indices as MMAction2's
//! `tools/data/parse_file_list.py` assigns them:
//! - UCF101: `classInd.txt` (1-based, minus one), `trainlist0N.txt` / `testlist0N.txt`, the
//!   label of every video from its class folder;
//! - HMDB51: classes in sorted order of their folders, `<class>_test_split<N>.txt` with flag 1
//!   for training, 2 for testing, 0 unused;
//! - Kinetics-400/600/700: the CSVs `label,youtube_id,time_start,time_end,split`, classes the
//!   sorted training labels with spaces as underscores, videos named
//!   `<id>_<start:06d>_<end:06d>.<ext>` in a subset folder, flat or in label folders;
//! - Something-Something v2: `labels.json` (template → index) and the `train`/`validation`
//!   JSON lists, whose `template` (brackets removed) names the class; videos `<id>.webm`.
//!
//! Both the official archives' layout as extracted (`UCF-101/<class>/*.avi` + `ucfTrainTestlist/`;
//! HMDB51's `<class>/*.avi`, possibly under `hmdb51_org/`, + `testTrainMulti_7030_splits/`) and
//! MMAction2's `videos/` + `annotations/` layout are found by their official names.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A dataset's lists for one split.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatasetLists {
    /// `(path relative to the data directory, labels)`: one label, or several for multi-label
    /// sets (Charades).
    pub train: Vec<(String, Vec<usize>)>,
    pub val: Vec<(String, Vec<usize>)>,
    pub labels: Vec<String>,
    /// Listed videos that are not on disk (left out of the lists).
    pub missing: Vec<String>,
    /// Listed videos left out for their annotation (Charades videos without any action).
    pub skipped: Vec<String>,
}

/// The first of `candidates` (relative to `data`) that exists, or an error naming them all.
pub(super) fn find(data: &Path, candidates: &[&str], what: &str) -> Result<PathBuf> {
    for c in candidates {
        let p = data.join(c);
        if p.exists() {
            return Ok(p);
        }
    }
    let tried: Vec<String> = candidates.iter().map(|c| data.join(c).display().to_string()).collect();
    bail!("{what} not found: looked for {}", tried.join(", "))
}

pub(super) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))
}

/// Paths relative to `data` of a video `rel` inside the video folder `videos`.
fn relative(data: &Path, videos: &Path, rel: &str) -> String {
    let full = videos.join(rel);
    full.strip_prefix(data).unwrap_or(&full).display().to_string()
}

/// UCF101 split `split` (1-3).
pub fn ucf101_lists(data: &Path, split: u32) -> Result<DatasetLists> {
    if !(1..=3).contains(&split) {
        bail!("UCF101 has splits 1, 2 and 3, not {split}");
    }
    let ann = find(
        data,
        &["ucfTrainTestlist", "annotations", "UCF101TrainTestSplits-RecognitionTask/ucfTrainTestlist"],
        "UCF101's annotation folder (ucfTrainTestlist/ or annotations/)",
    )?;
    let videos = find(data, &["UCF-101", "videos", "UCF101"], "UCF101's video folder (UCF-101/ or videos/)")?;
    let class_ind = find(&ann, &["classInd.txt"], "UCF101's classInd.txt")?;
    let mut labels: Vec<(usize, String)> = Vec::new();
    for (n, line) in read(&class_ind)?.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let idx: usize = match (f.len(), f[0].parse::<usize>()) {
            (2, Ok(i)) if i >= 1 => i - 1,
            _ => bail!("{}: line {}: expected `index name`", class_ind.display(), n + 1),
        };
        labels.push((idx, f[1].to_string()));
    }
    labels.sort();
    if labels.iter().enumerate().any(|(i, (k, _))| i != *k) {
        bail!("{}: class indices must run 1..N", class_ind.display());
    }
    let names: Vec<String> = labels.into_iter().map(|(_, n)| n).collect();
    let mut out = DatasetLists { labels: names.clone(), ..Default::default() };
    for (file, into_train) in
        [(format!("trainlist{split:02}.txt"), true), (format!("testlist{split:02}.txt"), false)]
    {
        let path = find(&ann, &[file.as_str()], &format!("UCF101's {file}"))?;
        for (n, line) in read(&path)?.lines().enumerate() {
            let Some(video) = line.split_whitespace().next() else { continue };
            let class = video.split('/').next().unwrap_or_default();
            let label = names.iter().position(|c| c == class).with_context(|| {
                format!("{}: line {}: class {class:?} is not in classInd.txt", path.display(), n + 1)
            })?;
            let rel = relative(data, &videos, video);
            if !data.join(&rel).exists() {
                out.missing.push(rel);
                continue;
            }
            if into_train {
                out.train.push((rel, vec![label]));
            } else {
                out.val.push((rel, vec![label]));
            }
        }
    }
    Ok(out)
}

/// HMDB51 split `split` (1-3).
pub fn hmdb51_lists(data: &Path, split: u32) -> Result<DatasetLists> {
    if !(1..=3).contains(&split) {
        bail!("HMDB51 has splits 1, 2 and 3, not {split}");
    }
    let ann = find(
        data,
        &["testTrainMulti_7030_splits", "annotations"],
        "HMDB51's split folder (testTrainMulti_7030_splits/ or annotations/)",
    )?;
    let videos = find(data, &["hmdb51_org", "videos", "."], "HMDB51's video folder")?;
    let suffix = format!("_test_split{split}.txt");
    let mut classes: Vec<String> = std::fs::read_dir(&ann)
        .with_context(|| format!("{}: cannot list", ann.display()))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(&suffix).map(str::to_string))
        .collect();
    classes.sort();
    if classes.is_empty() {
        bail!("{}: no `<class>{suffix}` files", ann.display());
    }
    let mut out = DatasetLists { labels: classes.clone(), ..Default::default() };
    for (label, class) in classes.iter().enumerate() {
        let path = ann.join(format!("{class}{suffix}"));
        for (n, line) in read(&path)?.lines().enumerate() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.is_empty() {
                continue;
            }
            if f.len() != 2 {
                bail!("{}: line {}: expected `video flag`", path.display(), n + 1);
            }
            let rel = relative(data, &videos, &format!("{class}/{}", f[0]));
            let into = match f[1] {
                "1" => &mut out.train,
                "2" => &mut out.val,
                "0" => continue,
                other => bail!("{}: line {}: flag {other:?} is not 0, 1 or 2", path.display(), n + 1),
            };
            if data.join(&rel).exists() {
                into.push((rel, vec![label]));
            } else {
                out.missing.push(rel);
            }
        }
    }
    Ok(out)
}

/// Kinetics (any of 400/600/700): the training and validation CSVs and their videos. Listed
/// videos that are not on disk are counted in `missing` (downloads always miss some).
pub fn kinetics_lists(data: &Path) -> Result<DatasetLists> {
    let ann = find(data, &["annotations", "."], "Kinetics' annotation folder")?;
    let train_csv = find(
        &ann,
        &["kinetics_train.csv", "train.csv"],
        "Kinetics' training CSV (kinetics_train.csv or train.csv)",
    )?;
    let val_csv = find(
        &ann,
        &["kinetics_val.csv", "validate.csv", "val.csv"],
        "Kinetics' validation CSV (kinetics_val.csv, validate.csv or val.csv)",
    )?;
    let train_dir =
        find(data, &["videos_train", "train"], "Kinetics' training videos (videos_train/ or train/)")?;
    let val_dir = find(
        data,
        &["videos_val", "val", "validate"],
        "Kinetics' validation videos (videos_val/, val/ or validate/)",
    )?;
    // `convert_label`: quotes dropped, spaces as underscores.
    let label_name = |s: &str| s.replace('"', "").replace(' ', "_");
    let rows = |path: &Path| -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (n, line) in read(path)?.lines().enumerate().skip(1) {
            if line.trim().is_empty() {
                continue;
            }
            let f = split_csv(line);
            let bad = || {
                format!(
                    "{}: line {}: expected `label,youtube_id,time_start,time_end,...`",
                    path.display(),
                    n + 1
                )
            };
            if f.len() < 4 {
                bail!("{}", bad());
            }
            let t0: f64 = f[2].trim().parse().with_context(bad)?;
            let t1: f64 = f[3].trim().parse().with_context(bad)?;
            out.push((label_name(&f[0]), format!("{}_{:06}_{:06}", f[1].trim(), t0 as i64, t1 as i64)));
        }
        Ok(out)
    };
    let train = rows(&train_csv)?;
    let mut labels: Vec<String> = train.iter().map(|(l, _)| l.clone()).collect();
    labels.sort();
    labels.dedup();
    let mut out = DatasetLists { labels, ..Default::default() };
    for (rows, dir, into_train) in [(train, &train_dir, true), (rows(&val_csv)?, &val_dir, false)] {
        for (label, name) in rows {
            let Some(index) = out.labels.iter().position(|l| *l == label) else {
                bail!("{}: label {label:?} is not among the training labels", val_csv.display());
            };
            let found = ["mp4", "mkv", "webm", "avi"].iter().find_map(|ext| {
                let file = format!("{name}.{ext}");
                [dir.join(&file), dir.join(&label).join(&file), dir.join(label.replace('_', " ")).join(&file)]
                    .into_iter()
                    .find(|p| p.exists())
            });
            match found {
                Some(p) => {
                    let rel = p.strip_prefix(data).unwrap_or(&p).display().to_string();
                    if into_train {
                        out.train.push((rel, vec![index]))
                    } else {
                        out.val.push((rel, vec![index]))
                    }
                }
                None => out.missing.push(name),
            }
        }
    }
    Ok(out)
}

/// Something-Something v2: `something-something-v2-{labels,train,validation}.json` (or
/// `labels.json`, `train.json`, `validation.json`), videos `<id>.webm` in
/// `20bn-something-something-v2/` or `videos/`.
pub fn sthv2_lists(data: &Path) -> Result<DatasetLists> {
    let ann = find(data, &["annotations", "labels", "."], "Something-Something v2's annotation folder")?;
    let json = |names: &[&str], what: &str| -> Result<(PathBuf, serde_json::Value)> {
        let p = find(&ann, names, what)?;
        let v = serde_json::from_str(&read(&p)?).with_context(|| format!("{}: not JSON", p.display()))?;
        Ok((p, v))
    };
    let (lpath, labels) =
        json(&["something-something-v2-labels.json", "labels.json"], "Something-Something v2's labels.json")?;
    let map = labels
        .as_object()
        .with_context(|| format!("{}: not an object of template -> index", lpath.display()))?;
    let mut names = vec![String::new(); map.len()];
    for (template, idx) in map {
        let i: usize = idx
            .as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| idx.as_u64().map(|u| u as usize))
            .filter(|i| *i < names.len())
            .with_context(|| {
                format!("{}: {template:?} has index {idx}, not 0..{}", lpath.display(), names.len())
            })?;
        names[i] = template.clone();
    }
    let videos = find(
        data,
        &["20bn-something-something-v2", "videos"],
        "Something-Something v2's videos (20bn-something-something-v2/ or videos/)",
    )?;
    let mut out = DatasetLists { labels: names.clone(), ..Default::default() };
    for (files, into_train) in [
        (["something-something-v2-train.json", "train.json"], true),
        (["something-something-v2-validation.json", "validation.json"], false),
    ] {
        let (path, list) = json(&files, &format!("Something-Something v2's {}", files[1]))?;
        let items = list.as_array().with_context(|| format!("{}: not a list", path.display()))?;
        for (k, item) in items.iter().enumerate() {
            let id = item
                .get("id")
                .and_then(|v| v.as_str())
                .with_context(|| format!("{}: item {k}: no `id`", path.display()))?;
            let template = item
                .get("template")
                .and_then(|v| v.as_str())
                .with_context(|| format!("{}: item {k}: no `template`", path.display()))?
                .replace(['[', ']'], "");
            let label = names.iter().position(|n| *n == template).with_context(|| {
                format!("{}: item {k}: template {template:?} is not in {}", path.display(), lpath.display())
            })?;
            let rel = relative(data, &videos, &format!("{id}.webm"));
            if !data.join(&rel).exists() {
                out.missing.push(rel);
            } else if into_train {
                out.train.push((rel, vec![label]));
            } else {
                out.val.push((rel, vec![label]));
            }
        }
    }
    Ok(out)
}

/// One CSV line's fields (double-quoted fields may hold commas).
pub(super) fn split_csv(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // RFC 4180: a doubled quote inside quotes is one quote character.
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Writes `train.list`, `val.list` and `labels.txt` into `out` (each atomically).
pub fn write_dataset_lists(lists: &DatasetLists, out: &Path) -> Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    for (name, rows) in [("train.list", &lists.train), ("val.list", &lists.val)] {
        let mut f = crate::io::AtomicFile::create(&out.join(name))?;
        for (p, l) in rows.iter() {
            let l: Vec<String> = l.iter().map(|c| c.to_string()).collect();
            writeln!(f, "{p} {}", l.join(","))?;
        }
        f.commit()?;
    }
    let mut f = crate::io::AtomicFile::create(&out.join("labels.txt"))?;
    for l in &lists.labels {
        writeln!(f, "{l}")?;
    }
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn ucf101_official_layout() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        touch(&p.join("UCF-101/Archery/v_Archery_g01_c01.avi"));
        touch(&p.join("UCF-101/Biking/v_Biking_g02_c01.avi"));
        std::fs::create_dir_all(p.join("ucfTrainTestlist")).unwrap();
        std::fs::write(p.join("ucfTrainTestlist/classInd.txt"), "1 Archery\n2 Biking\n").unwrap();
        std::fs::write(
            p.join("ucfTrainTestlist/trainlist01.txt"),
            "Archery/v_Archery_g01_c01.avi 1\nArchery/v_gone.avi 1\n",
        )
        .unwrap();
        std::fs::write(p.join("ucfTrainTestlist/testlist01.txt"), "Biking/v_Biking_g02_c01.avi\n").unwrap();
        let l = ucf101_lists(p, 1).unwrap();
        assert_eq!(l.train, [("UCF-101/Archery/v_Archery_g01_c01.avi".to_string(), vec![0])]);
        assert_eq!(l.val, [("UCF-101/Biking/v_Biking_g02_c01.avi".to_string(), vec![1])]);
        assert_eq!(l.missing, ["UCF-101/Archery/v_gone.avi"]);
        let e = ucf101_lists(p, 2).unwrap_err().to_string();
        assert!(e.contains("trainlist02.txt not found"), "{e}");
    }

    #[test]
    fn kinetics_csvs_names_and_missing_videos() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        touch(&p.join("videos_train/abc_000010_000020.mp4"));
        touch(&p.join("videos_train/playing guitar/def_000001_000011.mp4"));
        touch(&p.join("videos_val/ghi_000005_000015.mkv"));
        std::fs::create_dir_all(p.join("annotations")).unwrap();
        std::fs::write(
            p.join("annotations/kinetics_train.csv"),
            "label,youtube_id,time_start,time_end,split\nriding bike,abc,10,20,train\n\"playing guitar\",def,1.0,11.0,train\nriding bike,zzz,0,10,train\n",
        )
        .unwrap();
        std::fs::write(
            p.join("annotations/kinetics_val.csv"),
            "label,youtube_id,time_start,time_end,split\nplaying guitar,ghi,5,15,val\n",
        )
        .unwrap();
        let l = kinetics_lists(p).unwrap();
        assert_eq!(l.labels, ["playing_guitar", "riding_bike"]);
        assert_eq!(
            l.train,
            [
                ("videos_train/abc_000010_000020.mp4".to_string(), vec![1]),
                ("videos_train/playing guitar/def_000001_000011.mp4".to_string(), vec![0])
            ]
        );
        assert_eq!(l.val, [("videos_val/ghi_000005_000015.mkv".to_string(), vec![0])]);
        assert_eq!(l.missing, ["zzz_000000_000010"]);
    }

    #[test]
    fn hmdb51_flags_and_sorted_classes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for v in ["wave/a.avi", "wave/b.avi", "clap/c.avi"] {
            touch(&p.join("hmdb51_org").join(v));
        }
        std::fs::create_dir_all(p.join("testTrainMulti_7030_splits")).unwrap();
        std::fs::write(p.join("testTrainMulti_7030_splits/wave_test_split1.txt"), "a.avi 1 \nb.avi 2 \n")
            .unwrap();
        std::fs::write(p.join("testTrainMulti_7030_splits/clap_test_split1.txt"), "c.avi 0 \n").unwrap();
        let l = hmdb51_lists(p, 1).unwrap();
        assert_eq!(l.labels, ["clap", "wave"]);
        assert_eq!(l.train, [("hmdb51_org/wave/a.avi".to_string(), vec![1])]);
        assert_eq!(l.val, [("hmdb51_org/wave/b.avi".to_string(), vec![1])]);
        assert!(hmdb51_lists(&p.join("nope"), 1).unwrap_err().to_string().contains("split folder"));
    }
}
