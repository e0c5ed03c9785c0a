//! ETS against the 2019 PaddlePaddle video zoo's fluid code (PaddlePaddle/models release/1.8
//! `PaddleCV/video/models/ets/ets_net.py`), through scripts/ets_ref.py's PyTorch restatement
//! (fluid does not run on Paddle 3; the restatement computes the reference's attention, beam
//! search and beam_search_decode literally) in the models peers tier: `vconvert --arch ets`
//! imports the parameters under fluid's names with the dictionary (random weights, small sizes,
//! a vocabulary of 40); the teacher-forced softmax after every word, the beam search's hypotheses
//! (words and accumulated scores; some end, some run to max_length) and the training loss with
//! each parameter's gradient match.

mod common;
use candle_core::{Device, Tensor};
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use vidkit::model::{load_ets, Padded};

fn fixture_named(name: &str, args: &[&str]) -> Option<PathBuf> {
    let script = workspace_root().join("scripts/export_ets_parity.py");
    let keys = [script.clone(), workspace_root().join("scripts/ets_ref.py")];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    cached_fixture("ets-parity", &keys, name, models_peers_python, &script, &args)
}

fn fixture() -> Option<PathBuf> {
    fixture_named("v1", &["--max-length", "12", "--end-bias", "0.4", "--videos", "4"])
}

fn json(p: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// `vconvert --arch ets` of the fixture into `dir/ets.safetensors` (max_length 12, as the
/// fixture's); the fixture's dictionary.
fn import(fx: &Path, dir: &Path) -> PathBuf {
    import_with(fx, dir, "max_length=12")
}

fn import_with(fx: &Path, dir: &Path, max_length: &str) -> PathBuf {
    let pd = fx.join("ets.pdparams");
    let dict = fx.join("dict.txt");
    let args = ["--arch", "ets", pd.to_str().unwrap(), "--vocab", dict.to_str().unwrap(), "ets.safetensors"];
    let o = run(env!("CARGO_BIN_EXE_vconvert"), &[&args[..], &["-o", max_length]].concat(), dir);
    assert!(o.status.success(), "{}", stderr(&o));
    dict
}

/// Our parameter name for each of the fixture's fluid names (import_ets.rs's order).
const NAMES: &[(&str, &str)] = &[
    ("fc_0.w_0", "encoder.input_fc.weight"),
    ("fc_0.b_0", "encoder.input_fc.bias"),
    ("fc_1.w_0", "encoder.gru_forward.proj"),
    ("gru_0.w_0", "encoder.gru_forward.weight"),
    ("gru_0.b_0", "encoder.gru_forward.bias"),
    ("fc_2.w_0", "encoder.gru_backward.proj"),
    ("gru_1.w_0", "encoder.gru_backward.weight"),
    ("gru_1.b_0", "encoder.gru_backward.bias"),
    ("fc_3.w_0", "encoder.pool_attention.weight"),
    ("fc_4.w_0", "encoder.proj.weight"),
    ("fc_5.w_0", "decoder.boot.weight"),
    ("embedding_0.w_0", "decoder.embedding"),
    ("fc_6.w_0", "decoder.state_proj.weight"),
    ("fc_7.w_0", "decoder.attention.weight"),
    ("fc_8.w_0", "decoder.input_word.weight"),
    ("fc_8.w_1", "decoder.input_context.weight"),
    ("gru_unit_0.w_0", "decoder.gru.weight"),
    ("gru_unit_0.b_0", "decoder.gru.bias"),
    ("fc_9.w_0", "decoder.out.weight"),
    ("fc_9.b_0", "decoder.out.bias"),
];

/// The imported model's teacher-forced softmax and beam search against the fixture's: the largest
/// softmax and score errors, the hypotheses (all equal, else a panic) and how many ended, and each
/// video's features with its sentence.
fn check_inference(fx: &Path, dir: &Path) -> (f32, f32, usize, usize, Vec<(Tensor, Vec<usize>)>) {
    let model = load_ets(&dir.join("ets.safetensors")).unwrap();
    let words = json(fx.join("words.json"));
    let beams = json(fx.join("beams.json"));
    let (mut prob_err, mut score_err, mut hyps, mut ended) = (0f32, 0f32, 0usize, 0usize);
    let mut feats = Vec::new();
    for (i, w) in words.as_array().unwrap().iter().enumerate() {
        let (shape, data) = read_npy_f32(&fx.join(format!("feat{i}.npy")));
        let x = Tensor::from_vec(data, shape, &Device::Cpu).unwrap();
        let w: Vec<usize> = w.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let logits =
            model.forward_teacher(&Padded::new(std::slice::from_ref(&x)).unwrap(), &[w.clone()]).unwrap();
        let probs: Vec<f32> =
            candle_nn::ops::softmax_last_dim(&logits).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let (_, want) = read_npy_f32(&fx.join(format!("probs{i}.npy")));
        assert_eq!(probs.len(), want.len());
        prob_err = probs.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(prob_err, f32::max);
        let got = model.beam_search(&x).unwrap();
        let want = beams[i].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "video {i}");
        for (g, h) in got.iter().zip(want) {
            let ids: Vec<usize> =
                h["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            assert_eq!(g.tokens, ids, "video {i}: hypotheses differ");
            for (a, b) in g.scores.iter().zip(h["scores"].as_array().unwrap()) {
                score_err = score_err.max((a - b.as_f64().unwrap() as f32).abs());
            }
            hyps += 1;
            ended += (ids.last() == Some(&1)) as usize;
        }
        feats.push((x, w[1..].to_vec()));
    }
    (prob_err, score_err, hyps, ended, feats)
}

#[test]
fn ets_imports_and_matches_the_paddle_zoo() {
    let Some(fx) = fixture() else { return };
    let d = tempfile::tempdir().unwrap();
    import(&fx, d.path());
    let (prob_err, score_err, hyps, ended, feats) = check_inference(&fx, d.path());
    // Training: the batch loss and every parameter's gradient (sum of squares).
    let train = json(fx.join("train.json"));
    let mut varmap = candle_nn::VarMap::new();
    let cfg = vidkit::model::read_config(&d.path().join("ets.safetensors")).unwrap();
    let m = vidkit::model::Ets::new(
        cfg,
        candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu),
    )
    .unwrap();
    varmap.load(d.path().join("ets.safetensors")).unwrap();
    let xs: Vec<Tensor> = feats.iter().map(|f| f.0.clone()).collect();
    let sentences: Vec<Vec<usize>> = feats.iter().map(|f| f.1.clone()).collect();
    let loss = m.loss(&Padded::new(&xs).unwrap(), &sentences).unwrap();
    let loss_v = loss.to_scalar::<f32>().unwrap();
    let loss_err = (loss_v as f64 - train["loss"].as_f64().unwrap()).abs() / train["loss"].as_f64().unwrap();
    let grads = loss.backward().unwrap();
    let data = varmap.data().lock().unwrap();
    let mut grad_err = 0f64;
    for (fluid, ours) in NAMES {
        let want = train["grad_sq"][fluid].as_f64().unwrap();
        let got = grads
            .get(data[*ours].as_tensor())
            .map_or(0.0, |g| g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64);
        // The state projection cancels in the attention softmax: only rounding reaches it.
        let err = if *ours == "decoder.state_proj.weight" {
            want.sqrt()
        } else {
            (got.sqrt() - want.sqrt()).abs() / want.sqrt()
        };
        assert!(err < 1e-3, "{fluid} ({ours}): gradient norm {} against {}", got.sqrt(), want.sqrt());
        grad_err = grad_err.max(err);
    }
    eprintln!(
        "ets: softmax max abs error {prob_err:.2e}; {hyps} hypotheses equal ({ended} ended), scores max abs error {score_err:.2e}; loss relative {loss_err:.2e}, gradient norms {grad_err:.2e}"
    );
    assert!(prob_err < 1e-5 && score_err < 1e-4 && loss_err < 1e-5, "{prob_err} {score_err} {loss_err}");
    assert!(ended > 0 && ended < hyps, "the fixture should have hypotheses that end and some that run out");
}

