//! Reading Paddle `.pdparams` files without running any code from them (DESIGN.md §2.4).
//!
//! `paddle.save(layer.state_dict(), path)` (Paddle 2.x–3.x, `paddle/framework/io.py`
//! `_legacy_save`) pickles a dict: structured parameter name → numpy array, plus the entry
//! `StructuredToParameterName@@` (structured name → Paddle's internal parameter name). Each
//! array is numpy's own reduction: `numpy._core.multiarray._reconstruct(numpy.ndarray, (0,),
//! b'b')` (`numpy.core.multiarray` under numpy 1.x), then BUILD with `(1, shape, dtype,
//! is_fortran, raw bytes)`, the dtype being `numpy.dtype(code, False, True)` BUILT with
//! `(3, byte order, ...)`. The default pickle protocol is 4 (BINBYTES payloads, FRAME,
//! MEMOIZE, STACK_GLOBAL); protocols 2 and 3 are also written on request, and there arrays over
//! 2^30 bytes are split into flat parts `NAME@@.0`, `NAME@@.1`, ... that the entry
//! `UnpackBigParamInfor@@` lists with their original shape (`io_utils._unpack_saved_dict`);
//! protocol 2 pickles bytes as `_codecs.encode(text, 'latin1')`. A dict that is not a pure
//! state dict (some values numpy arrays, say) goes through Paddle's general pickler instead,
//! which writes each `paddle.Tensor` as `builtins.tuple(((name, array),))` — the pair (Paddle's
//! tensor name, array) — and adds no name table; such pairs are read as their array.
//!
//! This reader interprets exactly those opcodes and only those five globals, building values
//! itself (a global is a name it recognises, never something it imports or calls). Any other
//! opcode or global, or an array of another shape of reduction (object arrays), is refused with
//! an error naming it and the byte offset.

use super::NamedTensors;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

#[path = "pickle_text.rs"]
mod pickle_text;
pub use pickle_text::{pickled_array_from_bytes, read_pickled_array};
#[path = "pth.rs"]
mod pth;
pub use pth::torch_state_dict_from_bytes;

/// The entries `paddle.save` adds beside the arrays.
const NAME_TABLE_KEY: &str = "StructuredToParameterName@@";
const BIG_PARAM_KEY: &str = "UnpackBigParamInfor@@";

/// The callables a `.pdparams` pickle may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    Reconstruct,
    NdarrayClass,
    DtypeClass,
    CodecsEncode,
    Tuple,
    /// PyTorch checkpoints only (`Machine::torch`): the globals a `torch.save` state dict names.
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    RebuildFromTypeV2,
    /// `torch.FloatStorage` and friends: the candle dtype of the storage's elements.
    Storage(candle_core::DType),
    /// Any other global of a PyTorch checkpoint (in its `meta`, say): named, never called;
    /// what it builds is an opaque object.
    Opaque,
}

impl Global {
    fn lookup(module: &str, name: &str) -> Option<Self> {
        Some(match (module, name) {
            ("numpy._core.multiarray" | "numpy.core.multiarray", "_reconstruct") => Self::Reconstruct,
            ("numpy", "ndarray") => Self::NdarrayClass,
            ("numpy", "dtype") => Self::DtypeClass,
            ("_codecs", "encode") => Self::CodecsEncode,
            ("builtins" | "__builtin__", "tuple") => Self::Tuple,
            _ => return None,
        })
    }
}

