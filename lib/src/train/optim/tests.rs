use super::*;
use candle_core::{DType, Device};

fn var(v: &[f32]) -> Var {
    Var::from_tensor(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap()
}

fn values(v: &Var) -> Vec<f32> {
    v.as_tensor().to_vec1::<f32>().unwrap()
}

/// Gradients of loss = Σ(p² / 2) + Σ(c·p), i.e. g = p + c, with c = [0.5, −1.5].
fn grads_for(vars: &[(String, Var)]) -> GradStore {
    let c = Tensor::new(&[0.5f32, -1.5], &Device::Cpu).unwrap();
    let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
    for (_, v) in vars {
        let p = v.as_tensor();
        let l = ((p.sqr().unwrap() * 0.5).unwrap() + p.mul(&c).unwrap()).unwrap().sum_all().unwrap();
        loss = (loss + l).unwrap();
    }
    loss.backward().unwrap()
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() <= 1e-6 * w.abs().max(1.0), "{what}: got {got:?}, want {want:?}");
    }
}

/// Two parameters "w" (decayed) and "fc.bias" (no decay by predicate), plus a BN buffer that
/// must never move; both parameters start at [1, −2].
fn setup() -> (Vec<(String, Var)>, Var) {
    let buffer = var(&[3.0, 4.0]);
    let vars = vec![
        ("w".to_string(), var(&[1.0, -2.0])),
        ("fc.bias".to_string(), var(&[1.0, -2.0])),
        ("bn.running_mean".to_string(), buffer.clone()),
    ];
    (vars, buffer)
}

fn run(opt: &mut dyn Optimizer, vars: &[(String, Var)], steps: usize) {
    for _ in 0..steps {
        let mut g = grads_for(&vars[..2]);
        // A buffer with a gradient (it never gets one in practice) must still be skipped.
        g.insert(vars[2].1.as_tensor(), Tensor::new(&[1f32, 1.], &Device::Cpu).unwrap());
        opt.step(&g).unwrap();
    }
}

#[test]
fn sgd_momentum_weight_decay_matches_torch() {
    let (vars, buffer) = setup();
    let cfg = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.01, ..Default::default() };
    let mut opt = Sgd::new(vars.clone(), cfg).unwrap().with_no_decay(|n, _| n.ends_with("bias"));
    assert_eq!(opt.vars().len(), 2);
    run(&mut opt, &vars, 3);
    // w[0]: p0 = 1, d = g + wd·p = p + 0.5 + 0.01·p.
    // step 1: d = 1.51,       buf = d = 1.51,                  p = 1 − 0.151 = 0.849
    // step 2: d = 1.35749,    buf = 0.9·1.51 + d = 2.71649,     p = 0.849 − 0.271649 = 0.577351
    // step 3: d = 1.08312451, buf = 0.9·2.71649 + d = 3.52796551, p = 0.224554449
    // w[1] (p0 = −2, c = −1.5): d = −3.52, −3.16448, −2.52489952; buf = −3.52, −6.33248,
    // −8.22413152; p = −1.648, −1.014752, −0.192338848.
    // torch.optim.SGD(param groups, lr=.1, momentum=.9, weight_decay=.01) in f32:
    // [0.224554464, −0.192338958] and [0.229000062, −0.200999916].
    assert_close(&values(&vars[0].1), &[0.224554449, -0.192338848], "w");
    // fc.bias without decay: d = g = p + c. step 1: d = 1.5, p = 0.85; step 2: d = 1.35,
    // buf = 2.7, p = 0.58; step 3: d = 1.08, buf = 3.51, p = 0.229.
    // fc.bias[1]: d = −3.5 → p = −1.65; d = −3.15, buf = −6.3 → −1.02; d = −2.52,
    // buf = −8.19 → −0.201.
    assert_close(&values(&vars[1].1), &[0.229, -0.201], "fc.bias");
    assert_eq!(values(&buffer), vec![3.0, 4.0]);
}

