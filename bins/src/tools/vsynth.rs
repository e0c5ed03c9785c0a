//! `vsynth` (in progress).
use crate::Outcome;

#[derive(clap::Parser, Debug)]
#[command(name = "vsynth", version, about = "(in progress)")]
pub struct Args {}

pub fn main(_args: Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("not implemented yet")
}