/// A numpy array read from the file: element type code (`f4`, `i8`, ...), shape, C-order
/// little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
struct NdArray {
    code: String,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// A numpy dtype: type code and byte order (`<`, `>`, `|` or `=`).
#[derive(Clone, Debug, PartialEq)]
struct Dtype {
    code: String,
    order: String,
}

/// Objects live in an arena and are referred to by index, so that the memo and the stack share
/// them as Python does (a dtype is memoised before BUILD sets its byte order).
#[derive(Clone, Debug, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<usize>),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Global(Global),
    Dtype(Dtype),
    /// `_reconstruct`'s empty array, waiting for BUILD.
    EmptyArray,
    Array(NdArray),
    /// A PyTorch storage (BINPERSID's `('storage', type, key, location, numel)`).
    Storage(pth::Storage),
    /// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`, its data still in the zip.
    TorchTensor(pth::TorchTensor),
    /// What an opaque global builds.
    Opaque,
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Dtype(_) => "numpy dtype",
            Value::EmptyArray | Value::Array(_) => "numpy array",
            Value::Storage(_) => "torch storage",
            Value::TorchTensor(_) => "torch tensor",
            Value::Opaque => "opaque object",
        }
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    arena: Vec<Value>,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: HashMap<u64, usize>,
    /// Reading a PyTorch checkpoint's `data.pkl`: torch's globals, BINPERSID and NEWOBJ too.
    torch: bool,
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            arena: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            torch: false,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            bail!("truncated: {n} bytes wanted at offset {} of {}", self.pos, self.data.len());
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }

    fn len(&mut self, v: u64) -> Result<usize> {
        usize::try_from(v).context("length does not fit in memory")
    }

    fn text(&mut self, n: usize) -> Result<String> {
        let at = self.pos;
        String::from_utf8(self.take(n)?.to_vec())
            .with_context(|| format!("invalid UTF-8 string at offset {at}"))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else { bail!("unterminated GLOBAL name") };
        let s = self.text(n)?;
        self.pos += 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) {
        self.arena.push(v);
        self.stack.push(self.arena.len() - 1);
    }

    fn pop(&mut self) -> Result<usize> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            bail!("pop across a MARK");
        }
        self.stack.pop().context("stack underflow")
    }

    fn pop_to_mark(&mut self) -> Result<Vec<usize>> {
        let m = self.marks.pop().context("no MARK to pop to")?;
        Ok(self.stack.split_off(m))
    }

    fn top(&self) -> Result<usize> {
        self.stack.last().copied().context("stack underflow")
    }

    fn str_at(&self, id: usize) -> Result<&str> {
        match &self.arena[id] {
            Value::Str(s) => Ok(s),
            v => bail!("expected a str, found a {}", v.kind()),
        }
    }

    fn tuple_at(&self, id: usize) -> Result<&[usize]> {
        match &self.arena[id] {
            Value::Tuple(t) => Ok(t),
            v => bail!("expected a tuple, found a {}", v.kind()),
        }
    }

    fn int_at(&self, id: usize) -> Result<i64> {
        match &self.arena[id] {
            Value::Int(i) => Ok(*i),
            v => bail!("expected an int, found a {}", v.kind()),
        }
    }

    fn dict_items(&mut self, dict: usize, items: Vec<usize>) -> Result<()> {
        if items.len() % 2 != 0 {
            bail!("odd number of items for a dict");
        }
        let Value::Dict(d) = &mut self.arena[dict] else { bail!("SETITEM(S) on a non-dict") };
        d.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
        Ok(())
    }

    /// Runs the pickle to STOP and returns the id of the object it built.
    fn run(&mut self) -> Result<usize> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            self.step(op).with_context(|| format!("opcode 0x{op:02x} at offset {at}"))?;
            if op == b'.' {
                return self.pop();
            }
        }
    }

    fn step(&mut self, op: u8) -> Result<()> {
        match op {
            0x80 => {
                let proto = self.u8()?;
                if !(2..=5).contains(&proto) {
                    bail!("pickle protocol {proto}; paddle.save writes 2 to 4");
                }
            }
            0x95 => {
                self.u64()?; // FRAME: a length hint only
            }
            b'.' => {}
            b'(' => self.marks.push(self.stack.len()),
            b'}' => self.push(Value::Dict(Vec::new())),
            b']' => self.push(Value::List(Vec::new())),
            b')' => self.push(Value::Tuple(Vec::new())),
            b't' => {
                let items = self.pop_to_mark()?;
                self.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if self.stack.len() < n || self.marks.last().is_some_and(|&m| m > self.stack.len() - n) {
                    bail!("TUPLE{n} with too few items");
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Value::Tuple(items));
            }
            b'd' => {
                let items = self.pop_to_mark()?;
                self.push(Value::Dict(Vec::new()));
                let d = self.top()?;
                self.dict_items(d, items)?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                let d = self.top()?;
                self.dict_items(d, vec![k, v])?;
            }
            b'u' => {
                let items = self.pop_to_mark()?;
                let d = self.top()?;
                self.dict_items(d, items)?;
            }
            b'a' | b'e' => {
                let items = if op == b'a' { vec![self.pop()?] } else { self.pop_to_mark()? };
                let l = self.top()?;
                let Value::List(list) = &mut self.arena[l] else { bail!("APPEND(S) on a non-list") };
                list.extend(items);
            }
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'J' => {
                let v = self.u32()? as i32;
                self.push(Value::Int(v as i64));
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Value::Int(v as i64));
            }
            b'M' => {
                let v = self.u16()?;
                self.push(Value::Int(v as i64));
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes
                let n = self.u8()? as usize;
                if n > 8 {
                    bail!("integer of {n} bytes");
                }
                let bytes = self.take(n)?;
                let mut buf = [if bytes.last().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 }; 8];
                buf[..n].copy_from_slice(bytes);
                self.push(Value::Int(i64::from_le_bytes(buf)));
            }
            b'G' => {
                let v = f64::from_be_bytes(self.take(8)?.try_into()?);
                self.push(Value::Float(v));
            }
            0x8c | b'X' | 0x8d => {
                let n = match op {
                    0x8c => self.u8()? as u64,
                    b'X' => self.u32()? as u64,
                    _ => self.u64()?,
                };
                let n = self.len(n)?;
                let s = self.text(n)?;
                self.push(Value::Str(s));
            }
            b'C' | b'B' | 0x8e => {
                let n = match op {
                    b'C' => self.u8()? as u64,
                    b'B' => self.u32()? as u64,
                    _ => self.u64()?,
                };
                let n = self.len(n)?;
                let b = self.take(n)?.to_vec();
                self.push(Value::Bytes(b));
            }
            b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'q' => self.u8()? as u64,
                    b'r' => self.u32()? as u64,
                    _ => self.memo.len() as u64,
                };
                let top = self.top()?;
                self.memo.insert(key, top);
            }
            b'h' | b'j' => {
                let key = if op == b'h' { self.u8()? as u64 } else { self.u32()? as u64 };
                let id = *self.memo.get(&key).with_context(|| format!("memo {key} is empty"))?;
                self.stack.push(id);
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.push_global(&module, &name)?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (module, name) = (self.str_at(module)?.to_string(), self.str_at(name)?.to_string());
                self.push_global(&module, &name)?;
            }
            b'R' => self.reduce()?,
            b'b' => self.build()?,
            b'S' | b'V' | b'I' | b'L' | b'F' | b'p' | b'g' | b'l' | b'U' | b'T' => self.step_text(op)?,
            b'Q' | 0x81 if self.torch => self.step_torch(op)?,
            _ => bail!(
                "not an opcode paddle.save writes ({:?}); refusing the file",
                char::from(op).escape_default().to_string()
            ),
        }
        Ok(())
    }

    fn push_global(&mut self, module: &str, name: &str) -> Result<()> {
        let known = Global::lookup(module, name);
        match if self.torch { known.or_else(|| Some(pth::torch_global(module, name))) } else { known } {
            Some(g) => {
                self.push(Value::Global(g));
                Ok(())
            }
            None => bail!(
                "refusing the global {module}.{name}: a .pdparams holds only numpy arrays, and \
                 Python would call this when loading the file"
            ),
        }
    }

    fn reduce(&mut self) -> Result<()> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let Value::Global(g) = self.arena[callable] else {
            bail!("REDUCE on a {}, not a known global", self.arena[callable].kind())
        };
        let args = self.tuple_at(args)?.to_vec();
        if self.torch {
            if let Some(value) = self.reduce_torch(g, &args)? {
                self.push(value);
                return Ok(());
            }
        }
        let value = match (g, args.as_slice()) {
            (Global::Reconstruct, [cls, _shape, _tag])
                if self.arena[*cls] == Value::Global(Global::NdarrayClass) =>
            {
                Value::EmptyArray
            }
            (Global::DtypeClass, [code, ..]) => {
                Value::Dtype(Dtype { code: self.str_at(*code)?.to_string(), order: "|".into() })
            }
            (Global::CodecsEncode, [text, encoding])
                if ["latin1", "latin-1"].contains(&self.str_at(*encoding)?) =>
            {
                let bytes = self
                    .str_at(*text)?
                    .chars()
                    .map(|c| u8::try_from(c as u32).context("a non-latin-1 character in bytes"))
                    .collect::<Result<Vec<u8>>>()?;
                Value::Bytes(bytes)
            }
            (Global::Tuple, [seq]) => match &self.arena[*seq] {
                Value::Tuple(items) | Value::List(items) => Value::Tuple(items.clone()),
                v => bail!("tuple() of a {}", v.kind()),
            },
            _ => bail!("unexpected call {g:?} with {} arguments", args.len()),
        };
        self.push(value);
        Ok(())
    }

    fn build(&mut self) -> Result<()> {
        let state = self.pop()?;
        let target = self.top()?;
        if self.torch && !matches!(self.arena[target], Value::Dtype(_) | Value::EmptyArray) {
            // An OrderedDict's `_metadata`, a parameter's attributes, an opaque object's state:
            // nothing a state dict's tensors need.
            return Ok(());
        }
        let state = self.tuple_at(state)?.to_vec();
        match &self.arena[target] {
            Value::Dtype(d) => {
                // numpy dtype.__setstate__: (version, byte order, subarray, names, fields, ...)
                let Some(&order) = state.get(1) else { bail!("dtype state too short") };
                let order = self.str_at(order)?.to_string();
                let code = d.code.clone();
                self.arena[target] = Value::Dtype(Dtype { code, order });
            }
            Value::EmptyArray => {
                // numpy ndarray.__setstate__: (version, shape, dtype, is_fortran, data)
                let [_, shape, dtype, fortran, data] = state.as_slice() else {
                    bail!("array state of {} items, not 5", state.len())
                };
                let shape = self
                    .tuple_at(*shape)?
                    .iter()
                    .map(|&d| usize::try_from(self.int_at(d)?).context("negative dimension"))
                    .collect::<Result<Vec<usize>>>()?;
                let Value::Dtype(dtype) = self.arena[*dtype].clone() else {
                    bail!("array dtype is a {}", self.arena[*dtype].kind())
                };
                let fortran = matches!(self.arena[*fortran], Value::Bool(true));
                let bytes = match &mut self.arena[*data] {
                    Value::Bytes(b) => std::mem::take(b),
                    // A Python 2 str (protocols 0-2): its characters are the bytes.
                    Value::Str(s) => s.chars().map(|c| c as u32 as u8).collect(),
                    v => bail!("array data is a {} (an object array?), not raw bytes", v.kind()),
                };
                let array = NdArray::from_numpy(&dtype, shape, bytes, fortran)?;
                self.arena[target] = Value::Array(array);
            }
            v => bail!("BUILD on a {}", v.kind()),
        }
        Ok(())
    }
}

