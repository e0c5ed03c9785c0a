//! Per-video features (DESIGN.md §2.2): the HDF5 feature store (`/videos/<id>` groups with one
//! [T, C] dataset per modality) and `features` clip streams, read through one type so that every
//! tool that reads features takes either.

mod files;
mod h5;
pub mod rescale;
mod stream;

pub use files::{feature_files, is_feature_file, read_feature_file};
pub use h5::{merge, FeatureStore, StoreOptions, StoreWriter};
pub use stream::{header_times, record_rows, FeatureStreamReader, VideoBuilder, DEFAULT_MODALITY};

use crate::stream::Label;
use anyhow::{bail, Context, Result};
use ndarray::Array2;
use std::io::Read;
use std::path::Path;

/// One video's features: one [T, C] matrix per modality (`rgb`, `audio`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct VideoFeatures {
    /// The video id as the dataset list wrote it (may contain `/`).
    pub id: String,
    pub label: Option<Label>,
    /// Source frame rate, when known.
    pub fps: Option<f64>,
    /// Source duration in seconds, when known.
    pub duration: Option<f64>,
    /// Where the features came from (the source video), when known.
    pub source: Option<String>,
    /// In name order (as HDF5 lists a group's datasets).
    pub modalities: Vec<(String, Array2<f32>)>,
    /// Where each row lies in the source, [T, 2]: start and end in seconds (a frame's own
    /// 1/fps, a snippet's span, a rescaled step's share of the video), when known.
    pub times: Option<Array2<f64>>,
}

/// The dataset (store) and header key (stream) that hold `VideoFeatures::times`; no modality
/// may take the name.
pub const TIMES: &str = "times";

impl VideoFeatures {
    /// The features of one modality.
    pub fn modality(&self, name: &str) -> Option<&Array2<f32>> {
        self.modalities.iter().find(|(m, _)| m == name).map(|(_, a)| a)
    }
}

/// The 8-byte signature at the start of an HDF5 file (HDF5 file format specification, "Format
/// Signature"). A file with a user block has it at offset 512, 1024, 2048, ...; we look there too.
const HDF5_SIGNATURE: [u8; 8] = [0x89, b'H', b'D', b'F', b'\r', b'\n', 0x1a, b'\n'];

/// Whether `path` is an HDF5 file (by its signature, not its name).
pub fn is_hdf5(path: &Path) -> Result<bool> {
    let mut f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut offset = 0u64;
    let mut sig = [0u8; 8];
    while offset + 8 <= len {
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(offset))?;
        f.read_exact(&mut sig).with_context(|| format!("{}: read error", path.display()))?;
        if sig == HDF5_SIGNATURE {
            return Ok(true);
        }
        offset = if offset == 0 { 512 } else { offset * 2 };
    }
    Ok(false)
}

/// All videos of a feature store (`.h5`, detected by signature), of a `features` clip stream
/// (a file, or `-` for stdin), of a directory of per-video `.npy`/`.csv` files, or of one such
/// file (`files`). Store videos come in the order of their group names; stream videos in stream
/// order, the records of one video concatenated along T; files in name order.
pub fn read_features(path: &Path) -> Result<Vec<VideoFeatures>> {
    if path.is_dir() {
        return feature_files(path)?.iter().map(|f| read_feature_file(f)).collect();
    }
    if is_feature_file(path) {
        return Ok(vec![read_feature_file(path)?]);
    }
    if path.as_os_str() != "-" && is_hdf5(path)? {
        let store = FeatureStore::open(path)?;
        return store.iter()?.collect();
    }
    let name = if path.as_os_str() == "-" { "<stdin>".to_string() } else { path.display().to_string() };
    FeatureStreamReader::new(crate::io::open_input(path)?, name).collect()
}

/// A video id as an HDF5 link name: `/` cannot appear in one and a lone `.` means the group
/// itself, so `%`, `/` and a leading `.` are percent-escaped (reversed by `unescape_id`).
pub fn escape_id(id: &str) -> Result<String> {
    if id.is_empty() {
        bail!("empty video id");
    }
    let mut out = String::with_capacity(id.len());
    for (i, c) in id.chars().enumerate() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '.' if i == 0 => out.push_str("%2E"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The video id a group name stands for (the inverse of `escape_id`; other `%XX` escapes, as
/// a foreign writer might use, are decoded too).
pub fn unescape_id(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
