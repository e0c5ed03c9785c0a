//! The HDF5 feature store (DESIGN.md §2.2, man vidkit-features(5)):
//!
//! ```text
//! /videos/<escaped id>            group; attributes video (the id), label (int) or labels
//!                                 (int array), fps, duration (s), source
//! /videos/<escaped id>/<modality> dataset [T, C], float32 or float16, chunked, shuffle + deflate
//! ```
//! Files are read and written by h5py as they are (`f["videos"][g]["rgb"][()]`).

use super::{escape_id, unescape_id, VideoFeatures, TIMES};
use crate::io::AtomicFile;
use crate::stream::Label;
use anyhow::{bail, Context, Result};
use half::f16;
use hdf5::types::{VarLenAscii, VarLenUnicode};
use hdf5_metno as hdf5;
use ndarray::{Array1, Array2, Ix1};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const VIDEOS: &str = "videos";
/// Deflate level: h5py's default for `compression="gzip"`.
const DEFLATE_LEVEL: u8 = 4;
/// Target chunk size: a whole video per chunk up to this, so reading one video is one chunk.
const CHUNK_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// Store float16 instead of float32 (half the size; ~3 significant digits).
    pub f16: bool,
    /// String attributes on the root group (provenance: model, layer, ...).
    pub root_attrs: Vec<(String, String)>,
}

/// Writes a feature store under a temporary name beside `path`; `finish` renames it into place,
/// and dropping the writer unfinished leaves nothing behind.
pub struct StoreWriter {
    file: Option<hdf5::File>,
    temp: Option<AtomicFile>,
    dest: PathBuf,
    options: StoreOptions,
    /// Written ids and where each came from (for merge's duplicate message).
    written: HashMap<String, String>,
    /// The video being written piece by piece, if any.
    open: Option<OpenVideo>,
}

fn h5err(path: &Path) -> impl Fn(hdf5::Error) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{}: HDF5: {e}", path.display())
}

fn write_str_attr(loc: &hdf5::Location, name: &str, value: &str) -> hdf5::Result<()> {
    let v: VarLenUnicode = value.parse().map_err(|e| hdf5::Error::from(format!("{e}")))?;
    loc.new_attr::<VarLenUnicode>().create(name)?.write_scalar(&v)
}

fn write_f64_attr(loc: &hdf5::Location, name: &str, value: f64) -> hdf5::Result<()> {
    loc.new_attr::<f64>().create(name)?.write_scalar(&value)
}

impl StoreWriter {
    pub fn create(path: &Path, options: StoreOptions) -> Result<Self> {
        let temp = AtomicFile::create(path)?;
        let err = h5err(path);
        let file = hdf5::File::create(temp.temp_path()).map_err(&err)?;
        file.create_group(VIDEOS).map_err(&err)?;
        for (k, v) in &options.root_attrs {
            write_str_attr(&file, k, v).map_err(&err)?;
        }
        Ok(Self {
            file: Some(file),
            temp: Some(temp),
            dest: path.to_path_buf(),
            options,
            written: HashMap::new(),
            open: None,
        })
    }

    /// Adds one video; `origin` names where it came from in a duplicate-id error.
    pub fn write_from(&mut self, video: &VideoFeatures, origin: &str) -> Result<()> {
        if let Some(prev) = self.written.get(&video.id) {
            bail!("video {:?} is in both {prev} and {origin}", video.id);
        }
        let dest = self.dest.clone();
        self.write_group(video).with_context(|| format!("{}: video {:?}", dest.display(), video.id))?;
        self.written.insert(video.id.clone(), origin.to_string());
        Ok(())
    }

    /// Adds one video; a second video with the same id is an error.
    pub fn write(&mut self, video: &VideoFeatures) -> Result<()> {
        self.write_from(video, "the input")
    }