/// Bytes per element of a numpy type code we can turn into a tensor.
fn element_size(code: &str) -> Option<usize> {
    Some(match code {
        "f2" | "i2" => 2,
        "f4" | "i4" => 4,
        "f8" | "i8" => 8,
        "u1" | "i1" | "b1" => 1,
        _ => return None,
    })
}

impl NdArray {
    /// Checks the payload size, and brings big-endian or Fortran-order data to C-order
    /// little-endian.
    fn from_numpy(dtype: &Dtype, shape: Vec<usize>, mut data: Vec<u8>, fortran: bool) -> Result<Self> {
        let Some(size) = element_size(&dtype.code) else {
            let hint = if dtype.code == "u2" { " (Paddle stores bfloat16 as uint16)" } else { "" };
            bail!("arrays of numpy type {:?} are not supported{hint}", dtype.code);
        };
        let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).context("array too large")?;
        if count.checked_mul(size) != Some(data.len()) {
            bail!("array of shape {shape:?} ({}) has {} bytes of data", dtype.code, data.len());
        }
        let big_endian = dtype.order == ">" || (dtype.order == "=" && cfg!(target_endian = "big"));
        if big_endian && size > 1 {
            data.chunks_exact_mut(size).for_each(|c| c.reverse());
        }
        if fortran && shape.len() > 1 {
            // Fortran order is C order of the reversed shape: transpose back element by element.
            let mut out = vec![0u8; data.len()];
            let mut index = vec![0usize; shape.len()];
            for chunk in out.chunks_exact_mut(size) {
                // `index` walks the C-order positions; the source offset is Fortran order.
                let (mut off, mut stride) = (0, 1);
                for (i, &d) in index.iter().zip(&shape) {
                    off += i * stride;
                    stride *= d;
                }
                chunk.copy_from_slice(&data[off * size..(off + 1) * size]);
                for k in (0..index.len()).rev() {
                    index[k] += 1;
                    if index[k] < shape[k] {
                        break;
                    }
                    index[k] = 0;
                }
            }
            data = out;
        }
        Ok(Self { code: dtype.code.clone(), shape, data })
    }

    fn to_tensor(&self) -> Result<Tensor> {
        let (d, shape, dev) = (&self.data, self.shape.as_slice(), &Device::Cpu);
        let t = match self.code.as_str() {
            "f4" => Tensor::from_vec(decode(d, f32::from_le_bytes), shape, dev),
            "f8" => Tensor::from_vec(decode(d, f64::from_le_bytes), shape, dev),
            "f2" => Tensor::from_vec(decode(d, half::f16::from_le_bytes), shape, dev),
            "i8" => Tensor::from_vec(decode(d, i64::from_le_bytes), shape, dev),
            "i4" => Tensor::from_vec(decode(d, |b| i32::from_le_bytes(b) as i64), shape, dev),
            "i2" => Tensor::from_vec(decode(d, |b| i16::from_le_bytes(b) as i64), shape, dev),
            "i1" => Tensor::from_vec(decode(d, |b: [u8; 1]| b[0] as i8 as i64), shape, dev),
            "u1" | "b1" => Tensor::from_vec(d.clone(), shape, dev),
            code => unreachable!("element_size admitted {code}"),
        };
        Ok(t?)
    }
}

