//! RandAugment and AugMix against pytorchvideo 0.1.5 (scripts/augment_ref.py, models tier):
//! each of the 14 ops at several arguments on a uint8 video (noise, gradients, grey, flat and
//! low-contrast areas), then RandAugment and AugMix as wholes with pytorchvideo's random draws
//! recorded and replayed here (ops, levels, arguments; AugMix's Dirichlet and Beta weights).
//! The level functions must turn each recorded level into the recorded argument exactly.
//! Pixels must equal pytorchvideo's (measured: all equal, every op, RandAugment and AugMix),
//! but for the bilinear grid ops (Rotate, ShearX/Y, TranslateX/Y) a one-level difference in
//! under 1 value in 1000 is let through: we follow PyTorch's vectorised `grid_sample` with its
//! fused multiply-adds (measured on its AVX2 kernel); a CPU or build whose kernel does not fuse
//! them rounds a few values near a half the other way.

mod common;
use common::*;
use ndarray::{Array4, ArrayD, Axis};
use serde_json::Value;
use vidkit::transform::{
    apply_op, augmix, rand_augment, AugMixDraw, AugmentOp, OpKind, OpSpec, TransformHparas, AUGMIX_OPS,
    RANDAUG_OPS,
};

struct Fixture {
    clip: Array4<u8>,
    dir: std::path::PathBuf,
}

fn fixture() -> Option<Fixture> {
    let script = workspace_root().join("scripts/augment_ref.py");
    let dir =
        cached_fixture("augment", std::slice::from_ref(&script), "d24", models_peers_python, &script, &[])?;
    let clip: ArrayD<u8> = ndarray_npy::read_npy(dir.join("clip.npy")).unwrap();
    Some(Fixture { clip: clip.into_dimensionality().unwrap(), dir })
}

impl Fixture {
    fn cases(&self, name: &str) -> (Vec<Value>, ArrayD<u8>) {
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(self.dir.join(format!("{name}.json"))).unwrap())
                .unwrap();
        let out = ndarray_npy::read_npy(self.dir.join(format!("{name}.npy"))).unwrap();
        (meta["cases"].as_array().unwrap().clone(), out)
    }
}

fn is_grid_op(kind: OpKind) -> bool {
    matches!(kind, OpKind::Rotate | OpKind::ShearX | OpKind::ShearY | OpKind::TranslateX | OpKind::TranslateY)
}

/// (values that differ, largest difference) between ours and theirs.
fn compare(ours: &Array4<u8>, theirs: ndarray::ArrayViewD<u8>) -> (usize, u8) {
    assert_eq!(ours.shape(), theirs.shape());
    ours.iter().zip(theirs.iter()).fold((0, 0), |(n, m), (&a, &b)| {
        let d = a.abs_diff(b);
        (n + (d > 0) as usize, m.max(d))
    })
}

/// A recorded op replayed through the level function of its table row: the argument must be
/// pytorchvideo's (one of the two signs where the row flips a coin).
fn replay(table: &[OpSpec], rec: &Value) -> AugmentOp {
    let kind: OpKind = rec["op"].as_str().unwrap().parse().unwrap();
    let spec = table.iter().find(|s| s.kind == kind).unwrap();
    let Some(arg) = exact(&rec["arg_bits"]) else {
        return AugmentOp { kind, arg: 0.0 };
    };
    let level = exact(&rec["level_bits"]).unwrap();
    let op = [false, true].map(|neg| spec.at_level(level, neg)).into_iter().find(|op| op.arg == arg);
    op.unwrap_or_else(|| panic!("{rec}: level {level} does not give argument {arg} in {spec:?}"))
}

/// A double written as its IEEE bits (`null`: none).
fn exact(bits: &Value) -> Option<f64> {
    bits.as_u64().map(f64::from_bits)
}

fn hparas(config: &Value) -> TransformHparas {
    serde_json::from_value(
        config.get("transform_hparas").cloned().unwrap_or(serde_json::json!({"fill": [0.5, 0.5, 0.5]})),
    )
    .unwrap()
}

