//! Grounding query files (`vground --queries`, `vtrain --arch tall --gt`): JSON Lines, one query
//! a line, `{"query_id", "video", "embedding": [...] | "embedding_file": "x.npy", "gt"?: [t0, t1],
//! "sentence"?}`. The embedding is the sentence's vector (TALL's reference feeds skip-thought
//! vectors of 4800); `embedding_file` names a 1-D `.npy` (float32 or float64), relative to the
//! query file's directory. `gt` is the sentence's segment in seconds. Blank lines are skipped;
//! any other unreadable line is an error naming the file and line.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;

/// One query.
#[derive(Clone, Debug, PartialEq)]
pub struct GroundingQuery {
    pub query_id: String,
    pub video: String,
    pub embedding: Vec<f32>,
    /// The ground-truth segment, seconds.
    pub gt: Option<(f64, f64)>,
    /// 1-based line in its file, for messages.
    pub line: usize,
}

/// Reads every query of `path` (`-` for stdin).
pub fn read_queries(path: &Path) -> Result<Vec<GroundingQuery>> {
    let name = path.display().to_string();
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("<stdin>: cannot read queries")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("{name}: cannot read queries"))?
    };
    let base = path.parent().unwrap_or(Path::new(""));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let q = parse_query(line, base).with_context(|| format!("{name}: line {}", i + 1))?;
        out.push(GroundingQuery { line: i + 1, ..q });
    }
    if out.is_empty() {
        bail!("{name}: no queries");
    }
    Ok(out)
}

fn parse_query(line: &str, base: &Path) -> Result<GroundingQuery> {
    let v: Value = serde_json::from_str(line).context("not JSON")?;
    let query_id = match v.get("query_id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => bail!("no \"query_id\" (a string or number)"),
    };
    let video = v.get("video").and_then(Value::as_str).context("no \"video\" (a string)")?.to_string();
    let embedding = match (v.get("embedding"), v.get("embedding_file")) {
        (Some(Value::Array(a)), None) => a
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<f32>>>()
            .context("\"embedding\" holds a value that is not a number")?,
        (None, Some(Value::String(f))) => read_embedding_file(&base.join(f))?,
        (Some(_), Some(_)) => bail!("both \"embedding\" and \"embedding_file\": give one"),
        _ => bail!("no \"embedding\" (a list of numbers) or \"embedding_file\" (a .npy path)"),
    };
    if embedding.is_empty() || embedding.iter().any(|x| !x.is_finite()) {
        bail!("query {query_id:?}: the embedding is empty or holds a non-finite value");
    }
    let gt = match v.get("gt") {
        None | Some(Value::Null) => None,
        Some(g) => {
            let pair = g.as_array().and_then(|a| Some((a.first()?.as_f64()?, a.get(1)?.as_f64()?)));
            match pair {
                Some((a, b))
                    if a.is_finite() && b.is_finite() && a <= b && g.as_array().map(Vec::len) == Some(2) =>
                {
                    Some((a, b))
                }
                _ => bail!("query {query_id:?}: \"gt\" is not [t0, t1] with t0 <= t1"),
            }
        }
    };
    Ok(GroundingQuery { query_id, video, embedding, gt, line: 0 })
}

fn read_embedding_file(path: &Path) -> Result<Vec<f32>> {
    use ndarray_npy::ReadNpyExt;
    let open = || std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()));
    if let Ok(a) = ndarray::Array1::<f32>::read_npy(open()?) {
        return Ok(a.to_vec());
    }
    match ndarray::Array1::<f64>::read_npy(open()?) {
        Ok(a) => Ok(a.iter().map(|&x| x as f32).collect()),
        Err(e) => bail!("{}: not a 1-D float32 or float64 .npy: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inline_and_file_embeddings_and_names_bad_lines() {
        let d = tempfile::tempdir().unwrap();
        let e = ndarray::Array1::from(vec![0.5f64, -1.0]);
        ndarray_npy::write_npy(d.path().join("e.npy"), &e).unwrap();
        let q = d.path().join("q.jsonl");
        std::fs::write(
            &q,
            "{\"query_id\": 3, \"video\": \"v1\", \"embedding\": [1, 2], \"gt\": [1.5, 2]}\n\n\
             {\"query_id\": \"b\", \"video\": \"v2\", \"embedding_file\": \"e.npy\"}\n",
        )
        .unwrap();
        let qs = read_queries(&q).unwrap();
        assert_eq!(qs.len(), 2);
        assert_eq!((qs[0].query_id.as_str(), qs[0].gt, qs[0].line), ("3", Some((1.5, 2.0)), 1));
        assert_eq!((qs[1].embedding.clone(), qs[1].line), (vec![0.5, -1.0], 3));
        std::fs::write(&q, "{\"query_id\": 1, \"video\": \"v\", \"embedding\": [1, \"x\"]}\n").unwrap();
        let err = format!("{:#}", read_queries(&q).unwrap_err());
        assert!(err.contains("q.jsonl: line 1") && err.contains("not a number"), "{err}");
        std::fs::write(&q, "{\"query_id\": 1, \"video\": \"v\", \"embedding\": [1], \"gt\": [3, 2]}\n")
            .unwrap();
        assert!(format!("{:#}", read_queries(&q).unwrap_err()).contains("\"gt\""));
    }
}
