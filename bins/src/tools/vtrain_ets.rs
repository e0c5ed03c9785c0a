//! `vtrain --arch ets`: a captioner from per-frame features and a captions file (`--gt`, and
//! `--val-gt` for validation).

use super::vtrain::Args;
use crate::Outcome;
use anyhow::{bail, Context, Result};
use vidkit::caption::read_caption_features as read_features;
use vidkit::train::ets::{caption_pairs, train_ets, EtsRun, EtsTrainConfig};

pub fn train(args: Args) -> Result<Outcome> {
    if args.init.is_some() {
        bail!("--init starts recognizers of frames; ets trains from its initialisation");
    }
    let gt = args.gt.as_deref().context("ets trains from captions: give --gt CAPTIONS.json")?;
    let mut cfg: EtsTrainConfig = match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("{}: cannot read config", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: bad ets training config", p.display()))?
        }
        None => EtsTrainConfig::default(),
    };
    let train_features = read_features(&args.train_list)?;
    let mut overrides = Vec::new();
    let given = |k: &str| {
        args.overrides.iter().any(|o| o.starts_with(&format!("{k}=")) || o.starts_with(&format!("ets.{k}=")))
    };
    if args.config.is_none() && !given("feat_size") {
        // The feature width of the data unless the command line sets it.
        if let Some(w) = train_features.iter().find_map(|v| v.modality(&args.modality).map(|a| a.ncols())) {
            overrides.push(format!("ets.feat_size={w}"));
        }
    }
    overrides.extend(args.overrides.iter().cloned());
    if let Some(s) = args.seed {
        overrides.push(format!("seed={s}"));
    }
    cfg.apply_overrides(&overrides)?;
    let width = Some(cfg.ets.feat_size);
    let (train, left) = caption_pairs(&train_features, gt, &args.modality, width)
        .with_context(|| format!("{}", args.train_list.display()))?;
    drop(train_features);
    if train.is_empty() {
        bail!(
            "{}: no sentence names a video of {} (or covers any of its rows)",
            gt.display(),
            args.train_list.display()
        );
    }
    let val = match (&args.val_list, &args.val_gt) {
        (Some(list), vgt) => {
            let vgt = vgt.as_deref().unwrap_or(gt);
            let (pairs, vleft) = caption_pairs(&read_features(list)?, vgt, &args.modality, width)
                .with_context(|| format!("{}", list.display()))?;
            if pairs.is_empty() {
                bail!("{}: no sentence names a video of {}", vgt.display(), list.display());
            }
            if vleft > 0 && !args.quiet {
                eprintln!(
                    "vtrain: {}: {vleft} sentences without features (or rows) left out of validation",
                    vgt.display()
                );
            }
            Some(pairs)
        }
        (None, Some(_)) => bail!("--val-gt needs --val-list (the validation videos' features)"),
        (None, None) => None,
    };
    if !args.quiet {
        if left > 0 {
            eprintln!(
                "vtrain: {}: {left} sentences without training features (or rows) left out",
                gt.display()
            );
        }
        eprintln!(
            "vtrain: {} training sentences{}",
            train.len(),
            val.as_ref().map(|v| format!(", {} validation sentences", v.len())).unwrap_or_default()
        );
    }
    let (device, portable_ops) = super::vtrain::train_device(&args.device)?;
    let summary = train_ets(EtsRun {
        config: cfg,
        train,
        val,
        out_dir: args.out.clone(),
        resume: args.resume,
        stop_after: args.stop_after,
        quiet: args.quiet,
        device,
        portable_ops,
    })?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(Outcome::Success)
}
