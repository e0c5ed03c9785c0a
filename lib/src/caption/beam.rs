//! Beam search as the 2019 PaddlePaddle video zoo's ETS decodes (PaddlePaddle/models release/1.8,
//! `PaddleCV/video/models/ets/ets_net.py` `infer_decoder`), through fluid's `beam_search` and
//! `beam_search_decode` operators (Paddle 1.8 `operators/math/beam_search.cc`,
//! `operators/beam_search_decode_op.h`), for one source (the reference decodes with batch 1):
//!
//! - every step, each live prefix proposes its `beam_size` most probable next words (`topk` of
//!   the softmax), scored log(p) + the prefix's score; a prefix that already ended in the end
//!   word proposes only the end word again, at its own score (no length penalty or
//!   normalisation: the reference has none);
//! - the `beam_size` best proposals over all prefixes survive (`Insert`: higher score first; on
//!   a tie the later prefix first), regrouped by prefix (`ToMap`);
//! - when every survivor is an end word after an end word, the search stops (`PruneEndBeams`);
//!   else after `max_length` steps;
//! - the hypotheses are the last step's survivors traced back through their prefixes, repeated
//!   end words dropped, sorted by their final score, best first.

use anyhow::{bail, Result};

/// The search's settings (ETS: `beam_size` 3, `max_length` 80, start 0, end 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeamConfig {
    pub beam_size: usize,
    pub max_length: usize,
    pub start_id: usize,
    pub end_id: usize,
}

/// One finished hypothesis: its words from the start word on (the end word included where it
/// ended) and the accumulated log-probability after each.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    pub tokens: Vec<usize>,
    pub scores: Vec<f32>,
}

impl Hypothesis {
    /// The final accumulated log-probability.
    pub fn score(&self) -> f32 {
        self.scores.last().copied().unwrap_or(0.0)
    }
}

#[derive(Clone, Copy, Debug)]
struct Item {
    offset: usize,
    id: usize,
    score: f32,
}

impl Item {
    /// fluid's `Item::operator<`.
    fn less(&self, other: &Item) -> bool {
        self.score < other.score || (self.score == other.score && self.offset < other.offset)
    }
}

/// fluid's `Insert`: keeps `top` sorted best first, at most `beam` long.
fn insert(top: &mut Vec<Item>, item: Item, beam: usize) {
    if top.len() >= beam {
        if item.less(&top[beam - 1]) {
            return;
        }
        top.truncate(beam - 1);
    }
    let at = top.iter().position(|t| t.less(&item)).unwrap_or(top.len());
    top.insert(at, item);
}

/// One step's survivors: word, accumulated score, and the prefix (index into the previous
/// step's survivors) each continues.
struct Step {
    ids: Vec<usize>,
    scores: Vec<f32>,
    parents: Vec<usize>,
}

/// The `k` largest of `row` with their indices, largest first (`topk`; on equal values the
/// lower index first).
fn top_k(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    for (i, &p) in row.iter().enumerate() {
        if best.len() == k && !(p > best[k - 1].1) {
            continue;
        }
        let at = best.iter().position(|&(_, q)| p > q).unwrap_or(best.len());
        best.insert(at, (i, p));
        best.truncate(k);
    }
    best
}

/// Runs the search. `step(ids, state)` gives, for the live prefixes' last words `ids` and their
/// decoder state, the next-word probabilities (row-major [ids.len(), V]) and the new state;
/// `gather(state, rows)` picks state rows for the survivors' prefixes.
pub fn beam_search<S>(
    cfg: BeamConfig,
    init: S,
    mut step: impl FnMut(&[usize], &S) -> Result<(Vec<f32>, S)>,
    gather: impl Fn(&S, &[usize]) -> Result<S>,
) -> Result<Vec<Hypothesis>> {
    if cfg.beam_size == 0 {
        bail!("beam size must be positive");
    }
    let mut steps = vec![Step { ids: vec![cfg.start_id], scores: vec![0.0], parents: vec![0] }];
    let mut state = init;
    for _ in 0..cfg.max_length {
        let pre = steps.last().expect("the start step");
        let (probs, next) = step(&pre.ids, &state)?;
        let v = probs.len() / pre.ids.len().max(1);
        if v < cfg.beam_size || v * pre.ids.len() != probs.len() {
            bail!("{v} words cannot fill a beam of {}", cfg.beam_size);
        }
        let mut top: Vec<Item> = Vec::with_capacity(cfg.beam_size + 1);
        for (offset, (&pre_id, &pre_score)) in pre.ids.iter().zip(&pre.scores).enumerate() {
            if pre_id == cfg.end_id {
                insert(&mut top, Item { offset, id: cfg.end_id, score: pre_score }, cfg.beam_size);
                continue;
            }
            for (id, p) in top_k(&probs[offset * v..(offset + 1) * v], cfg.beam_size) {
                insert(&mut top, Item { offset, id, score: p.ln() + pre_score }, cfg.beam_size);
            }
        }
        // ToMap: regrouped by prefix, each prefix's items in their ranked order.
        top.sort_by_key(|it| it.offset);
        if top.iter().all(|it| it.id == cfg.end_id && pre.ids[it.offset] == cfg.end_id) {
            break;
        }
        let parents: Vec<usize> = top.iter().map(|it| it.offset).collect();
        state = gather(&next, &parents)?;
        steps.push(Step {
            ids: top.iter().map(|it| it.id).collect(),
            scores: top.iter().map(|it| it.score).collect(),
            parents,
        });
    }
    Ok(backtrace(&steps, cfg.end_id))
}

