//! TFRecord files and the `tf.train.Example` / `tf.train.SequenceExample` messages in them, read
//! without TensorFlow.
//!
//! Framing (tensorflow `core/lib/io/record_writer.cc`, `record_reader.cc`): each record is
//!
//! ```text
//! u64 length (little-endian) | u32 masked crc32c of those 8 bytes | data | u32 masked crc32c of data
//! ```
//!
//! where a masked CRC is `((crc >> 15) | (crc << 17)) + 0xa282ead8` (`core/lib/hash/crc32c.h`
//! `Mask`). Both CRCs are checked; a length that claims more bytes than the file has left is
//! refused before anything is allocated. A framing error ends the file: nothing after it can be
//! found again, so the reader yields the error and then stops.
//!
//! The messages are `tensorflow/core/example/example.proto` and `feature.proto`, written out as
//! prost structs (no protoc at build time).

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// TensorFlow's CRC mask delta (`crc32c.h`, `kMaskDelta`).
const MASK_DELTA: u32 = 0xa282_ead8;

/// The masked CRC-32C TFRecord stores beside the length and the data.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    ((crc >> 15) | (crc << 17)).wrapping_add(MASK_DELTA)
}

/// One record framed as TensorFlow's `TFRecordWriter` writes it.
pub fn frame_record(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Reads the records of one TFRecord file in order. Errors name the file, the record (1-based)
/// and its byte offset; after the first error the reader yields nothing more.
pub struct TfRecordReader<R> {
    inner: R,
    name: String,
    /// Bytes not yet read, when the input's length is known (a file).
    remaining: Option<u64>,
    offset: u64,
    index: usize,
    done: bool,
}

impl TfRecordReader<std::io::BufReader<std::fs::File>> {
    pub fn open(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let len = f.metadata().with_context(|| format!("{}: cannot stat", path.display()))?.len();
        Ok(Self::new(std::io::BufReader::with_capacity(1 << 20, f), path.display().to_string(), Some(len)))
    }
}

/// Reads up to `buf.len()` bytes; fewer only at the end of the input.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read> TfRecordReader<R> {
    /// `name` is used in errors; `len`, when known, lets a corrupt length be refused before
    /// any allocation.
    pub fn new(inner: R, name: impl Into<String>, len: Option<u64>) -> Self {
        Self { inner, name: name.into(), remaining: len, offset: 0, index: 0, done: false }
    }

    /// Records read so far (the failed one included).
    pub fn records_read(&self) -> usize {
        self.index
    }

    /// The next record's data; `None` at a clean end of the input.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let r = self.read_one();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r
    }

    fn read_one(&mut self) -> Result<Option<Vec<u8>>> {
        let at = format!("{}: record {} at byte {}", self.name, self.index + 1, self.offset);
        let mut head = [0u8; 12];
        let n = read_full(&mut self.inner, &mut head).with_context(|| format!("{at}: read error"))?;
        if n == 0 {
            return Ok(None);
        }
        self.index += 1;
        if n < head.len() {
            bail!("{at}: truncated: {n} of the 12 header bytes");
        }
        let len_bytes: [u8; 8] = head[..8].try_into().expect("8 bytes");
        let stored = u32::from_le_bytes(head[8..].try_into().expect("4 bytes"));
        if masked_crc32c(&len_bytes) != stored {
            bail!("{at}: bad CRC of the length (not a TFRecord file, or damaged)");
        }
        let len = u64::from_le_bytes(len_bytes);
        self.offset += 12;
        if let Some(rem) = self.remaining.as_mut() {
            *rem = rem.saturating_sub(12);
            if len.saturating_add(4) > *rem {
                bail!("{at}: truncated: declares {len} bytes of data, the file has {} left", *rem);
            }
        }
        // Without a known length, grow with what actually arrives (never `len` at once).
        let mut data = Vec::new();
        let got = (&mut self.inner)
            .take(len)
            .read_to_end(&mut data)
            .with_context(|| format!("{at}: read error"))?;
        if (got as u64) < len {
            bail!("{at}: truncated: {got} of {len} bytes of data");
        }
        let mut crc = [0u8; 4];
        let n = read_full(&mut self.inner, &mut crc).with_context(|| format!("{at}: read error"))?;
        if n < 4 {
            bail!("{at}: truncated: the data's CRC is missing");
        }
        if masked_crc32c(&data) != u32::from_le_bytes(crc) {
            bail!("{at}: bad CRC of the data (damaged record)");
        }
        self.offset += len + 4;
        if let Some(rem) = self.remaining.as_mut() {
            *rem = rem.saturating_sub(len + 4);
        }
        Ok(Some(data))
    }
}

