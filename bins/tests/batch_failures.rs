//! A batch with failures at scale (issue 23, point 5): 1000 generated videos of which 100 are bad
//! in five ways (zero bytes, truncated to 30 % so the MP4 index is gone, a garbage header,
//! audio only, a text file). `vsample -j 2` finishes, exits 1 and lists exactly the bad ones in
//! `--failures` (`path<TAB>reason`); its stream equals, byte for byte, a run over the good videos
//! alone; and behind it `vfeat` writes the same features as from the good videos alone.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn sh(cmd: &str, dir: &Path) -> std::process::Output {
    Command::new("bash").arg("-c").arg(cmd).current_dir(dir).output().unwrap()
}

#[test]
fn a_thousand_videos_with_a_hundred_bad_ones() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let o = run(
        env!("CARGO_BIN_EXE_vsynth"),
        &[
            "--out",
            "syn",
            "--classes",
            "left,right,up,down",
            "--per-class",
            "250",
            "--size",
            "32x32",
            "-j",
            "2",
            "-q",
        ],
        p,
    );
    assert!(o.status.success(), "vsynth: {}", stderr(&o));
    let mut lines: Vec<String> = synth_lines(p);
    lines.sort();
    assert_eq!(lines.len(), 1000);
    // An audio-only MP4 from the system ffmpeg.
    let o = sh("ffmpeg -v error -f lavfi -i sine=frequency=440:duration=1 -c:a aac audio.mp4", p);
    assert!(o.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&o.stderr));
    let audio = std::fs::read(p.join("audio.mp4")).unwrap();
    let mut bad = Vec::new();
    for (k, line) in lines.iter().enumerate().filter(|(k, _)| k % 10 == 3) {
        let rel = line.rsplit_once(' ').unwrap().0;
        let path = p.join("syn").join(rel);
        let bytes = std::fs::read(&path).unwrap();
        let broken: Vec<u8> = match (k / 10) % 5 {
            0 => Vec::new(),
            1 => bytes[..bytes.len() * 3 / 10].to_vec(),
            2 => {
                let mut b = bytes.clone();
                let n = 256.min(b.len());
                b[..n].fill(0x5a);
                b
            }
            3 => audio.clone(),
            _ => b"this is not a video\n".to_vec(),
        };
        std::fs::write(&path, broken).unwrap();
        bad.push(rel.to_string());
    }
    assert_eq!(bad.len(), 100);
    std::fs::write(p.join("all.list"), lines.join("\n") + "\n").unwrap();
    let good: Vec<&String> =
        lines.iter().filter(|l| !bad.contains(&l.rsplit_once(' ').unwrap().0.to_string())).collect();
    std::fs::write(
        p.join("good.list"),
        good.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let vsample = env!("CARGO_BIN_EXE_vsample");
    let sample = |list: &str, out: &str, failures: &str| -> std::process::Output {
        run(
            vsample,
            &[
                "--list",
                list,
                "--root",
                "syn",
                "--frames",
                "4",
                "--size",
                "32",
                "--crop-size",
                "32",
                "-j",
                "2",
                "-q",
                "-o",
                out,
                "--failures",
                failures,
            ],
            p,
        )
    };
    let started = std::time::Instant::now();
    let o = sample("all.list", "all.vks", "all.failures");
    eprintln!("vsample over 1000 videos: {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let listed = std::fs::read_to_string(p.join("all.failures")).unwrap();
    let failed: Vec<&str> = listed.lines().map(|l| l.split_once('\t').expect("path<TAB>reason").0).collect();
    assert_eq!(failed, bad.iter().map(String::as_str).collect::<Vec<_>>(), "{listed}");
    assert!(listed.lines().all(|l| !l.split_once('\t').unwrap().1.trim().is_empty()), "{listed}");
    let o = sample("good.list", "good.vks", "good.failures");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(p.join("good.failures")).unwrap(), "");
    assert!(std::fs::read(p.join("all.vks")).unwrap() == std::fs::read(p.join("good.vks")).unwrap());
    // Behind vsample, vfeat sees only the good videos: the same features either way.
    write_random_tsn(&p.join("tsn.safetensors"), 8, 2);
    let vfeat = env!("CARGO_BIN_EXE_vfeat");
    for (stream, out) in [("all.vks", "all.feats"), ("good.vks", "good.feats")] {
        let o = run(
            vfeat,
            &["--model", "tsn.safetensors", stream, "-o", out, "-q", "--failures", "vfeat.failures"],
            p,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(std::fs::read_to_string(p.join("vfeat.failures")).unwrap(), "");
    }
    assert!(std::fs::read(p.join("all.feats")).unwrap() == std::fs::read(p.join("good.feats")).unwrap());
}
