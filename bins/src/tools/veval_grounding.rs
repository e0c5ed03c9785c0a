//! `veval --grounding`: R@{1,5,10} at IoU {0.1,0.3,0.5,0.7} over grounding predictions
//! (`{"query_id", "video", "candidates": [[t0, t1, score], ...]}` per line, as vground writes
//! them), against `--gt` query lines or each prediction's own `gt`. The formulas live in
//! `vidkit::metric::grounding`.

use super::veval::Args;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use vidkit::metric::grounding::{recall_at, GroundingProtocol, GroundingQuery, IOU_THRESHOLDS, TOP_K};

/// `--grounding-protocol`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// TALL's compute_IoU_recall_top_n_forreg: temporal NMS at IoU m - 0.05, then IoU >= m.
    Tall,
    /// MMAction2's RecallatTopK: the first k candidates as listed, IoU > m.
    Mmaction2,
}

fn name(p: &Path) -> String {
    if p.as_os_str() == "-" {
        "<stdin>".into()
    } else {
        p.display().to_string()
    }
}

/// A query's key: (video, query_id as written; a number and its string are the same id).
fn key(v: &Value, at: &str) -> Result<(String, String)> {
    let video = match v.get("video") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => bail!("{at}: \"video\" must be a string, not {other}"),
        None => bail!("{at}: no \"video\""),
    };
    let id = match v.get("query_id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => bail!("{at}: \"query_id\" must be a string or a number, not {other}"),
        None => bail!("{at}: no \"query_id\""),
    };
    Ok((video, id))
}

/// A `[t0, t1]` ground-truth segment: finite, t0 < t1 (the references divide by its hull).
fn segment(v: &Value, at: &str) -> Result<(f64, f64)> {
    let bad = || anyhow::anyhow!("{at}: \"gt\" must be [t0, t1] in seconds with t0 < t1, not {v}");
    let a = v.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
    let (t0, t1) = (a[0].as_f64().ok_or_else(bad)?, a[1].as_f64().ok_or_else(bad)?);
    if !(t0.is_finite() && t1.is_finite() && t0 < t1) {
        return Err(bad());
    }
    Ok((t0, t1))
}

fn candidates(v: Option<&Value>, at: &str) -> Result<Vec<[f64; 3]>> {
    let Some(v) = v else { bail!("{at}: no \"candidates\"") };
    let list =
        v.as_array().with_context(|| format!("{at}: \"candidates\" must be a list of [t0, t1, score]"))?;
    list.iter()
        .enumerate()
        .map(|(j, c)| {
            let nums: Option<Vec<f64>> =
                c.as_array().filter(|a| a.len() == 3).and_then(|a| a.iter().map(Value::as_f64).collect());
            match nums {
                Some(n) if n.iter().all(|x| x.is_finite()) => Ok([n[0], n[1], n[2]]),
                _ => bail!("{at}: candidate {j} must be [t0, t1, score] with finite numbers, not {c}"),
            }
        })
        .collect()
}

fn read_lines(path: &Path) -> Result<Vec<(usize, Value)>> {
    let src = name(path);
    let mut out = Vec::new();
    for (i, line) in vidkit::io::open_input(path)?.lines().enumerate() {
        let line = line.with_context(|| format!("{src}: cannot read"))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{src}: line {}: not a JSON object: {e}", i + 1))?;
        if !v.is_object() {
            bail!("{src}: line {}: not a JSON object", i + 1);
        }
        out.push((i + 1, v));
    }
    Ok(out)
}

