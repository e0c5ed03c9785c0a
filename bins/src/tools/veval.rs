//! `veval`: classification metrics over prediction records (DESIGN.md §2.3), as mmaction2's
//! `AccMetric` reports them: top-1 and top-5 accuracy, mean class accuracy, and on request the
//! confusion matrix; with `--multilabel`, youtube-8m's GAP@k, hit@1 and PERR and mmaction2's mAP.
//! The formulas live in `vidkit::metric::accuracy` and `vidkit::metric::multilabel`; the other
//! modes (localization, grounding, captions) in their `veval_*` files.
use crate::Outcome;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use vidkit::data::{read_label_names, read_list, ListEntry};
use vidkit::metric::{
    argmax_classes, confusion_matrix, gap, hit_at_one, mean_average_precision, mean_class_accuracy,
    precision_at_equal_recall_rate, top_k_accuracy,
};
use vidkit::stream::prediction::{read_predictions, Prediction};
use vidkit::stream::Label;

const ABOUT: &str = "Score classification predictions: top-1/top-5 accuracy, mean class accuracy, \
confusion matrix; GAP, hit@1, PERR and mAP for multi-label sets; proposals, detections, grounding \
recall and caption metrics";

const LONG_ABOUT: &str = "\
Score classification predictions: top-1/top-5 accuracy, mean class accuracy, confusion matrix; \
with --multilabel, GAP@k, hit@1, PERR and mAP.

