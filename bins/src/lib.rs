//! Shared plumbing for the `v*` binaries; not a library for others to use.
//!
//! Exit codes, as ripgrep: 0 success, 1 ran but some inputs failed, 2 usage or fatal error.
//! A closed downstream pipe (`vsample ... | head`) is a quiet, successful end.

use std::io::ErrorKind;
use std::process::ExitCode;

/// How a tool run ended when it did not fail outright.
pub enum Outcome {
    Success,
    /// Some inputs failed (already reported on stderr); the count goes into the summary.
    PartialFailure {
        failed: usize,
        total: usize,
    },
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
    })
}

/// Runs a tool's main body and maps its result to an exit code, printing the error as one line.
pub fn run(tool: &str, body: impl FnOnce() -> anyhow::Result<Outcome>) -> ExitCode {
    vidkit::nn::retain_freed_buffers();
    match body() {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::PartialFailure { failed, total }) => {
            eprintln!("{tool}: {failed} of {total} inputs failed");
            ExitCode::from(1)
        }
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{tool}: error: {}", one_line(&err));
            ExitCode::from(2)
        }
    }
}

/// The error chain on one line, outermost context first.
pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}").replace('\n', " ")
}

pub mod tools {
    pub mod merge_shards;
    pub mod vcaption;
    pub mod vclassify;
    pub mod vconvert;
    pub mod vconvert_quantize;
    pub mod veval;
    pub mod veval_captions;
    pub mod veval_grounding;
    pub mod veval_localization;
    pub mod vfeat;
    pub mod vground;
    pub mod vpropose;
    pub mod vsample;
    pub mod vsample_augment;
    pub mod vsynth;
    pub mod vtrain;
    pub mod vtrain_ets;
    pub mod vtrain_tall;
}

/// Every tool's clap definition, for man pages and completions (`vman`).
pub fn commands() -> Vec<clap::Command> {
    use clap::CommandFactory;
    vec![
        tools::vclassify::Args::command(),
        tools::vconvert::Args::command(),
        tools::vsample::Args::command(),
        tools::vsynth::Args::command(),
        tools::veval::Args::command(),
        tools::vtrain::Args::command(),
        tools::vfeat::Args::command(),
        tools::vpropose::Args::command(),
        tools::vcaption::Args::command(),
        tools::vground::Args::command(),
    ]
}
