//! `--merge` for the tools that write one JSON line per video (vclassify, vpropose, vcaption,
//! vground): the outputs of `--shard 0/N .. N-1/N` back into the unsharded run's bytes.
//! Lines go back in input order (vidkit::data::merge_shard_lines); ActivityNet result JSONs
//! (`vpropose --format activitynet`) join their `results`, whose keys are written sorted anyway.

use crate::Outcome;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use vidkit::data::merge_shard_lines;
use vidkit::io::Output;

/// Whether a file holds one ActivityNet result JSON rather than JSON Lines.
fn is_result_json(path: &Path) -> Result<bool> {
    let mut head = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?
        .take(64)
        .read_to_end(&mut head)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let head = String::from_utf8_lossy(&head);
    let head: String = head.chars().filter(|c| !c.is_whitespace()).collect();
    Ok(head.starts_with("{\"version\"")
        || head.starts_with("{\"external_data\"")
        || head.starts_with("{\"results\""))
}

/// Joins ActivityNet result JSONs: one `results` object, a video in two parts refused.
fn merge_result_json(parts: &[PathBuf], out: &mut dyn Write) -> Result<usize> {
    let mut merged: Option<Value> = None;
    for p in parts {
        let text = std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))?;
        let results = v
            .get("results")
            .and_then(Value::as_object)
            .with_context(|| {
                format!("{}: no \"results\" object (not an ActivityNet result JSON)", p.display())
            })?
            .clone();
        match &mut merged {
            None => merged = Some(v),
            Some(m) => {
                let all = m["results"].as_object_mut().context("results")?;
                for (id, segments) in results {
                    if all.insert(id.clone(), segments).is_some() {
                        bail!("{}: video {id:?} is in an earlier part too: not disjoint shards", p.display());
                    }
                }
            }
        }
    }
    let merged = merged.context("no shard outputs to merge")?;
    writeln!(out, "{merged}")?;
    Ok(merged["results"].as_object().map_or(0, |r| r.len()))
}

/// Merges shard outputs into `output` (atomically) or stdout; `key` groups a video's lines.
pub fn merge(
    tool: &str,
    parts: &[PathBuf],
    output: Option<&Path>,
    key: &str,
    quiet: bool,
) -> Result<Outcome> {
    if parts.is_empty() {
        bail!("--merge needs the shard outputs, shard 0 first");
    }
    if let Some(o) = output {
        if parts.iter().any(|p| p == o) {
            bail!("{}: --merge would overwrite one of its inputs", o.display());
        }
    }
    let mut out = Output::open(output)?;
    let n = if is_result_json(&parts[0])? {
        merge_result_json(parts, &mut out)?
    } else {
        let readers = parts
            .iter()
            .map(|p| {
                let f = std::fs::File::open(p).with_context(|| format!("{}: cannot open", p.display()))?;
                Ok((p.display().to_string(), Box::new(BufReader::new(f)) as Box<dyn BufRead>))
            })
            .collect::<Result<Vec<_>>>()?;
        merge_shard_lines(readers, key, &mut out)?
    };
    out.finish()?;
    if !quiet {
        eprintln!("{tool}: merged {} shard outputs, {n} videos", parts.len());
    }
    Ok(Outcome::Success)
}