Reads prediction records (JSON Lines, one object per video: {\"video\", \"label\"?, \"scores\", \
\"top\"}, as vclassify writes them) and the ground truth: a list file (--gt, `path label` per line) \
or, without --gt, each record's own \"label\". Prints a table on stderr and one JSON object on \
stdout: {\"top1\", \"top5\", \"mean_class_acc\", \"count\"} (accuracies as fractions in [0, 1]), plus \
\"confusion\": {\"classes\", \"matrix\"} with --confusion (rows are true classes, columns predicted \
ones, both in the order of \"classes\"; \"names\" too when --labels is given).

The metrics are mmaction2's (mmaction/evaluation/functional/accuracy.py). A prediction is a hit \
at top-k when its true class is among its k highest scores; with fewer than k classes every \
prediction is a hit. Mean class accuracy averages per-class top-1 accuracy over the classes that \
occur as a true label or as a prediction: a class that is only ever predicted counts as 0. \
Classes with equal scores rank by lower class index first (so top-1 is always numpy's argmax, \
the first maximum).

Predictions are matched to list entries by \"video\", which vsample sets to the path as written \
in the list: first the exact string, then the list path joined to --root, then the file name \
alone (when it names exactly one entry). A prediction without ground truth, or a list entry \
without a prediction, is an error unless --allow-missing. Every record is one sample, so \
per-clip predictions are scored per clip.

Multi-label (--multilabel): each video has a set of positive classes, from --gt (`path l1,l2,...`; \
a line with a path only is a video without positives) or from each record's \"labels\" (a list \
of class ids), else its \"label\" (a list or an int). The JSON object is {\"gap\", \"hit1\", \"perr\", \
\"map\", \"top_k\", \"videos\", \"classes\"}. gap, hit1 and perr are youtube-8m's \
(eval_util.py: calculate_gap, calculate_hit_at_one, calculate_precision_at_equal_recall_rate): \
GAP@k pools the --top-k best classes of every video into one ranking and divides by all \
positives, retrieved or not; hit1 is the fraction of videos whose best class is positive; perr \
takes as many best classes as a video has positives and counts those positive and scored above \
0. Videos without positives count in hit1 and perr as 0. map is mmaction2's \
mean_average_precision: per-class AP over all videos, averaged over the classes that have \
positives (null when none has). Equal scores rank as the references rank them: GAP replays \
youtube-8m's seeded shuffle; where the reference leaves the choice unspecified (a tie at the \
k-th place), the lower class index goes first. NaN scores are an error.";

const EXAMPLES: &str = "\
Examples:
  # Score predictions against the validation list; JSON on stdout, table on stderr
  veval --pred preds.jsonl --gt ucf101_val_split1.txt

  # Predictions that carry their own \"label\", from stdin; keep the metrics in a file
  veval --pred - -o metrics.json < preds.jsonl

  # Per-class accuracy table and confusion matrix with class names
  veval --pred preds.jsonl --gt val.list --confusion --labels labels.txt

  # Only part of the list was classified: score what is there
  veval --pred shard0.jsonl --gt val.list --allow-missing

  # Multi-label (YouTube-8M style): GAP@20, hit@1, PERR and mAP against `path l1,l2,...` lines
  veval --multilabel --pred preds.jsonl --gt val_multilabel.list

  # Temporal proposals (vpropose JSON Lines or an ActivityNet result JSON): AR@AN and its area
  veval --proposals --pred proposals.jsonl --gt activity_net.v1-3.min.json

  # Detections: mAP at tIoU 0.5:0.05:0.95; THUMOS14 (annotation directory): 0.3:0.1:0.7
  veval --detection --pred detections.json --gt activity_net.v1-3.min.json
  veval --detection --pred thumos_dets.jsonl --gt annotation_val/ --subset validation

Localization (--proposals, --detection) follows ActivityNet's Evaluation/eval_proposal.py and
eval_detection.py exactly: the ground truth is the --subset videos with annotations; AR@AN keeps
each video's best int(n * ratio) proposals (ratio = max-AN x videos / all proposals), recall
counts ground-truth segments matched at each of 100 budgets and tIoU thresholds, the area is
np.trapz over AN divided by the largest AN; detection AP is VOC's interpolated AP per class,
greedy matching by score, averaged over classes (a class without detections scores 0).
JSON: {\"auc\", \"an\", \"ar_an\", \"ar_at\": {\"1\", \"5\", \"10\", \"100\"}, \"videos\"} and
{\"map\", \"tiou\", \"map_at_tiou\", \"classes\", \"videos\"}, fractions in [0, 1]; the table on
stderr prints percentages.

  # Temporal grounding (vground JSON Lines): R@1/5/10 at IoU 0.1/0.3/0.5/0.7, TALL's rules
  veval --grounding --pred grounding.jsonl --gt queries.jsonl
  veval --grounding --grounding-protocol mmaction2 --pred grounding.jsonl

Grounding (--grounding): --pred lines {\"query_id\", \"video\", \"candidates\": [[t0, t1, score], ...]},
ground truth from --gt lines {\"query_id\", \"video\", \"gt\": [t0, t1]} or each line's own \"gt\";
queries match on (video, query_id). R@k at IoU m is the fraction of queries with a hit among
their best k candidates, where IoU is the references' calculate_IoU (intersection over the hull
of the two segments). tall (default) is TALL's compute_IoU_recall_top_n_forreg (jiyanggao/TALL,
PaddlePaddle's tall_metrics.py): candidates ranked by score through temporal NMS at IoU m - 0.05,
hit when IoU >= m; among equal scores the later-listed candidate ranks first (Python's stable
sort, as the reference). mmaction2 is MMAction2's RecallatTopK: the first k candidates as
listed, no NMS, hit when IoU > m. A query without candidates counts as a miss. JSON: {\"r_at\":
{\"1\": {\"0.1\", \"0.3\", \"0.5\", \"0.7\"}, \"5\": ..., \"10\": ...}, \"queries\", \"protocol\"}.

  # Captions (vcaption JSON Lines or {id: caption}) against {id: [references]} or ActivityNet
  # Captions JSON: BLEU-1..4, ROUGE-L, CIDEr-D; METEOR through pycocoevalcap's jar
  veval --captions --pred captions.jsonl --gt val_1.json --meteor-jar pycocoevalcap/meteor/meteor-1.5.jar
  veval --captions --pred captions.json --gt refs.json --per-video

Captions (--captions): the numbers are pycocoevalcap 1.2's, on its scale (BLEU, METEOR, ROUGE-L in
[0, 1]; CIDEr-D unbounded). Captions are tokenized as its ptbtokenizer.py does (Stanford
PTBTokenizer 3.4.1 -preserveLines -lowerCase, restated natively; its punctuation list removed);
BLEU is corpus-level with the closest reference length, ROUGE-L has beta 1.2, CIDEr-D sigma 6 with
clipping, x10 and document frequencies from the reference set. METEOR 1.5 exists only as its
jar: with --meteor-jar it runs `java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm` as
pycocoevalcap does (a JRE is needed; the jar's data/ directory must be beside it); without it,
\"meteor\" is left out and stderr says so. In ActivityNet Captions JSON ({video: {\"duration\",
\"timestamps\", \"sentences\"}}) a video's sentences are its references (video-level captioning);
a caption's video may carry or lack the \"v_\" prefix. Videos are scored in the --pred order;
empty captions are scored as empty, as pycocoevalcap scores them. JSON: {\"bleu1\", ...,
\"bleu4\", \"meteor\"?, \"rouge_l\", \"cider\", \"videos\"} plus \"per_video\" with --per-video.";

#[derive(clap::Parser, Debug)]
#[command(name = "veval", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
pub struct Args {
    /// Predictions: JSON Lines, one record per video (`-` is stdin).
    #[arg(long, value_name = "PRED.jsonl")]
    pub pred: PathBuf,

    /// Ground truth: a list file (`path label` per line), or the annotations of --proposals,
    /// --detection, --grounding or --captions; without it each record's own "label" (or "gt").
    #[arg(long, value_name = "LIST")]
    pub gt: Option<PathBuf>,

    /// Directory the relative paths in --gt are under (used when matching predictions).
    #[arg(long, value_name = "DIR", requires = "gt")]
    pub root: Option<PathBuf>,

    /// Also report the confusion matrix (JSON) and per-class accuracy (table).
    #[arg(long)]
    pub confusion: bool,

    /// Multi-label evaluation (several positive classes per video): GAP@k, hit@1, PERR, mAP.
    #[arg(long, conflicts_with = "confusion")]
    pub multilabel: bool,

    /// With --multilabel: how many best classes of each video enter GAP (GAP@K).
    #[arg(long, value_name = "K", default_value_t = 20, requires = "multilabel",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub top_k: u32,

    /// Score temporal proposals: AR@AN and its area (ActivityNet eval_proposal.py); --pred is
    /// vpropose JSON Lines or an ActivityNet result JSON, --gt an ActivityNet JSON or a THUMOS14
    /// annotation directory.
    #[arg(long, requires = "gt", conflicts_with_all = ["multilabel", "confusion", "detection"])]
    pub proposals: bool,

    /// Score temporal detections (segments with a class label): mAP per tIoU and its average
    /// (ActivityNet eval_detection.py).
    #[arg(long, requires = "gt", conflicts_with_all = ["multilabel", "confusion"])]
    pub detection: bool,

    /// Score temporal grounding: R@{1,5,10} at IoU {0.1,0.3,0.5,0.7}; --pred is vground JSON
    /// Lines, --gt query lines with "gt" (or each prediction's own "gt").
    #[arg(long, conflicts_with_all = ["multilabel", "confusion", "proposals", "detection", "captions"])]
    pub grounding: bool,

    /// With --grounding: whose rules decide a hit.
    #[arg(long, value_enum, default_value = "tall", requires = "grounding")]
    pub grounding_protocol: super::veval_grounding::Protocol,

    /// Score captions: BLEU-1..4, METEOR (with --meteor-jar), ROUGE-L and CIDEr-D as
    /// pycocoevalcap 1.2; --gt is {id: [references]} or ActivityNet Captions JSON.
    #[arg(long, requires = "gt", conflicts_with_all = ["multilabel", "confusion", "proposals", "detection"])]
    pub captions: bool,

    /// With --captions: pycocoevalcap's METEOR 1.5 jar, run with `java` as pycocoevalcap runs it.
    #[arg(long, value_name = "meteor-1.5.jar", requires = "captions")]
    pub meteor_jar: Option<PathBuf>,

    /// With --captions: also each video's scores ("per_video").
    #[arg(long, requires = "captions")]
    pub per_video: bool,

    /// With --proposals/--detection: the ground truth's subset (`validation`, `test`, ...).
    #[arg(long, default_value = "validation")]
    pub subset: String,

    /// With --proposals/--detection: tIoU thresholds, comma-separated [default: numpy's
    /// linspace(0.5, 0.95, 10); for a THUMOS14 directory with --detection, linspace(0.3, 0.7, 5)].
    #[arg(long, value_delimiter = ',', value_name = "T1,T2,...")]
    pub tiou: Option<Vec<f64>>,

    /// With --proposals: draw the AR@AN curve into this SVG file (written atomically).
    #[arg(long, value_name = "FILE.svg", requires = "proposals")]
    pub plot: Option<PathBuf>,

    /// With --proposals: the largest average number of proposals per video (AN) of the curve.
    #[arg(long, value_name = "N", default_value_t = 100.0)]
    pub max_an: f64,

    /// Class names, one per line; must name as many classes as there are scores.
    #[arg(long, value_name = "labels.txt")]
    pub labels: Option<PathBuf>,

    /// Skip predictions without ground truth and list entries without a prediction (counted on
    /// stderr) instead of failing.
    #[arg(long)]
    pub allow_missing: bool,

    /// Write the JSON object to this file (atomically) instead of stdout; `-` is stdout.
    #[arg(short, long, value_name = "OUT.json")]
    pub output: Option<PathBuf>,

    /// No table on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

fn display_name(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "<stdin>".into()
    } else {
        path.display().to_string()
    }
}

/// The list entries, indexed the three ways a prediction's "video" may name one.
struct GroundTruth {
    entries: Vec<ListEntry>,
    source: String,
    exact: HashMap<String, usize>,
    /// Path-component equality, so `./a//b.mp4` finds `a/b.mp4` under the root.
    resolved: HashMap<PathBuf, usize>,
    by_name: HashMap<std::ffi::OsString, Vec<usize>>,
    /// Entries that are the first of their path (duplicates of a path share its label).
    unique: Vec<usize>,
}

impl GroundTruth {
    fn read(path: &Path, root: Option<&Path>) -> Result<Self> {
        let entries = read_list(path)?;
        let source = path.display().to_string();
        let mut exact: HashMap<String, usize> = HashMap::new();
        let mut resolved = HashMap::new();
        let mut by_name: HashMap<_, Vec<usize>> = HashMap::new();
        let mut unique = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if let Some(&first) = exact.get(&e.path) {
                let f = &entries[first];
                if f.labels != e.labels {
                    bail!(
                        "{source}: line {}: {:?} is listed again with a different label (first at line {})",
                        e.line,
                        e.path,
                        f.line
                    );
                }
                continue;
            }
            exact.insert(e.path.clone(), i);
            unique.push(i);
            if root.is_some() {
                resolved.entry(e.resolve(root)).or_insert(i);
            }
            if let Some(name) = Path::new(&e.path).file_name() {
                by_name.entry(name.to_os_string()).or_default().push(i);
            }
        }
        Ok(Self { entries, source, exact, resolved, by_name, unique })
    }

    /// The entry a prediction's video names: exact path, path under --root, then file name.
    fn find(&self, video: &str) -> Result<Option<usize>> {
        if let Some(&i) = self.exact.get(video) {
            return Ok(Some(i));
        }
        if let Some(&i) = self.resolved.get(Path::new(video)) {
            return Ok(Some(i));
        }
        let Some(name) = Path::new(video).file_name() else { return Ok(None) };
        match self.by_name.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([i]) => Ok(Some(*i)),
            Some(several) => {
                let lines: Vec<String> = several.iter().map(|&i| self.entries[i].line.to_string()).collect();
                bail!(
                    "{}: {video:?} matches lines {} only by file name {:?}, which is ambiguous; write the same paths in both",
                    self.source,
                    lines.join(", "),
                    name.to_string_lossy()
                )
            }
        }
    }
}

/// Scores of every record checked against one class count (and the label map, if any).
fn class_count(
    preds: &[(usize, Prediction)],
    source: &str,
    names: Option<(&[String], &str)>,
) -> Result<usize> {
    let Some((first_line, first)) = preds.first() else { bail!("{source}: no predictions to evaluate") };
    let classes = first.scores.len();
    if classes == 0 {
        bail!("{source}: line {first_line}: \"scores\" is empty");
    }
    if let Some((names, names_src)) = names {
        if names.len() != classes {
            bail!(
                "{names_src}: {} class names, but the predictions in {source} have {classes} scores (line {first_line})",
                names.len()
            );
        }
    }
    for (line, p) in preds {
        if p.scores.len() != classes {
            bail!(
                "{source}: line {line}: {} scores, but line {first_line} has {classes} (one score per class)",
                p.scores.len()
            );
        }
    }
    Ok(classes)
}

/// A label as a class index, or an error naming where it came from.
fn class_index(label: i64, classes: usize, at: &str) -> Result<usize> {
    match usize::try_from(label) {
        Ok(c) if c < classes => Ok(c),
        _ => bail!("{at}: label {label} is out of range for {classes} classes (0..={})", classes - 1),
    }
}

/// One true class from a label, or an error for multi-label and out-of-range values.
fn single_class(labels: &[i64], classes: usize, at: &str) -> Result<usize> {
    match labels {
        [l] => class_index(*l, classes, at),
        [] => bail!("{at}: no label"),
        _ => bail!("{at}: multi-label ground truth {labels:?}; top-k accuracy needs one label per video (or --multilabel)"),
    }
}

/// The positive classes of a multi-label video (possibly none), sorted, a repeat counted once.
fn class_set(labels: &[i64], classes: usize, at: &str) -> Result<Vec<usize>> {
    let mut set = labels.iter().map(|&l| class_index(l, classes, at)).collect::<Result<Vec<_>>>()?;
    set.sort_unstable();
    set.dedup();
    Ok(set)
}

/// A record's own ground truth as label values: its "label"; for multi-label evaluation its
/// "labels" list first (single-label mode ignores that key, as it always has).
fn record_label_values(p: &Prediction, at: &str, multilabel: bool) -> Result<Option<Vec<i64>>> {
    if let Some(v) = p.extra.get("labels").filter(|_| multilabel) {
        let ls: Vec<i64> = serde_json::from_value(v.clone())
            .map_err(|_| anyhow::anyhow!("{at}: \"labels\" must be a list of class ids, not {v}"))?;
        return Ok(Some(ls));
    }
    Ok(p.label.as_ref().map(|l| match l {
        Label::Single(l) => vec![*l],
        Label::Multi(ls) => ls.clone(),
    }))
}

/// What could not be matched, for the error (or, with --allow-missing, the note).
#[derive(Default)]
struct Missing {
    /// (line, video) of predictions without ground truth.
    preds: Vec<(usize, String)>,
    /// (line, path) of list entries without a prediction.
    entries: Vec<(usize, String)>,
}

/// The ground truth of each record from the list (`None`: no entry for it), each entry's labels
/// converted by `truth`.
fn labels_from_list<T>(
    preds: &[(usize, Prediction)],
    gt: &GroundTruth,
    missing: &mut Missing,
    truth: impl Fn(&[i64], &str) -> Result<T>,
) -> Result<Vec<Option<T>>> {
    let mut seen = vec![false; gt.entries.len()];
    let mut out = Vec::with_capacity(preds.len());
    for (line, p) in preds {
        let Some(i) = gt.find(&p.video)? else {
            missing.preds.push((*line, p.video.clone()));
            out.push(None);
            continue;
        };
        seen[i] = true;
        let e = &gt.entries[i];
        out.push(Some(truth(&e.labels, &format!("{}: line {}: {:?}", gt.source, e.line, e.path))?));
    }
    for &i in &gt.unique {
        if !seen[i] {
            missing.entries.push((gt.entries[i].line, gt.entries[i].path.clone()));
        }
    }
    Ok(out)
}

/// The ground truth each record carries (`None`: it has none), converted by `truth`.
fn labels_from_records<T>(
    preds: &[(usize, Prediction)],
    source: &str,
    multilabel: bool,
    missing: &mut Missing,
    truth: impl Fn(&[i64], &str) -> Result<T>,
) -> Result<Vec<Option<T>>> {
    preds
        .iter()
        .map(|(line, p)| {
            let at = format!("{source}: line {line}");
            match record_label_values(p, &at, multilabel)? {
                None => {
                    missing.preds.push((*line, p.video.clone()));
                    Ok(None)
                }
                Some(ls) => truth(&ls, &at).map(Some),
            }
        })
        .collect()
}

fn check_missing(missing: &Missing, args: &Args, source: &str) -> Result<()> {
    let more = |n: usize| {
        if n > 1 {
            format!(" (and {} more; --allow-missing skips them)", n - 1)
        } else {
            String::new()
        }
    };
    if args.allow_missing {
        if !missing.preds.is_empty() || !missing.entries.is_empty() {
            eprintln!(
                "veval: skipped {} predictions without ground truth and {} list entries without a prediction",
                missing.preds.len(),
                missing.entries.len()
            );
        }
        return Ok(());
    }
    if let Some((line, video)) = missing.preds.first() {
        match &args.gt {
            Some(gt) => bail!(
                "{source}: line {line}: no ground truth for {video:?} in {} (matched by path, by path under --root, by file name){}",
                gt.display(),
                more(missing.preds.len())
            ),
            None => bail!(
                "{source}: line {line}: prediction for {video:?} has no \"label\" and no --gt list was given{}",
                more(missing.preds.len())
            ),
        }
    }
    if let (Some((line, path)), Some(gt)) = (missing.entries.first(), &args.gt) {
        bail!(
            "{}: line {line}: no prediction for {path:?} in {source}{}",
            gt.display(),
            more(missing.entries.len())
        );
    }
    Ok(())
}

struct Report {
    count: usize,
    top1: f64,
    top5: f64,
    mean_class_acc: f64,
    /// Class ids and the matrix (rows true, columns predicted), with --confusion.
    confusion: Option<(Vec<usize>, Vec<Vec<usize>>)>,
}

fn to_json(r: &Report, names: Option<&[String]>) -> String {
    use serde_json::{json, to_string, Value};
    // Written by hand to keep the keys in this order (serde_json's map sorts them).
    let mut s = format!(
        "{{\"top1\":{},\"top5\":{},\"mean_class_acc\":{},\"count\":{}",
        Value::from(r.top1),
        Value::from(r.top5),
        Value::from(r.mean_class_acc),
        r.count
    );
    if let Some((classes, matrix)) = &r.confusion {
        s += &format!(",\"confusion\":{{\"classes\":{},", json!(classes));
        if let Some(names) = names {
            let named: Vec<&str> = classes.iter().map(|&c| names[c].as_str()).collect();
            s += &format!("\"names\":{},", to_string(&named).expect("strings serialise"));
        }
        s += &format!("\"matrix\":{}}}", json!(matrix));
    }
    s + "}\n"
}

fn print_table(r: &Report, classes: usize, source: &str, names: Option<&[String]>) {
    let hits = |acc: f64| (acc * r.count as f64).round() as usize;
    let mut t = format!("veval: {} predictions from {source}, {classes} classes\n", r.count);
    t += &format!("  {:<16}{:>8.4}  ({} of {})\n", "top1", r.top1, hits(r.top1), r.count);
    t += &format!("  {:<16}{:>8.4}  ({} of {})\n", "top5", r.top5, hits(r.top5), r.count);
    t += &format!("  {:<16}{:>8.4}\n", "mean_class_acc", r.mean_class_acc);
    if let Some((ids, matrix)) = &r.confusion {
        let width = names.map_or(4, |n| ids.iter().map(|&c| n[c].chars().count()).max().unwrap_or(0).max(4));
        t += &format!("  {:>6}  {:<width$}  {:>6}  {:>6}  {:>8}\n", "class", "name", "true", "hits", "acc");
        for (i, (&c, row)) in ids.iter().zip(matrix).enumerate() {
            let n: usize = row.iter().sum();
            let acc = if n == 0 { "-".to_string() } else { format!("{:.4}", row[i] as f64 / n as f64) };
            let name = names.map_or("", |n| n[c].as_str());
            t += &format!("  {c:>6}  {name:<width$}  {n:>6}  {:>6}  {acc:>8}\n", row[i]);
        }
    }
    eprint!("{t}");
}

/// Each record's ground truth, from --gt or from the records, converted by `truth`; records
/// without any are dropped (after `check_missing` allowed it). Errors when none is left.
fn scores_with_truth<T>(
    preds: Vec<(usize, Prediction)>,
    args: &Args,
    source: &str,
    truth: impl Fn(&[i64], &str) -> Result<T>,
) -> Result<(Vec<Vec<f32>>, Vec<T>)> {
    let mut missing = Missing::default();
    let labels = match &args.gt {
        Some(gt) => {
            let gt = GroundTruth::read(gt, args.root.as_deref())?;
            labels_from_list(&preds, &gt, &mut missing, truth)?
        }
        None => labels_from_records(&preds, source, args.multilabel, &mut missing, truth)?,
    };
    check_missing(&missing, args, source)?;
    let (scores, truth): (Vec<Vec<f32>>, Vec<T>) =
        preds.into_iter().zip(labels).filter_map(|((_, p), l)| l.map(|l| (p.scores, l))).unzip();
    if truth.is_empty() {
        bail!("{source}: no prediction has ground truth; nothing to evaluate");
    }
    Ok((scores, truth))
}

/// Top-k accuracy, mean class accuracy and the confusion matrix: the JSON line.
fn single_label(
    preds: Vec<(usize, Prediction)>,
    args: &Args,
    source: &str,
    classes: usize,
    names: Option<&[String]>,
) -> Result<String> {
    let (scores, truth) = scores_with_truth(preds, args, source, |ls, at| single_class(ls, classes, at))?;
    let report = Report {
        count: truth.len(),
        top1: top_k_accuracy(&scores, &truth, 1),
        top5: top_k_accuracy(&scores, &truth, 5),
        mean_class_acc: mean_class_accuracy(&scores, &truth),
        confusion: args.confusion.then(|| confusion_matrix(&argmax_classes(&scores), &truth)),
    };
    if !args.quiet {
        print_table(&report, classes, source, names);
    }
    Ok(to_json(&report, names))
}

struct MultiLabelReport {
    videos: usize,
    classes: usize,
    top_k: u32,
    positives: usize,
    gap: f64,
    hit1: f64,
    perr: f64,
    map: f64,
    /// Classes with positives, which mAP averages over.
    map_classes: usize,
}

fn multilabel_json(r: &MultiLabelReport) -> String {
    use serde_json::Value;
    // By hand to keep the keys in this order; NaN (no class with positives) becomes null.
    format!(
        "{{\"gap\":{},\"hit1\":{},\"perr\":{},\"map\":{},\"top_k\":{},\"videos\":{},\"classes\":{}}}\n",
        Value::from(r.gap),
        Value::from(r.hit1),
        Value::from(r.perr),
        Value::from(r.map),
        r.top_k,
        r.videos,
        r.classes
    )
}

fn print_multilabel_table(r: &MultiLabelReport, source: &str) {
    let mut t = format!(
        "veval: {} videos from {source}, {} classes, {} positive labels (multi-label)\n",
        r.videos, r.classes, r.positives
    );
    t += &format!("  {:<16}{:>8.4}\n", format!("gap@{}", r.top_k), r.gap);
    t += &format!("  {:<16}{:>8.4}\n", "hit1", r.hit1);
    t += &format!("  {:<16}{:>8.4}\n", "perr", r.perr);
    t += &format!("  {:<16}{:>8.4}  (over {} classes with positives)\n", "map", r.map, r.map_classes);
    eprint!("{t}");
}

/// GAP@k, hit@1, PERR and mAP: the JSON line.
fn multilabel(preds: Vec<(usize, Prediction)>, args: &Args, source: &str, classes: usize) -> Result<String> {
    // The references' orders of NaN are arbitrary (Python's sorted, numpy's argpartition).
    for (line, p) in &preds {
        if let Some(c) = p.scores.iter().position(|s| s.is_nan()) {
            bail!("{source}: line {line}: the score of class {c} is NaN; multi-label metrics need ordered scores");
        }
    }
    let (scores, truth) = scores_with_truth(preds, args, source, |ls, at| class_set(ls, classes, at))?;
    let (map, map_classes) = mean_average_precision(&scores, &truth);
    let report = MultiLabelReport {
        videos: truth.len(),
        classes,
        top_k: args.top_k,
        positives: truth.iter().map(Vec::len).sum(),
        gap: gap(&scores, &truth, args.top_k as usize),
        hit1: hit_at_one(&scores, &truth),
        perr: precision_at_equal_recall_rate(&scores, &truth),
        map,
        map_classes,
    };
    if !args.quiet {
        print_multilabel_table(&report, source);
    }
    Ok(multilabel_json(&report))
}

pub fn main(args: Args) -> Result<Outcome> {
    if args.proposals || args.detection || args.grounding || args.captions {
        let json = if args.grounding {
            super::veval_grounding::evaluate(&args)?
        } else if args.captions {
            super::veval_captions::evaluate(&args)?
        } else {
            super::veval_localization::evaluate(&args)?
        };
        let mut out = vidkit::io::Output::open(args.output.as_deref())?;
        let dest = args.output.as_ref().map_or_else(|| "<stdout>".to_string(), |p| p.display().to_string());
        out.write_all(json.as_bytes()).with_context(|| format!("{dest}: cannot write"))?;
        out.finish().with_context(|| format!("{dest}: cannot write"))?;
        return Ok(Outcome::Success);
    }
    let source = display_name(&args.pred);
    let preds = read_predictions(&args.pred)?;
    let names = args.labels.as_deref().map(read_label_names).transpose()?;
    let names_src = args.labels.as_ref().map(|p| p.display().to_string());
    let classes = class_count(&preds, &source, names.as_deref().zip(names_src.as_deref()))?;
    let json = if args.multilabel {
        multilabel(preds, &args, &source, classes)?
    } else {
        single_label(preds, &args, &source, classes, names.as_deref())?
    };

    let mut out = vidkit::io::Output::open(args.output.as_deref())?;
    let dest = args.output.as_ref().map_or_else(|| "<stdout>".to_string(), |p| p.display().to_string());
    out.write_all(json.as_bytes()).with_context(|| format!("{dest}: cannot write"))?;
    out.finish().with_context(|| format!("{dest}: cannot write"))?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_exact_then_under_root_then_by_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("val.list");
        std::fs::write(&list, "a/x.mp4 0\nb/y.mp4 1\nc/y.mp4 1\nd/z.mp4 2\na/x.mp4 0\n").unwrap();
        let gt = GroundTruth::read(&list, Some(Path::new("/data/"))).unwrap();
        assert_eq!(gt.unique, vec![0, 1, 2, 3]);
        assert_eq!(gt.find("a/x.mp4").unwrap(), Some(0));
        assert_eq!(gt.find("/data/d/z.mp4").unwrap(), Some(3));
        assert_eq!(gt.find("/data/./d//z.mp4").unwrap(), Some(3));
        assert_eq!(gt.find("/elsewhere/z.mp4").unwrap(), Some(3));
        assert_eq!(gt.find("nothing.mp4").unwrap(), None);
        let err = gt.find("/elsewhere/y.mp4").unwrap_err().to_string();
        assert!(err.contains("lines 2, 3") && err.contains("ambiguous"), "{err}");
    }

    #[test]
    fn a_path_listed_twice_with_different_labels_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("val.list");
        std::fs::write(&list, "a.mp4 0\nb.mp4 1\na.mp4 2\n").unwrap();
        let err = GroundTruth::read(&list, None).err().unwrap().to_string();
        assert!(err.contains("line 3") && err.contains("first at line 1"), "{err}");
    }

    #[test]
    fn labels_must_be_single_and_in_range() {
        assert_eq!(single_class(&[2], 3, "f").unwrap(), 2);
        assert!(single_class(&[3], 3, "f: line 4")
            .unwrap_err()
            .to_string()
            .starts_with("f: line 4: label 3 is out of range"));
        assert!(single_class(&[-1], 3, "f").is_err());
        assert!(single_class(&[0, 1], 3, "f").unwrap_err().to_string().contains("multi-label"));
    }

    #[test]
    fn multi_label_sets_are_sorted_once_each_and_in_range() {
        assert_eq!(class_set(&[3, 0, 3], 4, "f").unwrap(), vec![0, 3]);
        assert!(class_set(&[], 4, "f").unwrap().is_empty());
        let err = class_set(&[1, 4], 4, "f: line 2").unwrap_err().to_string();
        assert_eq!(err, "f: line 2: label 4 is out of range for 4 classes (0..=3)");
        assert!(class_set(&[-1], 4, "f").is_err());
    }

    #[test]
    fn multilabel_json_keeps_key_order_and_writes_nan_map_as_null() {
        let r = MultiLabelReport {
            videos: 3,
            classes: 4,
            top_k: 20,
            positives: 0,
            gap: 0.0,
            hit1: 0.0,
            perr: 0.0,
            map: f64::NAN,
            map_classes: 0,
        };
        assert_eq!(
            multilabel_json(&r),
            "{\"gap\":0.0,\"hit1\":0.0,\"perr\":0.0,\"map\":null,\"top_k\":20,\"videos\":3,\"classes\":4}\n"
        );
    }

    #[test]
    fn json_keeps_key_order_and_adds_names() {
        let r = Report {
            count: 2,
            top1: 0.5,
            top5: 1.0,
            mean_class_acc: 0.25,
            confusion: Some((vec![0, 2], vec![vec![1, 0], vec![1, 0]])),
        };
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            to_json(&r, Some(&names)),
            "{\"top1\":0.5,\"top5\":1.0,\"mean_class_acc\":0.25,\"count\":2,\"confusion\":{\"classes\":[0,2],\"names\":[\"a\",\"c\"],\"matrix\":[[1,0],[1,0]]}}\n"
        );
    }
}
