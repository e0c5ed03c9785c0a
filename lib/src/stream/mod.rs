//! The clip stream: records of one compact JSON header line followed by one NPY (v1.0) array.
//!
//! Specified for outside producers and consumers in `man/vidkit-stream.5`. Readers accept NPY
//! v1/v2/v3 headers, C or Fortran order, dtypes `|u1`, `<f4` and `<f2`; writers emit v1.0, C order.

mod header;
mod npy;
pub mod prediction;

pub use header::{Label, Norm, RecordHeader};
pub use npy::{Array, DType};
pub use prediction::{write_prediction, Prediction, TopEntry};

use anyhow::{bail, Context, Result};
use std::io::{BufRead, Write};

/// One record: its header and its array.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub header: RecordHeader,
    pub array: Array,
}

/// Reads records one after another from any buffered reader (a pipe, a file).
pub struct StreamReader<R: BufRead> {
    inner: R,
    source: String,
    records_read: usize,
    line: Vec<u8>,
}

impl<R: BufRead> StreamReader<R> {
    /// `source` names the stream in error messages (a path, or `<stdin>`).
    pub fn new(inner: R, source: impl Into<String>) -> Self {
        Self { inner, source: source.into(), records_read: 0, line: Vec::new() }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The next record, `None` at a clean end of stream (EOF where a header would start).
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        let n = self.records_read;
        self.line.clear();
        let got = self
            .inner
            .read_until(b'\n', &mut self.line)
            .with_context(|| format!("{}: record {n}: read error", self.source))?;
        if got == 0 {
            return Ok(None);
        }
        if self.line.last() != Some(&b'\n') {
            bail!(
                "{}: record {n}: malformed stream: header line ends without a newline (truncated stream?)",
                self.source
            );
        }
        let header: RecordHeader = serde_json::from_slice(&self.line).map_err(|e| {
            let shown = String::from_utf8_lossy(&self.line[..self.line.len().min(60)]).into_owned();
            anyhow::anyhow!(
                "{}: record {n}: malformed stream: header is not a JSON object ({e}); it starts {shown:?}",
                self.source
            )
        })?;
        let array = npy::read_array(&mut self.inner)
            .with_context(|| format!("{}: record {n}: malformed stream", self.source))?;
        self.records_read += 1;
        Ok(Some(Record { header, array }))
    }
}

impl<R: BufRead> Iterator for StreamReader<R> {
    type Item = Result<Record>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Writes records to any writer. Each record is written whole with one `write_all` per part;
/// callers that need atomic files wrap a temporary file (see `crate::io::AtomicFile`).
pub struct StreamWriter<W: Write> {
    inner: W,
}

impl<W: Write> StreamWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner }
    }

    pub fn write_record(&mut self, header: &RecordHeader, array: &Array) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(header).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.inner.write_all(&line)?;
        npy::write_array(&mut self.inner, array)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    fn frames_header(video: &str) -> RecordHeader {
        RecordHeader {
            kind: "frames".into(),
            video: Some(video.into()),
            label: Some(Label::Single(3)),
            clip: Some(0),
            view: Some(1),
            indices: Some(vec![0, 5, 9]),
            layout: Some("THWC".into()),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_u8_f32_f16_records() {
        let u8s =
            ArrayD::from_shape_fn(IxDyn(&[3, 4, 5, 3]), |i| (i[0] * 60 + i[1] * 15 + i[2] * 3 + i[3]) as u8);
        let f32s = ArrayD::from_shape_fn(IxDyn(&[2, 7]), |i| i[0] as f32 - 0.5 * i[1] as f32);
        let f16s = f32s.mapv(half::f16::from_f32);
        let mut extra = frames_header("a.mp4");
        extra.extra.insert("custom".into(), serde_json::json!({"x": [1, 2]}));
        let mut buf = Vec::new();
        {
            let mut w = StreamWriter::new(&mut buf);
            w.write_record(&extra, &Array::U8(u8s.clone())).unwrap();
            w.write_record(&RecordHeader::features("b"), &Array::F32(f32s.clone())).unwrap();
            w.write_record(&RecordHeader::features("c"), &Array::F16(f16s.clone())).unwrap();
        }
        let recs: Vec<Record> = StreamReader::new(&buf[..], "mem").collect::<Result<_>>().unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].header, extra);
        assert_eq!(recs[0].array, Array::U8(u8s));
        assert_eq!(recs[1].array, Array::F32(f32s));
        assert_eq!(recs[2].array, Array::F16(f16s));
        assert_eq!(recs[1].header.video.as_deref(), Some("b"));
    }

    #[test]
    fn empty_stream_has_no_records() {
        let mut r = StreamReader::new(&b""[..], "mem");
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn malformed_records_name_the_source_and_record() {
        let mut buf = Vec::new();
        StreamWriter::new(&mut buf)
            .write_record(&frames_header("a"), &Array::U8(ArrayD::zeros(IxDyn(&[2, 2, 2, 3]))))
            .unwrap();
        // Truncated payload.
        let cut = &buf[..buf.len() - 5];
        let err = StreamReader::new(cut, "s.vks").collect::<Result<Vec<_>>>().unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("s.vks: record 0: malformed stream"), "{msg}");
        assert!(msg.contains("truncated"), "{msg}");
        // Header that is not JSON.
        let err = StreamReader::new(&b"hello\n"[..], "x").next_record().unwrap_err();
        assert!(format!("{err:#}").contains("x: record 0: malformed stream: header is not a JSON object"));
        // JSON header but no NPY magic.
        let err =
            StreamReader::new(&b"{\"kind\":\"frames\"}\nnot npy at all"[..], "y").next_record().unwrap_err();
        assert!(format!("{err:#}").contains("NPY"), "{err:#}");
        // Second record broken after a good one: the first is still delivered.
        let mut two = buf.clone();
        two.extend_from_slice(b"{\"kind\":");
        let mut r = StreamReader::new(&two[..], "z");
        assert!(r.next_record().unwrap().is_some());
        assert!(format!("{:#}", r.next_record().unwrap_err()).contains("z: record 1"));
    }
}
