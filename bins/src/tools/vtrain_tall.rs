//! `vtrain --arch tall`: a grounder from snippet features and query files (`--gt`, and
//! `--val-queries` for validation).

use super::vtrain::Args;
use crate::Outcome;
use anyhow::{bail, Context, Result};
use std::path::Path;
use vidkit::data::{read_queries, video_id_forms, GroundingQuery};
use vidkit::featstore::{read_features, VideoFeatures};
use vidkit::train::tall::{train_tall, TallRun, TallTrainConfig, TallVideo};

/// The videos of `features` that `queries` name, each with its queries; the queries of other
/// videos are counted in the second value. A query of the wrong embedding size or without a
/// ground truth is an error naming its file and line.
fn videos_with_queries(
    features: Vec<VideoFeatures>,
    queries: &[GroundingQuery],
    qpath: &Path,
    args: &Args,
    embedding: usize,
) -> Result<(Vec<TallVideo>, usize)> {
    let mut taken = vec![false; queries.len()];
    let forms: Vec<Vec<String>> = queries.iter().map(|q| video_id_forms(&q.video)).collect();
    let mut out = Vec::new();
    for v in features {
        let mine: Vec<usize> = (0..queries.len())
            .filter(|&i| !taken[i] && video_id_forms(&v.id).iter().any(|f| forms[i].contains(f)))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let mut tv = TallVideo::from_features(&v, &args.modality, args.fps)
            .with_context(|| format!("video {:?}", v.id))?;
        for i in mine {
            taken[i] = true;
            let q = &queries[i];
            let at = || format!("{}: line {}: query {:?}", qpath.display(), q.line, q.query_id);
            if q.embedding.len() != embedding {
                bail!("{}: an embedding of {} values; the model takes {embedding}", at(), q.embedding.len());
            }
            tv.push_query(q).with_context(at)?;
        }
        out.push(tv);
    }
    Ok((out, taken.iter().filter(|t| !**t).count()))
}

pub fn train(args: Args) -> Result<Outcome> {
    if args.init.is_some() {
        bail!("--init starts recognizers of frames; tall trains from its initialisation");
    }
    let qpath = args.gt.as_deref().context("tall trains from grounding queries: give --gt QUERIES.jsonl")?;
    let queries = read_queries(qpath)?;
    let mut train_features = read_features(&args.train_list)?;
    let mut cfg: TallTrainConfig = match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("{}: cannot read config", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: bad tall training config", p.display()))?
        }
        None => TallTrainConfig::default(),
    };
    let given = |k: &str| {
        args.overrides.iter().any(|o| o.starts_with(&format!("{k}=")) || o.starts_with(&format!("tall.{k}=")))
    };
    let mut overrides = Vec::new();
    if args.config.is_none() {
        // The sizes of the data unless the command line sets them.
        let width = train_features.iter().find_map(|v| v.modality(&args.modality).map(|a| a.ncols()));
        if let (Some(w), false) = (width, given("visual_feature_dim")) {
            overrides.push(format!("tall.visual_feature_dim={}", 3 * w));
        }
        if !given("sentence_embedding_size") {
            overrides.push(format!("tall.sentence_embedding_size={}", queries[0].embedding.len()));
        }
    }
    overrides.extend(args.overrides.iter().cloned());
    if let Some(s) = args.seed {
        overrides.push(format!("seed={s}"));
    }
    cfg.apply_overrides(&overrides)?;
    let e = cfg.tall.sentence_embedding_size;
    let val = match &args.val_queries {
        Some(vq) => {
            let vqueries = read_queries(vq)?;
            let features = match &args.val_list {
                Some(p) => read_features(p)?,
                None => {
                    // The validation queries' videos among the training features: not trained on.
                    let names: Vec<Vec<String>> = vqueries.iter().map(|q| video_id_forms(&q.video)).collect();
                    let (val, rest): (Vec<_>, Vec<_>) =
                        std::mem::take(&mut train_features).into_iter().partition(|v| {
                            video_id_forms(&v.id).iter().any(|f| names.iter().any(|n| n.contains(f)))
                        });
                    train_features = rest;
                    val
                }
            };
            let (videos, missing) = videos_with_queries(features, &vqueries, vq, &args, e)?;
            if missing > 0 && !args.quiet {
                eprintln!("vtrain: {}: {missing} queries of videos without features left out", vq.display());
            }
            Some(videos)
        }
        None if args.val_list.is_some() => bail!("--val-list for tall needs --val-queries"),
        None => None,
    };
    let (train, missing) = videos_with_queries(train_features, &queries, qpath, &args, e)?;
    if train.is_empty() {
        bail!("{}: no query names a video of {}", qpath.display(), args.train_list.display());
    }
    if !args.quiet {
        if missing > 0 {
            eprintln!(
                "vtrain: {}: {missing} queries of videos not in the training features left out",
                qpath.display()
            );
        }
        let nq = |v: &[TallVideo]| v.iter().map(|x| x.queries.len()).sum::<usize>();
        eprintln!(
            "vtrain: {} training videos ({} queries){}",
            train.len(),
            nq(&train),
            val.as_ref()
                .map(|v| format!(", {} validation videos ({} queries)", v.len(), nq(v)))
                .unwrap_or_default()
        );
    }
    let (device, portable_ops) = super::vtrain::train_device(&args.device)?;
    let summary = train_tall(TallRun {
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
