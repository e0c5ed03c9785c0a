//! `vground`: temporal grounding of sentence queries in videos' feature sequences with a
//! grounder model (TALL); one JSON line per query with its candidate segments, best first.

use crate::tools::merge_shards;
use crate::tools::vclassify::in_shard;
use crate::Outcome;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use vidkit::data::{read_queries, video_id_forms, GroundingQuery, VideoOrdinals};
use vidkit::featstore::read_features;
use vidkit::io::Output;
use vidkit::model::{load_grounder, GroundingVideo};
use vidkit::progress::Progress;

const EXAMPLES: &str = "\
Examples:
  # snippet features of untrimmed videos (16-frame snippets, as C3D units), then the queries
  vsample --list test.list --sampler untrimmed --frames 16 --interval 16 | vfeat --model c3d.safetensors -o test.h5
  vground --model tall.safetensors --queries test_queries.jsonl test.h5 -o grounding.jsonl
  veval --grounding --pred grounding.jsonl

  # the 2019 Paddle zoo's TACoS model, imported
  vconvert --arch tall TALL.pdparams tall.safetensors
  vground --model tall.safetensors --queries tacos_test.jsonl tacos_c3d.h5 --top 100

  # vsynth's synthetic queries on a vsynth --segments set
  vground --model runs/tall/best.safetensors --queries u/validation.queries.jsonl validation.h5

Reads per-video snippet feature sequences [T, C] (a features stream, an HDF5 store, .npy/.csv files
or a directory of them; see vidkit-features(5)) and a query file: JSON Lines {\"query_id\",
\"video\", \"embedding\": [E numbers] | \"embedding_file\": \"x.npy\", \"gt\"?: [t0, t1]} (the
sentence's embedding, as TALL's skip-thought vectors; embedding_file relative to the query file).
A query's video matches a features video by id, file name, or with or without ActivityNet's v_.

