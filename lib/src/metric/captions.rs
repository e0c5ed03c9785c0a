//! Caption metrics as pycocoevalcap 1.2 computes them (the MS COCO caption evaluation code):
//! BLEU-1..4 (`bleu/bleu_scorer.py`, corpus level, effective reference length 'closest'),
//! ROUGE-L (`rouge/rouge.py`, β 1.2) and CIDEr-D (`cider/cider_scorer.py`, σ 6, clipped
//! n-gram weights, ×10, document frequencies from the reference set), over captions already
//! tokenized by [`ptb_tokenize`] (`tokenizer/ptbtokenizer.py`). METEOR is computed by the
//! reference's jar and lives with the tool.
//!
//! The arithmetic follows the reference operation by operation, including its quirks: BLEU's
//! `tiny`/`small` guards, CIDEr-D's length penalty on the number of bigrams (its `length`
//! counts 2-grams), ROUGE-L splitting on single spaces (an empty caption is one empty token), and
//! numpy's pairwise summation in the means.

pub use super::ptb_tokenizer::{ptb_tokenize, PUNCTUATIONS};
use std::collections::HashMap;

/// Scores of one video (pycocoevalcap's per-image lists).
#[derive(Clone, Debug, PartialEq)]
pub struct VideoCaptionScores {
    pub bleu: [f64; 4],
    pub rouge_l: f64,
    pub cider: f64,
}

/// Corpus scores and the per-video ones, in the order of the input.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptionScores {
    pub bleu: [f64; 4],
    pub rouge_l: f64,
    pub cider: f64,
    pub per_video: Vec<VideoCaptionScores>,
}

/// All of BLEU-1..4, ROUGE-L and CIDEr-D over tokenized candidates (one per video) and their
/// tokenized references (at least one per video). Panics on an empty list or a video without
/// references: the caller checks inputs and names the file.
pub fn caption_scores(candidates: &[String], references: &[Vec<String>]) -> CaptionScores {
    assert!(!candidates.is_empty() && candidates.len() == references.len());
    assert!(references.iter().all(|r| !r.is_empty()));
    let (bleu, bleu_per) = bleu(candidates, references);
    let rouge: Vec<f64> = candidates.iter().zip(references).map(|(c, r)| rouge_l(c, r)).collect();
    let cider_per = cider_d(candidates, references);
    let per_video = (0..candidates.len())
        .map(|i| VideoCaptionScores {
            bleu: [bleu_per[0][i], bleu_per[1][i], bleu_per[2][i], bleu_per[3][i]],
            rouge_l: rouge[i],
            cider: cider_per[i],
        })
        .collect();
    CaptionScores { bleu, rouge_l: numpy_mean(&rouge), cider: numpy_mean(&cider_per), per_video }
}

/// Python's `str.split()` (no argument): runs of Unicode whitespace separate, none at the ends.
fn py_split(s: &str) -> Vec<&str> {
    s.split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .filter(|w| !w.is_empty())
        .collect()
}