/// The one-pass CPU update equals the tensor-op route bit for bit over steps (weight decay,
/// dampening, Nesterov or not, no momentum), and its buffer goes through a saved state and
/// back into either route.
#[test]
fn fused_sgd_equals_the_tensor_ops() {
    let mut rng = crate::rng::Rng::new(5);
    let mut random = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect() };
    let configs = [
        SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.01, ..Default::default() },
        SgdConfig { lr: 0.05, momentum: 0.8, dampening: 0.3, weight_decay: 1e-4, ..Default::default() },
        SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.01, ..Default::default() },
        SgdConfig { lr: 0.2, weight_decay: 0.0, ..Default::default() },
    ];
    for cfg in configs {
        let start = [random(70_000), random(3)];
        let grads: Vec<[Vec<f32>; 2]> = (0..4).map(|_| [random(70_000), random(3)]).collect();
        let vars_of = || -> Vec<(String, Var)> {
            ["a.weight", "b.bias"].iter().zip(&start).map(|(n, v)| (n.to_string(), var(v))).collect()
        };
        let (fused_vars, plain_vars) = (vars_of(), vars_of());
        let mut fused = Sgd::new(fused_vars.clone(), cfg.clone()).unwrap();
        let mut plain = Sgd::new(plain_vars.clone(), cfg.clone()).unwrap();
        plain.fused = false;
        for (step, g) in grads.iter().enumerate() {
            for (opt, vars) in [(&mut fused, &fused_vars), (&mut plain, &plain_vars)] {
                let mut store = vars[0].1.as_tensor().sum_all().unwrap().backward().unwrap();
                for ((_, v), g) in vars.iter().zip(g) {
                    store.insert(v.as_tensor(), Tensor::from_slice(g, v.shape(), &Device::Cpu).unwrap());
                }
                opt.step(&store).unwrap();
            }
            if step == 1 {
                // Through a saved state: the fused route reloads its buffer as a tensor.
                fused.load_state(&fused.state()).unwrap();
            }
            for ((_, f), (_, p)) in fused_vars.iter().zip(&plain_vars) {
                let same = values(f).iter().zip(values(p)).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{cfg:?}: parameters differ after step {step}");
            }
        }
        let (fs, ps) = (fused.state(), plain.state());
        assert_eq!(fs.tensors.len(), ps.tensors.len(), "{cfg:?}: buffers saved");
        for (name, t) in &fs.tensors {
            let (a, b) = (
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                ps.tensors[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{cfg:?}: buffer {name}");
        }
    }
}

/// mmaction2's fc_lr5 on plain SGD: with the same gradient everywhere, the head's weight
/// moves 5× as far as a backbone weight and its bias 10×; decay_mult scales weight decay.
#[test]
fn fc_lr5_and_param_groups_scale_the_update() {
    let names = ["backbone.conv.weight", "backbone.bn.bias", "head.fc.weight", "head.fc.bias"];
    let vars: Vec<(String, Var)> = names.iter().map(|n| (n.to_string(), var(&[1.0, -2.0]))).collect();
    let cfg = OptimizerConfig::Sgd(SgdConfig { lr: 0.01, fc_lr5: true, ..Default::default() });
    assert!(cfg.build(vars.clone()).is_err(), "fc_lr5 needs the model's head");
    let mut opt = cfg.build_for_model(vars.clone(), "head.fc").unwrap();
    // g = p + c = [1.5, −3.5]: a base step of lr·g = [0.015, −0.035].
    run_plain(opt.as_mut(), &vars, 1);
    let step = |i: usize| -> Vec<f64> {
        values(&vars[i].1).iter().zip([1.0, -2.0]).map(|(p, p0)| p0 - *p as f64).collect()
    };
    assert_close(&values(&vars[0].1), &[0.985, -1.965], "backbone weight");
    for (i, mult) in [(1, 1.0), (2, 5.0), (3, 10.0)] {
        let want: Vec<f64> = step(0).iter().map(|s| s * mult).collect();
        let got: Vec<f32> = step(i).iter().map(|s| *s as f32).collect();
        assert_close(&got, &want, names[i]);
    }

    // Explicit groups: the longest matching pattern wins; decay_mult scales weight decay
    // (and fc_lr5's bias group has none).
    let vars: Vec<(String, Var)> = names.iter().map(|n| (n.to_string(), var(&[1.0, -2.0]))).collect();
    let cfg = OptimizerConfig::Sgd(SgdConfig {
        lr: 0.1,
        weight_decay: 0.5,
        param_groups: vec![ParamGroup::new("backbone", 0.0, 1.0), ParamGroup::new("backbone.bn", 2.0, 0.0)],
        fc_lr5: true,
        ..Default::default()
    });
    let mut opt = cfg.build_for_model(vars.clone(), "head.fc").unwrap();
    run_plain(opt.as_mut(), &vars, 1);
    // conv frozen by lr_mult 0; bn: p − 0.2·g; fc.weight: p − 0.5·(g + 0.5·p);
    // fc.bias: p − 1.0·g (no decay).
    assert_close(&values(&vars[0].1), &[1.0, -2.0], "frozen");
    assert_close(&values(&vars[1].1), &[0.7, -1.3], "bn");
    assert_close(&values(&vars[2].1), &[0.0, 0.25], "fc.weight");
    assert_close(&values(&vars[3].1), &[-0.5, 1.5], "fc.bias");

    // A pattern that matches nothing, or a negative multiplier, is refused.
    let bad = |g: ParamGroup| {
        let c = SgdConfig { param_groups: vec![g], ..Default::default() };
        Sgd::new(vars.clone(), c).err().map(|e| e.to_string()).unwrap_or_default()
    };
    assert!(bad(ParamGroup::new("neck", 2.0, 1.0)).contains("\"neck\" matches no trainable parameter"));
    assert!(bad(ParamGroup::new("head", -1.0, 1.0)).contains("must be finite and ≥ 0"));
    let e = OptimizerConfig::Sgd(SgdConfig { fc_lr5: true, ..Default::default() })
        .build_for_model(vars.clone(), "cls")
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("\"cls.weight\" matches no trainable parameter"), "{e:#}");
}

