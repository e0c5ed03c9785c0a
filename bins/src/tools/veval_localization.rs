//! `veval --proposals` and `veval --detection`: temporal localization metrics over vpropose
//! output or an ActivityNet result JSON, against ActivityNet or THUMOS14 ground truth. The
//! formulas live in `vidkit::metric::localization`.

use super::veval::Args;
use anyhow::{bail, Context, Result};
use serde_json::json;
use vidkit::data::{align_prediction_ids, read_segment_ground_truth, read_segment_predictions};
use vidkit::metric::localization::{detection_map, linspace, proposal_recall};

/// The metrics JSON (one line) for `args`; the table goes to stderr unless --quiet.
pub fn evaluate(args: &Args) -> Result<String> {
    let gt_path = args.gt.as_deref().context("--gt is required")?;
    let gt = read_segment_ground_truth(gt_path, &args.subset)?;
    // Predictions named by path or with/without `v_` still meet their ground truth.
    let preds = align_prediction_ids(&gt, read_segment_predictions(&args.pred)?);
    let thumos = gt_path.is_dir();
    let thresholds = match &args.tiou {
        Some(t) => {
            if t.is_empty() || t.iter().any(|x| !(0.0..=1.0).contains(x)) {
                bail!("--tiou thresholds must lie in [0, 1]");
            }
            t.clone()
        }
        None if thumos && args.detection => linspace(0.3, 0.7, 5),
        None => linspace(0.5, 0.95, 10),
    };
    let name = |p: &std::path::Path| p.display().to_string();
    if args.proposals {
        if !(args.max_an > 0.0 && args.max_an.is_finite()) {
            bail!("--max-an must be a positive number");
        }
        let m = proposal_recall(&gt, &preds, Some(args.max_an), &thresholds)
            .with_context(|| format!("{} against {}", name(&args.pred), name(gt_path)))?;
        // AR at AN = k: the curve's point at k (interpolated where the budgets miss it).
        let ar_at = |k: f64| -> Option<f64> {
            let an = &m.proposals_per_video;
            if k < an[0] || k > an[an.len() - 1] + 1e-9 {
                return None;
            }
            let j = an.iter().position(|&a| a >= k - 1e-9).unwrap_or(an.len() - 1);
            if j == 0 || (an[j] - k).abs() < 1e-9 {
                return Some(m.avg_recall[j]);
            }
            let w = (k - an[j - 1]) / (an[j] - an[j - 1]);
            Some(m.avg_recall[j - 1] + w * (m.avg_recall[j] - m.avg_recall[j - 1]))
        };
        let mut at = serde_json::Map::new();
        for k in [1u32, 5, 10, 100] {
            if let Some(v) = ar_at(k as f64) {
                at.insert(k.to_string(), v.into());
            }
        }
        if !args.quiet {
            eprintln!("proposals: {} videos, tIoU {}", m.videos, fmt_list(&thresholds));
            eprintln!("  AUC      {:6.2} %", 100.0 * m.auc);
            // In AN order (the JSON object's keys sort as strings).
            for k in [1u32, 5, 10, 100] {
                if let Some(v) = at.get(&k.to_string()).and_then(|v| v.as_f64()) {
                    eprintln!("  AR@{k:<5} {:6.2} %", 100.0 * v);
                }
            }
        }
        if let Some(path) = &args.plot {
            write_plot(path, &m.proposals_per_video, &m.avg_recall, m.auc)?;
        }
        let j = json!({
            "auc": m.auc,
            "an": m.proposals_per_video,
            "ar_an": m.avg_recall,
            "ar_at": at,
            "tiou": thresholds,
            "videos": m.videos,
        });
        return Ok(format!("{j}\n"));
    }
    let m = detection_map(&gt, &preds, &thresholds)
        .with_context(|| format!("{} against {}", name(&args.pred), name(gt_path)))?;
    if !args.quiet {
        eprintln!("detection: {} videos, {} classes", m.videos, m.classes.len());
        if m.other_class_detections > 0 {
            eprintln!(
                "  {} detections of classes the ground truth does not have: left out",
                m.other_class_detections
            );
        }
        for (t, v) in thresholds.iter().zip(&m.map_at_tiou) {
            eprintln!("  mAP@{t:.2}  {:6.2} %", 100.0 * v);
        }
        eprintln!("  average   {:6.2} %", 100.0 * m.map);
    }
    let classes: Vec<_> = m
        .classes
        .iter()
        .enumerate()
        .map(|(c, name)| json!({"class": name, "ap": m.ap.iter().map(|row| row[c]).collect::<Vec<_>>()}))
        .collect();
    let j = json!({
        "map": m.map,
        "tiou": thresholds,
        "map_at_tiou": m.map_at_tiou,
        "classes": classes,
        "videos": m.videos,
    });
    Ok(format!("{j}\n"))
}

/// The AR@AN curve as an SVG: average recall (0 to 1) against the average number of proposals
/// per video, with the area in the title.
fn write_plot(path: &std::path::Path, an: &[f64], ar: &[f64], auc: f64) -> Result<()> {
    if path.extension().and_then(|e| e.to_str()) != Some("svg") {
        bail!("{}: --plot writes SVG; name the file *.svg", path.display());
    }
    let (w, h, left, bottom, top, right) = (640.0, 420.0, 60.0, 50.0, 40.0, 20.0);
    let max_an = an.last().copied().unwrap_or(1.0).max(1e-9);
    let x = |v: f64| left + v / max_an * (w - left - right);
    let y = |v: f64| h - bottom - v * (h - bottom - top);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">AR@AN (AUC {:.2} %)</text>\n",
        w / 2.0,
        100.0 * auc
    );
    for k in 0..=5 {
        let v = k as f64 / 5.0;
        svg += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.1}</text>\n",
            w - right,
            left - 6.0,
            y(v) + 4.0,
            y = y(v)
        );
        let a = max_an * k as f64 / 5.0;
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{a:.0}</text>\n",
            x(a),
            h - bottom + 18.0
        );
    }
    svg += &format!(
        "<line x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{left}\" x2=\"{}\" y1=\"{b}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">average number of proposals per video (AN)</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">average recall</text>\n",
        h - bottom,
        w - right,
        (left + w - right) / 2.0,
        h - 10.0,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0,
        b = h - bottom,
    );
    let points: Vec<String> = an.iter().zip(ar).map(|(&a, &r)| format!("{:.2},{:.2}", x(a), y(r))).collect();
    svg += &format!(
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>\n</svg>\n",
        points.join(" ")
    );
    let mut f = vidkit::io::AtomicFile::create(path)?;
    std::io::Write::write_all(&mut f, svg.as_bytes())
        .with_context(|| format!("{}: cannot write", path.display()))?;
    f.commit()
}

fn fmt_list(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" ")
}