impl<R: Read> Iterator for TfRecordReader<R> {
    type Item = Result<Vec<u8>>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

// tensorflow/core/example/feature.proto and example.proto.

#[derive(Clone, PartialEq, prost::Message)]
pub struct BytesList {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub value: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FloatList {
    #[prost(float, repeated, tag = "1")]
    pub value: Vec<f32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Int64List {
    #[prost(int64, repeated, tag = "1")]
    pub value: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Feature {
    #[prost(oneof = "Kind", tags = "1, 2, 3")]
    pub kind: Option<Kind>,
}

/// `Feature.kind`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(message, tag = "1")]
    BytesList(BytesList),
    #[prost(message, tag = "2")]
    FloatList(FloatList),
    #[prost(message, tag = "3")]
    Int64List(Int64List),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Features {
    #[prost(map = "string, message", tag = "1")]
    pub feature: HashMap<String, Feature>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureList {
    #[prost(message, repeated, tag = "1")]
    pub feature: Vec<Feature>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureLists {
    #[prost(map = "string, message", tag = "1")]
    pub feature_list: HashMap<String, FeatureList>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Example {
    #[prost(message, optional, tag = "1")]
    pub features: Option<Features>,
}

/// A `SequenceExample`'s `context` has the field number and type of an `Example`'s `features`,
/// so an `Example` decodes as a `SequenceExample` without feature lists.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SequenceExample {
    #[prost(message, optional, tag = "1")]
    pub context: Option<Features>,
    #[prost(message, optional, tag = "2")]
    pub feature_lists: Option<FeatureLists>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn read_all(bytes: &[u8], known_len: bool) -> Vec<Result<Vec<u8>>> {
        let len = known_len.then_some(bytes.len() as u64);
        TfRecordReader::new(bytes, "t.tfrecord", len).collect()
    }

    #[test]
    fn crc32c_and_its_mask_are_tensorflows() {
        // The CRC-32C check value (RFC 3720 / the Castagnoli catalogue) ...
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // ... and the masked CRCs the `tfrecord` package's writer (with the `crc32c` package)
        // frames b"abc" with: of the length 3, and of the data.
        let framed = frame_record(b"abc");
        assert_eq!(crc32c::crc32c(b"abc"), 0x364b_3fb7);
        assert_eq!(&framed[..8], &3u64.to_le_bytes());
        assert_eq!(&framed[8..12], &[0xb0, 0x99, 0x49, 0x0e]);
        assert_eq!(&framed[12..15], b"abc");
        assert_eq!(&framed[15..], &[0x6e, 0x57, 0xf1, 0x21]);
    }

    #[test]
    fn records_are_read_back_in_order() {
        let mut file = frame_record(b"first");
        file.extend(frame_record(b""));
        file.extend(frame_record(&[7u8; 1000]));
        for known in [true, false] {
            let got: Vec<Vec<u8>> = read_all(&file, known).into_iter().map(|r| r.unwrap()).collect();
            assert_eq!(got, vec![b"first".to_vec(), vec![], vec![7u8; 1000]]);
        }
        assert!(read_all(&[], true).is_empty());
    }

    #[test]
    fn a_bad_crc_or_a_cut_ends_the_file_with_the_record_named() {
        let mut file = frame_record(b"good");
        let second = file.len();
        file.extend(frame_record(b"damaged here"));
        file.extend(frame_record(b"never reached"));
        // A flipped data byte in record 2.
        let mut bad = file.clone();
        bad[second + 12 + 3] ^= 1;
        let r = read_all(&bad, true);
        assert_eq!(r.len(), 2, "the reader stops after the error");
        assert_eq!(r[0].as_ref().unwrap(), b"good");
        let e = r[1].as_ref().unwrap_err().to_string();
        assert_eq!(e, format!("t.tfrecord: record 2 at byte {second}: bad CRC of the data (damaged record)"));
        // A flipped length byte: its CRC catches it.
        let mut bad = file.clone();
        bad[second] ^= 0x40;
        let e = read_all(&bad, true)[1].as_ref().unwrap_err().to_string();
        assert!(e.contains("record 2") && e.contains("bad CRC of the length"), "{e}");
        // Cut inside record 2's data, with and without a known length.
        let cut = &file[..second + 12 + 5];
        let e = read_all(cut, true)[1].as_ref().unwrap_err().to_string();
        assert!(
            e.contains("record 2 at byte") && e.contains("declares 12 bytes of data, the file has 5 left"),
            "{e}"
        );
        let e = read_all(cut, false)[1].as_ref().unwrap_err().to_string();
        assert!(e.contains("record 2") && e.contains("truncated: 5 of 12 bytes of data"), "{e}");
        // Cut inside the header, and before the data's CRC.
        let e = read_all(&file[..second + 7], true)[1].as_ref().unwrap_err().to_string();
        assert!(e.contains("truncated: 7 of the 12 header bytes"), "{e}");
        let e = read_all(&file[..second + 12 + 12 + 2], false)[1].as_ref().unwrap_err().to_string();
        assert!(e.contains("the data's CRC is missing"), "{e}");
    }

    #[test]
    fn a_huge_declared_length_is_refused_before_allocating() {
        let len = (1u64 << 62).to_le_bytes();
        let mut file = len.to_vec();
        file.extend(masked_crc32c(&len).to_le_bytes());
        file.extend(b"tiny");
        let e = read_all(&file, true)[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("declares 4611686018427387904 bytes of data, the file has 4 left"), "{e}");
        // Unknown length (a pipe): only what arrives is read.
        let e = read_all(&file, false)[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("truncated: 4 of 4611686018427387904 bytes"), "{e}");
    }

    #[test]
    fn an_example_decodes_as_a_sequence_example_without_lists() {
        let mut context = Features::default();
        context.feature.insert(
            "labels".into(),
            Feature { kind: Some(Kind::Int64List(Int64List { value: vec![3, 7] })) },
        );
        let ex = Example { features: Some(context.clone()) };
        let seq = SequenceExample::decode(ex.encode_to_vec().as_slice()).unwrap();
        assert_eq!(seq.context, Some(context));
        assert!(seq.feature_lists.is_none());
    }
}