#[test]
fn sgd_nesterov_matches_torch() {
    let vars = vec![("w".to_string(), var(&[1.0, -2.0]))];
    let cfg = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, ..Default::default() };
    let mut opt = Sgd::new(vars.clone(), cfg).unwrap();
    run_plain(&mut opt, &vars, 3);
    // first element, g = p + 0.5:
    // step 1: g = 1.5, buf = 1.5, d = 1.5 + 1.35 = 2.85, p = 0.715
    // step 2: g = 1.215, buf = 1.35 + 1.215 = 2.565, d = 1.215 + 2.3085 = 3.5235, p = 0.36265
    // step 3: g = 0.86265, buf = 2.3085 + 0.86265 = 3.17115, d = 3.716685, p = −0.0090185
    // second element, g = p − 1.5: −3.5 → buf −3.5, d −6.65, p −1.335; g −2.835,
    // buf −5.985, d −8.2215, p −0.51285; g −2.01285, buf −7.39935, d −8.672265,
    // p 0.3543765. torch.optim.SGD([w], lr=.1, momentum=.9, nesterov=True) in f32:
    // [−0.0090185, 0.3543763].
    assert_close(&values(&vars[0].1), &[-0.0090185, 0.3543765], "w");
}

fn run_plain(opt: &mut dyn Optimizer, vars: &[(String, Var)], steps: usize) {
    for _ in 0..steps {
        opt.step(&grads_for(vars)).unwrap();
    }
}

