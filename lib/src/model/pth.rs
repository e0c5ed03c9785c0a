//! PyTorch checkpoints (`torch.save`, PyTorch >= 1.6): a zip archive of `<dir>/data.pkl` and the
//! raw storages `<dir>/data/<key>`. The pickle runs on the `.pdparams` machine in its torch mode:
//! `_rebuild_tensor_v2` (possibly under `_rebuild_parameter` or `_rebuild_from_type_v2`),
//! `OrderedDict` and the storage classes are recognised by name, every other global is an
//! opaque object, and nothing is imported or called. Declared shapes and storage sizes are
//! checked against the archive's bytes before any tensor is allocated.

use super::{Global, Machine, NamedTensors, Value};
use crate::model::STATE_DICT_KEYS;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::Path;

/// A storage named by BINPERSID: its element type and its file under `<dir>/data/`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Storage {
    dtype: DType,
    key: String,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a view of a storage.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct TorchTensor {
    storage: Storage,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// The torch globals a state dict names; any other is opaque.
pub(super) fn torch_global(module: &str, name: &str) -> Global {
    let storage = |d| Global::Storage(d);
    match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch._tensor", "_rebuild_from_type_v2") => Global::RebuildFromTypeV2,
        ("torch", "FloatStorage") => storage(DType::F32),
        ("torch", "DoubleStorage") => storage(DType::F64),
        ("torch", "HalfStorage") => storage(DType::F16),
        ("torch", "BFloat16Storage") => storage(DType::BF16),
        ("torch", "ByteStorage") => storage(DType::U8),
        ("torch", "LongStorage") => storage(DType::I64),
        _ => Global::Opaque,
    }
}

impl Machine<'_> {
    /// BINPERSID (a storage) and NEWOBJ (an opaque object), PyTorch checkpoints only.
    pub(super) fn step_torch(&mut self, op: u8) -> Result<()> {
        if op == 0x81 {
            self.pop()?;
            self.pop()?;
            self.push(Value::Opaque);
            return Ok(());
        }
        let pid = self.pop()?;
        let pid = self.tuple_at(pid)?.to_vec();
        let [tag, class, key, _location, _numel] = pid.as_slice() else {
            bail!("a persistent id of {} items, not ('storage', type, key, location, numel)", pid.len())
        };
        if self.str_at(*tag)? != "storage" {
            bail!("a persistent id tagged {:?}, not 'storage'", self.str_at(*tag)?);
        }
        let dtype = match self.arena[*class] {
            Value::Global(Global::Storage(d)) => d,
            ref v => {
                bail!("a storage of type {} (supported: Float, Double, Half, BFloat16, Byte, Long)", v.kind())
            }
        };
        let key = self.str_at(*key)?.to_string();
        self.push(Value::Storage(Storage { dtype, key }));
        Ok(())
    }

    fn usize_at(&self, id: usize, what: &str) -> Result<usize> {
        usize::try_from(self.int_at(id)?).with_context(|| format!("a negative {what}"))
    }

    fn usizes_at(&self, id: usize, what: &str) -> Result<Vec<usize>> {
        self.tuple_at(id)?.iter().map(|&d| self.usize_at(d, what)).collect()
    }

    /// REDUCE of a torch global; `None` for the numpy ones, which `reduce` handles.
    pub(super) fn reduce_torch(&mut self, g: Global, args: &[usize]) -> Result<Option<Value>> {
        Ok(Some(match (g, args) {
            (Global::OrderedDict, _) => Value::Dict(Vec::new()),
            (Global::RebuildTensorV2, [storage, offset, size, stride, ..]) => {
                let Value::Storage(storage) = &self.arena[*storage] else {
                    bail!("_rebuild_tensor_v2 of a {}, not a storage", self.arena[*storage].kind())
                };
                let tensor = TorchTensor {
                    storage: storage.clone(),
                    offset: self.usize_at(*offset, "storage offset")?,
                    shape: self.usizes_at(*size, "dimension")?,
                    stride: self.usizes_at(*stride, "stride")?,
                };
                if tensor.shape.len() != tensor.stride.len() {
                    bail!(
                        "a tensor of {} dimensions with {} strides",
                        tensor.shape.len(),
                        tensor.stride.len()
                    );
                }
                Value::TorchTensor(tensor)
            }
            (Global::RebuildParameter, [data, ..]) => match &self.arena[*data] {
                Value::TorchTensor(t) => Value::TorchTensor(t.clone()),
                v => bail!("_rebuild_parameter of a {}", v.kind()),
            },
            (Global::RebuildFromTypeV2, [func, _new_type, inner, ..]) => {
                let Value::Global(f) = self.arena[*func] else {
                    bail!("_rebuild_from_type_v2 of a non-global")
                };
                let inner = self.tuple_at(*inner)?.to_vec();
                match f {
                    Global::RebuildTensorV2 | Global::RebuildParameter => {
                        self.reduce_torch(f, &inner)?.context("_rebuild_from_type_v2 of nothing")?
                    }
                    _ => Value::Opaque,
                }
            }
            (Global::RebuildTensorV2 | Global::RebuildParameter | Global::RebuildFromTypeV2, _) => {
                bail!("{g:?} with {} arguments", args.len())
            }
            (Global::Storage(_) | Global::Opaque, _) => Value::Opaque,
            _ => return Ok(None),
        }))
    }
}

