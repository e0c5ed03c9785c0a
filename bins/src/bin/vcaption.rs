use clap::Parser;
use vidkit_cli::{run, tools::vcaption};

fn main() -> std::process::ExitCode {
    let args = vcaption::Args::parse();
    run("vcaption", || vcaption::main(args))
}