#[test]
fn adamw_matches_torch() {
    let (vars, buffer) = setup();
    let cfg = AdamWConfig { lr: 0.1, weight_decay: 0.1, ..Default::default() };
    let mut opt = AdamW::new(vars.clone(), cfg).unwrap().with_no_decay(|n, _| n.ends_with("bias"));
    run(&mut opt, &vars, 3);
    // w[0]: p0 = 1, g = p + 0.5, β = (0.9, 0.999), eps 1e-8, lr 0.1, wd 0.1.
    // step 1: g = 1.5, p ← 0.99·1; m = 0.15, v = 0.00225; m̂ = 1.5, √v̂ = 1.5 → p = 0.89
    // step 2: g = 1.39, p ← 0.99·0.89 = 0.8811; m = 0.274, v = 0.00417985;
    //         m̂ = 0.274/0.19, √v̂ = √(0.00417985/0.001999) → p = 0.7813706
    // step 3: g = 1.2813706, m = 0.3747371, v = 0.0058176 → p = 0.6743072
    // w[1] (p0 = −2, g = p − 1.5): −1.88, −1.7613061, −1.6439796.
    // fc.bias (no decay): 0.9, 0.8002391, 0.7009029; −1.9, −1.8000860, −1.7003189.
    // torch.optim.AdamW(param groups, lr=.1, weight_decay=.1) in f32: [0.6743072, −1.6439795]
    // and [0.7009028, −1.7003189].
    assert_close(&values(&vars[0].1), &[0.6743072, -1.6439796], "w");
    assert_close(&values(&vars[1].1), &[0.7009029, -1.7003189], "fc.bias");
    assert_eq!(values(&buffer), vec![3.0, 4.0]);
}

/// Adam with L2 decay in the gradient: torch.optim.Adam([w], lr=.1, weight_decay=.1), three
/// steps of g = p + c (+ 0.1·p), in f32: [0.7009405, −1.7003340].
#[test]
fn adam_l2_matches_torch() {
    let vars = vec![("w".to_string(), var(&[1.0, -2.0]))];
    let cfg = AdamWConfig { lr: 0.1, weight_decay: 0.1, l2: true, ..Default::default() };
    let mut opt = AdamW::new(vars.clone(), cfg).unwrap();
    run_plain(&mut opt, &vars, 3);
    assert_close(&values(&vars[0].1), &[0.7009405, -1.7003340], "w");
}

#[test]
fn adamw_amsgrad_matches_torch() {
    let vars = vec![("w".to_string(), var(&[1.0, -2.0]))];
    let cfg = AdamWConfig { lr: 1.0, beta2: 0.5, weight_decay: 0.0, amsgrad: true, ..Default::default() };
    let mut opt = AdamW::new(vars.clone(), cfg).unwrap();
    run_plain(&mut opt, &vars, 3);
    // lr 1 and β2 = 0.5 make v shrink after the first step, so the running max matters.
    // w[0]: step 1: g = 1.5, m = 0.15, v = vmax = 1.125; m̂ = 1.5, √(v̂) = 1.5 → p ≈ 0 (6.7e−9)
    // step 2: g = 0.5, m = 0.185, v = 0.6875, vmax = 1.125; m̂ = 0.185/0.19,
    //         √(1.125/0.75) = 1.2247449 → p = −0.7950098
    // step 3: g = −0.2950098, m = 0.1369990, vmax = 1.125 → p = −0.7950098 − 0.1369990/0.271
    //         / (√(1.125/0.875) = 1.1338934) = −1.2408466
    // w[1]: v = 6.125, 6.1875, 4.1664 (the max is 6.1875 at step 3): p = −1, 0.0353039, 0.9441666.
    // torch.optim.AdamW([w], lr=1, betas=(.9, .5), weight_decay=0, amsgrad=True):
    // [−1.2408466, 0.9441667] (without amsgrad: [−1.5905023, 1.1428823]).
    assert_close(&values(&vars[0].1), &[-1.2408466, 0.9441666], "w");
}

