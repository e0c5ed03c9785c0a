//! Charades (Sigurdsson et al. 2016) into multi-label vidkit lists: the official annotation
//! download's `Charades_v1_classes.txt` (`c000 Holding some clothes`: class N is line N) and
//! `Charades_v1_train.csv` / `Charades_v1_test.csv` (header `id,subject,scene,...,actions,length`,
//! `actions` as `c092 11.90 21.20;c147 0.00 12.60`), videos `<id>.mp4` in `Charades_v1_480/`
//! (the 480p download), `Charades_v1/` or `videos/`. A video's labels are every class that
//! occurs in it, as the official classification task scores them (per-video scores, mAP over
//! classes: `Charades_v1_classify.m`); the segments' times are not used. Videos without any
//! action are left out and counted (`skipped`), listed videos not on disk counted in `missing`.

use super::datasets::{find, read, split_csv, DatasetLists};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Class names from `Charades_v1_classes.txt`, checking that line N is `cNNN`.
fn classes(path: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (n, line) in read(path)?.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (id, name) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        if id != format!("c{:03}", out.len()) {
            bail!("{}: line {}: expected class c{:03}, found {id:?}", path.display(), n + 1, out.len());
        }
        out.push(name.trim().to_string());
    }
    if out.is_empty() {
        bail!("{}: no classes", path.display());
    }
    Ok(out)
}

/// `(id, sorted distinct classes)` of every row of a Charades CSV.
fn rows(path: &Path, num_classes: usize) -> Result<Vec<(String, Vec<usize>)>> {
    let text = read(path)?;
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, h)| split_csv(h)).unwrap_or_default();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .with_context(|| format!("{}: no {name:?} column in the header", path.display()))
    };
    let (id_col, actions_col) = (col("id")?, col("actions")?);
    let mut out = Vec::new();
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f = split_csv(line);
        let at = || format!("{}: line {}", path.display(), n + 1);
        let (Some(id), Some(actions)) = (f.get(id_col), f.get(actions_col)) else {
            bail!("{}: fewer fields than the header's", at());
        };
        let mut labels = Vec::new();
        for action in actions.split(';').filter(|a| !a.trim().is_empty()) {
            let mut parts = action.split_whitespace();
            let class = parts.next().unwrap_or("");
            let times: Vec<Result<f64, _>> = parts.map(str::parse::<f64>).collect();
            if times.len() != 2 || times.iter().any(|t| t.is_err()) {
                bail!("{}: action {action:?} is not `cNNN start end`", at());
            }
            let index: usize = class
                .strip_prefix('c')
                .and_then(|c| c.parse().ok())
                .with_context(|| format!("{}: action class {class:?} is not cNNN", at()))?;
            if index >= num_classes {
                bail!("{}: class {class} is not among the {num_classes} classes", at());
            }
            labels.push(index);
        }
        labels.sort_unstable();
        labels.dedup();
        out.push((id.trim().to_string(), labels));
    }
    Ok(out)
}

/// Charades' training and test sets as multi-label lists.
pub fn charades_lists(data: &Path) -> Result<DatasetLists> {
    let ann = find(data, &["Charades", "annotations", "."], "Charades' annotation folder")?;
    let classes_txt = find(&ann, &["Charades_v1_classes.txt"], "Charades_v1_classes.txt")?;
    let train_csv = find(&ann, &["Charades_v1_train.csv"], "Charades_v1_train.csv")?;
    let test_csv = find(&ann, &["Charades_v1_test.csv"], "Charades_v1_test.csv")?;
    let videos = find(
        data,
        &["Charades_v1_480", "Charades_v1", "videos"],
        "Charades' videos (Charades_v1_480/, Charades_v1/ or videos/)",
    )?;
    let labels = classes(&classes_txt)?;
    let mut out = DatasetLists { labels, ..Default::default() };
    for (csv, into_train) in [(&train_csv, true), (&test_csv, false)] {
        for (id, classes) in rows(csv, out.labels.len())? {
            if classes.is_empty() {
                out.skipped.push(id);
                continue;
            }
            let file = videos.join(format!("{id}.mp4"));
            if !file.exists() {
                out.missing.push(id);
                continue;
            }
            let rel = file.strip_prefix(data).unwrap_or(&file).display().to_string();
            if into_train {
                out.train.push((rel, classes));
            } else {
                out.val.push((rel, classes));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charades_csvs_into_multi_label_lists() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("Charades")).unwrap();
        std::fs::create_dir_all(p.join("Charades_v1_480")).unwrap();
        for id in ["AAA01", "BBB02", "CCC03"] {
            std::fs::write(p.join(format!("Charades_v1_480/{id}.mp4")), b"x").unwrap();
        }
        std::fs::write(
            p.join("Charades/Charades_v1_classes.txt"),
            "c000 Holding some clothes\nc001 Putting clothes somewhere\nc002 Taking a cup from somewhere\n",
        )
        .unwrap();
        let header =
            "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n";
        std::fs::write(
            p.join("Charades/Charades_v1_train.csv"),
            format!(
                "{header}AAA01,S1,Kitchen,6,7,Yes,\"A person, holding clothes.\",clothes,desc,c002 1.0 3.5;c000 0.00 12.60;c002 4 5,30.1\n\
                 EMPTY9,S2,Hall,6,7,Yes,script,,desc,,10.0\nGONE1,S3,Hall,6,7,Yes,s,,d,c001 0 1,5\n"
            ),
        )
        .unwrap();
        std::fs::write(
            p.join("Charades/Charades_v1_test.csv"),
            format!("{header}BBB02,S1,Hall,6,7,Yes,s,,d,c001 2.1 4.0,8\n"),
        )
        .unwrap();
        let l = charades_lists(p).unwrap();
        assert_eq!(
            l.labels,
            ["Holding some clothes", "Putting clothes somewhere", "Taking a cup from somewhere"]
        );
        assert_eq!(l.train, [("Charades_v1_480/AAA01.mp4".to_string(), vec![0, 2])]);
        assert_eq!(l.val, [("Charades_v1_480/BBB02.mp4".to_string(), vec![1])]);
        assert_eq!((l.skipped, l.missing), (vec!["EMPTY9".to_string()], vec!["GONE1".to_string()]));
        // An unknown class names the file and line.
        std::fs::write(
            p.join("Charades/Charades_v1_test.csv"),
            format!("{header}BBB02,S1,H,6,7,Y,s,,d,c157 0 1,8\n"),
        )
        .unwrap();
        let e = charades_lists(p).unwrap_err().to_string();
        assert!(e.contains("Charades_v1_test.csv: line 2: class c157 is not among the 3 classes"), "{e}");
    }
}