/// Little-endian elements of `N` bytes each (the payload size was checked on reading).
fn decode<const N: usize, T>(data: &[u8], from_bytes: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N).map(|c| from_bytes(c.try_into().expect("chunks of N bytes"))).collect()
}

/// The entries of a `.pdparams` state dict, each array as a tensor (f32 stays f32; integer
/// arrays become i64, bool and uint8 u8, float16 f16), sorted by name. Split big arrays are
/// joined back; the parameter name table is dropped.
pub fn read_pdparams(path: &Path) -> Result<NamedTensors> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    parse_pdparams(&bytes).with_context(|| format!("{}: not a readable Paddle state dict", path.display()))
}

/// The entries of a `.pdparams` state dict already in memory (see `read_pdparams`).
pub fn parse_pdparams(bytes: &[u8]) -> Result<NamedTensors> {
    if bytes.first() != Some(&0x80) {
        bail!("not a pickle (paddle.save writes one; a zip would be a PyTorch checkpoint)");
    }
    let mut m = Machine::new(bytes);
    let root = m.run()?;
    let Value::Dict(items) = m.arena[root].clone() else {
        bail!("the pickle holds a {}, not a dict of parameters", m.arena[root].kind())
    };
    let mut arrays: Vec<(String, NdArray)> = Vec::new();
    let mut big_params = None;
    for (k, v) in items {
        let name = m.str_at(k).context("a parameter name that is not a string")?.to_string();
        // A paddle.Tensor outside a state dict: (tensor name, array).
        let v = match &m.arena[v] {
            Value::Tuple(pair) if pair.len() == 2 && matches!(m.arena[pair[1]], Value::Array(_)) => pair[1],
            _ => v,
        };
        match std::mem::replace(&mut m.arena[v], Value::None) {
            Value::Array(a) => arrays.push((name, a)),
            Value::Dict(_) if name == NAME_TABLE_KEY => {}
            Value::Dict(d) if name == BIG_PARAM_KEY => big_params = Some(d),
            other => bail!("entry {name:?} is a {}, not an array", other.kind()),
        }
    }
    if let Some(info) = big_params {
        join_big_params(&m, info, &mut arrays)?;
    }
    arrays.sort_by(|a, b| a.0.cmp(&b.0));
    arrays
        .into_iter()
        .map(|(n, a)| Ok((n.clone(), a.to_tensor().with_context(|| format!("array {n:?}"))?)))
        .collect()
}

