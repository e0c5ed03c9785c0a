//! Man pages and shell completions for the vidkit tools, generated from their clap definitions
//! (as ripgrep generates both from one definition). `make man` writes the man pages, `make test`
//! checks them (`vman man --check`), `make install` writes completions.
use clap::{Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  # regenerate the section-1 pages in the checkout's man/ (what `make man` does)
  vman man

  # check that the committed pages are current (`make test` runs this)
  vman man --check

  # completions for every tool, one file per tool and shell, into a directory
  vman completions bash --dir ~/.local/share/bash-completion/completions";

#[derive(Parser, Debug)]
#[command(name = "vman", version, about = "Man pages and shell completions for the vidkit tools", after_help = EXAMPLES)]
struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Write the tools' section-1 man pages (`<tool>.1`), or check them with --check.
    Man {
        /// Where the pages go [default: the checkout's man/ directory].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Write nothing; exit 1 if a page there differs from what the tools define now.
        #[arg(long)]
        check: bool,
    },
    /// Write shell completions for every tool into a directory, one file per tool named as the
    /// shell's loader looks for it (bash: `vsample`, zsh: `_vsample`, fish: `vsample.fish`).
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
        /// Where the files go.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

fn render(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(out)
}

fn man(dir: &Path, check: bool) -> Result<(), String> {
    let mut stale = Vec::new();
    for cmd in vidkit_cli::commands() {
        let name = cmd.get_name().to_string();
        let page = render(cmd).map_err(|e| format!("{name}: {e}"))?;
        let path = dir.join(format!("{name}.1"));
        if check {
            if std::fs::read(&path).ok().as_deref() != Some(&page[..]) {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::write(&path, &page).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if !stale.is_empty() {
        return Err(format!("man pages out of date (run `make man`): {}", stale.join(", ")));
    }
    Ok(())
}

fn completions(shell: CompletionShell, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // File names where each shell's completion loader looks for a command's script.
    let (shell, file): (Shell, fn(&str) -> String) = match shell {
        CompletionShell::Bash => (Shell::Bash, |n| n.to_string()),
        CompletionShell::Zsh => (Shell::Zsh, |n| format!("_{n}")),
        CompletionShell::Fish => (Shell::Fish, |n| format!("{n}.fish")),
    };
    for mut cmd in vidkit_cli::commands() {
        let name = cmd.get_name().to_string();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, &name, &mut script);
        let path = dir.join(file(&name));
        std::fs::write(&path, script).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.what {
        What::Man { dir, check } => {
            let dir = dir.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../man"));
            man(&dir, check)
        }
        What::Completions { shell, dir } => completions(shell, &dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.starts_with("man pages out of date") => {
            eprintln!("vman: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("vman: error: {e}");
            ExitCode::from(2)
        }
    }
}
