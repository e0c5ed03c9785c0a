use clap::Parser;
use vidkit_cli::{run, tools::vfeat};

fn main() -> std::process::ExitCode {
    let args = vfeat::Args::parse();
    run("vfeat", || vfeat::main(args))
}
