//! `veval --captions`: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of generated captions as
//! pycocoevalcap 1.2 computes them. Tokenization and the n-gram metrics are native
//! (`vidkit::metric::captions`); METEOR 1.5 runs the reference's own jar when the user names it
//! (`--meteor-jar`), exactly as pycocoevalcap's `meteor.py` does, and is left out otherwise.

use super::veval::Args;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use vidkit::metric::captions::{caption_scores, ptb_tokenize};

fn name(p: &Path) -> String {
    if p.as_os_str() == "-" {
        "<stdin>".into()
    } else {
        p.display().to_string()
    }
}

fn read_text(path: &Path) -> Result<String> {
    let mut s = String::new();
    vidkit::io::open_input(path)?
        .read_to_string(&mut s)
        .with_context(|| format!("{}: cannot read (UTF-8 text expected)", name(path)))?;
    Ok(s)
}

/// (video, caption) in file order: JSON Lines `{"video", "caption", ...}` as vcaption writes
/// them, or one `{id: caption}` object.
fn read_candidates(path: &Path) -> Result<Vec<(String, String)>> {
    let src = name(path);
    let text = read_text(path)?;
    let mut out: Vec<(String, String)> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&text) {
        if !map.contains_key("caption") {
            for (id, c) in map {
                match c {
                    Value::String(c) => out.push((id, c)),
                    other => bail!("{src}: the caption of {id:?} must be a string, not {other}"),
                }
            }
            return Ok(out);
        }
    }
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{src}: line {}", i + 1);
        let v: Value =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{at}: not a JSON object: {e}"))?;
        let video = match v.get("video") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => bail!("{at}: \"video\" must be a string, not {other}"),
            None => bail!("{at}: no \"video\" (captions are {{\"video\", \"caption\"}} lines or one {{id: caption}} object)"),
        };
        let caption = match v.get("caption") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => bail!("{at}: \"caption\" must be a string, not {other}"),
            None => bail!("{at}: no \"caption\""),
        };
        if let Some(first) = seen.insert(video.clone(), i + 1) {
            bail!("{at}: video {video:?} again (first at line {first}); one caption per video");
        }
        out.push((video, caption));
    }
    Ok(out)
}

/// References per video: `{id: [captions]}`, or ActivityNet Captions
/// `{video: {"duration", "timestamps", "sentences"}}` whose sentences are the video's references.
fn read_references(path: &Path) -> Result<HashMap<String, Vec<String>>> {
    let src = name(path);
    let v: Value =
        serde_json::from_str(&read_text(path)?).map_err(|e| anyhow::anyhow!("{src}: not JSON: {e}"))?;
    let Value::Object(map) = v else {
        bail!("{src}: references must be a {{id: [captions]}} object or ActivityNet Captions JSON")
    };
    let mut out = HashMap::with_capacity(map.len());
    for (id, entry) in map {
        let list = match &entry {
            Value::Array(a) => a,
            Value::Object(o) => match o.get("sentences") {
                Some(Value::Array(a)) => a,
                _ => bail!("{src}: {id:?}: an ActivityNet Captions entry needs a \"sentences\" list"),
            },
            other => bail!("{src}: {id:?}: references must be a list of captions, not {other}"),
        };
        if list.is_empty() {
            bail!("{src}: {id:?} has no reference captions (pycocoevalcap needs at least one)");
        }
        let refs = list
            .iter()
            .enumerate()
            .map(|(j, r)| match r {
                Value::String(s) => Ok(s.clone()),
                other => bail!("{src}: {id:?}: reference {j} must be a string, not {other}"),
            })
            .collect::<Result<Vec<_>>>()?;
        out.insert(id, refs);
    }
    Ok(out)
}

/// The reference key a candidate's video names: itself, else with or without ActivityNet's `v_`.
fn find<'a>(refs: &'a HashMap<String, Vec<String>>, video: &str) -> Option<(&'a String, &'a Vec<String>)> {
    let alt = video.strip_prefix("v_").map(str::to_string).unwrap_or_else(|| format!("v_{video}"));
    refs.get_key_value(video).or_else(|| refs.get_key_value(&alt))
}

