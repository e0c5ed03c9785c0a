use clap::Parser;
use vidkit_cli::{run, tools::vsample};

fn main() -> std::process::ExitCode {
    let args = vsample::Args::parse();
    run("vsample", || vsample::main(args))
}
