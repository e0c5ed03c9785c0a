//! The task trait of temporal localizers (DESIGN.md §2.5): a model that takes one video's feature
//! sequence [T, C] and gives temporal proposals, or its raw outputs for users who post-process
//! themselves. `vpropose` runs any of them through [`load_localizer`]; the registry names which
//! architectures are localizers and the loader of each.

use super::{
    bmn_spec, bsn_scored, bsn_spec, ctcn_spec, load_bmn, load_bsn, load_ctcn, registry, resize_nearest, Bmn,
    BmnVariant, Bsn, Ctcn, ModelConfig,
};
use crate::proposals::{
    bmn_candidates, bmn_proposals, mmaction2_bmn_candidates, mmaction2_bmn_proposals,
    mmaction2_post_processing, Proposal,
};
use anyhow::{bail, Result};
use ndarray::{Array2, ArrayD};

/// One named output of a localizer for one video (`vpropose --raw` writes each as a record).
pub struct RawOutput {
    pub name: &'static str,
    /// Axis names, as the stream header's `layout`.
    pub layout: &'static str,
    pub array: ArrayD<f32>,
}

pub trait Localizer: Send + Sync {
    fn config(&self) -> &ModelConfig;

    /// Steps and channels of the feature sequence [T, C] it takes.
    fn input_shape(&self) -> (usize, usize);

    /// Its outputs for one video's features [T, C].
    fn raw_outputs(&self, features: &Array2<f32>) -> Result<Vec<RawOutput>>;

    /// Proposals for one video's features, best first, at most `top`, in seconds of the video
    /// (on the normalised [0, 1] scale where its duration is unknown).
    fn propose(&self, features: &Array2<f32>, timing: &VideoTiming, top: usize) -> Result<Vec<Proposal>>;
}

/// What is known of a video's length.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct VideoTiming {
    pub seconds: Option<f64>,
    /// Frames in the video (MMAction2's `duration_frame`).
    pub frames: Option<f64>,
}

/// Refuses features of the wrong shape (naming the fix) or with a non-finite value.
pub fn check_features(features: &Array2<f32>, (steps, width): (usize, usize)) -> Result<()> {
    let (t, c) = features.dim();
    if (t, c) != (steps, width) {
        bail!("features are [{t}, {c}]; the model takes [{steps}, {width}] (resample with vfeat --rescale {steps})");
    }
    if let Some(i) = features.iter().position(|x| !x.is_finite()) {
        bail!("features row {} column {} is not a finite number", i / c, i % c);
    }
    Ok(())
}

impl Bmn {
    /// The start, end and map outputs for one video.
    fn maps(&self, features: &Array2<f32>) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        check_features(features, self.input_shape())?;
        let (t, c) = features.dim();
        // BMN takes channels first: [1, C, T].
        let x = candle_core::Tensor::from_vec(
            features.t().iter().copied().collect::<Vec<f32>>(),
            (1, c, t),
            self.device(),
        )?;
        let o = self.forward(&x)?;
        Ok((
            o.bm.flatten_all()?.to_vec1()?,
            o.start.flatten_all()?.to_vec1()?,
            o.end.flatten_all()?.to_vec1()?,
        ))
    }
}

impl Localizer for Bmn {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn input_shape(&self) -> (usize, usize) {
        (self.spec.tscale, self.spec.feat_dim)
    }

    /// `start` [T], `end` [T] and `bm` [2, D, T] (regression and classification maps; entry
    /// (d, t) the proposal from step t lasting d + 1 steps).
    fn raw_outputs(&self, features: &Array2<f32>) -> Result<Vec<RawOutput>> {
        let (bm, start, end) = self.maps(features)?;
        let (t, d) = (self.spec.tscale, self.spec.dscale);
        Ok(vec![
            RawOutput { name: "start", layout: "T", array: ArrayD::from_shape_vec(vec![t], start)? },
            RawOutput { name: "end", layout: "T", array: ArrayD::from_shape_vec(vec![t], end)? },
            RawOutput { name: "bm", layout: "KDT", array: ArrayD::from_shape_vec(vec![2, d, t], bm)? },
        ])
    }