/// `precook`: n-gram counts for n = 1..4 in first-occurrence order (the reference's dict order,
/// which fixes the order of its floating-point sums), and the word count.
fn precook<'a>(words: &[&'a str]) -> (Vec<(Vec<&'a str>, usize)>, usize) {
    let mut index: HashMap<&[&str], usize> = HashMap::new();
    let mut counts: Vec<(Vec<&str>, usize)> = Vec::new();
    for k in 1..=4 {
        for i in 0..(words.len() + 1).saturating_sub(k) {
            let g = &words[i..i + k];
            match index.get(g) {
                Some(&j) => counts[j].1 += 1,
                None => {
                    index.insert(g, counts.len());
                    counts.push((g.to_vec(), 1));
                }
            }
        }
    }
    (counts, words.len())
}

/// `Bleu(4).compute_score` with `option='closest'`: the corpus BLEU-1..4 and each video's.
pub fn bleu(candidates: &[String], references: &[Vec<String>]) -> ([f64; 4], [Vec<f64>; 4]) {
    const SMALL: f64 = 1e-9;
    const TINY: f64 = 1e-15;
    let mut per: [Vec<f64>; 4] = Default::default();
    let (mut total_test, mut total_ref) = (0usize, 0usize);
    let (mut total_guess, mut total_correct) = ([0usize; 4], [0usize; 4]);
    for (cand, refs) in candidates.iter().zip(references) {
        // cook_refs: each n-gram's largest count over the references, and their lengths.
        let mut maxcounts: HashMap<Vec<&str>, usize> = HashMap::new();
        let mut reflens = Vec::with_capacity(refs.len());
        for r in refs {
            let (counts, len) = precook(&py_split(r));
            reflens.push(len);
            for (g, c) in counts {
                let m = maxcounts.entry(g).or_insert(0);
                *m = (*m).max(c);
            }
        }
        let (counts, testlen) = precook(&py_split(cand));
        // min((abs(l - testlen), l)): the closest length, the shorter one on a tie.
        let reflen =
            reflens.iter().map(|&l| (l.abs_diff(testlen), l)).min().expect("at least one reference").1;
        let guess: [usize; 4] = std::array::from_fn(|k| (testlen + 1).saturating_sub(k + 1));
        let mut correct = [0usize; 4];
        for (g, c) in &counts {
            correct[g.len() - 1] += c.min(maxcounts.get(g).unwrap_or(&0));
        }
        total_test += testlen;
        total_ref += reflen;
        for k in 0..4 {
            total_guess[k] += guess[k];
            total_correct[k] += correct[k];
        }
        let mut b = 1.0f64;
        let mut scores = [0.0; 4];
        for k in 0..4 {
            b *= (correct[k] as f64 + TINY) / (guess[k] as f64 + SMALL);
            scores[k] = b.powf(1.0 / (k + 1) as f64);
        }
        let ratio = (testlen as f64 + TINY) / (reflen as f64 + SMALL);
        for k in 0..4 {
            if ratio < 1.0 {
                scores[k] *= (1.0 - 1.0 / ratio).exp();
            }
            per[k].push(scores[k]);
        }
    }
    let mut corpus = [0.0; 4];
    let mut b = 1.0f64;
    for k in 0..4 {
        b *= (total_correct[k] as f64 + TINY) / (total_guess[k] as f64 + SMALL);
        corpus[k] = b.powf(1.0 / (k + 1) as f64);
    }
    let ratio = (total_test as f64 + TINY) / (total_ref as f64 + SMALL);
    if ratio < 1.0 {
        for v in &mut corpus {
            *v *= (1.0 - 1.0 / ratio).exp();
        }
    }
    (corpus, per)
}

/// `my_lcs`: the length of the longest common subsequence of two token lists.
fn lcs(a: &[&str], b: &[&str]) -> usize {
    let (long, short) = if a.len() < b.len() { (b, a) } else { (a, b) };
    let mut prev = vec![0usize; short.len() + 1];
    let mut cur = vec![0usize; short.len() + 1];
    for x in long {
        for (j, y) in short.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { prev[j + 1].max(cur[j]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[short.len()]
}

/// `Rouge().calc_score([candidate], refs)`: ROUGE-L F with β = 1.2 from the best precision and
/// the best recall over the references (each maximised on its own, as the reference does).
pub fn rouge_l(candidate: &str, refs: &[String]) -> f64 {
    let beta = 1.2f64;
    let tc: Vec<&str> = candidate.split(' ').collect();
    let (mut prec_max, mut rec_max) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for r in refs {
        let tr: Vec<&str> = r.split(' ').collect();
        let l = lcs(&tr, &tc) as f64;
        prec_max = prec_max.max(l / tc.len() as f64);
        rec_max = rec_max.max(l / tr.len() as f64);
    }
    if prec_max != 0.0 && rec_max != 0.0 {
        let b2 = beta.powi(2);
        ((1.0 + b2) * prec_max * rec_max) / (rec_max + b2 * prec_max)
    } else {
        0.0
    }
}

/// `CiderScorer(n=4, sigma=6.0).compute_score()`: CIDEr-D of each video.
pub fn cider_d(candidates: &[String], references: &[Vec<String>]) -> Vec<f64> {
    let sigma = 6.0f64;
    let ref_words: Vec<Vec<Vec<&str>>> =
        references.iter().map(|refs| refs.iter().map(|r| py_split(r)).collect()).collect();
    #[allow(clippy::type_complexity)]
    let cooked_refs: Vec<Vec<Vec<(Vec<&str>, usize)>>> =
        ref_words.iter().map(|refs| refs.iter().map(|w| precook(w).0).collect()).collect();
    // compute_doc_freq: in how many videos' reference sets each n-gram occurs.
    let mut df: HashMap<&[&str], f64> = HashMap::new();
    for refs in &cooked_refs {
        let mut seen: std::collections::HashSet<&[&str]> = std::collections::HashSet::new();
        for r in refs {
            for (g, _) in r {
                if seen.insert(g.as_slice()) {
                    *df.entry(g.as_slice()).or_insert(0.0) += 1.0;
                }
            }
        }
    }
    let ref_len = (cooked_refs.len() as f64).ln();
    let mut scores = Vec::with_capacity(candidates.len());
    for (cand, refs) in candidates.iter().zip(&cooked_refs) {
        let words = py_split(cand);
        let (cooked, _) = precook(&words);
        let (vec, norm, length) = counts2vec(&cooked, &df, ref_len);
        let mut score = [0.0f64; 4];
        for r in refs {
            let (vec_ref, norm_ref, length_ref) = counts2vec(r, &df, ref_len);
            let lookup: [HashMap<&[&str], f64>; 4] =
                std::array::from_fn(|n| vec_ref[n].iter().copied().collect());
            let delta = length as f64 - length_ref as f64;
            for n in 0..4 {
                let mut val = 0.0f64;
                for (g, w) in &vec[n] {
                    let wr = lookup[n].get(g).copied().unwrap_or(0.0);
                    // Python's min(a, b) is b only when b < a.
                    val += (if wr < *w { wr } else { *w }) * wr;
                }
                if norm[n] != 0.0 && norm_ref[n] != 0.0 {
                    val /= norm[n] * norm_ref[n];
                }
                val *= std::f64::consts::E.powf(-(delta.powi(2)) / (2.0 * sigma.powi(2)));
                score[n] += val;
            }
        }
        let mut avg = numpy_mean(&score);
        avg /= refs.len() as f64;
        avg *= 10.0;
        scores.push(avg);
    }
    scores
}

/// Tf-idf weights of one caption's n-grams per n (in first-occurrence order), their norms, and
/// the number of bigrams: `counts2vec` of `CiderScorer.compute_cider`, whose `length` counts
/// the n-grams with `n == 1`, i.e. 2-grams.
#[allow(clippy::type_complexity)]
fn counts2vec<'a, 'b>(
    cnts: &'b [(Vec<&'a str>, usize)],
    df: &HashMap<&[&str], f64>,
    ref_len: f64,
) -> ([Vec<(&'b [&'a str], f64)>; 4], [f64; 4], usize) {
    let mut vec: [Vec<(&[&str], f64)>; 4] = Default::default();
    let mut norm = [0.0f64; 4];
    let mut length = 0usize;
    for (g, tf) in cnts {
        let d = df.get(g.as_slice()).copied().unwrap_or(0.0).max(1.0).ln();
        let n = g.len() - 1;
        let v = *tf as f64 * (ref_len - d);
        vec[n].push((g.as_slice(), v));
        norm[n] += v.powi(2);
        if n == 1 {
            length += tf;
        }
    }
    (vec, norm.map(f64::sqrt), length)
}

/// numpy's `pairwise_sum` for float64 (`loops_utils.h`): sequential below 8 values, eight
/// accumulators up to 128, halves (rounded to a multiple of 8) above.
fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = -0.0;
        for &x in a {
            res += x;
        }
        res
    } else if n <= 128 {
        let mut r: [f64; 8] = std::array::from_fn(|j| a[j]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[i..] {
            res += x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// `np.mean` of a 1-D float64 array: `add.reduce` (0.0 plus the pairwise sum of each
/// 8192-element buffer) divided by the count.
pub fn numpy_mean(a: &[f64]) -> f64 {
    let mut sum = 0.0;
    for chunk in a.chunks(8192) {
        sum += pairwise_sum(chunk);
    }
    sum / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn bleu_of_an_exact_match_is_one_and_brevity_penalises_short_candidates() {
        let (b, per) = bleu(&s(&["a man is playing a guitar"]), &[s(&["a man is playing a guitar"])]);
        for k in 0..4 {
            assert!((b[k] - 1.0).abs() < 1e-8, "{b:?}");
            assert!((per[k][0] - 1.0).abs() < 1e-8);
        }
        // 3 of 6 words, all matching: precision 1, brevity penalty exp(1 - 6/3) = e^-1.
        let (b, _) = bleu(&s(&["a man is"]), &[s(&["a man is playing a guitar"])]);
        assert!((b[0] - (-1.0f64).exp()).abs() < 1e-8, "{b:?}");
    }

    #[test]
    fn bleu_takes_the_closest_reference_length_and_the_shorter_on_a_tie() {
        // Candidate of 4 words; references of 3 and 5 words: both 1 away, 3 is taken, so no
        // brevity penalty (ratio 4/3 >= 1). Unigram precision: "a", "dog" match of 4 = 0.5.
        let (b, _) = bleu(&s(&["a dog runs fast"]), &[s(&["a dog sits", "the dog is very big"])]);
        assert!((b[0] - 0.5).abs() < 1e-8, "{b:?}");
    }

    #[test]
    fn rouge_l_uses_the_best_precision_and_recall_separately() {
        // Candidate "a b c d" vs "a b" (P 2/4, R 1) and "a b c d e f g h" (P 1, R 4/8).
        let r = rouge_l("a b c d", &s(&["a b", "a b c d e f g h"]));
        let b2 = 1.44f64;
        let want = (1.0 + b2) * 1.0 * 1.0 / (1.0 + b2 * 1.0);
        assert!((r - want).abs() < 1e-12, "{r}");
        assert_eq!(rouge_l("x", &s(&["y"])), 0.0);
        // An empty caption is one empty token in the reference (split(" ")): it matches an
        // empty reference.
        assert!((rouge_l("", &s(&[""])) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn cider_is_zero_without_overlap_and_penalises_bigram_count_differences() {
        let c = cider_d(&s(&["x y z", "a b c"]), &[s(&["a b c"]), s(&["a b c"])]);
        assert_eq!(c[0], 0.0);
        // Video 1: every n-gram of "a b c" occurs in both videos' references, so idf is
        // log(2) - log(2) = 0 and every vector is zero: the score is 0, as in the reference.
        assert_eq!(c[1], 0.0);
        // With a second, different video the idf of "a b c" n-grams is log(2) > 0 and an exact
        // match scores 10 (cosine 1 for each n present, mean over 4 n of which 3 exist).
        let c = cider_d(&s(&["a b c", "x y"]), &[s(&["a b c"]), s(&["x y"])]);
        assert!((c[0] - 10.0 * 3.0 / 4.0).abs() < 1e-12, "{c:?}");
        assert!((c[1] - 10.0 * 2.0 / 4.0).abs() < 1e-12, "{c:?}");
    }

    #[test]
    fn numpy_mean_sums_pairwise_in_blocks_of_eight() {
        let a: Vec<f64> = (0..300).map(|i| 0.1 * i as f64 + 1e-3).collect();
        // Same value as the naive sum within rounding; the order is numpy's.
        let naive: f64 = a.iter().sum::<f64>() / 300.0;
        assert!((numpy_mean(&a) - naive).abs() < 1e-12);
        assert_eq!(numpy_mean(&[1.0, 2.0, 4.0]), 7.0 / 3.0);
        // Blocks: r[j] accumulate every 8th element, then combine in pairs.
        let b: Vec<f64> = (0..16).map(|i| i as f64).collect();
        assert_eq!(pairwise_sum(&b), 120.0);
    }
}
