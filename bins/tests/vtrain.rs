//! `vtrain` refuses bad input with one-line errors naming what is wrong, before training.

mod common;
use common::*;

const VTRAIN: &str = env!("CARGO_BIN_EXE_vtrain");

#[test]
fn bad_arguments_and_lists_are_one_line_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    testsrc(&p.join("a.mp4"), "32x32", 25, 20, &[]);
    std::fs::write(p.join("ok.list"), "a.mp4 0\na.mp4 1\n").unwrap();
    std::fs::write(p.join("bad.list"), "a.mp4 0\na.mp4 one\n").unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--arch", "tsm_r7", "--train-list", "ok.list", "--out", "o"], "unknown architecture \"tsm_r7\""),
        (
            &["--arch", "tsm_r18", "--train-list", "missing.list", "--out", "o"],
            "missing.list: cannot read list file",
        ),
        (&["--arch", "tsm_r18", "--train-list", "bad.list", "--out", "o"], "bad.list: line 2"),
        (
            &["--arch", "tsm_r18", "--train-list", "ok.list", "--out", "o", "-o", "num_classes=1"],
            "has label [1], outside 0..1",
        ),
        (
            &["--arch", "tsm_r18", "--train-list", "ok.list", "--out", "o", "-o", "epochs"],
            "override \"epochs\" is not key=value",
        ),
        (
            &[
                "--arch",
                "tsm_r18",
                "--train-list",
                "ok.list",
                "--out",
                "o",
                "-o",
                r#"optimizer.param_groups=[{"match":"neck","lr_mult":2}]"#,
            ],
            "param_groups \"neck\" matches no trainable parameter",
        ),
    ];
    for (args, want) in cases {
        let o = run(VTRAIN, args, p);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    assert!(!p.join("o/last.safetensors").exists());
}

/// DML: a peer (here a wider TSM) trains alongside; both models are written and both learn
/// (their joint training loss falls, under AdamW on centre crops: with SGD at 0.01 and random
/// crops 12 tiny clips gave a loss that wandered, 3.9 → 3.8 → 4.1 on a CPU without AVX-512), and
/// a run stopped after 2 epochs and resumed for 2 more ends with the same main and peer weights,
/// bit for bit, as 4 straight epochs (the checkpoint holds the peer and its optimiser), with the
/// heads in fc_lr5's parameter groups.
#[test]
fn dml_trains_a_peer_alongside_and_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    synth(p, "left,right,up,down", "4", "32x32", "4");
    let args = |out: &'static str, own: &[&'static str]| {
        let mut a = vec![
            "--arch",
            "tsm_r18",
            "--train-list",
            "syn/train.list",
            "--val-list",
            "syn/val.list",
            "--out",
            out,
            "-q",
            "-j",
            "1",
        ];
        a.extend(TINY_2D);
        a.extend(["-o", r#"dml={"arch":"tsm_r18","weight":1.0,"model":{"base_width":16}}"#]);
        for o in own {
            a.extend(["-o", o]);
        }
        a
    };
    let learn = [
        "epochs=4",
        r#"optimizer={"name":"adamw","lr":0.005,"weight_decay":0.0001}"#,
        "train_crop=center",
        "dropout=0",
    ];
    let o = run(VTRAIN, &args("dml", &learn), p);
    assert!(o.status.success(), "{}", stderr(&o));
    let main = vidkit::model::read_config(&p.join("dml/last.safetensors")).unwrap();
    let peer = vidkit::model::read_config(&p.join("dml/peer_last.safetensors")).unwrap();
    assert_eq!((main.base_width, peer.base_width), (8, 16));
    let log = std::fs::read_to_string(p.join("dml/log.jsonl")).unwrap();
    let losses: Vec<f64> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "epoch")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 4);
    assert!(losses[3] < 0.85 * losses[0], "the joint loss should fall: {losses:?}");

    // Resuming, with the head at fc_lr5's rates (a gentler base LR keeps 5× and 10× stable).
    let args = |out| args(out, &["epochs=4", "optimizer.lr=0.001", "optimizer.fc_lr5=true"]);
    let o = run(VTRAIN, &args("straight"), p);
    assert!(o.status.success(), "{}", stderr(&o));

    let mut first = args("split");
    first.extend(["--stop-after", "2"]);
    let o = run(VTRAIN, &first, p);
    assert!(o.status.success(), "{}", stderr(&o));
    // Resuming without the peer would half-restore the run: refused.
    let mut no_peer = args("split");
    let at = no_peer.iter().position(|a| a.starts_with("dml=")).unwrap();
    no_peer.drain(at - 1..=at);
    no_peer.push("--resume");
    let o = run(VTRAIN, &no_peer, p);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("the checkpoint holds a DML peer"), "{}", stderr(&o));
    let mut second = args("split");
    second.push("--resume");
    let o = run(VTRAIN, &second, p);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tensors(&p.join("straight/last.safetensors"), &p.join("split/last.safetensors"));
    assert_same_tensors(&p.join("straight/peer_last.safetensors"), &p.join("split/peer_last.safetensors"));
}

