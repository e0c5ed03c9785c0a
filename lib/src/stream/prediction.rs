//! Prediction records (DESIGN.md §2.3): JSON Lines, one object per video (or per clip),
//! `{"video", "label"?, "scores": [all classes], "top": [{"class", "name"?, "score"}]}`.
//! Unknown keys are kept in `extra` and written back untouched.
//!
//! Classes are ranked by score, highest first; among equal scores the lower class index ranks
//! first (numpy's `argmax` takes the first maximum; its `argsort` leaves the tie order
//! unspecified, so we fix it). NaN ranks above every number, as numpy sorts it last. `top` and the
//! metrics in `crate::metric` both use [`cmp_rank`].

use super::Label;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::io::{BufRead, Write};
use std::path::Path;

/// One entry of `top`: a class index, its name when a label map was given, and its score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopEntry {
    pub class: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub score: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The video as the producer named it (vsample: the path as written in the list).
    pub video: String,
    /// Ground truth carried through from the stream, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
    /// One score per class (probabilities or logits, per the model's config).
    pub scores: Vec<f32>,
    /// The best classes, best first (see the module docs for the order of ties).
    #[serde(default)]
    pub top: Vec<TopEntry>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// How class `i` (score `a`) ranks against class `j` (score `b`): `Less` means `i` comes first.
/// Higher score first; NaN above every number; equal scores by lower class index.
pub fn cmp_rank(i: usize, a: f32, j: usize, b: f32) -> Ordering {
    let by_score = match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        // -0.0 and 0.0 compare equal, as in numpy.
        (false, false) => b.partial_cmp(&a).expect("non-NaN scores compare"),
    };
    by_score.then(i.cmp(&j))
}

/// The `k` best class indices of one score vector, best first (all of them when `k` is larger).
pub fn top_classes(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let k = k.min(idx.len());
    let by_rank = |&i: &usize, &j: &usize| cmp_rank(i, scores[i], j, scores[j]);
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, by_rank);
    }
    idx.truncate(k);
    idx.sort_unstable_by(by_rank);
    idx
}

impl Prediction {
    /// A record with `top` filled from `scores` (`k` entries; names from `names` when given).
    pub fn from_scores(
        video: impl Into<String>,
        label: Option<Label>,
        scores: Vec<f32>,
        k: usize,
        names: Option<&[String]>,
    ) -> Self {
        let top = top_classes(&scores, k)
            .into_iter()
            .map(|c| TopEntry { class: c, name: names.and_then(|n| n.get(c).cloned()), score: scores[c] })
            .collect();
        Self { video: video.into(), label, scores, top, extra: Map::new() }
    }
}

/// Writes one record as one line of compact JSON.
pub fn write_prediction<W: Write>(mut w: W, p: &Prediction) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(p).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)
}

/// Reads records line by line; blank lines are skipped. Errors name the source and the 1-based
/// line: `preds.jsonl: line 7: malformed prediction: ...`.
pub struct PredictionReader<R: BufRead> {
    inner: R,
    source: String,
    line_no: usize,
    buf: String,
}

impl<R: BufRead> PredictionReader<R> {
    /// `source` names the input in error messages (a path, or `<stdin>`).
    pub fn new(inner: R, source: impl Into<String>) -> Self {
        Self { inner, source: source.into(), line_no: 0, buf: String::new() }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The next record with its 1-based line number; `None` at end of input.
    pub fn next_prediction(&mut self) -> Result<Option<(usize, Prediction)>> {
        loop {
            self.buf.clear();
            self.line_no += 1;
            let n = self.line_no;
            let got = self
                .inner
                .read_line(&mut self.buf)
                .with_context(|| format!("{}: line {n}: read error", self.source))?;
            if got == 0 {
                return Ok(None);
            }
            let text = self.buf.trim();
            if text.is_empty() {
                continue;
            }
            let p: Prediction = serde_json::from_str(text).map_err(|e| {
                let shown: String = text.chars().take(60).collect();
                anyhow::anyhow!(
                    "{}: line {n}: malformed prediction: {e} (expected {{\"video\", \"scores\", ...}}); it starts {shown:?}",
                    self.source
                )
            })?;
            return Ok(Some((n, p)));
        }
    }
}

impl<R: BufRead> Iterator for PredictionReader<R> {
    type Item = Result<(usize, Prediction)>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_prediction().transpose()
    }
}