/// The tensors of a PyTorch checkpoint already in memory, with the key the state dict was found
/// under (`None`: the top level, else one of `STATE_DICT_KEYS`), sorted by name; `path` names
/// the file in errors.
pub fn torch_state_dict_from_bytes(bytes: &[u8], path: &Path) -> Result<(NamedTensors, Option<String>)> {
    let at = path.display();
    if bytes.get(..4) != Some(b"PK\x03\x04") {
        if bytes.len() >= 2 && bytes[0] == 0x80 && bytes[1] <= 5 {
            bail!("{at}: a legacy (pre-zip) PyTorch file; re-save it with torch.save under PyTorch >= 1.6");
        }
        bail!("{at}: not a PyTorch checkpoint (torch.save writes a zip archive)");
    }
    let mut zip =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| anyhow!("{at}: unreadable checkpoint: {e}"))?;
    let pkl_name = zip
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| n.ends_with("data.pkl"))
        .map(|n| n.into_owned())
        .with_context(|| format!("{at}: unreadable checkpoint: no data.pkl in the archive"))?;
    let dir = pkl_name.trim_end_matches("data.pkl").to_string();
    // Entries are stored, not compressed: one can hold no more than the archive's bytes.
    let limit = bytes.len() as u64;
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .map_err(|e| anyhow!("{at}: {pkl_name}: {e}"))?
        .take(limit)
        .read_to_end(&mut pkl)
        .with_context(|| format!("{at}: {pkl_name}: read error"))?;
    let mut m = Machine::new(&pkl);
    m.torch = true;
    let root = m.run().with_context(|| format!("{at}: unreadable checkpoint: {pkl_name}"))?;
    let keys = std::iter::once(None).chain(STATE_DICT_KEYS.iter().map(|k| Some(*k)));
    for key in keys {
        let Some(dict) = state_dict(&m, root, key) else { continue };
        // Later entries of a repeated name win, as in a Python dict.
        let tensors: BTreeMap<&str, &TorchTensor> = dict
            .iter()
            .filter_map(|&(k, v)| match (&m.arena[k], &m.arena[v]) {
                (Value::Str(name), Value::TorchTensor(t)) => Some((name.as_str(), t)),
                _ => None,
            })
            .collect();
        if tensors.is_empty() {
            continue;
        }
        let tensors = tensors
            .into_iter()
            .map(|(name, t)| {
                let tensor = read_tensor(&mut zip, &dir, t, limit)
                    .with_context(|| format!("{at}: tensor {name:?}"))?;
                Ok((name.to_string(), tensor))
            })
            .collect::<Result<NamedTensors>>()?;
        return Ok((tensors, key.map(str::to_string)));
    }
    bail!("{at}: no state dict found (looked at the top level and under {})", STATE_DICT_KEYS.join(", "))
}

/// The dict at the top level (`key` `None`) or under `key` in the top-level dict.
fn state_dict<'m>(m: &'m Machine, root: usize, key: Option<&str>) -> Option<&'m [(usize, usize)]> {
    let Value::Dict(top) = &m.arena[root] else { return None };
    let Some(key) = key else { return Some(top) };
    let (_, v) = top.iter().rev().find(|(k, _)| matches!(&m.arena[*k], Value::Str(s) if s == key))?;
    match &m.arena[*v] {
        Value::Dict(d) => Some(d),
        _ => None,
    }
}

