use clap::Parser;
use vidkit_cli::{run, tools::vconvert};

fn main() -> std::process::ExitCode {
    let args = vconvert::Args::parse();
    run("vconvert", || vconvert::main(args))
}