/// PaddleVideo's recognizers train through vtrain (narrow, 1 epoch, on 2 tiny videos, the
/// heads at fc_lr5's rates, PP-TSMv2 with its temporal attention), write their model files and
/// checkpoint, and the model classifies through vsample | vclassify. Regressions: without a
/// config vtrain took tsm_r50's defaults (PP-TSMv2 dropped 0.5, not PPTSM_v2's 0.2), and an
/// untrained PP-TSMv2 in eval mode gave every clip the same logits (torch's fan-out init
/// starved its depthwise convs; Paddle initialises in fan-in mode).
#[test]
fn paddle_architectures_train_and_classify() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    synth(p, "left,right", "2", "32x32", "6");
    let pptsmv2: [&str; 4] = ["-o", "base_width=16", "-o", "temporal_attention=true"];
    for (arch, own, dropout) in
        [("pptsm_r50vd", &["-o", "base_width=8"][..], 0.5), ("pptsmv2_lcnetv2", &pptsmv2, 0.2)]
    {
        let mut args = vec!["--arch", arch, "--train-list", "syn/train.list", "--val-list", "syn/val.list"];
        args.extend(["--out", arch, "-q", "-j", "1", "-o", "epochs=1", "-o", "optimizer.fc_lr5=true"]);
        args.extend(TINY_2D);
        args.extend(own);
        let o = run(VTRAIN, &args, p);
        assert!(o.status.success(), "{arch}: {}", stderr(&o));
        for f in ["last.safetensors", "best.safetensors", "last.ckpt.safetensors", "log.jsonl"] {
            assert!(p.join(arch).join(f).is_file(), "{arch}: no {f}");
        }
        let model = p.join(arch).join("last.safetensors");
        let config = vidkit::model::read_config(&model).unwrap();
        assert_eq!(config.dropout, dropout, "{arch}");
        if arch == "pptsmv2_lcnetv2" {
            let tensors = candle_core::safetensors::load(&model, &candle_core::Device::Cpu).unwrap();
            assert!(tensors.contains_key("backbone.global_attention.fc.weight"), "no LTA was trained");
        }
        let vks = format!("{arch}.vks");
        let spec = model.to_str().unwrap();
        let o = run(
            env!("CARGO_BIN_EXE_vsample"),
            &["--list", "syn/val.list", "--root", "syn", "--spec-from", spec, "-q", "-o", &vks],
            p,
        );
        assert!(o.status.success(), "{arch}: {}", stderr(&o));
        let o = run(env!("CARGO_BIN_EXE_vclassify"), &["--model", spec, "--avg", "logits", &vks], p);
        assert!(o.status.success(), "{arch}: {}", stderr(&o));
        let preds: Vec<serde_json::Value> =
            String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(preds.len(), 2, "{arch}");
        let scores: Vec<Vec<f64>> = preds
            .iter()
            .map(|v| v["scores"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect())
            .collect();
        assert!(scores.iter().flatten().all(|s| s.is_finite()), "{arch}: {scores:?}");
        assert_ne!(scores[0], scores[1], "{arch}: every clip gets the same logits");
        assert!(["left", "right"].contains(&preds[0]["top"][0]["name"].as_str().unwrap()), "{arch}");
    }
}

