//! Evaluation metrics. Each follows a named reference implementation exactly (DESIGN.md §3); the
//! reference is cited in the submodule.
//!
//! - [`accuracy`]: top-k accuracy, mean class accuracy, confusion matrix (mmaction2).
//! - [`multilabel`]: GAP@k, hit@1, PERR (youtube-8m) and mAP (mmaction2).
//! - [`localization`]: AR@AN, its area, detection mAP per tIoU (ActivityNet's evaluation).
//! - [`grounding`]: R@k at IoU m for temporal grounding (TALL's and MMAction2's rules).
//! - [`captions`]: BLEU-1..4, ROUGE-L and CIDEr-D after PTB tokenization (pycocoevalcap 1.2).

pub mod accuracy;
pub mod captions;
pub mod grounding;
pub mod localization;
pub mod multilabel;
mod ptb_tokenizer;
mod python_random;

pub use accuracy::{argmax_classes, confusion_matrix, mean_class_accuracy, top_k_accuracy};
pub use multilabel::{gap, hit_at_one, mean_average_precision, precision_at_equal_recall_rate};