    /// PaddleVideo's `bmn_metric.py` or MMAction2's `forward_test` + `post_processing`
    /// (by the spec's variant): candidates, soft-NMS, the best `top`.
    fn propose(&self, features: &Array2<f32>, timing: &VideoTiming, top: usize) -> Result<Vec<Proposal>> {
        let (bm, start, end) = self.maps(features)?;
        let d = self.spec.dscale;
        Ok(match self.spec.variant {
            BmnVariant::PaddleVideo => {
                bmn_proposals(bmn_candidates(&bm, &start, &end, d)?, timing.seconds.unwrap_or(1.0), top)
            }
            BmnVariant::MMAction2 => {
                let candidates = mmaction2_bmn_candidates(&bm, &start, &end, d)?;
                let interval = self.spec.feature_extraction_interval;
                match timing.seconds {
                    Some(s) => mmaction2_bmn_proposals(candidates, s, timing.frames, interval, top),
                    None => mmaction2_bmn_proposals(candidates, 1.0, None, interval, top),
                }
            }
        })
    }
}

impl Bsn {
    fn video(&self, features: &Array2<f32>) -> Result<super::BsnVideoOutput> {
        check_features(features, self.input_shape())?;
        self.run_video(features.t().iter().copied().collect())
    }
}

impl Localizer for Bsn {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn input_shape(&self) -> (usize, usize) {
        (self.spec.temporal_dim, self.spec.feat_dim)
    }

    /// The TEM's `action`, `start` and `end` [T] (MMAction2's TEM results, whose CSV adds the
    /// anchors) and the PGM's `candidates` [N, 6], best first by `tmin_score · tmax_score`, with
    /// MMAction2's PEM result columns: tmin, tmax (normalised), tmin_score, tmax_score, the PEM's
    /// score and the product of the three (the score soft-NMS starts from).
    fn raw_outputs(&self, features: &Array2<f32>) -> Result<Vec<RawOutput>> {
        let out = self.video(features)?;
        let t = self.spec.temporal_dim;
        let scored = bsn_scored(&out);
        let rows: Vec<f32> = out
            .candidates
            .iter()
            .zip(&out.pem_scores)
            .zip(&scored)
            .flat_map(|((c, &p), s)| [c.tmin, c.tmax, c.tmin_score, c.tmax_score, p, s.score as f32])
            .collect();
        let n = out.candidates.len();
        Ok(vec![
            RawOutput { name: "action", layout: "T", array: ArrayD::from_shape_vec(vec![t], out.action)? },
            RawOutput { name: "start", layout: "T", array: ArrayD::from_shape_vec(vec![t], out.start)? },
            RawOutput { name: "end", layout: "T", array: ArrayD::from_shape_vec(vec![t], out.end)? },
            RawOutput { name: "candidates", layout: "NK", array: ArrayD::from_shape_vec(vec![n, 6], rows)? },
        ])
    }

    /// MMAction2's TEM, PGM (`generate_candidate_proposals`, `generate_bsp_feature`), `PEM.predict`
    /// and `post_processing` (soft-NMS α 0.75, thresholds 0.65/0.9, times scaled by the whole
    /// snippets' duration).
    fn propose(&self, features: &Array2<f32>, timing: &VideoTiming, top: usize) -> Result<Vec<Proposal>> {
        let out = self.video(features)?;
        let (seconds, frames) = match timing.seconds {
            Some(s) => (s, timing.frames),
            None => (1.0, None),
        };
        let interval = self.spec.feature_extraction_interval;
        Ok(mmaction2_post_processing(bsn_scored(&out), self.spec.soft_nms(), seconds, frames, interval, top))
    }
}