#[test]
fn rmsprop_matches_torch() {
    let (vars, buffer) = setup();
    let cfg = RmsPropConfig { lr: 0.01, alpha: 0.99, weight_decay: 0.1, momentum: 0.9, ..Default::default() };
    let mut opt = RmsProp::new(vars.clone(), cfg).unwrap().with_no_decay(|n, _| n.ends_with("bias"));
    run(&mut opt, &vars, 3);
    // w[0]: g = p + 0.5 + 0.1·p.
    // step 1: g = 1.6, s = 0.0256, avg = 0.16 + 1e−8, buf = g/avg = 9.9999994, p = 0.9
    // step 2: g = 1.49, s = 0.0475450, avg = 0.2180482, buf = 15.833352, p = 0.7416665
    // step 3: g = 1.3158331, s = 0.0643837, avg = 0.2537395, buf = 19.435781, p = 0.5473087
    // w[1]: g = −3.7, −3.59, −3.4142026 → p = −1.9, −1.7401842, −1.5408426.
    // fc.bias (no decay): 0.9, 0.7415851, 0.5469488; −1.9, −1.7401415, −1.5406593.
    // torch.optim.RMSprop(param groups, lr=.01, weight_decay=.1, momentum=.9) in f32:
    // [0.5473087, −1.5408425] and [0.5469487, −1.5406593].
    assert_close(&values(&vars[0].1), &[0.5473087, -1.5408426], "w");
    assert_close(&values(&vars[1].1), &[0.5469488, -1.5406593], "fc.bias");
    assert_eq!(values(&buffer), vec![3.0, 4.0]);
}

#[test]
fn rmsprop_centered_without_momentum_matches_torch() {
    let vars = vec![("w".to_string(), var(&[1.0, -2.0]))];
    let cfg = RmsPropConfig { lr: 0.01, centered: true, ..Default::default() };
    let mut opt = RmsProp::new(vars.clone(), cfg).unwrap();
    run_plain(&mut opt, &vars, 3);
    // w[0]: step 1: g = 1.5, s = 0.0225, ḡ = 0.015, avg = √(0.0225 − 0.000225) = 0.1492481,
    // p = 1 − 0.01·1.5/0.1492481 = 0.8994962; step 2: g = 1.3994962, s = 0.0418609,
    // avg = 0.2025558, p = 0.8304044; step 3: avg = 0.2395616, p = 0.7748694.
    // w[1]: −1.8994962, −1.8289376, −1.7714257. torch.optim.RMSprop([w], lr=.01,
    // centered=True): [0.7748694, −1.7714256].
    assert_close(&values(&vars[0].1), &[0.7748694, -1.7714257], "w");
}

