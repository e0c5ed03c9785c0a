//! Python's text pickle opcodes (protocols 0 and 1) for the `.pdparams` reader's machine, and
//! pickled arrays on their own: the 2019 Paddle zoo's per-video feature files (ETS's
//! `feat_data/<video>`) were written by Python 2's `pickle.dump`, protocol 0.

use super::{Machine, Value};
use anyhow::{bail, Context, Result};
use std::path::Path;

impl Machine<'_> {
    /// Protocols 0 and 1 (Python 2's `pickle.dump` default, and protocol 0 under Python 3), as the
    /// 2019 Paddle zoo's per-video feature files were written: arguments as text lines, Python 2
    /// strings (`S` quoted, `U`/`T` counted) read as latin-1 text, Python 3 text (`V`) with its
    /// `\uXXXX` escapes.
    pub(super) fn step_text(&mut self, op: u8) -> Result<()> {
        let latin1 = |b: &[u8]| b.iter().map(|&c| c as char).collect::<String>();
        match op {
            b'S' => {
                let line = self.line()?;
                let body = line
                    .strip_prefix('\'')
                    .and_then(|l| l.strip_suffix('\''))
                    .or_else(|| line.strip_prefix('"').and_then(|l| l.strip_suffix('"')))
                    .context("STRING without quotes")?;
                self.push(Value::Str(latin1(&unescape_repr(body.as_bytes())?)));
            }
            b'V' => {
                let line = latin1(&self.raw_line()?);
                self.push(Value::Str(unescape_unicode(&line)?));
            }
            b'U' | b'T' => {
                let n = if op == b'U' { self.u8()? as usize } else { self.u32()? as usize };
                let b = self.take(n)?;
                self.push(Value::Str(latin1(b)));
            }
            b'I' | b'L' => {
                let line = self.line()?;
                let v = match line.as_str() {
                    "00" if op == b'I' => Value::Bool(false),
                    "01" if op == b'I' => Value::Bool(true),
                    t => {
                        Value::Int(t.trim_end_matches('L').parse().with_context(|| format!("integer {t:?}"))?)
                    }
                };
                self.push(v);
            }
            b'F' => {
                let line = self.line()?;
                self.push(Value::Float(line.parse().with_context(|| format!("float {line:?}"))?));
            }
            b'p' | b'g' => {
                let line = self.line()?;
                let key: u64 = line.parse().with_context(|| format!("memo key {line:?}"))?;
                if op == b'p' {
                    let top = self.top()?;
                    self.memo.insert(key, top);
                } else {
                    let id = *self.memo.get(&key).with_context(|| format!("memo {key} is empty"))?;
                    self.stack.push(id);
                }
            }
            _ => {
                let items = self.pop_to_mark()?;
                self.push(Value::List(items));
            }
        }
        Ok(())
    }

    /// The bytes up to the next newline (which is consumed).
    fn raw_line(&mut self) -> Result<Vec<u8>> {
        let n = self.data[self.pos..].iter().position(|&b| b == b'\n').context("unterminated line")?;
        let b = self.take(n)?.to_vec();
        self.pos += 1;
        Ok(b)
    }
}

/// The bytes of a Python 2 `repr` string body (`\\`, `\'`, `\"`, `\n`, `\r`, `\t`, `\xHH`).
fn unescape_repr(b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let e = *b.get(i + 1).context("a string ending in a backslash")?;
        i += 2;
        out.push(match e {
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'x' => {
                let hex = std::str::from_utf8(b.get(i..i + 2).context("short \\x escape")?)?;
                i += 2;
                u8::from_str_radix(hex, 16).with_context(|| format!("escape \\x{hex}"))?
            }
            b'\\' | b'\'' | b'"' => e,
            _ => bail!("unknown escape \\{}", e as char),
        });
    }
    Ok(out)
}

