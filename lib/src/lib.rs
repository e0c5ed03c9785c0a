//! vidkit: video understanding as small composable tools. This crate does the work; the
//! binaries in `bins/` parse arguments and call it.
//!
//! Data flows one way: video → sample → transform → model → metric; `stream` is spoken by all.

pub mod caption;
pub mod clips;
pub mod data;
pub mod extract;
pub mod featstore;
pub mod fuzzing;
pub mod infer;
pub mod io;
pub mod live;
pub mod metric;
pub mod model;
pub mod nn;
pub mod parallel;
pub mod precision;
pub mod progress;
pub mod proposals;
pub mod quantize;
pub mod rng;
pub mod sample;
pub mod stream;
pub mod synth;
pub mod train;
pub mod transform;
pub mod video;
pub mod window;
