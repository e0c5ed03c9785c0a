//! `make install PREFIX=...` and `vman`: binaries, man pages and shell completions land where
//! the shells look for them; `vman --help` prints help and writes nothing.

mod common;
use common::*;
use std::process::Command;

const VMAN: &str = env!("CARGO_BIN_EXE_vman");

#[test]
fn vman_answers_help_and_writes_only_where_told() {
    let d = tempfile::tempdir().unwrap();
    let o = run(VMAN, &["--help"], d.path());
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("completions") && help.contains("Examples"), "{help}");
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    let o = run(VMAN, &["man", "--dir", "pages"], d.path());
    assert_eq!(o.status.code(), Some(2), "no such directory: {}", stderr(&o));
    std::fs::create_dir(d.path().join("pages")).unwrap();
    assert!(run(VMAN, &["man", "--dir", "pages"], d.path()).status.success());
    assert!(run(VMAN, &["man", "--dir", "pages", "--check"], d.path()).status.success());
    std::fs::write(d.path().join("pages/vsample.1"), "stale").unwrap();
    let o = run(VMAN, &["man", "--dir", "pages", "--check"], d.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("vsample.1"), "{}", stderr(&o));
    let o = run(VMAN, &["frobnicate"], d.path());
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn make_install_puts_tools_pages_and_completions_under_the_prefix() {
    let d = tempfile::tempdir().unwrap();
    let prefix = d.path().join("inst");
    let o = Command::new("make")
        .args(["--no-print-directory", "install"])
        .arg(format!("PREFIX={}", prefix.display()))
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for tool in ["vsample", "vfeat", "vtrain", "vclassify", "veval", "vconvert", "vsynth"] {
        let bin = prefix.join("bin").join(tool);
        let o = Command::new(&bin).arg("--version").output().unwrap();
        assert!(o.status.success(), "{}", bin.display());
        assert!(prefix.join(format!("share/man/man1/{tool}.1")).is_file(), "{tool}.1");
        let bash = prefix.join("share/bash-completion/completions").join(tool);
        let text = std::fs::read_to_string(&bash).unwrap();
        assert!(text.contains("--help") && text.contains("--version"), "{}", bash.display());
        // the bash script parses
        assert!(Command::new("bash").arg("-n").arg(&bash).status().unwrap().success(), "{}", bash.display());
        assert!(prefix.join(format!("share/zsh/site-functions/_{tool}")).is_file());
        assert!(prefix.join(format!("share/fish/vendor_completions.d/{tool}.fish")).is_file());
    }
    assert!(prefix.join("share/man/man5/vidkit-stream.5").is_file());
    let vsample = std::fs::read_to_string(prefix.join("share/bash-completion/completions/vsample")).unwrap();
    assert!(vsample.contains("--sampler") && vsample.contains("untrimmed"), "flags and their values");
}
