use clap::Parser;
use vidkit_cli::{run, tools::veval};

fn main() -> std::process::ExitCode {
    let args = veval::Args::parse();
    run("veval", || veval::main(args))
}
