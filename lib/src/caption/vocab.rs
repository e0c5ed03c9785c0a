//! The captioning vocabulary as the ETS reference builds and reads it (PaddlePaddle/models
//! release/1.8, `PaddleCV/video/data/dataset/ets/generate_data.py` and `reader/ets_reader.py`):
//! `<s>`, `<e>` and `<unk>` first (ids 0, 1, 2), then every word of the PTB-tokenized training
//! sentences seen at least 3 times, most frequent first (ties, which the reference leaves to
//! Python 2's dict order, by first appearance here). A sentence is its whitespace-separated
//! words, unknown ones as `<unk>`; the decoder reads `<s>` + words and predicts words + `<e>`.

use anyhow::{bail, Result};
use std::collections::HashMap;

pub const START: &str = "<s>";
pub const END: &str = "<e>";
pub const UNK: &str = "<unk>";
/// `generate_data.py`'s `truncation`.
pub const MIN_COUNT: usize = 3;

/// Words by id and ids by word.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocabulary {
    words: Vec<String>,
    index: HashMap<String, usize>,
}

impl Vocabulary {
    /// A vocabulary of `words` in id order; the first three must be `<s>`, `<e>`, `<unk>`.
    pub fn new(words: Vec<String>) -> Result<Self> {
        if words.len() < 3 || words[0] != START || words[1] != END || words[2] != UNK {
            bail!("a captioning vocabulary starts with {START}, {END} and {UNK} (ids 0, 1, 2)");
        }
        let mut index = HashMap::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            if w.is_empty() || w.chars().any(char::is_whitespace) {
                bail!("vocabulary entry {i} ({w:?}) is not one word");
            }
            if index.insert(w.clone(), i).is_some() {
                bail!("vocabulary word {w:?} appears twice");
            }
        }
        Ok(Self { words, index })
    }

    /// The reference's dictionary from tokenized training sentences.
    pub fn build<'a>(sentences: impl IntoIterator<Item = &'a str>, min_count: usize) -> Self {
        let mut counts: Vec<(String, usize)> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        for s in sentences {
            for w in s.split_whitespace() {
                match at.get(w) {
                    Some(&i) => counts[i].1 += 1,
                    None => {
                        at.insert(w.to_string(), counts.len());
                        counts.push((w.to_string(), 1));
                    }
                }
            }
        }
        // Stable: equal counts keep their first-appearance order.
        counts.sort_by(|a, b| b.1.cmp(&a.1));
        let mut words: Vec<String> = [START, END, UNK].iter().map(|s| s.to_string()).collect();
        words.extend(
            counts
                .into_iter()
                .filter(|(w, c)| *c >= min_count && ![START, END, UNK].contains(&w.as_str()))
                .map(|(w, _)| w),
        );
        Self::new(words).expect("special words first, no duplicates")
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn words(&self) -> &[String] {
        &self.words
    }

    pub fn start_id(&self) -> usize {
        0
    }

    pub fn end_id(&self) -> usize {
        1
    }

    /// A tokenized sentence's word ids (unknown words as `<unk>`).
    pub fn encode(&self, sentence: &str) -> Vec<usize> {
        sentence.split_whitespace().map(|w| self.index.get(w).copied().unwrap_or(2)).collect()
    }

    /// The caption of a decoded sequence as `ets_metrics.py` writes it: the words between the
    /// first and the last id (the start word and the end word — or, where the search stopped at
    /// its length limit, the last word, as the reference drops it too).
    pub fn caption(&self, tokens: &[usize]) -> String {
        if tokens.len() < 2 {
            return String::new();
        }
        let words: Vec<&str> = tokens[1..tokens.len() - 1]
            .iter()
            .map(|&i| self.words.get(i).map_or(UNK, |w| w.as_str()))
            .collect();
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_as_the_reference_and_read_back() {
        let v = Vocabulary::build(["a man runs", "a man sits", "a dog runs", "a man runs"], 3);
        // a ×4, man ×3, runs ×3 (man seen first), sits and dog once.
        assert_eq!(v.words(), ["<s>", "<e>", "<unk>", "a", "man", "runs"]);
        assert_eq!(v.encode("a dog"), [3, 2]);
        assert_eq!(v.caption(&[0, 3, 4, 1]), "a man");
        assert_eq!(v.caption(&[0]), "");
        assert!(Vocabulary::new(vec!["a".into()]).is_err());
        assert!(Vocabulary::new(vec!["<s>".into(), "<e>".into(), "<unk>".into(), "a".into(), "a".into()])
            .is_err());
    }
}
