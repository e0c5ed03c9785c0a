//! Grounding queries for `vsynth --segments` videos: one per action segment, a sentence saying
//! what happens ("the object moves to the left") and its embedding from a fixed sentence
//! encoder of our own, so that a grounder (TALL) can be trained and scored without a language
//! model. The encoder is a bag of words under a fixed random projection: each word's vector is
//! 64 draws from N(0, 1) of our Rng seeded by the word's FNV-1a hash, the sentence's embedding
//! the sum of its words' vectors scaled to unit length. The same sentence always gives the same
//! 64 numbers, whatever the seed or the videos; sentences that share words lie close.

use super::{Class, UntrimmedVideo};
use crate::io::AtomicFile;
use crate::rng::Rng;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// The width of a synthetic sentence embedding.
pub const QUERY_DIM: usize = 64;

/// What a segment of `class` shows, in words.
pub fn sentence(class: Class) -> &'static str {
    match class {
        Class::Left => "the object moves to the left",
        Class::Right => "the object moves to the right",
        Class::Up => "the object moves up",
        Class::Down => "the object moves down",
        Class::Grow => "the object grows",
        Class::Shrink => "the object shrinks",
        Class::Appear => "the object appears",
        Class::Disappear => "the object disappears",
    }
}

fn fnv1a(word: &str) -> u64 {
    word.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The fixed encoder: the unit-length sum of the words' random vectors.
pub fn encode_sentence(text: &str) -> Vec<f32> {
    let mut acc = vec![0f64; QUERY_DIM];
    for word in text.split_whitespace() {
        let mut rng = Rng::new(fnv1a(&word.to_lowercase()));
        for a in acc.iter_mut() {
            let (u1, u2) = (1.0 - rng.uniform(), rng.uniform());
            *a += (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        }
    }
    let norm = acc.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    acc.iter().map(|x| (x / norm) as f32).collect()
}

/// Writes `training.queries.jsonl` and `validation.queries.jsonl` into `out`: per segment
/// `{"query_id": "ID#k", "video": ID, "sentence", "embedding", "gt": [t0, t1]}`.
pub fn write_queries(out: &Path, videos: &[UntrimmedVideo]) -> Result<()> {
    for (name, validation) in [("training", false), ("validation", true)] {
        let path = out.join(format!("{name}.queries.jsonl"));
        let mut f = AtomicFile::create(&path)?;
        for v in videos.iter().filter(|v| v.validation == validation) {
            for (k, &(t0, t1, class)) in v.segments.iter().enumerate() {
                let text = sentence(class);
                let line = serde_json::json!({"query_id": format!("{}#{k}", v.id), "video": v.id,
                    "sentence": text, "embedding": encode_sentence(text), "gt": [t0, t1]});
                writeln!(f, "{line}").with_context(|| format!("{}: cannot write", path.display()))?;
            }
        }
        f.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoder_is_fixed_and_unit_length() {
        let a = encode_sentence(sentence(Class::Left));
        assert_eq!(a, encode_sentence("The object moves to the LEFT"));
        assert_eq!(a.len(), QUERY_DIM);
        let n: f32 = a.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5);
        let b = encode_sentence(sentence(Class::Grow));
        let cos: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!(cos < 0.95, "{cos}");
    }
}