/// Python's raw-unicode-escape text: `\uXXXX` and `\UXXXXXXXX` escapes, the rest as it is.
fn unescape_unicode(s: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let n = match (c, chars.peek()) {
            ('\\', Some('u')) => 4,
            ('\\', Some('U')) => 8,
            _ => {
                out.push(c);
                continue;
            }
        };
        chars.next();
        let hex: String = chars.by_ref().take(n).collect();
        let code = u32::from_str_radix(&hex, 16).with_context(|| format!("escape {hex:?}"))?;
        out.push(char::from_u32(code).context("not a character")?);
    }
    Ok(out)
}

/// One pickled numpy array [T, C] as float32 (the 2019 Paddle zoo's per-video feature files, as
/// `generate_train_pickle.py` writes them with Python 2's `pickle.dump`, protocol 0; any
/// protocol up to 5), read as `.pdparams` files are: no code from the file runs.
pub fn read_pickled_array(path: &Path) -> Result<ndarray::Array2<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    pickled_array_from_bytes(&bytes).with_context(|| format!("{}", path.display()))
}

/// One pickled numpy array [T, C] already in memory (see `read_pickled_array`).
pub fn pickled_array_from_bytes(bytes: &[u8]) -> Result<ndarray::Array2<f32>> {
    let at = || "not a pickled numpy array".to_string();
    let mut m = Machine::new(bytes);
    let root = m.run().with_context(at)?;
    let Value::Array(a) = &m.arena[root] else {
        bail!("{}: the pickle holds a {}", at(), m.arena[root].kind())
    };
    let [t, c] = a.shape[..] else { bail!("{}: an array of shape {:?}, not [T, C]", at(), a.shape) };
    let v: Vec<f32> = a.to_tensor()?.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(ndarray::Array2::from_shape_vec((t, c), v)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// numpy 2.4 under Python 3, `pickle.dumps(a, protocol=0)` of [[1.5, -2], [0.25, 7]] float32.
    const PY3_PROTOCOL0: &[u8] = b"cnumpy._core.multiarray\n_reconstruct\np0\n(cnumpy\nndarray\np1\n(I0\ntp2\nc_codecs\nencode\np3\n(Vb\np4\nVlatin1\np5\ntp6\nRp7\ntp8\nRp9\n(I1\n(I2\nI2\ntp10\ncnumpy\ndtype\np11\n(Vf4\np12\nI00\nI01\ntp13\nRp14\n(I3\nV<\np15\nNNNI-1\nI-1\nI0\ntp16\nbI00\ng3\n(V\\u0000\\u0000\xc0?\\u0000\\u0000\\u0000\xc0\\u0000\\u0000\x80>\\u0000\\u0000\xe0@\np17\ng5\ntp18\nRp19\ntp20\nb.";

    /// The same array as Python 2's `pickle.dump` writes it (protocol 0: `S` strings).
    const PY2_PROTOCOL0: &[u8] = b"cnumpy.core.multiarray\n_reconstruct\np0\n(cnumpy\nndarray\np1\n(I0\ntp2\nS'b'\np3\ntp4\nRp5\n(I1\n(I2\nI2\ntp6\ncnumpy\ndtype\np7\n(S'f4'\np8\nI0\nI1\ntp9\nRp10\n(I3\nS'<'\np11\nNNNI-1\nI-1\nI0\ntp12\nbI00\nS'\\x00\\x00\\xc0?\\x00\\x00\\x00\\xc0\\x00\\x00\\x80>\\x00\\x00\\xe0@'\np13\ntp14\nb.";

    #[test]
    fn protocol_0_arrays_of_python_2_and_3() {
        let d = tempfile::tempdir().unwrap();
        for (name, bytes) in [("py3", PY3_PROTOCOL0), ("py2", PY2_PROTOCOL0)] {
            let p = d.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let a = read_pickled_array(&p).unwrap();
            assert_eq!(a, ndarray::array![[1.5f32, -2.0], [0.25, 7.0]], "{name}");
        }
        let p = d.path().join("bad");
        std::fs::write(&p, b"cos\nsystem\n(S'ls'\ntR.").unwrap();
        let e = format!("{:#}", read_pickled_array(&p).unwrap_err());
        assert!(e.contains("refusing the global os.system"), "{e}");
    }
}