impl Ctcn {
    /// Offsets [A, 2] and class probabilities [A, K] for one video's features [T, W], resized to
    /// the model's steps as the reference's reader does.
    fn video(&self, features: &Array2<f32>) -> Result<(Vec<f32>, Vec<f32>)> {
        let (t, w) = features.dim();
        if w != self.spec.concept_size || t == 0 {
            bail!("features are [{t}, {w}]; the model takes [T, {}]", self.spec.concept_size);
        }
        if let Some(i) = features.iter().position(|x| !x.is_finite()) {
            bail!("features row {} column {} is not a finite number", i / w, i % w);
        }
        let rows = resize_nearest(features, self.spec.img_size);
        let x = candle_core::Tensor::from_vec(
            rows.iter().copied().collect::<Vec<f32>>(),
            (1, self.spec.img_size, w),
            self.device(),
        )?;
        let out = self.forward_t(&x, false)?;
        let probs = candle_nn::ops::softmax_last_dim(&out.cls)?;
        Ok((out.loc.flatten_all()?.to_vec1()?, probs.flatten_all()?.to_vec1()?))
    }
}

impl Localizer for Ctcn {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Any number of steps (resized to `img_size`), `concept_size` wide.
    fn input_shape(&self) -> (usize, usize) {
        (self.spec.img_size, self.spec.concept_size)
    }

    /// `loc` [A, 2] (centre and width offsets) and `cls` [A, K] (class probabilities, the
    /// background first), the outputs the reference's `outputs()` fetches.
    fn raw_outputs(&self, features: &Array2<f32>) -> Result<Vec<RawOutput>> {
        let (loc, probs) = self.video(features)?;
        let (a, k) = (self.spec.total_anchors(), self.spec.num_classes);
        Ok(vec![
            RawOutput { name: "loc", layout: "AK", array: ArrayD::from_shape_vec(vec![a, 2], loc)? },
            RawOutput { name: "cls", layout: "AK", array: ArrayD::from_shape_vec(vec![a, k], probs)? },
        ])
    }

    /// `BoxCoder.decode` (score threshold, NMS, Gaussian soft-NMS per class) and
    /// `detection_metrics.py`'s segments; labelled detections, best first.
    fn propose(&self, features: &Array2<f32>, timing: &VideoTiming, top: usize) -> Result<Vec<Proposal>> {
        let (loc, probs) = self.video(features)?;
        let dets = crate::proposals::ctcn::ctcn_detections(&loc, &probs, &self.spec);
        Ok(crate::proposals::ctcn::ctcn_segments(
            &dets,
            self.spec.img_size,
            timing.seconds.unwrap_or(1.0),
            top,
        ))
    }
}

/// What a registry row of a localizer calls to load its model file (config already read).
pub type LocalizerLoader = fn(&std::path::Path, &ModelConfig) -> Result<Box<dyn Localizer>>;

/// Loads a localizer model file, whichever registered family it is; any other model is refused
/// with what it is and which tools run it.
pub fn load_localizer(path: &std::path::Path) -> Result<Box<dyn Localizer>> {
    let cfg = super::read_config(path)?;
    let info = registry::require_task(&cfg.arch, &[registry::Task::Localizer])
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
    match info.builder {
        registry::Builder::Localizer(load) => load(path, &cfg),
        _ => bail!("{}: {} is not a localizer", path.display(), cfg.arch),
    }
}

/// C-TCN (the 2019 zoo's detector).
pub(super) fn load_ctcn_localizer(path: &std::path::Path, cfg: &ModelConfig) -> Result<Box<dyn Localizer>> {
    ctcn_spec(cfg).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
    Ok(Box::new(load_ctcn(path)?))
}

/// BSN (MMAction2's TEM and PEM in one file).
pub(super) fn load_bsn_localizer(path: &std::path::Path, cfg: &ModelConfig) -> Result<Box<dyn Localizer>> {
    bsn_spec(cfg).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
    Ok(Box::new(load_bsn(path)?))
}

/// BMN (PaddleVideo's or MMAction2's variant, by its spec).
pub(super) fn load_bmn_localizer(path: &std::path::Path, cfg: &ModelConfig) -> Result<Box<dyn Localizer>> {
    bmn_spec(cfg).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
    Ok(Box::new(load_bmn(path)?))
}
