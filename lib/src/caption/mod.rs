//! Captioning pieces shared by the captioners (ETS) and their tools: the vocabulary and the beam
//! search as the reference decodes.

pub mod beam;
pub mod vocab;

pub use beam::{beam_search, BeamConfig, Hypothesis};
pub use vocab::Vocabulary;