/// The metrics JSON (one line) for `args`; the table goes to stderr unless --quiet.
pub fn evaluate(args: &Args) -> Result<String> {
    let src = name(&args.pred);
    let preds = read_lines(&args.pred)?;
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut parsed = Vec::with_capacity(preds.len());
    for (line, v) in &preds {
        let at = format!("{src}: line {line}");
        let k = key(v, &at)?;
        if let Some(first) = seen.insert(k.clone(), *line) {
            bail!("{at}: query {:?} of video {:?} again (first at line {first})", k.1, k.0);
        }
        let own_gt = v.get("gt").map(|g| segment(g, &at)).transpose()?;
        parsed.push((*line, k, candidates(v.get("candidates"), &at)?, own_gt));
    }
    if parsed.is_empty() {
        bail!("{src}: no predictions to evaluate");
    }
    // (video, query_id) -> (line, segment)
    type Truth = HashMap<(String, String), (usize, (f64, f64))>;
    let gt: Option<Truth> = match &args.gt {
        None => None,
        Some(p) => {
            let gsrc = name(p);
            let mut m = HashMap::new();
            for (line, v) in read_lines(p)? {
                let at = format!("{gsrc}: line {line}");
                let k = key(&v, &at)?;
                let seg = segment(v.get("gt").with_context(|| format!("{at}: no \"gt\""))?, &at)?;
                if let Some((first, _)) = m.insert(k.clone(), (line, seg)) {
                    bail!("{at}: query {:?} of video {:?} again (first at line {first})", k.1, k.0);
                }
            }
            Some(m)
        }
    };
    let mut queries = Vec::with_capacity(parsed.len());
    let (mut skipped, mut empty) = (0usize, 0usize);
    for (line, k, cands, own) in parsed {
        let truth = match (&gt, own) {
            (Some(g), _) => g.get(&k).map(|(_, s)| *s),
            (None, own) => own,
        };
        let Some(truth) = truth else {
            if args.allow_missing {
                skipped += 1;
                continue;
            }
            match &args.gt {
                Some(p) => bail!(
                    "{src}: line {line}: no ground truth for query {:?} of video {:?} in {} (--allow-missing skips it)",
                    k.1,
                    k.0,
                    p.display()
                ),
                None => bail!("{src}: line {line}: no \"gt\" and no --gt file was given"),
            }
        };
        empty += usize::from(cands.is_empty());
        queries.push(GroundingQuery { candidates: cands, gt: truth });
    }
    if let (Some(g), Some(p)) = (&gt, &args.gt) {
        let mut unpredicted: Vec<(usize, &(String, String))> =
            g.iter().filter(|(k, _)| !seen.contains_key(*k)).map(|(k, (l, _))| (*l, k)).collect();
        unpredicted.sort();
        if let Some((line, (video, id))) = unpredicted.first() {
            if !args.allow_missing {
                bail!(
                    "{}: line {line}: no prediction for query {id:?} of video {video:?} in {src}{}",
                    p.display(),
                    if unpredicted.len() > 1 {
                        format!(" (and {} more; --allow-missing skips them)", unpredicted.len() - 1)
                    } else {
                        String::new()
                    }
                );
            }
            skipped += unpredicted.len();
        }
    }
    if queries.is_empty() {
        bail!("{src}: no prediction has ground truth; nothing to evaluate");
    }
    let protocol = match args.grounding_protocol {
        Protocol::Tall => GroundingProtocol::Tall,
        Protocol::Mmaction2 => GroundingProtocol::Mmaction2,
    };
    let r = recall_at(&queries, protocol);
    if !args.quiet {
        let pname = if protocol == GroundingProtocol::Tall { "tall" } else { "mmaction2" };
        eprintln!("grounding: {} queries from {src}, protocol {pname}", queries.len());
        if empty > 0 {
            eprintln!(
                "  {empty} queries without candidates (counted as misses, as the references count them)"
            );
        }
        if skipped > 0 {
            eprintln!("  skipped {skipped} predictions or queries without a counterpart (--allow-missing)");
        }
        eprintln!("  {:<6}{}", "", IOU_THRESHOLDS.map(|m| format!("{:>9}", format!("IoU={m}"))).join(""));
        for (i, k) in TOP_K.iter().enumerate() {
            let cells: String = r[i].iter().map(|v| format!("{:>8.2}%", 100.0 * v)).collect();
            eprintln!("  R@{k:<4}{cells}");
        }
    }
    Ok(grounding_json(&r, queries.len(), protocol))
}

/// `{"r_at": {"1": {"0.1": ..}, "5": .., "10": ..}, "queries", "protocol"}`, keys in this order.
fn grounding_json(r: &[[f64; 4]; 3], queries: usize, protocol: GroundingProtocol) -> String {
    let rows: Vec<String> = TOP_K
        .iter()
        .zip(r)
        .map(|(k, row)| {
            let cells: Vec<String> =
                IOU_THRESHOLDS.iter().zip(row).map(|(m, v)| format!("\"{m}\":{}", Value::from(*v))).collect();
            format!("\"{k}\":{{{}}}", cells.join(","))
        })
        .collect();
    let p = if protocol == GroundingProtocol::Tall { "tall" } else { "mmaction2" };
    format!("{{\"r_at\":{{{}}},\"queries\":{queries},\"protocol\":\"{p}\"}}\n", rows.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_k_and_threshold_order() {
        let r = [[1.0, 0.5, 0.25, 0.0], [1.0; 4], [1.0; 4]];
        let j = grounding_json(&r, 4, GroundingProtocol::Tall);
        assert!(
            j.starts_with("{\"r_at\":{\"1\":{\"0.1\":1.0,\"0.3\":0.5,\"0.5\":0.25,\"0.7\":0.0},\"5\":"),
            "{j}"
        );
        assert!(j.ends_with("\"queries\":4,\"protocol\":\"tall\"}\n"), "{j}");
        let v: Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["r_at"]["10"]["0.7"], 1.0);
    }
}
