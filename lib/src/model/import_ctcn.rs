//! The 2019 PaddlePaddle video zoo's C-TCN parameters (`CTCN.pdparams`, written by Paddle 1.x's
//! `fluid.save`: a pickled dict of numpy arrays). fluid names most of them by layer type and
//! creation count — `conv2d_N.w_0` (and `.b_0` where the convolution has a bias),
//! `batch_norm_N.w_0`/`b_0` (scale, shift) and `.w_1`/`.w_2` (moving mean and variance) — and
//! the shared heads by hand (`loc_pred_conv1_weights`, `cls_pred_conv2_bias`, ...). The numbers
//! follow the order `fpn_ctcn.py` creates its layers: the two stems, each bottleneck's conv0,
//! conv1, conv2 and projection shortcut, then the pyramid (p6–p9), the laterals (c5, c4, c3, c2)
//! and the smoothing convolutions (p4, p3, p2). They are matched in that order, whatever the
//! first number (a program built after others starts higher), and every shape is checked.

use super::import_bsn::apply_spec_overrides;
use super::{ctcn::STAGES, ctcn_config, ctcn_from_tensors, CtcnSpec, ModelConfig};
use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Our layers in the reference's creation order: those with batch norm, then the plain ones.
fn creation_order() -> (Vec<String>, Vec<String>) {
    let mut bn = vec!["stem1".to_string(), "stem2".to_string()];
    let mut cin = 64;
    for (s, &(planes, blocks)) in STAGES.iter().enumerate() {
        for j in 0..blocks {
            let stride = if j == 0 && s > 0 { 2 } else { 1 };
            for c in ["conv0", "conv1", "conv2"] {
                bn.push(format!("layer{}.{j}.{c}", s + 1));
            }
            if !(cin == planes * 4 && stride == 1) {
                bn.push(format!("layer{}.{j}.shortcut", s + 1));
            }
            cin = planes * 4;
        }
    }
    let plain = ["p6", "p7", "p8", "p9", "lat5", "lat4", "lat3", "lat2", "smooth4", "smooth3", "smooth2"];
    (bn, plain.iter().map(|s| s.to_string()).collect())
}

/// The numbers N of names `{prefix}_N.{leaf}`, ascending (fluid's creation counts).
pub(super) fn numbered(names: &HashMap<String, Tensor>, prefix: &str, leaf: &str) -> Vec<usize> {
    let mut n: Vec<usize> = names
        .keys()
        .filter_map(|k| k.strip_prefix(prefix)?.strip_prefix('_')?.strip_suffix(leaf)?.parse().ok())
        .collect();
    n.sort_unstable();
    n
}

/// A (k, 1) or (1, W) fluid kernel [O, I, kh, kw] as ours [O, I, kh·kw].
fn squeeze_kernel(t: &Tensor, what: &str) -> Result<Tensor> {
    let d = t.dims();
    if d.len() != 4 || (d[2] != 1 && d[3] != 1) {
        bail!("{what}: kernel {d:?} is not a (k, 1) or (1, W) convolution's");
    }
    Ok(t.reshape((d[0], d[1], d[2] * d[3]))?)
}

