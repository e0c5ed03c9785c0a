//! `--shard K/N` (DESIGN.md §5): shard K of N keeps the videos whose 0-based ordinal in the
//! input is ≡ K (mod N), so N jobs with K = 0..N-1 (a Slurm array's task ids, GNU parallel's
//! `{#}` minus one) split a list disjointly and their outputs merge to the unsharded result.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;

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
}
