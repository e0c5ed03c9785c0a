use clap::Parser;
use vidkit_cli::{run, tools::vsynth};

fn main() -> std::process::ExitCode {
    let args = vsynth::Args::parse();
    run("vsynth", || vsynth::main(args))
}
