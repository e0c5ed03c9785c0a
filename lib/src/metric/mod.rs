//! Evaluation metrics. Each follows a named reference implementation exactly (DESIGN.md §3); the
//! reference is cited in the submodule.
//!
//! - [`accuracy`]: top-k accuracy, mean class accuracy, confusion matrix (mmaction2).

pub mod accuracy;

pub use accuracy::{argmax_classes, confusion_matrix, mean_class_accuracy, top_k_accuracy};
