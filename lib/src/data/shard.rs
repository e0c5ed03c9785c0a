//! `--shard K/N` (DESIGN.md §5): shard K of N keeps the videos whose 0-based ordinal in the
//! input is ≡ K (mod N), so N jobs with K = 0..N-1 (a Slurm array's task ids, GNU parallel's
//! `{#}` minus one) split a list disjointly and their outputs merge to the unsharded result.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::{BufRead, Write};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (k, n) = s.split_once('/').with_context(|| format!("--shard {s:?}: expected K/N, e.g. 0/4"))?;
        let parse = |v: &str| {
            v.trim().parse::<usize>().with_context(|| format!("--shard {s:?}: {v:?} is not a number"))
        };
        let (index, count) = (parse(k)?, parse(n)?);
        if count == 0 || index >= count {
            bail!("--shard {s:?}: K counts from 0 and must be below N (0/{n} .. {}/{n})", count.max(1) - 1);
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// Whether the input's `ordinal`-th video (0-based) belongs to this shard.
    pub fn keeps(&self, ordinal: usize) -> bool {
        ordinal % self.count == self.index
    }
}

/// Numbers the distinct videos of a record stream in order of first appearance, so that a
/// video's records all fall in the same shard.
#[derive(Default)]
pub struct VideoOrdinals {
    seen: HashMap<String, usize>,
}

impl VideoOrdinals {
    pub fn ordinal(&mut self, video: &str) -> usize {
        let next = self.seen.len();
        *self.seen.entry(video.to_string()).or_insert(next)
    }
}

/// One shard's output being read: its next line, held until its group is taken.
struct ShardLines {
    name: String,
    reader: Box<dyn BufRead>,
    peeked: Option<(String, String)>,
    line: usize,
    groups: usize,
}

impl ShardLines {
    /// The next non-empty line and its group key, or None at the end.
    fn next(&mut self, key: &str) -> Result<Option<(String, String)>> {
        if let Some(p) = self.peeked.take() {
            return Ok(Some(p));
        }
        let mut text = String::new();
        loop {
            text.clear();
            self.line += 1;
            if self.reader.read_line(&mut text).with_context(|| format!("{}: cannot read", self.name))? == 0 {
                return Ok(None);
            }
            if !text.trim().is_empty() {
                break;
            }
        }
        let value: serde_json::Value = serde_json::from_str(text.trim_end())
            .with_context(|| format!("{}: line {}: not a JSON object", self.name, self.line))?;
        let group = match value.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => bail!("{}: line {}: no {key:?} key", self.name, self.line),
        };
        if !text.ends_with('\n') {
            text.push('\n');
        }
        Ok(Some((group, text)))
    }

    /// Copies the next group (consecutive lines with one key value); false when none is left.
    fn copy_group(&mut self, key: &str, out: &mut dyn Write) -> Result<bool> {
        let Some((group, first)) = self.next(key)? else { return Ok(false) };
        out.write_all(first.as_bytes())?;
        while let Some((g, text)) = self.next(key)? {
            if g != group {
                self.peeked = Some((g, text));
                break;
            }
            out.write_all(text.as_bytes())?;
        }
        self.groups += 1;
        Ok(true)
    }
}