#[test]
fn optimizer_config_from_json() {
    let c: OptimizerConfig = serde_json::from_str(
        r#"{"name": "Momentum", "lr": 0.02, "momentum": 0.9, "no_decay": "norm_and_bias"}"#,
    )
    .unwrap();
    assert_eq!(
        c,
        OptimizerConfig::Sgd(SgdConfig {
            lr: 0.02,
            momentum: 0.9,
            no_decay: NoDecay::NormAndBias,
            ..Default::default()
        })
    );
    let c: OptimizerConfig =
        serde_json::from_str(r#"{"name": "adamw", "no_decay": {"names": ["bn", "bias"]}}"#).unwrap();
    assert_eq!(
        c,
        OptimizerConfig::AdamW(AdamWConfig {
            no_decay: NoDecay::Names(vec!["bn".into(), "bias".into()]),
            ..Default::default()
        })
    );
    assert!(serde_json::from_str::<OptimizerConfig>(r#"{"name": "sgd", "momentun": 0.9}"#).is_err());
    let grouped: OptimizerConfig = serde_json::from_str(
        r#"{"name": "sgd", "fc_lr5": true, "param_groups": [{"match": "backbone", "lr_mult": 0.1}]}"#,
    )
    .unwrap();
    assert_eq!(
        grouped,
        OptimizerConfig::Sgd(SgdConfig {
            fc_lr5: true,
            param_groups: vec![ParamGroup::new("backbone", 0.1, 1.0)],
            ..Default::default()
        })
    );
    assert!(serde_json::from_str::<OptimizerConfig>(
        r#"{"name": "sgd", "param_groups": [{"match": "a", "lr": 1}]}"#
    )
    .is_err());
    let back: OptimizerConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    let opt = c.build(vec![("a.weight".into(), var(&[1.0])), ("a.running_var".into(), var(&[1.0]))]).unwrap();
    assert_eq!(opt.kind(), "adamw");
    assert_eq!(opt.vars().len(), 1);
}

#[test]
fn no_decay_norm_and_bias_uses_rank() {
    let w = Var::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
    let b = Var::zeros(2, DType::F32, &Device::Cpu).unwrap();
    assert!(!NoDecay::NormAndBias.matches("conv.weight", &w));
    assert!(NoDecay::NormAndBias.matches("bn.weight", &b));
    assert!(NoDecay::Names(vec!["bn".into()]).matches("layer1.0.bn1.weight", &b));
    assert!(!NoDecay::None.matches("bn.weight", &b));
}

#[test]
fn state_round_trip_continues_identically() {
    // Per-group multipliers come from the config, so a resumed run continues exactly too.
    let groups = vec![ParamGroup::new("w", 3.0, 0.5)];
    for cfg in [
        OptimizerConfig::Sgd(SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            param_groups: groups.clone(),
            ..Default::default()
        }),
        OptimizerConfig::AdamW(AdamWConfig {
            lr: 0.1,
            amsgrad: true,
            param_groups: groups.clone(),
            ..Default::default()
        }),
        OptimizerConfig::RmsProp(RmsPropConfig {
            lr: 0.01,
            momentum: 0.5,
            centered: true,
            param_groups: groups.clone(),
            ..Default::default()
        }),
    ] {
        let a = vec![("w".to_string(), var(&[1.0, -2.0]))];
        let mut opt = cfg.build(a.clone()).unwrap();
        run_plain(opt.as_mut(), &a, 2);
        let state = opt.state();
        let b = vec![("w".to_string(), var(&values(&a[0].1)))];
        let mut resumed = cfg.build(b.clone()).unwrap();
        resumed.load_state(&state).unwrap();
        run_plain(opt.as_mut(), &a, 1);
        run_plain(resumed.as_mut(), &b, 1);
        assert_eq!(values(&a[0].1), values(&b[0].1), "{}", opt.kind());
        // Wrong kind and unknown names are refused.
        let other = if opt.kind() == "sgd" { "adamw" } else { "sgd" };
        let mut wrong = state.clone();
        wrong.kind = other.into();
        assert!(resumed.load_state(&wrong).is_err());
        let mut unknown = state.clone();
        let (k, t) = unknown.tensors.pop_first().unwrap();
        unknown.tensors.insert(k.replace(".w", ".x"), t);
        assert!(resumed.load_state(&unknown).is_err());
    }
}

#[test]
fn clip_grad_norm_matches_torch() {
    let a = var(&[3.0, 0.0]);
    let b = var(&[0.0, 4.0]);
    let vars = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
    let loss = (a.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap()
        + (b.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
    let mut g = loss.unwrap().backward().unwrap();
    // Gradients [3, 0] and [0, 4]: global norm 5; max_norm 1 scales by 1/(5 + 1e-6).
    let n = clip_grad_norm(&mut g, &vars, 1.0).unwrap();
    assert!((n - 5.0).abs() < 1e-6);
    let ga = g.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    let gb = g.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    assert_close(&ga, &[3.0 / 5.000001, 0.0], "a");
    assert_close(&gb, &[0.0, 4.0 / 5.000001], "b");
    // Under the limit nothing changes.
    let n2 = clip_grad_norm(&mut g, &vars, 10.0).unwrap();
    assert!((n2 - 1.0).abs() < 1e-5);
    assert_close(&g.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), &[0.0, 4.0 / 5.000001], "b");
}

#[test]
fn accumulation_averages_micro_batches() {
    let w = var(&[1.0, 2.0]);
    let vars = vec![("w".to_string(), w.clone())];
    let mut acc = GradAccumulator::new(&vars, 2);
    // loss_i = Σ(x_i · w): gradient x_i; the mean of [1, 3] and [3, 5] is [2, 4].
    for (i, x) in [[1f32, 3.], [3., 5.]].iter().enumerate() {
        let x = Tensor::new(x, &Device::Cpu).unwrap();
        let g = w.as_tensor().mul(&x).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(acc.add(&g).unwrap(), i == 1);
    }
    let g = acc.take().unwrap().unwrap();
    assert_eq!(g.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), vec![2.0, 4.0]);
    assert_eq!(acc.count(), 0);
    assert!(acc.take().unwrap().is_none());
    // Stepping with the mean equals one step on the full batch.
    let mut opt = Sgd::new(vars.clone(), SgdConfig { lr: 0.5, ..Default::default() }).unwrap();
    opt.step(&g).unwrap();
    assert_eq!(values(&w), vec![0.0, 0.0]);
}

#[test]
fn layer_decay_scales_blocks_by_depth_and_leaves_the_head() {
    let names = [
        "backbone.cls_token",
        "backbone.patch_embed.proj.weight",
        "backbone.blocks.0.attn.qkv.weight",
        "backbone.blocks.1.mlp.fc1.weight",
        "backbone.norm.weight",
        "head.fc.weight",
    ];
    let g = layer_decay_groups(&names, 0.5).unwrap();
    let mult = |p: &str| g.iter().find(|g| g.pattern == p).map(|g| g.lr_mult);
    assert_eq!(mult("backbone.blocks.0."), Some(0.25));
    assert_eq!(mult("backbone.blocks.1."), Some(0.5));
    assert_eq!(mult("backbone.cls_token"), Some(0.125));
    assert_eq!(mult("backbone.patch_embed."), Some(0.125));
    assert!(mult("backbone.pos_embed").is_none() && mult("head.fc").is_none());
    // Through the optimiser: the LRs each parameter gets.
    let vars: Vec<(String, Var)> = names
        .iter()
        .map(|n| (n.to_string(), Var::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap()))
        .collect();
    let cfg = OptimizerConfig::AdamW(AdamWConfig { lr: 1.0, layer_decay: Some(0.5), ..Default::default() });
    assert!(cfg.build(vars.clone()).is_err(), "needs the model");
    assert!(cfg.build_for_model(vars, "head.fc").is_ok());
    let none = ["head.fc.weight"];
    assert!(layer_decay_groups(&none, 0.5).unwrap_err().to_string().contains("backbone.blocks.N"));
    assert!(layer_decay_groups(&names, 1.5).is_err());
    // MViT's names (no backbone prefix); a 3D CNN's pytorchvideo stages are no transformer.
    let mvit = [
        "patch_embed.patch_model.weight",
        "cls_positional_encoding.pos_embed_spatial",
        "blocks.0.attn.q.weight",
        "blocks.1.mlp.fc1.weight",
        "head.proj.weight",
    ];
    let g = layer_decay_groups(&mvit, 0.5).unwrap();
    let mult = |p: &str| g.iter().find(|g| g.pattern == p).map(|g| g.lr_mult);
    assert_eq!((mult("blocks.0."), mult("blocks.1.")), (Some(0.25), Some(0.5)));
    assert_eq!((mult("patch_embed."), mult("cls_positional_encoding.")), (Some(0.125), Some(0.125)));
    assert!(layer_decay_groups(&["blocks.1.res_blocks.0.branch2.conv_a.weight"], 0.5).is_err());
}