/// Imports `CTCN.pdparams`: sizes from the heads (concepts from the (1, W) kernels, anchors and
/// classes from their outputs), `img_size` 512 and the TEST decoding settings of `ctcn.yaml`
/// unless set with `-o`.
pub fn import_ctcn_pdparams(
    path: &Path,
    overrides: &[String],
) -> Result<(ModelConfig, Vec<(String, Tensor)>)> {
    let mut read: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in super::read_pdparams(path)? {
        read.insert(name, t.to_dtype(DType::F32)?);
    }
    let fail = |e: anyhow::Error| anyhow!("{}: {e:#}", path.display());
    let get = |name: &str| -> Result<Tensor> {
        read.get(name).cloned().ok_or_else(|| anyhow!("no tensor {name:?}: not the 2019 zoo's C-TCN"))
    };
    let loc2 = get("loc_pred_conv2_weights").map_err(fail)?;
    let cls2 = get("cls_pred_conv2_weights").map_err(fail)?;
    let (ld, cd) = (loc2.dims().to_vec(), cls2.dims().to_vec());
    if ld.len() != 4 || cd.len() != 4 || ld[0] % 2 != 0 || ld[0] < 2 || cd[0] % (ld[0] / 2) != 0 {
        bail!(
            "{}: head kernels {ld:?} and {cd:?} do not fit C-TCN's (anchors × 2, anchors × classes)",
            path.display()
        );
    }
    let anchors = ld[0] / 2;
    let base = CtcnSpec {
        concept_size: ld[3],
        // The location head's hidden width is 4·width.
        width: ld[1] / 4,
        num_classes: cd[0] / anchors,
        anchor_num: (anchors - 1) / 2,
        ..Default::default()
    };
    let spec: CtcnSpec = apply_spec_overrides(&base, overrides, "ctcn").map_err(fail)?;
    spec.validate().map_err(fail)?;
    if spec.anchors_per_step() != anchors {
        bail!(
            "{}: {anchors} anchors per step; C-TCN's coder makes an odd number (1 + 2 · anchor_num)",
            path.display()
        );
    }
    let (bn_layers, plain) = creation_order();
    let convs = numbered(&read, "conv2d", ".w_0");
    let bns = numbered(&read, "batch_norm", ".w_0");
    if convs.len() != bn_layers.len() + plain.len() || bns.len() != bn_layers.len() {
        bail!(
            "{}: {} conv2d and {} batch_norm parameters; C-TCN (ResNet-50 backbone) has {} and {}",
            path.display(),
            convs.len(),
            bns.len(),
            bn_layers.len() + plain.len(),
            bn_layers.len()
        );
    }
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut used = 0usize;
    let mut take = |name: String, what: &str| -> Result<Tensor> {
        used += 1;
        read.get(&name).cloned().ok_or_else(|| anyhow!("{}: no tensor {name:?} ({what})", path.display()))
    };
    for (i, layer) in bn_layers.iter().enumerate() {
        let (c, b) = (convs[i], bns[i]);
        if read.contains_key(&format!("conv2d_{c}.b_0")) {
            bail!("{}: conv2d_{c} has a bias; {layer} (before batch norm) has none", path.display());
        }
        let w = take(format!("conv2d_{c}.w_0"), layer)?;
        tensors.insert(format!("{layer}.conv.weight"), squeeze_kernel(&w, layer)?);
        for (leaf, ours) in
            [("w_0", "weight"), ("b_0", "bias"), ("w_1", "running_mean"), ("w_2", "running_var")]
        {
            let t = take(format!("batch_norm_{b}.{leaf}"), layer)?;
            tensors.insert(format!("{layer}.bn.{ours}"), t);
        }
    }
    for (j, layer) in plain.iter().enumerate() {
        let c = convs[bn_layers.len() + j];
        let w = take(format!("conv2d_{c}.w_0"), layer)?;
        tensors.insert(format!("{layer}.weight"), squeeze_kernel(&w, layer)?);
        tensors.insert(format!("{layer}.bias"), take(format!("conv2d_{c}.b_0"), layer)?);
    }
    for (fluid, ours) in [
        ("loc_pred_conv1", "loc1"),
        ("loc_pred_conv2", "loc2"),
        ("cls_pred_conv1", "cls1"),
        ("cls_pred_conv2", "cls2"),
    ] {
        let w = take(format!("{fluid}_weights"), ours)?;
        tensors.insert(format!("{ours}.weight"), squeeze_kernel(&w, ours)?);
        tensors.insert(format!("{ours}.bias"), take(format!("{fluid}_bias"), ours)?);
    }
    if used != read.len() {
        bail!(
            "{}: {} tensors that C-TCN does not have (another model's parameters?)",
            path.display(),
            read.len() - used
        );
    }
    let cfg = ctcn_config(&spec)?;
    let mut named: Vec<(String, Tensor)> = tensors.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    ctcn_from_tensors(cfg.clone(), tensors).map_err(fail)?;
    Ok((cfg, named))
}
