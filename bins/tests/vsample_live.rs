//! Live sources (issue 22, point 7): `vsample --live` reads an HTTP stream served by the test
//! (MPEG-TS, no index to seek in) and a FIFO that ffmpeg fills in real time, takes `--fps`
//! frames per second as they arrive, ends at the source's end or after `--duration`, and
//! `vsample URL --fps 2 | vclassify --window ...` is a live recognizer. A capture device that is
//! not there is a one-line error naming it.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

const VSAMPLE: &str = env!("CARGO_BIN_EXE_vsample");

/// `seconds` of testsrc2 at 25 fps, 64x48, as MPEG-TS.
fn ts_video(path: &Path, seconds: u32) {
    let o = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=64x48:rate=25:duration={seconds}"))
        .args(["-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-f", "mpegts"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "ffmpeg: {}", stderr(&o));
}

/// The frame indices, fps and t0 of each record.
fn timeline(path: &Path) -> Vec<(Vec<i64>, f64, f64)> {
    read_stream(path)
        .into_iter()
        .map(|r| (r.header.indices.unwrap(), r.header.fps.unwrap(), r.header.t0.unwrap()))
        .collect()
}

#[test]
fn an_http_stream_is_sampled_live_to_its_end_or_for_a_duration() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ts_video(&p.join("v.ts"), 10);
    let url = format!("http://127.0.0.1:{}/live.ts", serve(std::fs::read(p.join("v.ts")).unwrap()));
    let args = ["--live", "--fps", "2", "--chunk", "4", "--size", "48", "--crop-size", "48", "-q", "-o"];
    let o = run(VSAMPLE, &[&[url.as_str()], &args[..], &["all.vks"]].concat(), p);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = timeline(&p.join("all.vks"));
    // 10 s at 2 per second: 20 frames in records of 4, numbered 0..19 at 2 fps.
    assert_eq!(t.len(), 5);
    for (k, (idx, fps, t0)) in t.iter().enumerate() {
        assert_eq!(*idx, (4 * k as i64..4 * k as i64 + 4).collect::<Vec<_>>());
        assert_eq!((*fps, *t0), (2.0, 2.0 * k as f64));
    }
    let rec = &read_stream(&p.join("all.vks"))[0];
    assert_eq!(rec.array.shape(), [4, 48, 48, 3]);
    assert_eq!(rec.header.video.as_deref(), Some(url.as_str()));
    assert!(rec.header.num_clips.is_none() && !rec.header.extra.contains_key("num_frames"));

    // --duration 3: the first 6 frames, the last record short.
    let o = run(VSAMPLE, &[&[url.as_str(), "--duration", "3"], &args[..], &["three.vks"]].concat(), p);
    assert!(o.status.success(), "{}", stderr(&o));
    let idx: Vec<i64> = timeline(&p.join("three.vks")).into_iter().flat_map(|r| r.0).collect();
    assert_eq!(idx, (0..6).collect::<Vec<_>>());

    // A live recognizer: 4-second windows every second over the 10 seconds.
    write_random_tsn(&p.join("m.safetensors"), 8, 3);
    let cmd = format!(
        "set -o pipefail; {VSAMPLE} {url} --live --fps 2 --chunk 2 --size 48 --crop-size 48 -q \
         | {} --model m.safetensors --window 4 --stride 1 -q",
        env!("CARGO_BIN_EXE_vclassify")
    );
    let o = Command::new("bash").args(["-c", &cmd]).current_dir(p).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let windows: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(windows.len(), 7, "{windows:?}");
    assert_eq!((windows[6]["t0"].as_f64(), windows[6]["t1"].as_f64()), (Some(6.0), Some(10.0)));
}

#[test]
fn a_fifo_filled_in_real_time_is_read_until_it_ends() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ts_video(&p.join("v.ts"), 3);
    let fifo = p.join("cam.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // ffmpeg plays the file into the FIFO at its own pace (-re), as a camera would.
    let mut writer = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-re", "-i", "v.ts", "-c", "copy", "-f", "mpegts", "-y"])
        .arg(&fifo)
        .current_dir(p)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let o = run(VSAMPLE, &["cam.fifo", "--live", "--fps", "4", "--crop", "none", "-q", "-o", "cam.vks"], p);
    assert!(writer.wait().unwrap().success());
    assert!(o.status.success(), "{}", stderr(&o));
    // Read as it was written: about the source's 3 seconds, not at once.
    assert!(started.elapsed().as_secs_f64() > 2.0, "{:?}", started.elapsed());
    let idx: Vec<i64> = timeline(&p.join("cam.vks")).into_iter().flat_map(|r| r.0).collect();
    assert_eq!(idx, (0..12).collect::<Vec<_>>());
    assert_eq!(read_stream(&p.join("cam.vks"))[0].array.shape(), [12, 48, 64, 3]);
}

#[test]
fn a_capture_device_that_is_not_there_is_named() {
    let d = tempfile::tempdir().unwrap();
    let o = run(VSAMPLE, &["/dev/video97", "--fps", "2", "-o", "x.vks"], d.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("/dev/video97") && err.lines().count() <= 2, "{err}");
    assert!(!d.path().join("x.vks").exists());
}
