use clap::Parser;
use vidkit_cli::{run, tools::vclassify};

fn main() -> std::process::ExitCode {
    let args = vclassify::Args::parse();
    run("vclassify", || vclassify::main(args))
}
