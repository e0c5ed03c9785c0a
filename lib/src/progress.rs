//! Progress on stderr for tools that can run long: a bar (or, when the total is unknown, a
//! counter) with count, rate and ETA, drawn by `indicatif` only when stderr is a terminal and
//! the tool was not asked to be quiet. Otherwise nothing is drawn: logs and pipes see only the
//! tools' own summary lines.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// A progress display for one run of a tool (cheap to clone; clones share the display).
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// Progress over `total` items (`None`: unknown, a counter with a rate), counted in `unit`
    /// ("videos", "frames", ...). Hidden unless stderr is a terminal and `quiet` is off.
    pub fn new(total: Option<u64>, unit: &str, quiet: bool) -> Self {
        let shown = !quiet && std::io::stderr().is_terminal();
        let bar = match total {
            Some(n) => ProgressBar::with_draw_target(Some(n), Self::target(shown)).with_style(
                ProgressStyle::with_template(&format!(
                    "{{bar:30}} {{pos}}/{{len}} {unit} {{msg}} {{per_sec}} ETA {{eta}}"
                ))
                .expect("valid template"),
            ),
            None => ProgressBar::with_draw_target(None, Self::target(shown)).with_style(
                ProgressStyle::with_template(&format!(
                    "{{spinner}} {{pos}} {unit} {{msg}} {{per_sec}} [{{elapsed}}]"
                ))
                .expect("valid template"),
            ),
        };
        if shown {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Self { bar }
    }

    /// A display that never draws (library callers, tests).
    pub fn hidden() -> Self {
        Self { bar: ProgressBar::hidden() }
    }

    fn target(shown: bool) -> ProgressDrawTarget {
        if shown {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        }
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    pub fn set_length(&self, n: u64) {
        self.bar.set_length(n);
    }

    pub fn set_position(&self, n: u64) {
        self.bar.set_position(n);
    }

    /// Text beside the count (the current loss, failures so far, ...).
    pub fn set_message(&self, msg: impl Into<std::borrow::Cow<'static, str>>) {
        self.bar.set_message(msg);
    }

    /// Prints a line to stderr without tearing the bar (it is redrawn below the line).
    pub fn eprintln(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Removes the bar, leaving the terminal to the summary line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