/// Merges the JSON Lines outputs of shards 0..N-1 (in that order) of one input back into the
/// unsharded run's order. Shard K holds the videos whose ordinal is K mod N, so the input's
/// order is one video (a run of lines with the same `key` value) from each shard in turn — the
/// order MMAction2's `collect_results_cpu` restores after a DistributedSampler. Shards of one
/// input differ by at most one video, the earlier ones holding more; anything else (a shard that
/// lost videos to failures, parts given out of order, parts of other inputs) is refused, since
/// its order cannot be restored. Returns the number of groups written.
pub fn merge_shard_lines(
    parts: Vec<(String, Box<dyn BufRead>)>,
    key: &str,
    out: &mut dyn Write,
) -> Result<usize> {
    if parts.is_empty() {
        bail!("no shard outputs to merge");
    }
    let mut shards: Vec<ShardLines> = parts
        .into_iter()
        .map(|(name, reader)| ShardLines { name, reader, peeked: None, line: 0, groups: 0 })
        .collect();
    let mut written = 0usize;
    'rounds: loop {
        for k in 0..shards.len() {
            if !shards[k].copy_group(key, out)? {
                // Shard k is done: every later shard must be done in this round, every earlier
                // one in the next.
                let (done_name, done_groups) = (shards[k].name.clone(), shards[k].groups);
                for s in &mut shards[k + 1..] {
                    if s.copy_group(key, out)? {
                        bail!(
                            "{}: more videos than {} before it ({}): not shards K = 0..N-1 of one \
                             input in order, or an earlier shard lost videos to failures",
                            s.name,
                            done_name,
                            done_groups
                        );
                    }
                }
                for s in &mut shards[..k] {
                    if s.copy_group(key, out)? {
                        bail!(
                            "{}: {} videos where shard outputs of one input differ by at most one \
                             (a shard that lost videos to failures cannot be put back in input order)",
                            s.name,
                            s.groups
                        );
                    }
                }
                break 'rounds;
            }
            written += 1;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_input() {
        let shards: Vec<Shard> = (0..3).map(|k| format!("{k}/3").parse().unwrap()).collect();
        for ordinal in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.keeps(ordinal)).count(), 1);
        }
        assert!(shards[1].keeps(4) && !shards[1].keeps(3));
        for bad in ["3/3", "1/0", "1", "a/2", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let mut o = VideoOrdinals::default();
        let got: Vec<usize> = ["a", "a", "b", "a", "c"].iter().map(|v| o.ordinal(v)).collect();
        assert_eq!(got, [0, 0, 1, 0, 2]);
    }

    fn merged(parts: &[&str]) -> Result<String> {
        let parts = parts
            .iter()
            .enumerate()
            .map(|(k, t)| {
                (format!("part{k}"), Box::new(std::io::Cursor::new(t.to_string())) as Box<dyn BufRead>)
            })
            .collect();
        let mut out = Vec::new();
        merge_shard_lines(parts, "video", &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn shard_lines_merge_back_into_input_order() {
        let line = |v: &str, c: usize| format!("{{\"video\":\"{v}\",\"clip\":{c}}}\n");
        // Seven videos, the third with two lines (per-clip output), in three shards.
        let all = ["a", "b", "c", "d", "e", "f", "g"];
        let lines = |v: &str| if v == "c" { line(v, 0) + &line(v, 1) } else { line(v, 0) };
        let whole: String = all.iter().map(|v| lines(v)).collect();
        let parts: Vec<String> =
            (0..3).map(|k| all.iter().skip(k).step_by(3).map(|v| lines(v)).collect()).collect();
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        assert_eq!(merged(&refs).unwrap(), whole);
        // One shard (or more shards than videos: empty parts).
        assert_eq!(merged(&[&whole]).unwrap(), whole);
        assert_eq!(merged(&[&line("a", 0), "", ""]).unwrap(), line("a", 0));
        // Out of order, or a shard that lost a video: refused, naming the part.
        let e = merged(&[&parts[2], &parts[0], &parts[1]]).unwrap_err().to_string();
        assert!(e.contains("part1"), "{e}");
        let short: String = parts[1].lines().skip(1).map(|l| format!("{l}\n")).collect();
        let e = merged(&[&parts[0], &short, &parts[2]]).unwrap_err().to_string();
        assert!(e.contains("part2") && e.contains("failures"), "{e}");
        let e = merged(&["{\"clip\": 1}\n"]).unwrap_err().to_string();
        assert!(e.contains("part0: line 1") && e.contains("\"video\""), "{e}");
    }
}