/// METEOR 1.5 through its jar, as pycocoevalcap's `meteor.py`: `java -jar -Xmx2G
/// meteor-1.5.jar - - -stdio -l en -norm` in the jar's directory; one `SCORE ||| refs ||| hyp`
/// line per video (the hypothesis without `|||` and with double spaces made single), then one
/// `EVAL` line of their statistics, answered by each video's score and the corpus score.
fn meteor(jar: &Path, cands: &[String], refs: &[Vec<String>]) -> Result<(f64, Vec<f64>)> {
    let jar_s = jar.display().to_string();
    if !jar.is_file() {
        bail!("{jar_s}: --meteor-jar: no such file");
    }
    let jar = jar.canonicalize().with_context(|| format!("{jar_s}: cannot resolve"))?;
    let dir = jar.parent().context("the jar has no directory")?;
    let mut child = Command::new("java")
        .args(["-jar", "-Xmx2G"])
        .arg(&jar)
        .args(["-", "-", "-stdio", "-l", "en", "-norm"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("{jar_s}: cannot run `java` for METEOR (a JRE is needed)"))?;
    let mut stdin = child.stdin.take().context("java stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("java stdout")?);
    let mut read_line = |what: &str| -> Result<String> {
        let mut line = String::new();
        let n = stdout.read_line(&mut line).with_context(|| format!("{jar_s}: reading {what}"))?;
        if n == 0 {
            bail!(
                "{jar_s}: METEOR ended before giving {what} (is it meteor-1.5.jar with its data/ beside it?)"
            );
        }
        Ok(line.trim().to_string())
    };
    let mut eval_line = String::from("EVAL");
    for (c, r) in cands.iter().zip(refs) {
        let hyp = c.replace("|||", "").replace("  ", " ");
        let score_line = format!("SCORE ||| {} ||| {hyp}\n", r.join(" ||| "));
        stdin
            .write_all(score_line.as_bytes())
            .and_then(|_| stdin.flush())
            .with_context(|| format!("{jar_s}: writing"))?;
        let stat = read_line("a SCORE line's statistics")?;
        eval_line += &format!(" ||| {stat}");
    }
    stdin.write_all(format!("{eval_line}\n").as_bytes()).and_then(|_| stdin.flush())?;
    let parse = |s: String| -> Result<f64> {
        s.parse::<f64>().map_err(|_| anyhow::anyhow!("{jar_s}: METEOR answered {s:?}, not a score"))
    };
    let mut per = Vec::with_capacity(cands.len());
    for _ in 0..cands.len() {
        per.push(parse(read_line("a video's score")?)?);
    }
    let total = parse(read_line("the corpus score")?)?;
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    Ok((total, per))
}

/// The metrics JSON (one line) for `args`; the table goes to stderr unless --quiet.
pub fn evaluate(args: &Args) -> Result<String> {
    let gt_path = args.gt.as_deref().context("--captions needs --gt (the reference captions)")?;
    let (src, gsrc) = (name(&args.pred), name(gt_path));
    let cands = read_candidates(&args.pred)?;
    let refs = read_references(gt_path)?;
    if cands.is_empty() {
        bail!("{src}: no captions to evaluate");
    }
    let mut videos = Vec::new();
    let mut used: std::collections::HashSet<&String> = std::collections::HashSet::new();
    let (mut cand_text, mut ref_lists) = (Vec::new(), Vec::new());
    let mut missing = 0usize;
    for (video, caption) in &cands {
        match find(&refs, video) {
            Some((key, r)) => {
                if !used.insert(key) {
                    bail!("{src}: {video:?} and another caption both name {key:?} of {gsrc}");
                }
                videos.push(video.clone());
                cand_text.push(caption.as_str());
                ref_lists.push(r);
            }
            None if args.allow_missing => missing += 1,
            None => bail!("{src}: no references for {video:?} in {gsrc} (--allow-missing skips it)"),
        }
    }
    let mut unmatched: Vec<&String> = refs.keys().filter(|k| !used.contains(k)).collect();
    unmatched.sort();
    if let Some(first) = unmatched.first() {
        if !args.allow_missing {
            bail!(
                "{gsrc}: no caption for {first:?} in {src}{} (--allow-missing scores only the captioned videos)",
                if unmatched.len() > 1 { format!(" and {} more videos", unmatched.len() - 1) } else { String::new() }
            );
        }
        missing += unmatched.len();
    }
    if videos.is_empty() {
        bail!("{src}: no caption has references in {gsrc}; nothing to evaluate");
    }
    // pycocoevalcap tokenizes the references in one run and the candidates in another.
    let flat_refs: Vec<&str> = ref_lists.iter().flat_map(|r| r.iter().map(String::as_str)).collect();
    let empty_refs = flat_refs.iter().filter(|r| r.trim().is_empty()).count();
    let mut tok_refs = ptb_tokenize(&flat_refs).into_iter();
    let refs_t: Vec<Vec<String>> =
        ref_lists.iter().map(|r| tok_refs.by_ref().take(r.len()).collect()).collect();
    let cands_t = ptb_tokenize(&cand_text);
    let scores = caption_scores(&cands_t, &refs_t);
    let meteor = match &args.meteor_jar {
        Some(jar) => Some(meteor(jar, &cands_t, &refs_t)?),
        None => {
            eprintln!(
                "veval: meteor left out: METEOR 1.5 is computed by its jar; name it with --meteor-jar FILE \
                 (pycocoevalcap's wheel ships meteor-1.5.jar) to include it"
            );
            None
        }
    };
    if !args.quiet {
        eprintln!("captions: {} videos from {src}, {} references from {gsrc}", videos.len(), flat_refs.len());
        if missing > 0 {
            eprintln!("  skipped {missing} videos without a counterpart (--allow-missing)");
        }
        if empty_refs > 0 {
            eprintln!(
                "  {empty_refs} empty reference captions (scored as empty, as pycocoevalcap scores them)"
            );
        }
        for (k, b) in scores.bleu.iter().enumerate() {
            eprintln!("  BLEU-{}   {:.4}", k + 1, b);
        }
        if let Some((m, _)) = &meteor {
            eprintln!("  METEOR   {m:.4}");
        }
        eprintln!("  ROUGE-L  {:.4}", scores.rouge_l);
        eprintln!("  CIDEr-D  {:.4}", scores.cider);
    }
    let f = |x: f64| Value::from(x).to_string();
    let fields = |bleu: &[f64; 4], meteor: Option<f64>, rouge: f64, cider: f64| {
        let mut s = String::new();
        for (k, b) in bleu.iter().enumerate() {
            s += &format!("\"bleu{}\":{},", k + 1, f(*b));
        }
        if let Some(m) = meteor {
            s += &format!("\"meteor\":{},", f(m));
        }
        s + &format!("\"rouge_l\":{},\"cider\":{}", f(rouge), f(cider))
    };
    let mut json = format!(
        "{{{},\"videos\":{}",
        fields(&scores.bleu, meteor.as_ref().map(|m| m.0), scores.rouge_l, scores.cider),
        videos.len()
    );
    if args.per_video {
        let rows: Vec<String> = videos
            .iter()
            .zip(&scores.per_video)
            .enumerate()
            .map(|(i, (v, s))| {
                let m = meteor.as_ref().map(|m| m.1[i]);
                format!(
                    "{{\"video\":{},{}}}",
                    Value::from(v.as_str()),
                    fields(&s.bleu, m, s.rouge_l, s.cider)
                )
            })
            .collect();
        json += &format!(",\"per_video\":[{}]", rows.join(","));
    }
    Ok(json + "}\n")
}