TALL (the 2019 Paddle zoo's CTRL: tall_net.py, tall_reader.py, tall_metrics.py) scores sliding
windows: the model's window lengths (128 and 256 frames by default: the reference's
Interval128_256_overlap0.8 test windows), each starting a fifth of its length after the previous,
laid over the video's frames (duration x frame rate, from the features or --fps). A window's
feature is the mean of the snippets whose centre lies in it (the nearest snippet where none
does), standing in for the reference's C3D fc6 of the window; beside it the mean features of the
128 frames before and after it (the window's own where that context would leave the video). Each
window is scored against the sentence and its boundaries moved by the two predicted offsets
(frames), as the reference's test: the candidates are the moved windows in seconds, best first.
Temporal NMS is left to the metric (veval --grounding, TALL's protocol by default).

Output: one JSON line per query {\"query_id\", \"video\", \"candidates\": [[t0, t1, score], ...],
\"gt\"?} (gt copied from the query file), videos in the features' order, each video's queries in
file order. A query that cannot be answered (its video missing from the features, features of the
wrong width, an embedding of the wrong size) is reported on stderr with the file and line and left
out (exit 1); -o is written atomically.

--shard K/N keeps the videos with queries whose 0-based ordinal among them is K modulo N (queries
whose video is in no features are reported by shard 0 alone); --merge puts the outputs of shards
0..N-1 back in order, byte for byte the unsharded output.";

#[derive(clap::Parser, Debug)]
#[command(name = "vground", version, about = "Temporal grounding of sentence queries in feature sequences with a grounder model (TALL)", after_help = EXAMPLES)]
pub struct Args {
    /// Features: streams, HDF5 stores, .npy/.csv files or directories; `-` or none reads stdin.
    pub inputs: Vec<PathBuf>,
    /// The grounder model (vconvert or vtrain --arch tall).
    #[arg(long, required_unless_present = "merge")]
    pub model: Option<PathBuf>,
    /// The queries: JSON Lines {"query_id", "video", "embedding" | "embedding_file", "gt"?}.
    #[arg(long, value_name = "FILE", required_unless_present = "merge")]
    pub queries: Option<PathBuf>,
    /// Keep only shard K of N (K = 0..N-1) of the input's videos (see --merge).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<vidkit::data::Shard>,
    /// Merge the outputs of --shard 0/N .. N-1/N, given in that order, into the unsharded run's
    /// output (byte for byte).
    #[arg(long, conflicts_with_all = ["model", "shard", "queries"])]
    pub merge: bool,
    /// Output file (written atomically); default stdout.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Candidates kept per query (default: every window).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub top: Option<u32>,
    /// Frame rate of videos whose features carry none (windows and offsets count frames).
    #[arg(long)]
    pub fps: Option<f64>,
    /// The features modality to read.
    #[arg(long, default_value = "rgb")]
    pub modality: String,
    /// Say nothing on stderr but errors.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

pub fn main(args: Args) -> Result<Outcome> {
    if args.merge {
        return merge_shards::merge("vground", &args.inputs, args.output.as_deref(), "video", args.quiet);
    }
    let model = load_grounder(args.model.as_deref().context("--model is required")?)?;
    let queries_path = args.queries.as_deref().context("--queries is required")?;
    let queries = read_queries(queries_path)?;
    let qname = queries_path.display().to_string();
    let (width, embedding) = model.input_sizes();
    let progress = Progress::new(Some(queries.len() as u64), "queries", args.quiet);
    let report = |q: &GroundingQuery, why: &str| {
        progress.eprintln(&format!("vground: {qname}: line {}: query {:?}: {why}", q.line, q.query_id));
    };
    let (mut done, mut failed) = (0usize, 0usize);
    // Embeddings of the wrong size fail before any video is read.
    let mut pending: Vec<(&GroundingQuery, Vec<String>)> = Vec::new();
    for q in &queries {
        if q.embedding.len() != embedding {
            report(q, &format!("an embedding of {} values; the model takes {embedding}", q.embedding.len()));
            failed += 1;
        } else {
            pending.push((q, video_id_forms(&q.video)));
        }
    }
    let mut answered = vec![false; pending.len()];
    let inputs = if args.inputs.is_empty() { vec![PathBuf::from("-")] } else { args.inputs.clone() };
    let mut out = Output::open(args.output.as_deref())?;
    let mut ordinals = VideoOrdinals::default();
    for input in &inputs {
        for v in read_features(input)? {
            let forms = video_id_forms(&v.id);
            let mine: Vec<usize> = (0..pending.len())
                .filter(|&i| !answered[i] && pending[i].1.iter().any(|f| forms.contains(f)))
                .collect();
            if mine.is_empty() {
                continue;
            }
            for &i in &mine {
                answered[i] = true;
            }
            // Shards count the videos that have queries, so that each shard gives lines.
            if !in_shard(args.shard, &mut ordinals, Some(&v.id)) {
                continue;
            }
            let grounded = GroundingVideo::new(&v, &args.modality, args.fps).and_then(|g| {
                if g.rows.ncols() != width {
                    bail!(
                        "features are {} wide; the model takes snippet features {width} wide",
                        g.rows.ncols()
                    );
                }
                let embs: Vec<&[f32]> = mine.iter().map(|&i| pending[i].0.embedding.as_slice()).collect();
                model.ground(&g, &embs)
            });
            match grounded {
                Ok(all) => {
                    for (&i, mut cands) in mine.iter().zip(all) {
                        let q = pending[i].0;
                        if let Some(k) = args.top {
                            cands.truncate(k as usize);
                        }
                        let c: Vec<[f64; 3]> = cands.iter().map(|c| [c.t0, c.t1, c.score]).collect();
                        let mut line = json!({"query_id": q.query_id, "video": q.video, "candidates": c});
                        if let Some((a, b)) = q.gt {
                            line["gt"] = json!([a, b]);
                        }
                        writeln!(out, "{line}")?;
                        done += 1;
                    }
                }
                Err(e) => {
                    progress.eprintln(&format!(
                        "vground: {}: video {:?}: {e:#} ({} queries left out)",
                        input.display(),
                        v.id,
                        mine.len()
                    ));
                    failed += mine.len();
                }
            }
            progress.inc(mine.len() as u64);
        }
    }
    // A query that no video answers is reported once, by shard 0.
    let reports_missing = args.shard.is_none_or(|s| s.index == 0);
    for (q, _) in pending.iter().zip(&answered).filter(|(_, a)| !**a && reports_missing).map(|(p, _)| p) {
        report(q, &format!("video {:?} is not in the features", q.video));
        failed += 1;
    }
    progress.finish();
    if done == 0 && (failed > 0 || args.shard.is_none()) {
        bail!("no query could be answered ({failed} failed)");
    }
    out.finish()?;
    if !args.quiet {
        eprintln!("vground: {done} queries, {failed} failed");
    }
    Ok(if failed > 0 { Outcome::PartialFailure { failed, total: done + failed } } else { Outcome::Success })
}