#[test]
fn augmentation_ops_match_pytorchvideo() {
    let Some(fx) = fixture() else { return };
    let (cases, want) = fx.cases("ops");
    let mut worst: std::collections::BTreeMap<&str, (usize, u8, usize)> = Default::default();
    let mut failures = vec![];
    for (k, c) in cases.iter().enumerate() {
        let kind: OpKind = c["op"].as_str().unwrap().parse().unwrap();
        let op = AugmentOp { kind, arg: c["arg"].as_f64().unwrap_or(0.0) };
        let fill: Vec<f32> =
            c["fill"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let mut ours = fx.clip.clone();
        apply_op(ours.view_mut(), op, [fill[0], fill[1], fill[2]]).unwrap();
        let (n, max) = compare(&ours, want.index_axis(Axis(0), k));
        let e = worst.entry(kind.name()).or_default();
        *e = (e.0 + n, e.1.max(max), e.2 + ours.len());
        if n > 0 && (!is_grid_op(kind) || max > 1) {
            failures.push(format!("{c}: {n} values differ, by up to {max}"));
        }
    }
    for (name, (n, max, total)) in &worst {
        eprintln!("{name}: {n} of {total} values differ, max difference {max}");
    }
    let grid_off: usize =
        worst.iter().filter(|(k, _)| is_grid_op(k.parse().unwrap())).map(|(_, v)| v.0).sum();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(grid_off * 1000 < fx.clip.len() * cases.len(), "{grid_off} grid-op values off by one: too many");
}

/// Replays every draw of the fixture `name` (`apply` gives our clip and the ops it used) and
/// checks it against pytorchvideo's: equal, or off by at most one where a grid op ran.
fn check_wholes(name: &str, label: &str, apply: impl Fn(&Fixture, &Value) -> (Array4<u8>, Vec<AugmentOp>)) {
    let Some(fx) = fixture() else { return };
    let (cases, want) = fx.cases(name);
    let (mut off, mut total, mut max_all) = (0, 0, 0);
    for (k, c) in cases.iter().enumerate() {
        let (ours, ops) = apply(&fx, c);
        let (n, max) = compare(&ours, want.index_axis(Axis(0), k));
        let exact = ops.iter().all(|op| !is_grid_op(op.kind));
        assert!(max <= 1 && !(exact && n > 0), "draw {k} {c}: {n} values differ, by up to {max}");
        (off, total, max_all) = (off + n, total + ours.len(), max_all.max(max));
    }
    eprintln!("{label}: {off} of {total} values differ, max difference {max_all}");
    assert!(off * 1000 < total, "{off} values off by one: too many");
}

#[test]
fn rand_augment_matches_pytorchvideo_given_its_draws() {
    check_wholes("randaug", "RandAugment", |fx, c| {
        let ops: Vec<AugmentOp> =
            c["ops"].as_array().unwrap().iter().map(|r| replay(&RANDAUG_OPS, r)).collect();
        let mut ours = fx.clip.clone();
        rand_augment(ours.view_mut(), &ops, &hparas(&c["config"])).unwrap();
        (ours, ops)
    });
}

#[test]
fn augmix_matches_pytorchvideo_given_its_draws() {
    check_wholes("augmix", "AugMix", |fx, c| {
        let chains: Vec<Vec<AugmentOp>> = c["chains"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ch| ch.as_array().unwrap().iter().map(|r| replay(&AUGMIX_OPS, r)).collect())
            .collect();
        let weights =
            c["weights_bits"].as_array().unwrap().iter().map(|w| exact(w).unwrap() as f32).collect();
        let draw = AugMixDraw { weights, m: exact(&c["m_bits"]).unwrap() as f32, chains };
        let mut ours = fx.clip.clone();
        augmix(ours.view_mut(), &draw, &hparas(&c["config"])).unwrap();
        (ours, draw.chains.into_iter().flatten().collect())
    });
}
