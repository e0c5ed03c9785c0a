use super::*;
use crate::stream::{Array, RecordHeader, StreamWriter};
use ndarray::Array2;
use std::path::PathBuf;

fn rows(t: usize, c: usize, seed: f32) -> Array2<f32> {
    Array2::from_shape_fn((t, c), |(i, j)| seed + i as f32 * 0.37 - j as f32 * 1.25e-3)
}

fn video(id: &str, label: Option<Label>, t: usize) -> VideoFeatures {
    VideoFeatures {
        id: id.into(),
        label,
        fps: Some(29.97),
        duration: Some(t as f64 / 29.97),
        source: Some(format!("videos/{id}")),
        modalities: vec![("audio".into(), rows(t, 3, -1.0)), ("rgb".into(), rows(t, 5, 2.0))],
        times: None,
    }
}

fn write_store(path: &std::path::Path, videos: &[VideoFeatures], f16: bool) {
    let root_attrs = vec![("layer".to_string(), "pool".to_string())];
    let mut w = StoreWriter::create(path, StoreOptions { f16, root_attrs }).unwrap();
    for v in videos {
        w.write(v).unwrap();
    }
    w.finish().unwrap();
}

fn sample_videos() -> Vec<VideoFeatures> {
    vec![
        video("a/b/c.mp4", Some(Label::Single(3)), 4),
        video(".hidden%2F/x", Some(Label::Multi(vec![1, 7])), 1),
        video("plain", None, 0),
    ]
}

#[test]
fn ids_escape_reversibly_and_never_contain_a_slash() {
    for id in ["a/b/c.mp4", ".", "..", "%2F", "100%/x", "é/ü", ".x"] {
        let name = escape_id(id).unwrap();
        assert!(!name.contains('/') && name != "." && !name.starts_with('.'), "{id} → {name}");
        assert_eq!(unescape_id(&name), id);
    }
    assert!(escape_id("").is_err());
}

#[test]
fn store_round_trip_f32_is_exact_and_keeps_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.h5");
    let videos = sample_videos();
    write_store(&path, &videos, false);
    assert!(is_hdf5(&path).unwrap());
    let store = FeatureStore::open(&path).unwrap();
    let mut want = videos.clone();
    // Stores list videos in the order of their escaped group names.
    want.sort_by_key(|v| escape_id(&v.id).unwrap());
    assert_eq!(store.ids().unwrap(), want.iter().map(|v| v.id.clone()).collect::<Vec<_>>());
    assert_eq!(read_features(&path).unwrap(), want);
    assert_eq!(store.read("a/b/c.mp4").unwrap(), videos[0]);
    assert!(format!("{:#}", store.read("missing").unwrap_err()).contains("no video \"missing\""));
    // Nothing but the file is left in the directory (the temporary was renamed).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn store_round_trip_f16_rounds_to_half_precision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f16.h5");
    let videos = sample_videos();
    write_store(&path, &videos, true);
    assert!(FeatureStore::open(&path).unwrap().stores_f16());
    let got = FeatureStore::open(&path).unwrap().read("a/b/c.mp4").unwrap();
    for ((m, a), (_, b)) in got.modalities.iter().zip(&videos[0].modalities) {
        let want = b.mapv(|x| half::f16::from_f32(x).to_f32());
        assert_eq!(a, &want, "{m}");
    }
    assert_eq!(got.label, videos[0].label);
}

#[test]
fn unfinished_writer_leaves_nothing_and_duplicates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.h5");
    {
        let mut w = StoreWriter::create(&path, StoreOptions::default()).unwrap();
        w.write(&video("v", None, 2)).unwrap();
        let err = w.write(&video("v", None, 2)).unwrap_err();
        assert!(format!("{err:#}").contains("\"v\""), "{err:#}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "temporary left behind");
}

#[test]
fn merge_of_shards_equals_the_whole_and_names_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let videos: Vec<VideoFeatures> = (0..5).map(|i| video(&format!("d/{i}.mp4"), None, i + 1)).collect();
    let whole = dir.path().join("whole.h5");
    write_store(&whole, &videos, true);
    let shards: Vec<PathBuf> = (0..2)
        .map(|k| {
            let p = dir.path().join(format!("s{k}.h5"));
            let part: Vec<_> = videos.iter().skip(k).step_by(2).cloned().collect();
            write_store(&p, &part, true);
            p
        })
        .collect();
    let merged = dir.path().join("merged.h5");
    assert_eq!(merge(&shards, &merged, StoreOptions::default()).unwrap(), 5);
    let store = FeatureStore::open(&merged).unwrap();
    assert!(store.stores_f16(), "float16 shards merge to float16");
    assert_eq!(store.root_attrs(), vec![("layer".to_string(), "pool".to_string())]);
    assert_eq!(read_features(&merged).unwrap(), read_features(&whole).unwrap());
    let dup = dir.path().join("dup.h5");
    let err = merge(&[shards[0].clone(), whole.clone()], &dup, StoreOptions::default()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("s0.h5") && msg.contains("whole.h5") && msg.contains("d/0.mp4"), "{msg}");
    assert!(!dup.exists());
}

