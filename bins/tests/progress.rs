//! Progress on stderr: a bar with count, rate and ETA when stderr is a terminal (a pty from
//! script(1) here), nothing but the summary when it is a pipe, nothing at all with -q.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const VSAMPLE: &str = env!("CARGO_BIN_EXE_vsample");
const VSYNTH: &str = env!("CARGO_BIN_EXE_vsynth");

/// What a command writes to its terminal when run under a pty (script -q -e -c CMD /dev/null).
fn on_a_terminal(cmd: &str, dir: &Path) -> String {
    let o =
        Command::new("script").args(["-q", "-e", "-c", cmd, "/dev/null"]).current_dir(dir).output().unwrap();
    assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn progress_is_drawn_on_a_terminal_only() {
    if Command::new("script").arg("--version").output().is_err() {
        skip("script(1) from util-linux is not installed: no pty to test the terminal case");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let mut list = String::new();
    for i in 0..24 {
        testsrc(&p.join(format!("v{i}.mp4")), "160x120", 25, 75, &[]);
        list.push_str(&format!("v{i}.mp4 0\n"));
    }
    std::fs::write(p.join("all.list"), list).unwrap();
    let sample = format!("{VSAMPLE} --list all.list --frames 8 --size 112 --crop-size 112 -o out.vks");
    // A pipe: the summary line only, no drawing.
    let o = Command::new("sh").arg("-c").arg(&sample).current_dir(p).output().unwrap();
    assert!(o.status.success());
    let piped = stderr(&o);
    assert_eq!(piped.trim().lines().count(), 1, "{piped}");
    assert!(piped.starts_with("vsample: 24 videos") && !piped.contains('\x1b'), "{piped}");
    // A terminal: the bar, with its count, unit and ETA, then the summary.
    let tty = on_a_terminal(&sample, p);
    assert!(tty.contains("/24 videos") && tty.contains("ETA"), "{tty:?}");
    assert!(tty.contains("vsample: 24 videos"), "{tty:?}");
    // -q on a terminal: nothing at all.
    let quiet = on_a_terminal(&format!("{sample} -q"), p);
    assert!(quiet.trim().is_empty(), "{quiet:?}");
    // vsynth the same way (its bar counts the videos it writes).
    let synth =
        |out: &str| format!("{VSYNTH} --out {out} --classes left,right --per-class 12 --size 96x96 --seed 1");
    let tty = on_a_terminal(&synth("syn"), p);
    assert!(tty.contains("/24 videos"), "{tty:?}");
    let o = Command::new("sh").arg("-c").arg(synth("syn2")).current_dir(p).output().unwrap();
    assert!(o.status.success() && !stderr(&o).contains('\x1b'), "{}", stderr(&o));
}
