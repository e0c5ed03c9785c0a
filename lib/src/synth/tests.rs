use super::render::Background;
use super::*;

const PAIRS: [(Class, Class); 4] = [
    (Class::Right, Class::Left),
    (Class::Down, Class::Up),
    (Class::Grow, Class::Shrink),
    (Class::Appear, Class::Disappear),
];

fn frames(spec: &ClipSpec) -> Vec<Vec<u8>> {
    let r = Renderer::new(spec);
    (0..spec.num_frames())
        .map(|t| {
            let mut f = vec![0; r.frame_len()];
            r.render(t, &mut f);
            f
        })
        .collect()
}

/// Two-sample Kolmogorov–Smirnov statistic: the largest gap between the empirical CDFs.
fn ks(mut a: Vec<f32>, mut b: Vec<f32>) -> f32 {
    a.sort_by(f32::total_cmp);
    b.sort_by(f32::total_cmp);
    let (mut i, mut j, mut gap) = (0, 0, 0f32);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        gap = gap.max((i as f32 / a.len() as f32 - j as f32 / b.len() as f32).abs());
    }
    gap
}

/// A per-frame quantity over the frames of many independently drawn clips of `class`.
fn per_frame(class: Class, seed: u64, clips: usize, f: impl Fn(&ObjectState) -> f32) -> Vec<f32> {
    (0..clips)
        .flat_map(|k| sample_clip(class, &mut clip_rng(seed, class, k), 128, 96).states())
        .map(|s| f(&s))
        .collect()
}

#[test]
fn paired_classes_carry_the_same_frames_in_reverse_order() {
    for (forward, backward) in PAIRS {
        for k in 0..6 {
            let rng = clip_rng(11, forward, k);
            let a = frames(&sample_clip(forward, &mut rng.clone(), 64, 48));
            let mut b = frames(&sample_clip(backward, &mut rng.clone(), 64, 48));
            assert_ne!(a, b, "{forward:?} clip {k} is a palindrome");
            b.reverse();
            assert_eq!(a, b, "{backward:?} is not {forward:?} reversed (clip {k})");
        }
    }
}

#[test]
fn per_frame_marginals_match_within_pairs_but_not_their_halves() {
    // Independent draws (different clip generators): the distribution over all frames of the
    // object's position, size and presence is the same for both classes of a pair...
    type Measure = fn(&ObjectState) -> f32;
    let measures: [(Class, Class, Measure); 4] = [
        (Class::Left, Class::Right, |s| s.cx),
        (Class::Up, Class::Down, |s| s.cy),
        (Class::Grow, Class::Shrink, |s| s.radius_px),
        (Class::Appear, Class::Disappear, |s| s.visible as u8 as f32),
    ];
    for (a, b, f) in measures {
        let (xa, xb) = (per_frame(a, 1, 1500, f), per_frame(b, 2, 1500, f));
        let d = ks(xa, xb);
        assert!(d < 0.04, "{a:?} vs {b:?}: KS {d}");
    }
    // ...while the first frames alone tell them apart, so the test above can see a difference.
    let first = |class| {
        (0..500)
            .map(|k| sample_clip(class, &mut clip_rng(3, class, k), 128, 96).state(0).cx)
            .collect::<Vec<f32>>()
    };
    let d = ks(first(Class::Left), first(Class::Right));
    assert!(d > 0.3, "first frames of left and right look alike: KS {d}");
}

