use clap::Parser;
use vidkit_cli::{run, tools::vtrain};

fn main() -> std::process::ExitCode {
    let args = vtrain::Args::parse();
    run("vtrain", || vtrain::main(args))
}