    fn write_group(&self, video: &VideoFeatures) -> Result<()> {
        let file = self.file.as_ref().expect("writer finished");
        let err = h5err(&self.dest);
        let g = file.group(VIDEOS).map_err(&err)?.create_group(&escape_id(&video.id)?).map_err(&err)?;
        self.write_attrs(&g, video)?;
        if let Some(times) = &video.times {
            check_times(video, times)?;
            g.new_dataset_builder().with_data(times).create(TIMES).map_err(&err)?;
        }
        for (modality, rows) in &video.modalities {
            check_modality_name(modality)?;
            let (t, c) = rows.dim();
            let elem = if self.options.f16 { 2 } else { 4 };
            let builder = g.new_dataset_builder();
            // Chunks must be non-empty: an empty [0, C] is stored contiguous.
            let builder = if t > 0 && c > 0 {
                let chunk_rows = (CHUNK_BYTES / (c * elem)).clamp(1, t);
                builder.chunk((chunk_rows, c)).shuffle().deflate(DEFLATE_LEVEL)
            } else {
                builder
            };
            if self.options.f16 {
                let half = rows.mapv(f16::from_f32);
                builder.with_data(&half).create(modality.as_str())
            } else {
                builder.with_data(rows).create(modality.as_str())
            }
            .map_err(&err)?;
        }
        Ok(())
    }

    /// The group attributes: video, label(s), fps, duration, source.
    fn write_attrs(&self, g: &hdf5::Group, video: &VideoFeatures) -> Result<()> {
        let err = h5err(&self.dest);
        write_str_attr(g, "video", &video.id).map_err(&err)?;
        match &video.label {
            Some(Label::Single(l)) => g.new_attr::<i64>().create("label").and_then(|a| a.write_scalar(l)),
            Some(Label::Multi(ls)) => g
                .new_attr::<i64>()
                .shape(ls.len())
                .create("labels")
                .and_then(|a| a.write(&Array1::from_vec(ls.clone()))),
            None => Ok(()),
        }
        .map_err(&err)?;
        if let Some(fps) = video.fps {
            write_f64_attr(g, "fps", fps).map_err(&err)?;
        }
        if let Some(d) = video.duration {
            write_f64_attr(g, "duration", d).map_err(&err)?;
        }
        if let Some(s) = &video.source {
            write_str_attr(g, "source", s).map_err(&err)?;
        }
        Ok(())
    }

    /// Starts a video whose rows arrive in pieces (`append`), so a long video's features need
    /// not be held: `meta` gives the attributes (its modalities and times are not used). Rows go
    /// to resizable chunked datasets. One video is open at a time; until `end_video`, the
    /// video's group is removed again by `abandon_video` or `finish`.
    pub fn begin_video(&mut self, meta: &VideoFeatures, origin: &str) -> Result<()> {
        if let Some(open) = &self.open {
            bail!("video {:?} is still open", open.id);
        }
        if let Some(prev) = self.written.get(&meta.id) {
            bail!("video {:?} is in both {prev} and {origin}", meta.id);
        }
        let name = escape_id(&meta.id)?;
        let g = {
            let err = h5err(&self.dest);
            let file = self.file.as_ref().expect("writer finished");
            file.group(VIDEOS).map_err(&err)?.create_group(&name).map_err(&err)?
        };
        self.open = Some(OpenVideo { group: g, name, id: meta.id.clone(), rows: None, times: Some(None) });
        if let Err(e) = self.write_attrs(&self.open.as_ref().expect("open").group, meta) {
            self.abandon_video();
            return Err(e.context(format!("{}: video {:?}", self.dest.display(), meta.id)));
        }
        self.written.insert(meta.id.clone(), origin.to_string());
        Ok(())
    }

    /// Appends rows [n, C] of `modality` (one modality per open video) and their times to the
    /// open video.
    pub fn append(
        &mut self,
        modality: &str,
        rows: ndarray::ArrayView2<f32>,
        times: Option<&[[f64; 2]]>,
    ) -> Result<()> {
        let f16s = self.options.f16;
        let dest = self.dest.clone();
        let open = self.open.as_mut().context("no open video to append to")?;
        let id = open.id.clone();
        open.append(modality, rows, times, f16s).with_context(|| format!("{}: video {id:?}", dest.display()))
    }