/// Reads a whole predictions file (`-` is stdin), each record with its line number.
pub fn read_predictions(path: &Path) -> Result<Vec<(usize, Prediction)>> {
    let source = if path.as_os_str() == "-" { "<stdin>".to_string() } else { path.display().to_string() };
    PredictionReader::new(crate::io::open_input(path)?, source).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_unknown_keys_and_optional_fields() {
        let line = r#"{"video":"a/b.mp4","label":3,"scores":[0.1,0.7,0.2],"top":[{"class":1,"name":"run","score":0.7}],"clip":2,"model":{"arch":"tsn"}}"#;
        let p: Prediction = serde_json::from_str(line).unwrap();
        assert_eq!(p.label, Some(Label::Single(3)));
        assert_eq!(p.top, vec![TopEntry { class: 1, name: Some("run".into()), score: 0.7 }]);
        assert_eq!(p.extra["clip"], serde_json::json!(2));
        let mut out = Vec::new();
        write_prediction(&mut out, &p).unwrap();
        let back: Prediction = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, p);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);

        let multi: Prediction = serde_json::from_str(r#"{"video":"v","label":[1,4],"scores":[]}"#).unwrap();
        assert_eq!(multi.label, Some(Label::Multi(vec![1, 4])));
        assert!(multi.top.is_empty());
        let bare = serde_json::to_string(&Prediction::from_scores("v", None, vec![1.0], 1, None)).unwrap();
        assert_eq!(bare, r#"{"video":"v","scores":[1.0],"top":[{"class":0,"score":1.0}]}"#);
    }

    #[test]
    fn top_ranks_ties_by_lower_class_and_nan_first() {
        assert_eq!(top_classes(&[0.2, 0.5, 0.5, 0.1, 0.5], 2), vec![1, 2]);
        assert_eq!(top_classes(&[0.2, 0.5, 0.5, 0.1, 0.5], 10), vec![1, 2, 4, 0, 3]);
        assert_eq!(top_classes(&[1.0, f32::NAN, 2.0], 2), vec![1, 2]);
        assert_eq!(top_classes(&[-0.0, 0.0], 1), vec![0]);
        assert!(top_classes(&[1.0], 0).is_empty());
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let p = Prediction::from_scores("v", Some(Label::Single(2)), vec![0.1, 0.3, 0.3], 2, Some(&names));
        assert_eq!(p.top[0], TopEntry { class: 1, name: Some("b".into()), score: 0.3 });
        assert_eq!(p.top[1].class, 2);
    }

    #[test]
    fn reader_skips_blank_lines_and_names_source_and_line() {
        let text = "{\"video\":\"a\",\"scores\":[1]}\n\n{\"video\":\"b\",\"scores\":[2]}\n";
        let got: Vec<(usize, Prediction)> =
            PredictionReader::new(text.as_bytes(), "m").collect::<Result<_>>().unwrap();
        assert_eq!(
            got.iter().map(|(n, p)| (*n, p.video.as_str())).collect::<Vec<_>>(),
            vec![(1, "a"), (3, "b")]
        );

        let bad = "{\"video\":\"a\",\"scores\":[1]}\n{\"video\":\"b\"}\n";
        let err = PredictionReader::new(bad.as_bytes(), "p.jsonl").collect::<Result<Vec<_>>>().unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with("p.jsonl: line 2: malformed prediction:") && msg.contains("scores"), "{msg}");
        let err = PredictionReader::new(&b"not json\n"[..], "q").next_prediction().unwrap_err();
        assert!(format!("{err:#}").contains("q: line 1: malformed prediction"));
    }
}