/// vcaption on the fixture's videos: the restatement's best hypothesis as its caption (without
/// the start and the last word) and every hypothesis with --beams.
#[test]
fn vcaption_writes_the_searched_captions() {
    let Some(fx) = fixture() else { return };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let dict = import(&fx, p);
    std::fs::create_dir(p.join("feats")).unwrap();
    for i in 0..4 {
        std::fs::copy(fx.join(format!("feat{i}.npy")), p.join(format!("feats/v{i}.npy"))).unwrap();
    }
    let o = run(
        env!("CARGO_BIN_EXE_vcaption"),
        &["--model", "ets.safetensors", "feats", "--beams", "-o", "c.jsonl"],
        p,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let vocab: Vec<String> = std::fs::read_to_string(&dict)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let beams = json(fx.join("beams.json"));
    let text = std::fs::read_to_string(p.join("c.jsonl")).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["video"], format!("v{i}"));
        let caption = |h: &Value| -> String {
            let ids: Vec<usize> =
                h["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            ids[1..ids.len() - 1].iter().map(|&j| vocab[j].as_str()).collect::<Vec<_>>().join(" ")
        };
        let want = beams[i].as_array().unwrap();
        assert_eq!(line["caption"], caption(&want[0]));
        let got = line["beams"].as_array().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g["caption"], caption(w));
        }
    }
}

/// `make bench`: ets.yaml's sizes (2048-d features, fc 1024, GRUs, decoder and embeddings 512),
/// a vocabulary of 6000 and max_length 80.
#[test]
#[ignore]
fn ets_full_size_matches_the_paddle_zoo() {
    let args = [
        "--feat",
        "2048",
        "--fc",
        "1024",
        "--hidden",
        "512",
        "--dec",
        "512",
        "--emb",
        "512",
        "--vocab",
        "6000",
        "--max-length",
        "80",
        "--end-bias",
        "1",
        "--videos",
        "3",
        "--forward-only",
    ];
    let Some(fx) = fixture_named("full-bias1", &args) else { return };
    let d = tempfile::tempdir().unwrap();
    import_with(&fx, d.path(), "max_length=80");
    let (prob_err, score_err, hyps, ended, _) = check_inference(&fx, d.path());
    eprintln!(
        "ets (ets.yaml sizes, 6000 words): softmax max abs error {prob_err:.2e}; {hyps} hypotheses equal ({ended} ended), scores max abs error {score_err:.2e}"
    );
    assert!(prob_err < 1e-5 && score_err < 1e-3, "{prob_err} {score_err}");
}