    /// Keeps the open video (it needs at least one row).
    pub fn end_video(&mut self) -> Result<()> {
        let open = self.open.take().context("no open video to end")?;
        if open.rows.as_ref().is_none_or(|(_, n)| *n == 0) {
            let id = open.id.clone();
            self.open = Some(open);
            self.abandon_video();
            bail!("{}: video {id:?}: no feature rows", self.dest.display());
        }
        Ok(())
    }

    /// Removes the open video, if any, as if it had never begun.
    pub fn abandon_video(&mut self) {
        if let Some(open) = self.open.take() {
            let OpenVideo { group, name, id, .. } = open;
            drop(group);
            if let Some(v) = self.file.as_ref().and_then(|f| f.group(VIDEOS).ok()) {
                let _ = v.unlink(&name);
            }
            self.written.remove(&id);
        }
    }

    /// Videos written so far.
    pub fn len(&self) -> usize {
        self.written.len()
    }

    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }

    /// Closes the file and renames it into place (a video still open is left out).
    pub fn finish(mut self) -> Result<()> {
        self.abandon_video();
        let file = self.file.take().expect("writer finished twice");
        file.close().map_err(h5err(&self.dest))?;
        self.temp.take().expect("writer finished twice").commit()
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        self.open = None;
        // Close the HDF5 handle before the temporary file is removed.
        if let Some(f) = self.file.take() {
            let _ = f.close();
        }
    }
}

fn check_modality_name(modality: &str) -> Result<()> {
    if modality.is_empty() || modality.contains('/') || modality == "." || modality == TIMES {
        bail!("modality name {modality:?} cannot be a dataset name");
    }
    Ok(())
}

/// The video `StoreWriter::begin_video` opened: its group, one modality's rows dataset and how
/// many rows it holds, and the times dataset while every piece has times.
struct OpenVideo {
    group: hdf5::Group,
    name: String,
    id: String,
    rows: Option<(hdf5::Dataset, usize)>,
    /// `Some(None)` before the first piece; `None` once a piece came without times.
    times: Option<Option<hdf5::Dataset>>,
}

/// A 2-D extent [0.., cols]: resizable rows.
fn growing_rows(cols: usize) -> hdf5::Extents {
    hdf5::Extents::Simple(hdf5::SimpleExtents::from_vec(vec![
        hdf5::Extent::resizable(0),
        hdf5::Extent::fixed(cols),
    ]))
}

impl OpenVideo {
    fn append(
        &mut self,
        modality: &str,
        rows: ndarray::ArrayView2<f32>,
        times: Option<&[[f64; 2]]>,
        f16s: bool,
    ) -> Result<()> {
        let err = |e: hdf5::Error| anyhow::anyhow!("HDF5: {e}");
        let (n, c) = rows.dim();
        if n == 0 {
            return Ok(());
        }
        if let Some(t) = times.filter(|t| t.len() != n) {
            bail!("{} row times for {n} rows", t.len());
        }
        if self.rows.is_none() {
            check_modality_name(modality)?;
            let elem = if f16s { 2 } else { 4 };
            let chunk = ((CHUNK_BYTES / (c * elem)).max(1), c);
            let ds = if f16s {
                self.group
                    .new_dataset::<f16>()
                    .chunk(chunk)
                    .shuffle()
                    .deflate(DEFLATE_LEVEL)
                    .shape(growing_rows(c))
            } else {
                self.group
                    .new_dataset::<f32>()
                    .chunk(chunk)
                    .shuffle()
                    .deflate(DEFLATE_LEVEL)
                    .shape(growing_rows(c))
            }
            .create(modality)
            .map_err(err)?;
            self.rows = Some((ds, 0));
        }
        let (ds, have) = self.rows.as_mut().expect("rows dataset");
        if ds.shape().get(1) != Some(&c) {
            bail!("{c} channels after {}", ds.shape()[1]);
        }
        let start = *have;
        ds.resize((start + n, c)).map_err(err)?;
        if f16s {
            ds.write_slice(&rows.mapv(f16::from_f32), ndarray::s![start..start + n, ..]).map_err(err)?;
        } else {
            ds.write_slice(rows, ndarray::s![start..start + n, ..]).map_err(err)?;
        }
        *have += n;
        match (&mut self.times, times) {
            (Some(slot), Some(t)) if start == 0 || slot.is_some() => {
                if slot.is_none() {
                    *slot = Some(
                        self.group
                            .new_dataset::<f64>()
                            .chunk((4096, 2))
                            .shape(growing_rows(2))
                            .create(TIMES)
                            .map_err(err)?,
                    );
                }
                let ds = slot.as_ref().expect("times dataset");
                let flat = Array2::from_shape_vec((n, 2), t.iter().flatten().copied().collect())?;
                ds.resize((start + n, 2)).map_err(err)?;
                ds.write_slice(&flat, ndarray::s![start..start + n, ..]).map_err(err)?;
            }
            _ => {
                // Some rows have no times: the video has none.
                if let Some(Some(_)) = self.times.take() {
                    self.group.unlink(TIMES).map_err(err)?;
                }
            }
        }
        Ok(())
    }
}