/// `beam_search_decode`'s `Backtrace` and its sort by final score.
fn backtrace(steps: &[Step], end_id: usize) -> Vec<Hypothesis> {
    let last = steps.last().expect("the start step");
    let mut hyps: Vec<Hypothesis> = Vec::with_capacity(last.ids.len());
    for k in 0..last.ids.len() {
        let (mut tokens, mut scores) = (vec![last.ids[k]], vec![last.scores[k]]);
        let mut at = last.parents[k];
        for s in steps[..steps.len() - 1].iter().rev() {
            // A finished prefix's repeated end words are skipped (the last step's word is in).
            if s.ids[at] != end_id {
                tokens.push(s.ids[at]);
                scores.push(s.scores[at]);
            }
            at = s.parents[at];
        }
        tokens.reverse();
        scores.reverse();
        hyps.push(Hypothesis { tokens, scores });
    }
    hyps.sort_by(|a, b| b.score().total_cmp(&a.score()));
    hyps
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: BeamConfig = BeamConfig { beam_size: 2, max_length: 5, start_id: 0, end_id: 1 };

    /// A stateless "model" whose next-word distribution depends only on the last word.
    fn table(last: usize) -> Vec<f32> {
        match last {
            0 => vec![0.0, 0.1, 0.6, 0.3],   // <s> -> a (0.6) or b (0.3)
            2 => vec![0.0, 0.7, 0.2, 0.1],   // a -> end mostly
            3 => vec![0.0, 0.05, 0.05, 0.9], // b -> b
            _ => vec![0.25; 4],
        }
    }

    fn run(cfg: BeamConfig) -> Vec<Hypothesis> {
        beam_search(cfg, (), |ids, _| Ok((ids.iter().flat_map(|&i| table(i)).collect(), ())), |_, _| Ok(()))
            .unwrap()
    }

    #[test]
    fn finished_prefixes_keep_their_score_and_end_words_are_not_repeated() {
        let h = run(CFG);
        // "a <e>": 0.6·0.7 = 0.42, finished at step 2; "b b b ..." 0.3·0.9^k.
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].tokens, [0, 2, 1]);
        assert!((h[0].score() - (0.6f32.ln() + 0.7f32.ln())).abs() < 1e-6);
        // The other survivor ran to max_length: b b b b b.
        assert_eq!(h[1].tokens, [0, 3, 3, 3, 3, 3]);
        assert_eq!(h[1].scores.len(), h[1].tokens.len());
    }

    #[test]
    fn the_search_stops_when_every_survivor_has_ended() {
        let h = beam_search(
            BeamConfig { max_length: 50, ..CFG },
            (),
            |ids, _| Ok((ids.iter().flat_map(|_| vec![0.0, 0.5, 0.3, 0.2]).collect(), ())),
            |_, _| Ok(()),
        )
        .unwrap();
        // Step 1: <e> (0.5) and a (0.3); step 2: <e><e> (0.5) beats a <e> (0.15); ...
        assert_eq!(h[0].tokens, [0, 1]);
        assert!(h.iter().all(|x| x.tokens.len() <= 50));
    }

    #[test]
    fn top_k_and_insert_order_ties_as_fluid() {
        assert_eq!(top_k(&[0.1, 0.5, 0.5, 0.2], 2), [(1, 0.5), (2, 0.5)]);
        let mut top = Vec::new();
        for (offset, score) in [(0, 1.0), (1, 1.0), (0, 2.0)] {
            insert(&mut top, Item { offset, id: 0, score }, 2);
        }
        let got: Vec<(usize, f32)> = top.iter().map(|i| (i.offset, i.score)).collect();
        assert_eq!(got, [(0, 2.0), (1, 1.0)]);
    }
}
