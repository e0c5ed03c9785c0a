//! Writes the section-1 man pages in `man/` from the tools' clap definitions (`vman man`), or
//! checks that the committed ones are current (`vman man --check`, run by `make test`).
use std::path::Path;
use std::process::ExitCode;

fn render(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(out)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--check");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../man");
    let mut stale = Vec::new();
    for cmd in vidkit_cli::commands() {
        let name = cmd.get_name().to_string();
        let page = match render(cmd) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("vman: {name}: {e}");
                return ExitCode::from(2);
            }
        };
        let path = dir.join(format!("{name}.1"));
        if check {
            if std::fs::read(&path).ok().as_deref() != Some(&page[..]) {
                stale.push(path.display().to_string());
            }
        } else if let Err(e) = std::fs::write(&path, &page) {
            eprintln!("vman: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if !stale.is_empty() {
        eprintln!("vman: man pages out of date (run `make man`): {}", stale.join(", "));
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
