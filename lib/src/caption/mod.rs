//! Captioning pieces shared by the captioners (ETS) and their tools: the vocabulary, the beam
//! search as the reference decodes, and training captions files.

pub mod beam;
pub mod data;
pub mod vocab;

pub use beam::{beam_search, BeamConfig, Hypothesis};
pub use data::{read_caption_features, read_captions, span_rows, CaptionEntry};
pub use vocab::Vocabulary;
