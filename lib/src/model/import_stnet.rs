//! The 2019 PaddlePaddle video zoo's StNet parameters (`STNET.pdparams`, written by Paddle 1.x's
//! `fluid.save`: a pickled dict of numpy arrays; `stnet_res_model.py` names them). The ResNet's
//! are named by hand — `conv1_weights`, `bn_conv1_{scale,offset,mean,variance}`,
//! `res{2-5}{a,b,..}_branch2{a,b,c}_weights` and `_branch1_` (projection shortcuts) with their
//! `bn{..}` — and map onto torchvision's names under `backbone.`. The Xception block's layers
//! are named too (`xception_att_conv.w_0`/`.b_0`, `xception_bn.w_0`/`b_0`/`w_1`/`w_2`: scale,
//! shift, moving mean and variance). The temporal blocks' conv3d and batch norm are fluid's
//! numbered `conv3d_N.*` and `batch_norm_N.*` (the only unnamed ones), taken in ascending order
//! whatever the first number; the classifier is `fc_N.w_0` ([in, out], transposed here) and
//! `.b_0`. Sizes come from the shapes: classes from the fc, `seglen` from the stem's input
//! channels (3 per frame), `base_width` from its output; `frames` is the zoo's 7 segments unless
//! set with `-o`. Every shape is checked when the model is filled.

use super::import_ctcn::numbered;
use super::{from_tensors, read_pdparams, resnet_layout, Imported, ModelConfig};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// stnet_res_model.py's block names: `res{stage + 2}{a, b, ...}`, and for ResNet-101/152's
/// res4 `res4a`, `res4b1`, `res4b2`, ...
fn block_name(depth: usize, stage: usize, i: usize) -> String {
    if (depth == 101 || depth == 152) && stage == 2 {
        if i == 0 {
            "res4a".into()
        } else {
            format!("res4b{i}")
        }
    } else {
        format!("res{}{}", stage + 2, (b'a' + i as u8) as char)
    }
}

/// Our name → the fluid name, for every tensor of the backbone.
fn backbone_names(depth: usize) -> Result<Vec<(String, String)>> {
    let Some((_, counts)) = resnet_layout(depth) else { bail!("no ResNet-{depth} for StNet (50, 101, 152)") };
    let mut names = Vec::new();
    let mut conv_bn = |ours: &str, ours_bn: &str, conv: &str| {
        let bn = if conv == "conv1" { "bn_conv1".to_string() } else { format!("bn{}", &conv[3..]) };
        names.push((format!("backbone.{ours}.weight"), format!("{conv}_weights")));
        for (leaf, theirs) in
            [("weight", "scale"), ("bias", "offset"), ("running_mean", "mean"), ("running_var", "variance")]
        {
            names.push((format!("backbone.{ours_bn}.{leaf}"), format!("{bn}_{theirs}")));
        }
    };
    conv_bn("conv1", "bn1", "conv1");
    for (s, &n) in counts.iter().enumerate() {
        for i in 0..n {
            let theirs = block_name(depth, s, i);
            let ours = format!("layer{}.{i}", s + 1);
            for (k, branch) in ["2a", "2b", "2c"].iter().enumerate() {
                conv_bn(
                    &format!("{ours}.conv{}", k + 1),
                    &format!("{ours}.bn{}", k + 1),
                    &format!("{theirs}_branch{branch}"),
                );
            }
            if i == 0 {
                conv_bn(
                    &format!("{ours}.downsample.0"),
                    &format!("{ours}.downsample.1"),
                    &format!("{theirs}_branch1"),
                );
            }
        }
    }
    Ok(names)
}

/// A fluid batch norm `{name}.w_0` .. `.w_2` as ours under `prefix`.
fn fluid_bn(ours: &str, theirs: &str) -> [(String, String); 4] {
    [
        (format!("{ours}.weight"), format!("{theirs}.w_0")),
        (format!("{ours}.bias"), format!("{theirs}.b_0")),
        (format!("{ours}.running_mean"), format!("{theirs}.w_1")),
        (format!("{ours}.running_var"), format!("{theirs}.w_2")),
    ]
}