/// Reads one tensor's bytes from its storage, C- or Fortran-contiguous views only.
fn read_tensor(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    dir: &str,
    t: &TorchTensor,
    limit: u64,
) -> Result<Tensor> {
    let count = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).context("tensor too large")?;
    let contiguous = |dims: &mut dyn Iterator<Item = (&usize, &usize)>| {
        let mut expected = Some(1usize);
        for (&d, &s) in dims {
            if d > 1 && Some(s) != expected {
                return false;
            }
            expected = expected.and_then(|e| e.checked_mul(d));
        }
        true
    };
    let c_order = contiguous(&mut t.shape.iter().zip(&t.stride).rev());
    let fortran = !c_order && contiguous(&mut t.shape.iter().zip(&t.stride));
    if !c_order && !fortran {
        bail!("a non-contiguous view (shape {:?}, strides {:?})", t.shape, t.stride);
    }
    let size = t.storage.dtype.size_in_bytes();
    let (start, needed) = t
        .offset
        .checked_mul(size)
        .and_then(|s| Some((s, count.checked_mul(size)?.checked_add(s)?)))
        .context("tensor too large")?;
    let name = format!("{dir}data/{}", t.storage.key);
    let mut entry = zip.by_name(&name).map_err(|e| anyhow!("storage {name}: {e}"))?;
    if (needed as u64) > entry.size().min(limit) {
        bail!(
            "shape {:?} at offset {} needs {needed} bytes; storage {name} has {}",
            t.shape,
            t.offset,
            entry.size()
        );
    }
    let mut data = Vec::new();
    entry.by_ref().take(needed as u64).read_to_end(&mut data).with_context(|| format!("storage {name}"))?;
    if data.len() < needed {
        bail!("storage {name} ends after {} of {needed} bytes", data.len());
    }
    let dev = &Device::Cpu;
    if fortran && t.shape.len() > 1 {
        // Fortran order is C order of the reversed shape, transposed back.
        let reversed: Vec<usize> = t.shape.iter().rev().copied().collect();
        let tensor = Tensor::from_raw_buffer(&data[start..], t.storage.dtype, &reversed, dev)?;
        let dims: Vec<usize> = (0..t.shape.len()).rev().collect();
        Ok(tensor.permute(dims)?)
    } else {
        Ok(Tensor::from_raw_buffer(&data[start..], t.storage.dtype, &t.shape, dev)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/fuzz/fuzz_pth").join(name)
    }

    /// candle's own reader, which this one replaces, is the reference on candle's test files.
    #[test]
    fn reads_what_candle_reads() {
        for name in ["test.pt", "fortran_tensor_3d.pth"] {
            let path = seed(name);
            let (ours, key) = torch_state_dict_from_bytes(&std::fs::read(&path).unwrap(), &path).unwrap();
            assert_eq!(key, None);
            let mut theirs = candle_core::pickle::read_all_with_key(&path, None).unwrap();
            theirs.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(ours.len(), theirs.len(), "{name}");
            for ((n, a), (m, b)) in ours.iter().zip(&theirs) {
                assert_eq!((n, a.dims(), a.dtype()), (m, b.dims(), b.dtype()), "{name}");
                let (a, b) = (a.flatten_all().unwrap(), b.flatten_all().unwrap());
                assert_eq!(a.to_vec1::<i64>().unwrap(), b.to_vec1::<i64>().unwrap(), "{name}: {n}");
            }
        }
        // Its state dict sits under a key importers do not look at.
        let path = seed("test_with_key.pt");
        let err = torch_state_dict_from_bytes(&std::fs::read(&path).unwrap(), &path).unwrap_err();
        assert!(format!("{err:#}").contains("no state dict found"), "{err:#}");
    }

    #[test]
    fn declared_sizes_beyond_the_storage_are_refused_before_reading() {
        let path = seed("test.pt");
        let mut bytes = std::fs::read(&path).unwrap();
        // The pickle's size tuple (2, 4) as K\x02K\x04: claim 2 x 255 elements instead.
        let at = bytes.windows(4).position(|w| w == b"K\x02K\x04").unwrap();
        bytes[at + 3] = 0xff;
        // A stored entry's CRC covers data.pkl: the zip reader may refuse it first, or our check.
        let err = format!("{:#}", torch_state_dict_from_bytes(&bytes, &path).unwrap_err());
        assert!(err.contains("needs 4080 bytes") || err.contains("checksum"), "{err}");
    }
}