/// `UnpackBigParamInfor@@`: {name: {"OriginShape": shape, "slices": [part names]}}; the parts
/// are the flattened array cut into consecutive pieces.
fn join_big_params(
    m: &Machine,
    info: Vec<(usize, usize)>,
    arrays: &mut Vec<(String, NdArray)>,
) -> Result<()> {
    for (k, v) in info {
        let name = m.str_at(k)?.to_string();
        let Value::Dict(fields) = &m.arena[v] else { bail!("{BIG_PARAM_KEY}[{name:?}] is not a dict") };
        let field = |key: &str| fields.iter().find(|(f, _)| m.str_at(*f).ok() == Some(key)).map(|(_, v)| *v);
        let (Some(shape), Some(slices)) = (field("OriginShape"), field("slices")) else {
            bail!("{BIG_PARAM_KEY}[{name:?}] lacks OriginShape or slices")
        };
        let shape = m
            .tuple_at(shape)
            .or_else(|_| match &m.arena[shape] {
                Value::List(l) => Ok(l.as_slice()),
                v => bail!("OriginShape is a {}", v.kind()),
            })?
            .iter()
            .map(|&d| usize::try_from(m.int_at(d)?).context("negative dimension"))
            .collect::<Result<Vec<usize>>>()?;
        let Value::List(parts) = &m.arena[slices] else { bail!("slices of {name:?} is not a list") };
        let mut joined: Option<NdArray> = None;
        for p in parts {
            let part = m.str_at(*p)?;
            let i = arrays
                .iter()
                .position(|(n, _)| n == part)
                .with_context(|| format!("part {part:?} of {name:?} missing"))?;
            let (_, a) = arrays.swap_remove(i);
            match &mut joined {
                None => joined = Some(a),
                Some(j) if j.code == a.code => j.data.extend_from_slice(&a.data),
                Some(j) => bail!("parts of {name:?} have types {} and {}", j.code, a.code),
            }
        }
        let mut a = joined.with_context(|| format!("{name:?} has no parts"))?;
        let size = element_size(&a.code).unwrap_or(1);
        if shape.iter().try_fold(size, |n, &d| n.checked_mul(d)) != Some(a.data.len()) {
            bail!("the parts of {name:?} do not make its shape {shape:?}");
        }
        a.shape = shape;
        arrays.push((name, a));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A protocol-2 pickle by hand: {"w": float32 [2, 3] in Fortran order, big-endian}.
    fn fortran_big_endian_pickle() -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'('];
        let s = |p: &mut Vec<u8>, t: &str| {
            p.push(0x8c);
            p.push(t.len() as u8);
            p.extend_from_slice(t.as_bytes());
        };
        s(&mut p, "w");
        p.extend_from_slice(b"cnumpy.core.multiarray\n_reconstruct\n");
        p.extend_from_slice(b"cnumpy\nndarray\n");
        p.extend_from_slice(&[b'K', 0, 0x85]);
        p.extend_from_slice(&[b'C', 1, b'b', 0x87, b'R']);
        // state: (1, (2, 3), dtype('f4') with '>', False... True for Fortran, data)
        p.extend_from_slice(&[b'(', b'K', 1, b'K', 2, b'K', 3, 0x86]);
        p.extend_from_slice(b"cnumpy\ndtype\n");
        s(&mut p, "f4");
        p.extend_from_slice(&[0x89, 0x88, 0x87, b'R']);
        p.extend_from_slice(&[b'(', b'K', 3]);
        s(&mut p, ">");
        p.extend_from_slice(&[b'N', b'N', b'N', b'J']);
        p.extend_from_slice(&(-1i32).to_le_bytes());
        p.push(b'J');
        p.extend_from_slice(&(-1i32).to_le_bytes());
        p.extend_from_slice(&[b'K', 0, b't', b'b', 0x88]);
        // C-order values 0 1 2 / 3 4 5, stored column by column: 0 3 1 4 2 5
        let mut data = Vec::new();
        for v in [0f32, 3., 1., 4., 2., 5.] {
            data.extend_from_slice(&v.to_be_bytes());
        }
        p.push(b'C');
        p.push(data.len() as u8);
        p.extend_from_slice(&data);
        p.extend_from_slice(&[b't', b'b', b'u', b'.']);
        p
    }

    #[test]
    fn reads_fortran_order_big_endian_arrays() {
        let t = parse_pdparams(&fortran_big_endian_pickle()).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].0, "w");
        assert_eq!(t[0].1.to_vec2::<f32>().unwrap(), vec![vec![0., 1., 2.], vec![3., 4., 5.]]);
    }

    #[test]
    fn refuses_unknown_globals_and_opcodes() {
        // The classic: os.system("echo pwned") through GLOBAL + REDUCE.
        let evil = b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo pwned\x85R.";
        let err = format!("{:#}", parse_pdparams(evil).unwrap_err());
        assert!(err.contains("refusing the global os.system") && err.contains("offset 2"), "{err}");
        // INST ('i') is never written by paddle.save.
        let err = format!("{:#}", parse_pdparams(b"\x80\x02(ibuiltins\neval\n.").unwrap_err());
        assert!(err.contains("not an opcode paddle.save writes"), "{err}");
        let err = format!("{:#}", parse_pdparams(b"PK\x03\x04").unwrap_err());
        assert!(err.contains("not a pickle"), "{err}");
        let err = format!("{:#}", parse_pdparams(b"\x80\x04\x8c\x05hello.").unwrap_err());
        assert!(err.contains("holds a str, not a dict"), "{err}");
        // Truncated and lying lengths are errors, not panics or huge allocations.
        let err = format!("{:#}", parse_pdparams(b"\x80\x04B\xff\xff\xff\x7f").unwrap_err());
        assert!(err.contains("truncated"), "{err}");
        let mut cut = fortran_big_endian_pickle();
        cut.truncate(cut.len() - 10);
        assert!(parse_pdparams(&cut).is_err());
    }
}