/// Imports `STNET.pdparams` as `arch` (`stnet_r50`).
pub fn import_stnet_pdparams(path: &Path, arch: &str, overrides: &[String]) -> Result<Imported> {
    let depth: usize = arch.strip_prefix("stnet_r").and_then(|d| d.parse().ok()).unwrap_or(50);
    let mut read: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in read_pdparams(path)? {
        read.insert(name, t.to_dtype(DType::F32)?);
    }
    let tensors_read = read.len();
    let fail = |e: anyhow::Error| anyhow!("{}: {e:#}", path.display());
    let mut names = backbone_names(depth)?;
    let convs = numbered(&read, "conv3d", ".w_0");
    let bns = numbered(&read, "batch_norm", ".w_0");
    let fcs = numbered(&read, "fc", ".w_0");
    if convs.len() != 2 || bns.len() != 2 || fcs.len() != 1 {
        bail!(
            "{}: not the 2019 zoo's StNet: {} conv3d, {} unnamed batch_norm and {} fc layers (want 2, 2 and 1)",
            path.display(),
            convs.len(),
            bns.len(),
            fcs.len()
        );
    }
    for k in 0..2 {
        names.push((format!("temporal.{k}.conv.weight"), format!("conv3d_{}.w_0", convs[k])));
        names.push((format!("temporal.{k}.conv.bias"), format!("conv3d_{}.b_0", convs[k])));
        names.extend(fluid_bn(&format!("temporal.{k}.bn"), &format!("batch_norm_{}", bns[k])));
    }
    for bn in ["bn", "bndw", "bn2"] {
        names.extend(fluid_bn(&format!("xception.{bn}"), &format!("xception_{bn}")));
    }
    let mut tensors = HashMap::new();
    for conv in ["att_conv", "att_2", "att1", "att1_2", "dw"] {
        let theirs = format!("xception_{conv}.w_0");
        let w = read
            .remove(&theirs)
            .ok_or_else(|| fail(anyhow!("no tensor {theirs:?}: not the 2019 zoo's StNet")))?;
        // (3, 1) and 1×1 kernels [O, I, kh, 1] as our Conv3d's [O, I, kh, 1, 1].
        let d = w.dims().to_vec();
        if d.len() != 4 || d[3] != 1 {
            bail!("{}: {theirs} has shape {d:?}, not a (k, 1) kernel", path.display());
        }
        tensors.insert(format!("xception.{conv}.weight"), w.unsqueeze(4)?);
        names.push((format!("xception.{conv}.bias"), format!("xception_{conv}.b_0")));
    }
    let fc = format!("fc_{}.w_0", fcs[0]);
    let w = read.remove(&fc).context("fc")?;
    if w.rank() != 2 {
        bail!("{}: {fc} has shape {:?}, not a fc's [in, out]", path.display(), w.dims());
    }
    tensors.insert("head.fc.weight".into(), w.t()?.contiguous()?);
    names.push(("head.fc.bias".into(), format!("fc_{}.b_0", fcs[0])));
    for (ours, theirs) in names {
        let t = read
            .remove(&theirs)
            .ok_or_else(|| fail(anyhow!("no tensor {theirs:?}: not the 2019 zoo's StNet")))?;
        tensors.insert(ours, t);
    }
    let dropped = read.len();
    if let Some(extra) = read.keys().min() {
        bail!("{}: {dropped} tensors StNet does not have, first {extra:?}", path.display());
    }
    // Temporal conv3d kernels are [C, C, 3, 1, 1] as ours.
    let stem = &tensors["backbone.conv1.weight"];
    let (width, cin) = (stem.dim(0)?, stem.dim(1)?);
    if cin % 3 != 0 {
        bail!("{}: the stem takes {cin} channels, not 3 per frame", path.display());
    }
    let mut config = ModelConfig::defaults(arch);
    config.num_classes = tensors["head.fc.weight"].dim(0)?;
    config.base_width = width;
    config.extra.insert("seglen".into(), (cin / 3).into());
    config.frames = 7 * (cin / 3); // configs/stnet.yaml's seg_num
    if overrides.iter().any(|o| o.split_once('=').is_some_and(|(k, _)| k.trim() == "arch")) {
        bail!("set the architecture with --arch, not -o arch=...");
    }
    config.apply_overrides(overrides).with_context(|| format!("{}: config", path.display()))?;
    let model = from_tensors(config, tensors, &Device::Cpu).map_err(fail)?;
    Ok(Imported { model, state_dict_key: None, layout: "paddle_fluid", tensors_read, dropped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fluid_names_of_the_backbone() {
        let n = backbone_names(50).unwrap();
        let find = |ours: &str| n.iter().find(|(o, _)| o == ours).map(|(_, t)| t.as_str());
        assert_eq!(find("backbone.conv1.weight"), Some("conv1_weights"));
        assert_eq!(find("backbone.bn1.running_var"), Some("bn_conv1_variance"));
        assert_eq!(find("backbone.layer1.0.conv1.weight"), Some("res2a_branch2a_weights"));
        assert_eq!(find("backbone.layer3.5.bn3.bias"), Some("bn4f_branch2c_offset"));
        assert_eq!(find("backbone.layer2.0.downsample.1.running_mean"), Some("bn3a_branch1_mean"));
        assert_eq!(find("backbone.layer2.1.downsample.0.weight"), None);
        // 1 stem + 16 blocks × 3 + 4 shortcuts, 5 tensors each.
        assert_eq!(n.len(), (1 + 48 + 4) * 5);
        assert_eq!(block_name(101, 2, 0), "res4a");
        assert_eq!(block_name(101, 2, 22), "res4b22");
        assert_eq!(block_name(101, 3, 2), "res5c");
    }
}
