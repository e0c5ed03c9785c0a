//! NPY arrays inside a stream. Headers are parsed with `ndarray-npy`; payloads are read and
//! written as whole byte blocks, because records follow each other and `read_npy` insists on EOF.

use anyhow::{bail, Context, Result};
use half::f16;
use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use ndarray_npy::npy::header::{Header, ReadHeaderError};
use std::io::{Read, Write};

/// Element types a stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    U8,
    F32,
    F16,
}

impl DType {
    pub fn descr(self) -> &'static str {
        match self {
            DType::U8 => "|u1",
            DType::F32 => "<f4",
            DType::F16 => "<f2",
        }
    }
    fn size(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
}

/// A record's payload.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(ArrayD<u8>),
    F32(ArrayD<f32>),
    F16(ArrayD<f16>),
}

impl Array {
    pub fn dtype(&self) -> DType {
        match self {
            Array::U8(_) => DType::U8,
            Array::F32(_) => DType::F32,
            Array::F16(_) => DType::F16,
        }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Array::U8(a) => a.shape(),
            Array::F32(a) => a.shape(),
            Array::F16(a) => a.shape(),
        }
    }

    /// The values as f32 (u8 pixels keep their 0–255 scale).
    pub fn to_f32(&self) -> ArrayD<f32> {
        match self {
            Array::U8(a) => a.mapv(f32::from),
            Array::F32(a) => a.clone(),
            Array::F16(a) => a.mapv(f16::to_f32),
        }
    }
}

/// Writes an NPY v1.0 header; the dict is padded so the data starts at a multiple of 64 bytes,
/// as numpy itself does.
fn write_header(w: &mut impl Write, descr: &str, shape: &[usize]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt =
        if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    dict.push('\n');
    let len = u16::try_from(dict.len()).map_err(|_| std::io::Error::other("NPY header too long for v1.0"))?;
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(dict.as_bytes())
}

pub fn write_array(w: &mut impl Write, array: &Array) -> std::io::Result<()> {
    write_header(w, array.dtype().descr(), array.shape())?;
    match array {
        Array::U8(a) => match a.as_slice() {
            Some(s) => w.write_all(s),
            None => w.write_all(&a.iter().copied().collect::<Vec<u8>>()),
        },
        Array::F32(a) => {
            let bytes: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write_all(&bytes)
        }
        Array::F16(a) => {
            let bytes: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write_all(&bytes)
        }
    }
}

fn parse_descr(descr: &str) -> Result<DType> {
    Ok(match descr {
        "|u1" | "<u1" | "u1" | "=u1" => DType::U8,
        "<f4" => DType::F32,
        "<f2" => DType::F16,
        other => bail!("unsupported NPY dtype {other} (streams carry |u1, <f4 or <f2)"),
    })
}