/// `--init` starts a run from a model file (here a 2-class TSM trained for one epoch, fine-tuned
/// on 3 classes): with the learning rate at 0 every weight but the classifier's ends as the file
/// has it, the classifier starts fresh at the new class count, and a file of another
/// architecture or size is refused in one line.
#[test]
fn init_starts_from_a_model_file_and_refits_its_head() {
    use candle_core::Device;
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // A tiny TSM-R18 for one epoch on the list in syn/, with `extra` arguments.
    let tsm = |extra: &[&str]| {
        let mut args = vec!["--arch", "tsm_r18", "--train-list", "syn/train.list", "-o", "epochs=1"];
        args.extend_from_slice(&TINY_2D);
        args.extend_from_slice(extra);
        run(VTRAIN, &args, p)
    };
    synth(p, "left,right", "6", "32x32", "1");
    let o = tsm(&["--out", "first", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::rename(p.join("syn"), p.join("syn2")).unwrap();
    synth(p, "left,right,up", "6", "32x32", "2");
    let zero_lr = r#"optimizer={"name":"adamw","lr":0,"weight_decay":0.01}"#;
    let o = tsm(&["--out", "tuned", "--init", "first/last.safetensors", "-o", zero_lr]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("the classifier starts fresh (3 classes here, 2 there)"), "{err}");
    let dev = Device::Cpu;
    let (a, b) = (
        candle_core::safetensors::load(p.join("first/last.safetensors"), &dev).unwrap(),
        candle_core::safetensors::load(p.join("tuned/last.safetensors"), &dev).unwrap(),
    );
    let mut compared = 0;
    for (name, t) in &a {
        if name.starts_with("head.") || vidkit::nn::is_buffer(name) {
            continue;
        }
        let same = t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(same, "{name} moved at lr 0");
        compared += 1;
    }
    assert!(compared > 20, "{compared}");
    assert_eq!(b["head.fc.weight"].dims()[0], 3);
    for (extra, want) in [
        (&["--arch", "tsn_r18"][..], "--init is a tsm_r18 model, not tsn_r18"),
        (&["--arch", "tsm_r18", "-o", "base_width=16"][..], "has shape"),
    ] {
        let mut args = vec![
            "--train-list",
            "syn/train.list",
            "--out",
            "bad",
            "--init",
            "first/last.safetensors",
            "-o",
            "epochs=1",
        ];
        args.extend_from_slice(&TINY_2D);
        args.extend_from_slice(extra);
        let o = run(VTRAIN, &args, p);
        let err = stderr(&o);
        assert!(!o.status.success() && err.contains(want), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// `--device cpu-portable` trains through candle's own ops, the path a GPU takes (every vidkit
/// CPU kernel off): its first iterations' losses are the kernels' (same weights, same batches),
/// and it learns (the loss falls, as on the kernels). Only the first two iterations compare
/// tightly: AdamW's first steps move each weight by ±lr whatever its gradient's size, so weights
/// whose gradient is rounding noise take the sign of that noise, which differs between the two
/// paths' summation orders and shows in the loss from the third iteration on (1e-3 by epoch 1
/// against the AVX2 kernel). `--device cuda` in a build without CUDA fails with one line.
/// (Localizers, captioners, grounders and sequence models: their own tests.)
#[test]
fn the_gpu_path_trains_on_the_cpu_as_the_kernels_do() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    synth(p, "left,right,up,down", "4", "32x32", "4");
    let train = |out: &str, device: &str| {
        let mut a =
            vec!["--arch", "tsm_r18", "--train-list", "syn/train.list", "--out", out, "-q", "-j", "1"];
        a.extend(TINY_2D);
        a.extend(["-o", "epochs=3", "-o", "train_crop=center", "-o", "dropout=0", "--device", device]);
        a.extend(["-o", "log_every=1"]);
        a.extend(["-o", r#"optimizer={"name":"adamw","lr":0.005,"weight_decay":0.0001}"#]);
        let o = run(VTRAIN, &a, p);
        assert!(o.status.success(), "{device}: {}", stderr(&o));
        let log = std::fs::read_to_string(p.join(out).join("log.jsonl")).unwrap();
        let events: Vec<serde_json::Value> =
            log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let losses = |event: &str| -> Vec<f64> {
            events.iter().filter(|v| v["event"] == event).map(|v| v["loss"].as_f64().unwrap()).collect()
        };
        (losses("train"), losses("epoch"))
    };
    let ((kernels, _), (portable, epochs)) = (train("kernels", "cpu"), train("portable", "cpu-portable"));
    eprintln!(
        "iteration losses: kernels {kernels:?}, candle-only {portable:?}; candle-only epochs {epochs:?}"
    );
    for (i, bound) in [(0, 1e-5), (1, 1e-4)] {
        assert!(
            (portable[i] - kernels[i]).abs() <= bound * kernels[i],
            "iteration {}: {portable:?} vs {kernels:?}",
            i + 1
        );
    }
    assert!(epochs[2] < 0.85 * epochs[0], "the candle-only path should learn: {epochs:?}");

    if !cfg!(feature = "cuda") {
        let o = run(
            VTRAIN,
            &["--arch", "tsm_r18", "--train-list", "syn/train.list", "--out", "c", "--device", "cuda"],
            p,
        );
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("no CUDA support"), "{}", stderr(&o));
    }
}

/// `-o amp=bf16|f16` on the candle-only path (the GPU's code): the products run in half
/// precision, so the first batch's loss is near f32's but not equal to it, and the run learns.
/// f16 scales its loss: from an initial scale the gradients overflow at, steps are skipped and
/// the scale halves until they fit, then holds. f16 on the CPU kernels is refused in one line
/// (bf16 trains there: `learning.rs`).
#[test]
fn mixed_precision_trains_on_the_candle_only_path() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    synth(p, "left,right,up,down", "4", "32x32", "4");
    let train = |out: &str, own: &[&str]| {
        let mut a = vec![
            "--arch",
            "tsm_r18",
            "--train-list",
            "syn/train.list",
            "--out",
            out,
            "-q",
            "-j",
            "1",
            "--device",
            "cpu-portable",
        ];
        a.extend(TINY_2D);
        a.extend(["-o", "epochs=5", "-o", "train_crop=center", "-o", "dropout=0", "-o", "log_every=1"]);
        a.extend(["-o", r#"optimizer={"name":"adamw","lr":0.005,"weight_decay":0.0001}"#]);
        for o in own {
            // Flags as they are (`--resume`), config keys after -o.
            match o.starts_with("--") {
                true => a.push(o),
                false => a.extend(["-o", o]),
            }
        }
        let o = run(VTRAIN, &a, p);
        assert!(o.status.success(), "{own:?}: {}", stderr(&o));
        let log = std::fs::read_to_string(p.join(out).join("log.jsonl")).unwrap();
        log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).collect::<Vec<_>>()
    };
    let epochs = |log: &[serde_json::Value]| -> Vec<f64> {
        log.iter().filter(|v| v["event"] == "epoch").map(|v| v["loss"].as_f64().unwrap()).collect()
    };
    let first = |log: &[serde_json::Value]| -> f64 {
        log.iter().find(|v| v["event"] == "train").map(|v| v["loss"].as_f64().unwrap()).unwrap()
    };
    let f32_log = train("f32", &[]);
    let f32_first = first(&f32_log);
    // f16 from a scale its first gradients fit (this tiny net's overflow at torch's 2^16 and the
    // skipped step make another trajectory of a run too short to judge learning by).
    for (amp, bound, own) in
        [("bf16", 2e-2, vec!["amp=bf16"]), ("f16", 5e-3, vec!["amp=f16", "loss_scale=1024"])]
    {
        let log = train(amp, &own);
        let loss = epochs(&log);
        let scales: Vec<&serde_json::Value> =
            log.iter().filter(|v| v["event"] == "train").map(|v| &v["loss_scale"]).collect();
        eprintln!(
            "amp={amp}: first batch {} (f32 {f32_first}), epoch losses {loss:?} (f32 {:?}), scales {scales:?}",
            first(&log),
            epochs(&f32_log)
        );
        // The first batch's loss: the same weights, only the forward's rounding differs.
        let off = (first(&log) - f32_first).abs() / f32_first;
        assert!(off > 0.0 && off < bound, "amp={amp}: first batch {} vs f32 {f32_first}", first(&log));
        assert!(loss[4] < 0.8 * loss[0], "amp={amp} should learn: {loss:?}");
    }
    // 2^22 makes the first gradients overflow f16: skipped steps halve it until they fit.
    let log = train("f16_scaled", &["amp=f16", "loss_scale=4194304"]);
    let scales: Vec<f64> =
        log.iter().filter(|v| v["event"] == "train").map(|v| v["loss_scale"].as_f64().unwrap()).collect();
    eprintln!("loss scales by iteration: {scales:?}");
    assert!(scales[0] < 4194304.0, "the first step should overflow and halve the scale: {scales:?}");
    let settled = *scales.last().unwrap();
    assert!(settled >= 1.0 && scales.iter().filter(|&&s| s == settled).count() >= 3, "{scales:?}");
    assert!(scales.windows(2).all(|w| w[1] <= w[0]), "no growth within 2000 steps: {scales:?}");
    // The scale is in the checkpoint: stopped after 2 epochs (at 2^16, one halving still to
    // come) and resumed, the run ends with the uninterrupted run's weights.
    let split = ["amp=f16", "loss_scale=4194304"];
    train("f16_split", &[&split[..], &["--stop-after=2"]].concat());
    train("f16_split", &[&split[..], &["--resume"]].concat());
    assert_same_tensors(&p.join("f16_scaled/last.safetensors"), &p.join("f16_split/last.safetensors"));

    let o = run(
        VTRAIN,
        &["--arch", "tsm_r18", "--train-list", "syn/train.list", "--out", "k", "-o", "amp=f16"],
        p,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("amp=f16 runs on candle's ops"), "{}", stderr(&o));
}
