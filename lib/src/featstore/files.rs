//! Per-video feature files as the localization peers keep them: PaddleVideo's BMN reads one
//! `.npy` per video (`[100, 400]`, rows are time; `paddlevideo/loader/pipelines/anet_pipeline.py`
//! `LoadFeat`), MMAction2's one `.csv` per video (a header line `f0,f1,...`, then one row per
//! step; `activitynet_feature_postprocessing.py`, `LoadLocalizationFeature`). The video id is
//! the file name without its extension.

use super::VideoFeatures;
use anyhow::{bail, Context, Result};
use ndarray::{Array2, Ix2};
use std::path::{Path, PathBuf};

/// Whether `path` names a per-video features file (by its extension).
pub fn is_feature_file(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("npy" | "csv"))
}

/// One video's features from a `.npy` ([T, C] float32 or float64) or `.csv` file.
pub fn read_feature_file(path: &Path) -> Result<VideoFeatures> {
    let id = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .with_context(|| format!("{}: no file name", path.display()))?;
    let rows = match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => read_npy_rows(path)?,
        Some("csv") => read_csv_rows(path)?,
        _ => bail!("{}: not a features file (.npy or .csv)", path.display()),
    };
    if rows.nrows() == 0 || rows.ncols() == 0 {
        bail!("{}: empty features {:?}", path.display(), rows.dim());
    }
    if let Some((i, _)) = rows.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        let c = rows.ncols();
        bail!("{}: row {} column {} is not a finite number", path.display(), i / c, i % c);
    }
    Ok(VideoFeatures {
        id,
        label: None,
        fps: None,
        duration: None,
        source: Some(path.display().to_string()),
        modalities: vec![(super::DEFAULT_MODALITY.to_string(), rows)],
        times: None,
    })
}

fn read_npy_rows(path: &Path) -> Result<Array2<f32>> {
    let open = || std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()));
    if let Ok(a) = ndarray_npy::ReadNpyExt::read_npy(open()?) {
        return Ok(a);
    }
    let a: ndarray::ArrayD<f64> = ndarray_npy::ReadNpyExt::read_npy(open()?)
        .map_err(|e| anyhow::anyhow!("{}: not a float32 or float64 NumPy array: {e}", path.display()))?;
    let shape = a.shape().to_vec();
    let a = a
        .into_dimensionality::<Ix2>()
        .map_err(|_| anyhow::anyhow!("{}: array of shape {shape:?}; features are [T, C]", path.display()))?;
    Ok(a.mapv(|x| x as f32))
}

fn read_csv_rows(path: &Path) -> Result<Array2<f32>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut data = Vec::new();
    let mut cols = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let values: Result<Vec<f32>, _> = fields.iter().map(|f| f.parse::<f32>()).collect();
        let values = match values {
            Ok(v) => v,
            // The header line (f0,f1,...): the first non-empty line, not a row of numbers.
            Err(_) if cols.is_none() && data.is_empty() => continue,
            Err(e) => bail!("{}: line {}: not a row of numbers: {e}", path.display(), n + 1),
        };
        match cols {
            None => cols = Some(values.len()),
            Some(c) if c != values.len() => {
                bail!("{}: line {}: {} columns after rows of {c}", path.display(), n + 1, values.len())
            }
            Some(_) => {}
        }
        data.extend(values);
    }
    let c = cols.with_context(|| format!("{}: no rows of numbers", path.display()))?;
    Ok(Array2::from_shape_vec((data.len() / c, c), data)?)
}

/// The features files of a directory, in name order; an error when there are none.
pub fn feature_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_feature_file(p))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no .npy or .csv feature files", dir.display());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_and_csv_files_read_as_one_video_each() {
        let d = tempfile::tempdir().unwrap();
        let a = Array2::from_shape_fn((4, 3), |(i, j)| (i * 3 + j) as f32 * 0.5);
        ndarray_npy::write_npy(d.path().join("v_a.npy"), &a).unwrap();
        ndarray_npy::write_npy(d.path().join("v_b.npy"), &a.mapv(|x| x as f64 + 1.0)).unwrap();
        std::fs::write(d.path().join("v_c.csv"), "f0,f1,f2\n0.0000,0.5000,1.0000\n1.5,2,2.5\n").unwrap();
        std::fs::write(d.path().join("notes.txt"), "not features").unwrap();
        let files = feature_files(d.path()).unwrap();
        let videos: Vec<VideoFeatures> = files.iter().map(|f| read_feature_file(f).unwrap()).collect();
        assert_eq!(videos.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), ["v_a", "v_b", "v_c"]);
        assert_eq!(videos[0].modality("rgb").unwrap(), &a);
        assert_eq!(videos[1].modality("rgb").unwrap(), &(a.clone() + 1.0));
        assert_eq!(videos[2].modality("rgb").unwrap(), &a.slice(ndarray::s![..2, ..]));
        // bad files: ragged rows, NaN, a 3-D array, an empty directory
        std::fs::write(d.path().join("ragged.csv"), "f0,f1\n1,2\n3\n").unwrap();
        let e = read_feature_file(&d.path().join("ragged.csv")).unwrap_err().to_string();
        assert!(e.contains("ragged.csv: line 3: 1 columns after rows of 2"), "{e}");
        std::fs::write(d.path().join("nan.csv"), "1,2\nnan,3\n").unwrap();
        let e = read_feature_file(&d.path().join("nan.csv")).unwrap_err().to_string();
        assert!(e.contains("nan.csv: row 1 column 0 is not a finite number"), "{e}");
        ndarray_npy::write_npy(d.path().join("cube.npy"), &ndarray::Array3::<f64>::zeros((2, 2, 2))).unwrap();
        let e = read_feature_file(&d.path().join("cube.npy")).unwrap_err().to_string();
        assert!(e.contains("[2, 2, 2]"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(feature_files(empty.path()).unwrap_err().to_string().contains("no .npy or .csv"));
    }
}