/// A feature store opened for reading.
pub struct FeatureStore {
    file: hdf5::File,
    path: PathBuf,
}

fn read_str_attr(loc: &hdf5::Location, name: &str) -> Option<String> {
    let a = loc.attr(name).ok()?;
    a.read_scalar::<VarLenUnicode>()
        .map(|s| s.as_str().to_string())
        .or_else(|_| a.read_scalar::<VarLenAscii>().map(|s| s.as_str().to_string()))
        .ok()
}

fn read_label(g: &hdf5::Group) -> hdf5::Result<Option<Label>> {
    for name in ["label", "labels"] {
        let Ok(a) = g.attr(name) else { continue };
        return Ok(Some(if a.is_scalar() {
            Label::Single(a.read_scalar::<i64>()?)
        } else {
            Label::Multi(a.read::<i64, Ix1>()?.to_vec())
        }));
    }
    Ok(None)
}

impl FeatureStore {
    pub fn open(path: &Path) -> Result<Self> {
        let file = hdf5::File::open(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot open as HDF5: {e}", path.display()))?;
        if !file.link_exists(VIDEOS) {
            bail!("{}: not a feature store (no /{VIDEOS} group)", path.display());
        }
        Ok(Self { file, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn group_names(&self) -> Result<Vec<String>> {
        let err = h5err(&self.path);
        self.file.group(VIDEOS).map_err(&err)?.member_names().map_err(&err)
    }

    /// The video ids, in the order of their group names.
    pub fn ids(&self) -> Result<Vec<String>> {
        let videos = self.file.group(VIDEOS).map_err(h5err(&self.path))?;
        self.group_names()?
            .into_iter()
            .map(|name| {
                let g = videos.group(&name).map_err(h5err(&self.path))?;
                Ok(read_str_attr(&g, "video").unwrap_or_else(|| unescape_id(&name)))
            })
            .collect()
    }

    pub fn len(&self) -> Result<usize> {
        Ok(self.group_names()?.len())
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// One video by id.
    pub fn read(&self, id: &str) -> Result<VideoFeatures> {
        let name = escape_id(id)?;
        let videos = self.file.group(VIDEOS).map_err(h5err(&self.path))?;
        if !videos.link_exists(&name) {
            bail!("{}: no video {id:?}", self.path.display());
        }
        self.read_group(&name)
    }

    fn read_group(&self, name: &str) -> Result<VideoFeatures> {
        let ctx = || format!("{}: /{VIDEOS}/{name}", self.path.display());
        let err = |e: hdf5::Error| anyhow::anyhow!("{}: {e}", ctx());
        let g = self.file.group(VIDEOS).and_then(|v| v.group(name)).map_err(err)?;
        let f64_attr = |n: &str| g.attr(n).ok().and_then(|a| a.read_scalar::<f64>().ok());
        let mut modalities = Vec::new();
        let mut times = None;
        for ds in g.datasets().map_err(err)? {
            let modality = ds.name().rsplit('/').next().unwrap_or_default().to_string();
            if modality == TIMES {
                let t = ds.read_2d::<f64>().map_err(err)?;
                if t.ncols() != 2 {
                    bail!(
                        "{}: dataset {TIMES:?} is {:?}; expected [T, 2] (start, end in seconds)",
                        ctx(),
                        t.dim()
                    );
                }
                times = Some(t);
                continue;
            }
            let rows: Array2<f32> = match ds.ndim() {
                2 => ds.read_2d::<f32>().map_err(err)?,
                // A 1-D dataset (one feature vector per video, as some writers store it): one row.
                1 => {
                    let v = ds.read_1d::<f32>().map_err(err)?;
                    let c = v.len();
                    v.into_shape_with_order((1, c))?
                }
                n => bail!("{}: dataset {modality:?} has {n} dimensions; features are [T, C]", ctx()),
            };
            modalities.push((modality, rows));
        }
        Ok(VideoFeatures {
            id: read_str_attr(&g, "video").unwrap_or_else(|| unescape_id(name)),
            label: read_label(&g).map_err(err)?,
            fps: f64_attr("fps"),
            duration: f64_attr("duration"),
            source: read_str_attr(&g, "source"),
            modalities,
            times,
        })
    }

    /// The string attributes of the root group (vfeat's `model`, `arch`, `layer`).
    pub fn root_attrs(&self) -> Vec<(String, String)> {
        let names = self.file.attr_names().unwrap_or_default();
        names.into_iter().filter_map(|n| read_str_attr(&self.file, &n).map(|v| (n, v))).collect()
    }

    /// Whether the store's (first) features are float16.
    pub fn stores_f16(&self) -> bool {
        let first = self.file.group(VIDEOS).ok().and_then(|v| {
            let name = v.member_names().ok()?.into_iter().next()?;
            v.group(&name)
                .ok()?
                .datasets()
                .ok()?
                .into_iter()
                .find(|d| !d.name().ends_with(&format!("/{TIMES}")))
        });
        first.and_then(|ds| ds.dtype().ok()).is_some_and(|t| t.size() == 2)
    }

    /// Every video, in the order of `ids`.
    pub fn iter(&self) -> Result<impl Iterator<Item = Result<VideoFeatures>> + '_> {
        Ok(self.group_names()?.into_iter().map(move |name| self.read_group(&name)))
    }
}

/// Row times must cover the rows of every modality.
pub(crate) fn check_times(video: &VideoFeatures, times: &Array2<f64>) -> Result<()> {
    if times.ncols() != 2 {
        bail!("times are {:?}; expected [T, 2] (start, end in seconds)", times.dim());
    }
    if let Some((m, rows)) = video.modalities.iter().find(|(_, r)| r.nrows() != times.nrows()) {
        bail!("{} row times for {} {m} rows", times.nrows(), rows.nrows());
    }
    Ok(())
}

/// Merges feature stores (one per shard) into one; an id in two inputs is an error naming both.
/// Values are copied exactly: the output is float16 when `options.f16` or when every input
/// stores float16, else float32.
pub fn merge(inputs: &[PathBuf], output: &Path, mut options: StoreOptions) -> Result<usize> {
    // Inputs that are not stores (features streams, per-video .npy/.csv files or directories of
    // them) are read whole and joined the same way.
    let mut stores = Vec::new();
    let mut others = Vec::new();
    for p in inputs {
        if !p.is_dir() && super::is_hdf5(p)? {
            stores.push(FeatureStore::open(p)?);
        } else {
            others.push(p);
        }
    }
    if !stores.is_empty() && others.is_empty() && stores.iter().all(|s| s.stores_f16()) {
        options.f16 = true;
    }
    if options.root_attrs.is_empty() {
        // Provenance (model, layer) as the first shard recorded it.
        options.root_attrs = stores.first().map(FeatureStore::root_attrs).unwrap_or_default();
    }
    let mut writer = StoreWriter::create(output, options)?;
    for store in &stores {
        let origin = store.path.display().to_string();
        for video in store.iter()? {
            writer.write_from(&video?, &origin)?;
        }
    }
    for p in others {
        for video in super::read_features(p)? {
            writer.write_from(&video, &p.display().to_string())?;
        }
    }
    let n = writer.len();
    writer.finish()?;
    Ok(n)
}
