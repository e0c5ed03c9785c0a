use clap::Parser;
use vidkit_cli::{run, tools::vground};

fn main() -> std::process::ExitCode {
    let args = vground::Args::parse();
    run("vground", || vground::main(args))
}