#[test]
fn objects_move_the_way_their_class_says_and_stay_inside() {
    for (w, h) in [(128, 96), (96, 128), (32, 32), (320, 240)] {
        for class in Class::ALL {
            for k in 0..40 {
                let spec = sample_clip(class, &mut clip_rng(5, class, k), w, h);
                assert!((24..=64).contains(&spec.num_frames()) && (12..=30).contains(&spec.fps));
                let s = spec.states();
                for o in &s {
                    let b = o.bound_px();
                    let inside = o.cx - b >= -0.01
                        && o.cx + b <= w as f32 + 0.01
                        && o.cy - b >= -0.01
                        && o.cy + b <= h as f32 + 0.01;
                    assert!(inside, "{class:?} {w}x{h} clip {k}: {o:?} leaves the frame");
                }
                let (first, last) = (s[0], s[s.len() - 1]);
                let ok = match class {
                    Class::Left => last.cx < first.cx - 0.2 * w as f32 * 0.45,
                    Class::Right => last.cx > first.cx + 0.2 * w as f32 * 0.45,
                    Class::Up => last.cy < first.cy - 0.2 * h as f32 * 0.45,
                    Class::Down => last.cy > first.cy + 0.2 * h as f32 * 0.45,
                    Class::Grow => last.radius_px > 2.5 * first.radius_px,
                    Class::Shrink => first.radius_px > 2.5 * last.radius_px,
                    Class::Appear => !first.visible && last.visible,
                    Class::Disappear => first.visible && !last.visible,
                };
                assert!(ok, "{class:?} {w}x{h} clip {k}: {first:?} -> {last:?}");
            }
        }
    }
}