#[test]
fn features_streams_read_like_stores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.vks");
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::new(&mut buf);
        let mut h = RecordHeader::features("x/1.mp4");
        h.layout = Some("TC".into());
        h.label = Some(Label::Single(2));
        h.fps = Some(25.0);
        h.extra.insert("num_frames".into(), 50.into());
        let a = rows(3, 4, 0.0);
        // Two records of one video are concatenated; a third of another modality kept apart.
        w.write_record(&h, &Array::F32(a.slice(ndarray::s![..2, ..]).to_owned().into_dyn())).unwrap();
        w.write_record(&h, &Array::F16(a.slice(ndarray::s![2.., ..]).mapv(half::f16::from_f32).into_dyn()))
            .unwrap();
        let mut audio = h.clone();
        audio.extra.insert("modality".into(), "audio".into());
        w.write_record(&audio, &Array::F32(rows(1, 2, 5.0).into_dyn())).unwrap();
        let mut c = RecordHeader::features("y");
        c.layout = Some("C".into());
        w.write_record(&c, &Array::F32(rows(1, 4, 1.0).into_shape_with_order(4).unwrap().into_dyn()))
            .unwrap();
    }
    std::fs::write(&path, &buf).unwrap();
    assert!(!is_hdf5(&path).unwrap());
    let got = read_features(&path).unwrap();
    assert_eq!(got.len(), 2);
    let x = &got[0];
    assert_eq!(
        (x.id.as_str(), x.label.clone(), x.fps, x.duration),
        ("x/1.mp4", Some(Label::Single(2)), Some(25.0), Some(2.0))
    );
    let mut want = rows(3, 4, 0.0);
    want.row_mut(2).mapv_inplace(|v| half::f16::from_f32(v).to_f32());
    assert_eq!(x.modality("rgb").unwrap(), &want);
    assert_eq!(x.modality("audio").unwrap(), &rows(1, 2, 5.0));
    assert_eq!(got[1].modality("rgb").unwrap(), &rows(1, 4, 1.0));
    // The store keeps what the stream said.
    let h5 = dir.path().join("f.h5");
    write_store(&h5, &got, false);
    assert_eq!(read_features(&h5).unwrap(), got);
}

#[test]
fn frames_and_interleaved_videos_are_refused_with_the_record_named() {
    let mut buf = Vec::new();
    let frames = Array::U8(ndarray::ArrayD::zeros(ndarray::IxDyn(&[1, 2, 2, 3])));
    StreamWriter::new(&mut buf).write_record(&RecordHeader::frames("v"), &frames).unwrap();
    let err = FeatureStreamReader::new(&buf[..], "s.vks").next_video().unwrap_err();
    assert!(format!("{err:#}").contains("s.vks: record 0 (v): record of kind \"frames\""), "{err:#}");
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::new(&mut buf);
        let a = Array::F32(rows(1, 2, 0.0).into_dyn());
        for id in ["a", "b", "a"] {
            w.write_record(&RecordHeader::features(id), &a).unwrap();
        }
    }
    let err = FeatureStreamReader::new(&buf[..], "t").collect::<Result<Vec<_>>>().unwrap_err();
    assert!(format!("{err:#}").contains("t: record 2: video \"a\" appears again"), "{err:#}");
}

#[test]
fn videos_written_in_pieces_read_back_whole_and_abandoned_ones_vanish() {
    let dir = tempfile::tempdir().unwrap();
    for f16 in [false, true] {
        let path = dir.path().join(format!("p{f16}.h5"));
        let mut want = video("long", Some(Label::Single(2)), 10);
        want.modalities.retain(|(m, _)| m == "rgb");
        let rgb = want.modalities[0].1.clone();
        let times: Vec<[f64; 2]> = (0..10).map(|i| [i as f64, i as f64 + 1.0]).collect();
        let mut w = StoreWriter::create(&path, StoreOptions { f16, ..Default::default() }).unwrap();
        // a video that fails part-way leaves nothing behind, and its id can be written again
        w.begin_video(&want, "x").unwrap();
        w.append("rgb", rgb.slice(ndarray::s![..4, ..]), Some(&times[..4])).unwrap();
        w.abandon_video();
        w.begin_video(&want, "x").unwrap();
        for (a, b) in [(0, 3), (3, 3), (3, 7), (7, 10)] {
            w.append("rgb", rgb.slice(ndarray::s![a..b, ..]), Some(&times[a..b])).unwrap();
        }
        let e = w.append("rgb", rows(1, 4, 0.0).view(), None).unwrap_err();
        assert!(format!("{e:#}").contains("4 channels after 5"), "{e:#}");
        w.end_video().unwrap();
        // one without times, one left open at the end
        let mut other = video("other", None, 2);
        other.modalities.retain(|(m, _)| m == "rgb");
        w.begin_video(&other, "x").unwrap();
        w.append("rgb", other.modalities[0].1.view(), None).unwrap();
        w.end_video().unwrap();
        w.begin_video(&video("open", None, 1), "x").unwrap();
        w.append("rgb", rows(1, 5, 0.0).view(), None).unwrap();
        w.finish().unwrap();
        let got = read_features(&path).unwrap();
        assert_eq!(got.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), ["long", "other"]);
        want.times =
            Some(Array2::from_shape_vec((10, 2), times.iter().flatten().copied().collect()).unwrap());
        if f16 {
            want.modalities[0].1 = rgb.mapv(|x| half::f16::from_f32(x).to_f32());
        }
        assert_eq!(got[0], want, "f16 {f16}");
        assert_eq!(got[1].times, None);
        let other_rgb = &other.modalities[0].1;
        let other_want =
            if f16 { other_rgb.mapv(|x| half::f16::from_f32(x).to_f32()) } else { other_rgb.clone() };
        assert_eq!(got[1].modality("rgb"), Some(&other_want));
    }
}
