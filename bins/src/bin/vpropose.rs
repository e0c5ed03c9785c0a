use clap::Parser;
use vidkit_cli::{run, tools::vpropose};

fn main() -> std::process::ExitCode {
    let args = vpropose::Args::parse();
    run("vpropose", || vpropose::main(args))
}