#[test]
fn rendered_object_sits_where_its_state_says() {
    // On solid backgrounds without noise the object's pixels are those that differ from the
    // background; their centroid is the shape's centre (all shapes are centred on it).
    let mut checked = 0;
    for k in 0..200 {
        let class = Class::ALL[k % 8];
        let spec = sample_clip(class, &mut clip_rng(9, class, k), 128, 96);
        let Background::Solid(bg) = spec.background else { continue };
        if spec.noise_amp > 0.0 {
            continue;
        }
        let bg = bg.map(|c| (c * 255.0).round() as i32);
        for (t, f) in frames(&spec).iter().enumerate() {
            let (mut n, mut sx, mut sy) = (0.0, 0.0, 0.0);
            for (i, px) in f.chunks_exact(3).enumerate() {
                let diff: i32 = (0..3).map(|c| (px[c] as i32 - bg[c]).abs()).sum();
                if diff > 0 {
                    let weight = diff as f64;
                    n += weight;
                    sx += weight * ((i % 128) as f64 + 0.5);
                    sy += weight * ((i / 128) as f64 + 0.5);
                }
            }
            let o = spec.state(t);
            if !o.visible {
                assert_eq!(n, 0.0, "clip {k} frame {t}: an invisible object left pixels");
                continue;
            }
            let (cx, cy) = (sx / n, sy / n);
            // Colour-weighted, so an edge pixel's rounding moves it a little.
            assert!(
                (cx - o.cx as f64).abs() < 1.0 && (cy - o.cy as f64).abs() < 1.0,
                "clip {k} frame {t}: ({cx}, {cy}) vs {o:?}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} plain clips drawn");
}

#[test]
fn same_seed_same_frames_other_seed_other_frames() {
    for class in Class::ALL {
        let a = frames(&sample_clip(class, &mut clip_rng(4, class, 0), 48, 32));
        let b = frames(&sample_clip(class, &mut clip_rng(4, class, 0), 48, 32));
        let c = frames(&sample_clip(class, &mut clip_rng(5, class, 0), 48, 32));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
    // A clip does not depend on which other classes are generated beside it.
    assert_ne!(clip_rng(4, Class::Left, 0).next_u64(), clip_rng(4, Class::Right, 0).next_u64());
}

#[test]
fn backgrounds_and_shapes_vary() {
    let mut kinds = std::collections::HashSet::new();
    let mut shapes = std::collections::HashSet::new();
    let mut noisy = 0;
    for k in 0..200 {
        let spec = sample_clip(Class::Left, &mut clip_rng(8, Class::Left, k), 64, 48);
        kinds.insert(std::mem::discriminant(&spec.background));
        shapes.insert(spec.shape);
        noisy += (spec.noise_amp > 0.0) as usize;
    }
    assert_eq!(kinds.len(), 5);
    assert_eq!(shapes.len(), 6);
    assert!((40..=110).contains(&noisy), "{noisy} noisy clips of 200");
}

#[test]
fn class_lists_and_sizes_parse_or_say_why_not() {
    assert_eq!(parse_classes("left, right").unwrap(), vec![Class::Left, Class::Right]);
    assert_eq!(
        parse_classes("left,right,up,down,grow,shrink,appear,disappear").unwrap(),
        Class::ALL.to_vec()
    );
    let e = parse_classes("left,sideways").unwrap_err().to_string();
    assert!(e.contains("\"sideways\"") && e.contains("known"), "{e}");
    assert!(parse_classes("up,up").unwrap_err().to_string().contains("twice"));
    assert!(parse_classes("").is_err());
    assert_eq!(parse_size("128x96").unwrap(), (128, 96));
    assert!(parse_size("127x96").unwrap_err().to_string().contains("even"));
    assert!(parse_size("128").is_err());
    assert!(parse_size("8x8").is_err());
    for c in Class::ALL {
        assert_eq!(Class::from_name(c.name()), Some(c));
        assert_eq!(c.reverse().reverse(), c);
    }
}

#[test]
fn a_quarter_of_each_class_is_held_out() {
    assert_eq!([1, 2, 3, 4, 16, 20].map(val_count), [0, 1, 1, 1, 4, 5]);
}

#[test]
fn batching_does_not_change_a_clips_bytes() {
    // Needs the system ffmpeg, as the tools do.
    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<ClipSpec> = [Class::Left, Class::Grow, Class::Disappear]
        .iter()
        .map(|&c| sample_clip(c, &mut clip_rng(2, c, 0), 48, 32))
        .collect();
    assert!(specs.iter().any(|s| s.fps != specs[0].fps), "pick clips with different rates");
    let batched: Vec<_> = (0..specs.len()).map(|i| dir.path().join(format!("b{i}.mp4"))).collect();
    let clips: Vec<(&ClipSpec, &Path)> = specs.iter().zip(&batched).map(|(s, p)| (s, p.as_path())).collect();
    encode_batch(&clips).unwrap();
    for (i, spec) in specs.iter().enumerate() {
        let alone = dir.path().join(format!("a{i}.mp4"));
        encode_clip(spec, &alone).unwrap();
        let (a, b) = (std::fs::read(&alone).unwrap(), std::fs::read(&batched[i]).unwrap());
        assert!(a.len() > 500 && a == b, "clip {i}: {} bytes alone, {} batched", a.len(), b.len());
    }
}

#[test]
fn generate_writes_lists_in_label_order() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SynthOptions {
        out: dir.path().join("d"),
        classes: vec![Class::Shrink, Class::Right],
        per_class: 2,
        width: 32,
        height: 32,
        seed: 1,
        jobs: 2,
        plain: false,
    };
    let summary = generate(&opts).unwrap();
    assert_eq!((summary.train, summary.val), (2, 2));
    let read = |name: &str| std::fs::read_to_string(opts.out.join(name)).unwrap();
    assert_eq!(read("labels.txt"), "shrink\nright\n");
    assert_eq!(read("train.list"), "shrink/shrink_000.mp4 0\nright/right_000.mp4 1\n");
    assert_eq!(read("val.list"), "shrink/shrink_001.mp4 0\nright/right_001.mp4 1\n");
    for v in &summary.videos {
        assert!(opts.out.join(&v.path).metadata().unwrap().len() > 0, "{}", v.path);
    }
}

/// A plain clip is the same motion, white on black: pixels are grey levels (R = G = B), the
/// background exactly black, the object white, and the object moves as in the scene it replaces.
#[test]
fn plain_clips_keep_the_motion_on_black() {
    for class in [Class::Left, Class::Appear] {
        let spec = sample_clip(class, &mut clip_rng(6, class, 0), 48, 32);
        let states = spec.states();
        let plain = spec.plain();
        assert_eq!(plain.states(), states);
        let fs = frames(&plain);
        let all: Vec<u8> = fs.concat();
        assert!(all.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]), "{class:?}: not grey");
        assert_eq!(all.iter().min(), Some(&0));
        assert!(*all.iter().max().unwrap() >= 250, "{class:?}: no white object");
    }
}