/// The magic, version, header length and header dict, read as far as they go: the declared
/// header length (up to 4 GiB in v2/v3) is not trusted with an allocation either. A header cut
/// short is an UnexpectedEof here, before ndarray-npy sees it: that one allocates the declared
/// length first (540 MB for a v3 header of 56 bytes, found by fuzz_stream).
fn read_header_bytes(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(64);
    r.take(8).read_to_end(&mut head)?;
    if head.len() == 8 && head.starts_with(b"\x93NUMPY") {
        let len_bytes = if head[6] == 1 { 2 } else { 4 };
        r.take(len_bytes).read_to_end(&mut head)?;
        if head.len() == 8 + len_bytes as usize {
            let len = head[8..].iter().rev().fold(0u64, |a, &b| a << 8 | u64::from(b));
            r.take(len).read_to_end(&mut head)?;
            if (head.len() as u64) < 8 + len_bytes + len {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
    Ok(head)
}

pub fn read_array(r: &mut impl Read) -> Result<Array> {
    let head = read_header_bytes(r).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            anyhow::anyhow!("stream ends inside an NPY header (truncated stream?)")
        }
        _ => anyhow::Error::new(e).context("reading an NPY header"),
    })?;
    let header = Header::from_reader(&mut &head[..]).map_err(|e| match e {
        ReadHeaderError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            anyhow::anyhow!("stream ends inside an NPY header (truncated stream?)")
        }
        other => anyhow::anyhow!("bad NPY array header: {other}"),
    })?;
    let descr = header.type_descriptor.to_string();
    let dtype = parse_descr(descr.trim_matches(|c| c == '\'' || c == '"'))?;
    let len = header
        .shape
        .iter()
        .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
        .with_context(|| format!("NPY shape {:?} is too large", header.shape))?;
    // The declared shape is not trusted with an allocation: the buffer grows as bytes arrive.
    let mut bytes = Vec::new();
    r.take(len as u64).read_to_end(&mut bytes).context("reading an NPY payload")?;
    if bytes.len() != len {
        bail!("NPY payload of {len} bytes (shape {:?}) ends early (truncated stream?)", header.shape);
    }
    let shape = IxDyn(&header.shape);
    let fortran = header.layout.is_fortran();
    fn build<T: Clone>(shape: IxDyn, fortran: bool, v: Vec<T>) -> Result<ArrayD<T>> {
        let a =
            if fortran { ArrayD::from_shape_vec(shape.f(), v)? } else { ArrayD::from_shape_vec(shape, v)? };
        Ok(if fortran { a.as_standard_layout().into_owned() } else { a })
    }
    Ok(match dtype {
        DType::U8 => Array::U8(build(shape, fortran, bytes)?),
        DType::F32 => Array::F32(build(
            shape,
            fortran,
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        )?),
        DType::F16 => Array::F16(build(
            shape,
            fortran,
            bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect(),
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_64_byte_aligned_and_v1() {
        let mut buf = Vec::new();
        write_array(&mut buf, &Array::U8(ArrayD::zeros(IxDyn(&[8, 224, 224, 3])))).unwrap();
        let hlen = u16::from_le_bytes([buf[8], buf[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert_eq!(&buf[..8], b"\x93NUMPY\x01\x00");
        assert_eq!(buf.len(), 10 + hlen + 8 * 224 * 224 * 3);
    }

    #[test]
    fn fortran_order_arrays_are_read_in_logical_order() {
        // numpy: np.save(f, np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(2, 3)))
        let mut buf = Vec::new();
        let dict = "{'descr': '|u1', 'fortran_order': True, 'shape': (2, 3), }";
        let mut d = dict.to_string();
        d.push_str(&" ".repeat((64 - (10 + d.len() + 1) % 64) % 64));
        d.push('\n');
        buf.extend_from_slice(b"\x93NUMPY\x01\x00");
        buf.extend_from_slice(&(d.len() as u16).to_le_bytes());
        buf.extend_from_slice(d.as_bytes());
        buf.extend_from_slice(&[0, 3, 1, 4, 2, 5]);
        let a = read_array(&mut &buf[..]).unwrap();
        let want = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0u8, 1, 2, 3, 4, 5]).unwrap();
        assert_eq!(a, Array::U8(want));
    }

    #[test]
    fn huge_declared_shapes_are_refused_without_allocating() {
        for shape in [vec![1 << 40, 1 << 30], vec![usize::MAX, 2], vec![1 << 20, 1 << 20, 3]] {
            let mut buf = Vec::new();
            write_header(&mut buf, "<f4", &shape).unwrap();
            buf.extend_from_slice(&[0; 64]);
            let err = read_array(&mut &buf[..]).unwrap_err().to_string();
            assert!(err.contains("too large") || err.contains("ends early"), "{shape:?}: {err}");
        }
    }

    #[test]
    fn huge_declared_header_lengths_are_refused_without_allocating() {
        let mut buf = b"\x93NUMPY\x02\x00\xff\xff\xff\xff{'descr': '|u1'".to_vec();
        buf.extend_from_slice(&[b' '; 100]);
        let err = read_array(&mut &buf[..]).unwrap_err().to_string();
        assert!(err.contains("stream ends inside an NPY header"), "{err}");
    }

    /// fuzz_stream's second find: a v3 header declaring 540 MB in a 56-byte stream.
    #[test]
    fn a_version_3_header_cut_short_is_refused_before_its_declared_length() {
        let buf = b"\x93NUMPY\x03\x00\x00\x00\x3a\x20 '|u1',2'2, 3)3 }\n\x00\x03".to_vec();
        let err = read_array(&mut &buf[..]).unwrap_err().to_string();
        assert!(err.contains("stream ends inside an NPY header"), "{err}");
    }

    #[test]
    fn unsupported_dtype_is_refused() {
        let mut buf = Vec::new();
        write_header(&mut buf, "<i8", &[2]).unwrap();
        buf.extend_from_slice(&[0; 16]);
        let err = read_array(&mut &buf[..]).unwrap_err();
        assert!(err.to_string().contains("unsupported NPY dtype <i8"), "{err}");
    }
}
