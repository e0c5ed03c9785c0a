//! Expected indices are computed by hand from each reference's formula (cited on the functions).
use super::*;

fn cfg(kind: SamplerKind, frames: usize, interval: usize, clips: usize, train: bool) -> SamplerConfig {
    SamplerConfig { kind, frames, interval, clips, train, seglen: 1 }
}

fn test_indices(
    kind: SamplerKind,
    frames: usize,
    interval: usize,
    clips: usize,
    len: usize,
) -> Vec<Vec<usize>> {
    cfg(kind, frames, interval, clips, false).sample(len, &mut Rng::new(0)).clips
}

#[test]
fn paddle_segment_test_mode() {
    // exact: L=8, N=8 → average_dur 1, idx = 0 + i
    assert_eq!(test_indices(SamplerKind::Segment, 8, 1, 1, 8), vec![(0..8).collect::<Vec<_>>()]);
    // long: L=100, N=8 → average_dur 12, (12-1)//2 = 5 → 5, 17, 29, ..., 89
    assert_eq!(test_indices(SamplerKind::Segment, 8, 1, 1, 100), vec![vec![5, 17, 29, 41, 53, 65, 77, 89]]);
    // L=30, N=8 → average_dur 3 → 1 + 3i
    assert_eq!(test_indices(SamplerKind::Segment, 8, 1, 1, 30), vec![vec![1, 4, 7, 10, 13, 16, 19, 22]]);
    // short: L=5, N=8 → average_dur 0 → idx = i % 5
    let s = cfg(SamplerKind::Segment, 8, 1, 1, false).sample(5, &mut Rng::new(0));
    assert_eq!(s.clips, vec![vec![0, 1, 2, 3, 4, 0, 1, 2]]);
    assert!(s.repeated);
}

#[test]
fn mmaction_segment_test_mode() {
    // long: L=100, N=8 → avg 12.5 → int(12.5 i + 6.25) = 6, 18, 31, 43, 56, 68, 81, 93
    assert_eq!(
        test_indices(SamplerKind::SegmentMmaction, 8, 1, 1, 100),
        vec![vec![6, 18, 31, 43, 56, 68, 81, 93]]
    );
    // exact: L=8 → avg 1 → int(i + 0.5) = i
    assert_eq!(test_indices(SamplerKind::SegmentMmaction, 8, 1, 1, 8), vec![(0..8).collect::<Vec<_>>()]);
    // short: L=5, N=8 → avg 0.625 → int(0.625 i + 0.3125) = 0, 0, 1, 2, 2, 3, 4, 4
    assert_eq!(test_indices(SamplerKind::SegmentMmaction, 8, 1, 1, 5), vec![vec![0, 0, 1, 2, 2, 3, 4, 4]]);
    // The variants differ on long videos: PaddleVideo 5, 17, ... vs MMAction2 6, 18, ...
}

#[test]
fn segment_train_mode_stays_inside_each_segment_and_follows_the_seed() {
    for kind in [SamplerKind::Segment, SamplerKind::SegmentMmaction] {
        let c = cfg(kind, 8, 1, 1, true);
        let a = c.sample(100, &mut Rng::new(3)).clips;
        let b = c.sample(100, &mut Rng::new(3)).clips;
        assert_eq!(a, b);
        let avg = 100 / 8;
        for (i, &idx) in a[0].iter().enumerate() {
            assert!(idx >= i * avg && idx < (i + 1) * avg, "{kind:?} {i} {idx}");
        }
        let mut seen = std::collections::HashSet::new();
        let mut r = Rng::new(9);
        for _ in 0..200 {
            seen.insert(c.sample(100, &mut r).clips[0][0]);
        }
        assert_eq!(seen.len(), avg, "every offset in the first segment is reachable");
    }
    // MMAction2 train on a short video: around(arange(8) * 5/8) = 0, 1, 1, 2, 2, 3, 4, 4
    // (0.625→1, 1.25→1, 1.875→2, 2.5→2 (half to even), 3.125→3, 3.75→4, 4.375→4)
    let c = cfg(SamplerKind::SegmentMmaction, 8, 1, 1, true);
    assert_eq!(c.sample(5, &mut Rng::new(0)).clips[0], vec![0, 1, 1, 2, 2, 3, 4, 4]);
}

