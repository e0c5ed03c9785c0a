//! `vcaption`: sentences describing videos from their feature sequences with a captioner model
//! (ETS); one JSON line per video.

use crate::tools::merge_shards;
use crate::tools::vclassify::in_shard;
use crate::Outcome;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use vidkit::caption::read_caption_features;
use vidkit::data::VideoOrdinals;
use vidkit::io::Output;
use vidkit::model::{load_captioner, Captioner};
use vidkit::progress::Progress;

const EXAMPLES: &str = "\
Examples:
  # per-frame features of a video (vfeat's stream) to its caption in one pipe
  vsample clip.mp4 --sampler untrimmed --frames 1 --interval 6 | vfeat --model resnet.safetensors \\
      | vcaption --model ets.safetensors

  # a feature store, every hypothesis of the beam with its score, scored against the references
  vcaption --model ets.safetensors val.h5 --beams -o captions.jsonl
  veval --captions --pred captions.jsonl --gt val_1.json

  # per-video .npy features ([T, 2048], ResNet-152 at 5 fps as the reference's)
  vcaption --model ets.safetensors feats/

  # the reference's own per-video files (generate_train_pickle.py's feat_data/: pickled arrays)
  vcaption --model ets.safetensors data/dataset/ets/feat_data/

Reads per-video feature sequences [T, C] (a features stream, an HDF5 store, .npy/.csv files or a
directory of them; see vidkit-features(5)), or the ETS reference's per-video files (a directory of
numpy arrays pickled by Python 2 or 3, named by video id, no extension; read without running
anything from them); C must be the model's feature width. ETS (the 2019
Paddle zoo's ets_net.py): the encoder over the whole sequence, then beam search as fluid's
beam_search and beam_search_decode ops (beam 3, at most 80 words, as ets.yaml; no length
penalty: a hypothesis scores the sum of its words' log-probabilities, and one that has ended keeps
its score while the others grow); the caption is the best hypothesis without its start and last
word, as the reference's ets_metrics.py writes it (the last word is the end word, or the 80th
word where the search ran out of length).

Output: one JSON line per video {\"video\", \"caption\"} and with --beams \"beams\": [{\"caption\",
\"score\"}] (best first; score the accumulated log-probability). A video that cannot be processed
(features of the wrong width, no rows, non-finite values) is reported and skipped (exit 1).

--shard K/N keeps the videos whose 0-based ordinal in the input is K modulo N (as vsample, vfeat
and vclassify); --merge puts the outputs of shards 0..N-1 back in input order, byte for byte the
unsharded output.";

#[derive(clap::Parser, Debug)]
#[command(name = "vcaption", version, about = "Captions for videos from their feature sequences with a captioner model (ETS)", after_help = EXAMPLES)]
pub struct Args {
    /// Features: streams, HDF5 stores, .npy/.csv files, pickled arrays or directories of them;
    /// `-` or none reads stdin.
    pub inputs: Vec<PathBuf>,
    /// The captioner model (vconvert or vtrain --arch ets).
    #[arg(long, required_unless_present = "merge")]
    pub model: Option<PathBuf>,
    /// Keep only shard K of N (K = 0..N-1) of the input's videos (see --merge).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<vidkit::data::Shard>,
    /// Merge the outputs of --shard 0/N .. N-1/N, given in that order, into the unsharded run's
    /// output (byte for byte).
    #[arg(long, conflicts_with_all = ["model", "shard", "beams"])]
    pub merge: bool,
    /// Output file (written atomically); default stdout.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Also write every hypothesis of the beam with its score.
    #[arg(long)]
    pub beams: bool,
    /// The features modality to read.
    #[arg(long, default_value = "rgb")]
    pub modality: String,
    /// Arithmetic of the model's products: f32, bf16 (operands rounded to bfloat16, f32
    /// accumulation) or int8 (dense convolutions and Linear layers, as `vconvert --quantize int8` calibrated
    /// the model); see vclassify --precision [default: the model config's `precision`, else f32].
    #[arg(long, value_name = "P")]
    pub precision: Option<vidkit::precision::Precision>,
    /// Say nothing on stderr but errors.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// One video's output line.
fn caption_line(model: &dyn Captioner, id: &str, rows: &ndarray::Array2<f32>, beams: bool) -> Result<String> {
    if rows.ncols() != model.feature_width() {
        bail!("features are {} wide; the model takes {}", rows.ncols(), model.feature_width());
    }
    let c = model.caption(rows)?;
    let mut line = json!({"video": id, "caption": c.caption});
    if beams {
        line["beams"] = c.beams.iter().map(|(s, score)| json!({"caption": s, "score": score})).collect();
    }
    Ok(line.to_string())
}

pub fn main(args: Args) -> Result<Outcome> {
    if args.merge {
        return merge_shards::merge("vcaption", &args.inputs, args.output.as_deref(), "video", args.quiet);
    }
    let model_path = args.model.as_deref().context("--model is required")?;
    let model = load_captioner(model_path)?;
    let config = vidkit::model::read_config(model_path)?;
    let precision = crate::tools::vclassify::model_precision(args.precision, &config, model_path)?;
    precision.run(|| caption(args, model))
}

/// The rest of `main`, in the run's precision.
fn caption(args: Args, model: Box<dyn Captioner>) -> Result<Outcome> {
    let inputs = if args.inputs.is_empty() { vec![PathBuf::from("-")] } else { args.inputs.clone() };
    let mut out = Output::open(args.output.as_deref())?;
    let progress = Progress::new(None, "videos", args.quiet);
    let (mut done, mut failed) = (0usize, 0usize);
    let mut ordinals = VideoOrdinals::default();
    for input in &inputs {
        for v in read_caption_features(input)? {
            if !in_shard(args.shard, &mut ordinals, Some(&v.id)) {
                continue;
            }
            let result = v
                .modality(&args.modality)
                .with_context(|| format!("no {:?} features", args.modality))
                .and_then(|rows| caption_line(model.as_ref(), &v.id, rows, args.beams));
            match result {
                Ok(line) => {
                    done += 1;
                    writeln!(out, "{line}").context("writing captions")?;
                }
                Err(e) => {
                    failed += 1;
                    progress.eprintln(&format!("vcaption: {}: video {:?}: {e:#}", input.display(), v.id));
                }
            }
            progress.inc(1);
        }
    }
    progress.finish();
    if done == 0 && (failed > 0 || args.shard.is_none()) {
        bail!("no video could be captioned ({failed} failed)");
    }
    out.finish()?;
    if !args.quiet {
        eprintln!("vcaption: {done} videos, {failed} failed");
    }
    Ok(if failed > 0 { Outcome::PartialFailure { failed, total: done + failed } } else { Outcome::Success })
}
