//! Official dataset annotations into vidkit lists (`path label` lines, paths relative to the
//! data directory) and label names, with class indices as MMAction2's
//! `tools/data/parse_file_list.py` assigns them:
//! - UCF101: `classInd.txt` (1-based, minus one), `trainlist0N.txt` / `testlist0N.txt`, the
//!   label of every video from its class folder;
//! - HMDB51: classes in sorted order of their folders, `<class>_test_split<N>.txt` with flag 1
//!   for training, 2 for testing, 0 unused.
//!
//! Both the official archives' layout as extracted (`UCF-101/<class>/*.avi` + `ucfTrainTestlist/`;
//! HMDB51's `<class>/*.avi`, possibly under `hmdb51_org/`, + `testTrainMulti_7030_splits/`) and
//! MMAction2's `videos/` + `annotations/` layout are found by their official names.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A dataset's lists for one split.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatasetLists {
    /// `(path relative to the data directory, label)`.
    pub train: Vec<(String, usize)>,
    pub val: Vec<(String, usize)>,
    pub labels: Vec<String>,
    /// Listed videos that are not on disk (left out of the lists).
    pub missing: Vec<String>,
}

/// The first of `candidates` (relative to `data`) that exists, or an error naming them all.
fn find(data: &Path, candidates: &[&str], what: &str) -> Result<PathBuf> {
    for c in candidates {
        let p = data.join(c);
        if p.exists() {
            return Ok(p);
        }
    }
    let tried: Vec<String> = candidates.iter().map(|c| data.join(c).display().to_string()).collect();
    bail!("{what} not found: looked for {}", tried.join(", "))
}

fn read(path: &Path) -> Result<String> {
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
                out.train.push((rel, label));
            } else {
                out.val.push((rel, label));
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
                into.push((rel, label));
            } else {
                out.missing.push(rel);
            }
        }
    }
    Ok(out)
}

/// Writes `train.list`, `val.list` and `labels.txt` into `out` (each atomically).
pub fn write_dataset_lists(lists: &DatasetLists, out: &Path) -> Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    for (name, rows) in [("train.list", &lists.train), ("val.list", &lists.val)] {
        let mut f = crate::io::AtomicFile::create(&out.join(name))?;
        for (p, l) in rows.iter() {
            writeln!(f, "{p} {l}")?;
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
        assert_eq!(l.train, [("UCF-101/Archery/v_Archery_g01_c01.avi".to_string(), 0)]);
        assert_eq!(l.val, [("UCF-101/Biking/v_Biking_g02_c01.avi".to_string(), 1)]);
        assert_eq!(l.missing, ["UCF-101/Archery/v_gone.avi"]);
        let e = ucf101_lists(p, 2).unwrap_err().to_string();
        assert!(e.contains("trainlist02.txt not found"), "{e}");
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
        assert_eq!(l.train, [("hmdb51_org/wave/a.avi".to_string(), 1)]);
        assert_eq!(l.val, [("hmdb51_org/wave/b.avi".to_string(), 1)]);
        assert!(hmdb51_lists(&p.join("nope"), 1).unwrap_err().to_string().contains("split folder"));
    }
}