#[test]
fn dense_test_mode_windows() {
    // L=100, T=8, τ=4: clip 32, delta 68; K=3 → starts 0, 22.67, 45.33
    // clip 0: linspace(0, 31, 8) = 0, 4.43, 8.86, 13.29, 17.71, 22.14, 26.57, 31 → 0 4 8 13 17 22 26 31
    let got = test_indices(SamplerKind::Dense, 8, 4, 3, 100);
    assert_eq!(got[0], vec![0, 4, 8, 13, 17, 22, 26, 31]);
    // clip 1: 22.667 + 4.4286 i → 22 27 31 35 40 44 49 53
    assert_eq!(got[1], vec![22, 27, 31, 35, 40, 44, 49, 53]);
    // clip 2: 45.333 + 4.4286 i → 45 49 54 58 63 67 71 76
    assert_eq!(got[2], vec![45, 49, 54, 58, 63, 67, 71, 76]);
    // exact: L=32 → delta 0 → every clip is linspace(0, 31, 8)
    assert_eq!(test_indices(SamplerKind::Dense, 8, 4, 2, 32), vec![vec![0, 4, 8, 13, 17, 22, 26, 31]; 2]);
    // short: L=10 → linspace(0,31,8) clamped to 9 → 0 4 8 9 9 9 9 9
    let s = cfg(SamplerKind::Dense, 8, 4, 1, false).sample(10, &mut Rng::new(0));
    assert_eq!(s.clips, vec![vec![0, 4, 8, 9, 9, 9, 9, 9]]);
    assert!(s.repeated);
}

#[test]
fn dense_train_window_fits() {
    let c = cfg(SamplerKind::Dense, 8, 8, 1, true);
    let mut r = Rng::new(5);
    for _ in 0..100 {
        let clip = &c.sample(300, &mut r).clips[0];
        assert!(clip.windows(2).all(|w| w[1] > w[0]));
        assert!(clip[7] - clip[0] <= 63 && clip[7] < 300);
    }
}

#[test]
fn uniform_includes_both_endpoints() {
    // L=100, N=8: linspace(0, 99, 8) = 0, 14.14, 28.29, 42.43, 56.57, 70.71, 84.86, 99
    assert_eq!(test_indices(SamplerKind::Uniform, 8, 1, 1, 100), vec![vec![0, 14, 28, 42, 56, 70, 84, 99]]);
    assert_eq!(test_indices(SamplerKind::Uniform, 8, 1, 1, 8), vec![(0..8).collect::<Vec<_>>()]);
    // short: L=3 → linspace(0, 2, 8) = 0, .29, .57, .86, 1.14, 1.43, 1.71, 2
    assert_eq!(test_indices(SamplerKind::Uniform, 8, 1, 1, 3), vec![vec![0, 0, 0, 0, 1, 1, 1, 2]]);
}

#[test]
fn round_half_even_matches_numpy() {
    assert_eq!(round_half_even(2.5), 2.0);
    assert_eq!(round_half_even(3.5), 4.0);
    assert_eq!(round_half_even(1.25), 1.0);
    assert_eq!(round_half_even(0.5), 0.0);
}

/// Values by hand from the formula on `fixed_rate`; the same as torchvision 0.29.2's
/// `VideoClips.compute_clips_for_video(arange(L), 1, 1, fps, R)` gives (checked once by hand).
#[test]
fn fixed_rate_follows_torchvision_videoclips() {
    let idx = |l, fps, r| fixed_rate(l, fps, r).unwrap().clips.remove(0);
    // Integer step 25 → video_pts[::25]: 0, 25, 50, 75, 100 (ceil(101 / 25) frames).
    assert_eq!(idx(101, 25.0, 1.0), vec![0, 25, 50, 75, 100]);
    // 30000/1001 fps at 1 per second: step 29.97 (f32 29.969999), n = floor(100 / 29.97) = 3
    // → floor(0), floor(29.97), floor(59.94) = 0, 29, 59.
    assert_eq!(idx(100, 30000.0 / 1001.0, 1.0), vec![0, 29, 59]);
    // 25 fps at 2 per second: step 12.5, n = floor(50 * 2 / 25) = 4 → 0, 12, 25, 37.
    assert_eq!(idx(50, 25.0, 2.0), vec![0, 12, 25, 37]);
    // Upsampling 10 fps to 15: step 0.667, n = floor(4 * 1.5) = 6 → 0, 0, 1, 2, 2, 3; repeats.
    let s = fixed_rate(4, 10.0, 15.0).unwrap();
    assert_eq!(s.clips, vec![vec![0, 0, 1, 2, 2, 3]]);
    assert!(s.repeated);
    assert!(fixed_rate(10, 0.0, 1.0).is_err() && fixed_rate(10, 25.0, 0.0).is_err());
    // Too short for one frame at this rate.
    assert!(fixed_rate(10, 25.0, 2.0).is_err());
}

#[test]
fn untrimmed_snippets_as_mmaction() {
    // MMAction2 UntrimmedSampleFrames: centres arange(S // 2, L, S), each clip
    // centre + arange(-(clip_len // 2), clip_len - clip_len // 2), clipped to [0, L - 1].
    let u = |len, clip_len, interval| test_indices(SamplerKind::Untrimmed, clip_len, interval, 1, len);
    assert_eq!(u(100, 1, 16), vec![vec![8], vec![24], vec![40], vec![56], vec![72], vec![88]]);
    assert_eq!(u(50, 5, 16), vec![vec![6, 7, 8, 9, 10], vec![22, 23, 24, 25, 26], vec![38, 39, 40, 41, 42]]);
    // even clip_len: one more frame after the centre than before it
    assert_eq!(u(12, 4, 10), vec![vec![3, 4, 5, 6]]);
    // clipped at both ends
    assert_eq!(u(7, 6, 4), vec![vec![0, 0, 1, 2, 3, 4], vec![3, 4, 5, 6, 6, 6]]);
    // shorter than half an interval: no snippet at all, as the reference
    assert!(u(3, 1, 16).is_empty());
    // it is a test-time sampler over the whole video
    assert!(cfg(SamplerKind::Untrimmed, 1, 16, 2, false).validate().is_err());
    assert!(cfg(SamplerKind::Untrimmed, 1, 16, 1, true).validate().is_err());
    assert!(cfg(SamplerKind::Untrimmed, 1, 16, 1, false).validate().is_ok());
    assert_eq!("untrimmed".parse::<SamplerKind>().unwrap(), SamplerKind::Untrimmed);
}

fn stnet_cfg(frames: usize, seglen: usize, train: bool) -> SamplerConfig {
    SamplerConfig { seglen, ..cfg(SamplerKind::Stnet, frames, 1, 1, train) }
}

#[test]
fn stnet_takes_seglen_consecutive_frames_per_segment_as_the_zoo_reader() {
    // kinetics_reader.py video_loader, test: average_dur = 100 // 7 = 14,
    // idx = (14 - 5) // 2 + i * 14 = 4 + 14 i, frames idx .. idx + 5.
    let mut rng = Rng::new(0);
    let c = stnet_cfg(35, 5, false).sample(100, &mut rng);
    let want: Vec<usize> = (0..7).flat_map(|i| (4 + 14 * i..9 + 14 * i).collect::<Vec<_>>()).collect();
    assert_eq!(c.clips, vec![want]);
    assert!(!c.repeated);
    // average_dur 3 < seglen: idx = 3 i, so segments overlap; 12 frames, 4 segments of 5.
    let c = stnet_cfg(20, 5, false).sample(12, &mut rng);
    assert_eq!(c.clips[0][..10], [0, 1, 2, 3, 4, 3, 4, 5, 6, 7]);
    assert_eq!(c.clips[0][15..], [9, 10, 11, 0, 1]); // jj % L
    assert!(c.repeated);
    // average_dur 0: idx = i, modulo the length.
    let c = stnet_cfg(6, 2, false).sample(2, &mut rng);
    assert_eq!(c.clips[0], [0, 1, 1, 0, 0, 1]);
    // Training: each segment starts within its own average_dur, randint inclusive.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..400 {
        let c = stnet_cfg(35, 5, true).sample(100, &mut rng);
        for i in 0..7 {
            let start = c.clips[0][i * 5];
            assert!((14 * i..=14 * i + 9).contains(&start), "{start}");
            assert_eq!(c.clips[0][i * 5..i * 5 + 5], (start..start + 5).collect::<Vec<_>>()[..]);
            if i == 0 {
                seen.insert(start);
            }
        }
    }
    assert_eq!(seen.len(), 10, "randint(0, average_dur - seglen) reaches both ends");
}

#[test]
fn seglen_is_checked() {
    assert!(stnet_cfg(35, 5, false).validate().is_ok());
    assert!(stnet_cfg(36, 5, false).validate().unwrap_err().to_string().contains("not a whole number"));
    let mut c = cfg(SamplerKind::Segment, 8, 1, 1, false);
    c.seglen = 2;
    assert!(c.validate().unwrap_err().to_string().contains("--seglen applies to --sampler stnet"));
}
