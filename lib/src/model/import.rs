//! Importers: the PyTorch checkpoints users already own → vidkit models (DESIGN.md §2.4).
//!
//! Reading: a `.pth/.pt/.pyth` written by `torch.save` is a zip archive holding a pickle and the
//! raw tensor storages. candle's pickle reader interprets the opcodes itself and only rebuilds
//! dicts and tensors (`torch._utils._rebuild_tensor_v2` and friends are recognised by name, never
//! imported or called), so no code from the file runs. The state dict is taken from the top level,
//! or from under `state_dict` (mmaction2), `model_state` (pytorchvideo, PySlowFast) or `model`.
//!
//! Names: every layout below maps onto ours (torchvision's ResNet names under `backbone.`, the
//! classifier as `head.fc`):
//! * torchvision ResNet: `conv1.weight`, `bn1.*`, `layer1.0.conv1.weight`, `layer1.0.bn1.*`,
//!   `layer1.0.downsample.{0,1}.*`, `fc.*`;
//! * mmaction2 ResNet / ResNetTSM (mmcv ConvModule, see mmaction2
//!   `ResNet._load_torchvision_checkpoint`): `backbone.conv1.conv.weight`, `backbone.conv1.bn.*`,
//!   `backbone.layer1.0.conv1.conv.weight`, `...conv1.bn.*`, `...downsample.conv/bn.*`,
//!   `cls_head.fc_cls.*`; TSM's `TemporalShift` wraps a shifted block's conv as
//!   `conv1.conv.net.weight`;
//! * the TSM authors' repository (mit-han-lab/temporal-shift-module): `base_model.` for the
//!   backbone, `layer1.0.conv1.net.weight` for shifted convs, `new_fc.*` for the classifier;
//! * our own names, unchanged;
//! * for the 3D CNNs, pytorchvideo's names (ours) and mmaction2's ResNet3d: see `import_3d`.
//!
//! `module.` prefixes (DataParallel) are stripped and BatchNorm's `num_batches_tracked` dropped.
//! Whether the weights fit is decided by `from_tensors`, which names the first difference.

use super::{from_tensors, resnet_layout, LoadedModel, ModelConfig};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Where a state dict may sit inside a checkpoint, tried in this order after the top level.
pub const STATE_DICT_KEYS: [&str; 3] = ["state_dict", "model_state", "model"];

/// A checkpoint turned into a vidkit model, with what was learnt on the way (for the summary).
pub struct Imported {
    pub model: LoadedModel,
    /// The key the state dict was under (`None`: the top level).
    pub state_dict_key: Option<String>,
    /// The naming scheme recognised: `torchvision`, `mmaction2`, `tsm-repo` or `vidkit`.
    pub layout: &'static str,
    /// Tensors read from the file, and how many of them were dropped (`num_batches_tracked`).
    pub tensors_read: usize,
    pub dropped: usize,
}

/// Named tensors, sorted by name.
pub type NamedTensors = Vec<(String, Tensor)>;

/// Reads the tensors of a PyTorch checkpoint's state dict, with the key it was found under.
pub fn read_torch_state_dict(path: &Path) -> Result<(NamedTensors, Option<String>)> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext == "pdparams" {
        bail!("{}: a Paddle checkpoint (.pdparams), not a PyTorch one", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    super::torch_state_dict_from_bytes(&bytes, path)
}

/// The naming scheme a checkpoint key belongs to, as far as one key tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scheme {
    Torchvision,
    Mmaction2,
    TsmRepo,
}

/// One checkpoint key mapped to ours; `Ok(None)` for keys that carry no weights we use.
fn map_name(name: &str) -> Result<Option<(String, Option<Scheme>)>> {
    let mut n = name;
    while let Some(rest) = n.strip_prefix("module.") {
        n = rest;
    }
    if n.ends_with("num_batches_tracked") {
        return Ok(None);
    }
    if let Some(p) = n.strip_prefix("cls_head.fc_cls.") {
        return Ok(Some((format!("head.fc.{p}"), Some(Scheme::Mmaction2))));
    }
    if let Some(p) = n.strip_prefix("new_fc.") {
        return Ok(Some((format!("head.fc.{p}"), Some(Scheme::TsmRepo))));
    }
    if let Some(p) = n.strip_prefix("fc.") {
        return Ok(Some((format!("head.fc.{p}"), Some(Scheme::Torchvision))));
    }
    if n.starts_with("head.") || n.starts_with("cls_head.") {
        return Ok(Some((n.to_string(), None)));
    }
    let (body, prefix_scheme) = if let Some(b) = n.strip_prefix("backbone.") {
        (b, None)
    } else if let Some(b) = n.strip_prefix("base_model.") {
        (b, Some(Scheme::TsmRepo))
    } else {
        (n, Some(Scheme::Torchvision))
    };
    let (mapped, scheme) = backbone_name(body).with_context(|| format!("checkpoint tensor {name:?}"))?;
    Ok(Some((format!("backbone.{mapped}"), scheme.or(prefix_scheme))))
}

/// A backbone key (prefix removed) → torchvision's name.
fn backbone_name(body: &str) -> Result<(String, Option<Scheme>)> {
    let parts: Vec<&str> = body.split('.').collect();
    let is_layer = |p: &str| p.strip_prefix("layer").is_some_and(|d| d.parse::<u32>().is_ok());
    let mm = Some(Scheme::Mmaction2);
    match parts.as_slice() {
        // mmaction2 stem: ConvModule conv1 = conv + bn
        ["conv1", "conv", rest @ ..] => Ok((join("conv1", rest), mm)),
        ["conv1", "bn", rest @ ..] => Ok((join("bn1", rest), mm)),
        [layer, _, "net", ..] if is_layer(layer) => bail!(
            "a TSM checkpoint with shift_place='block' (the whole block shifted); vidkit's TSM \
             shifts the residual branch only ('blockres', mmaction2's default)"
        ),
        [layer, block, conv, rest @ ..] if is_layer(layer) && conv.starts_with("conv") => {
            let head = format!("{layer}.{block}");
            match rest {
                // mmaction2 ConvModule, its conv possibly wrapped by TemporalShift (`.net`)
                ["conv", "net", p @ ..] | ["conv", p @ ..] => Ok((join(&format!("{head}.{conv}"), p), mm)),
                ["bn", p @ ..] => Ok((join(&format!("{head}.bn{}", &conv[4..]), p), mm)),
                // the TSM repository wraps torchvision's conv itself
                ["net", p @ ..] => Ok((join(&format!("{head}.{conv}"), p), Some(Scheme::TsmRepo))),
                _ => Ok((body.to_string(), None)),
            }
        }
        [layer, block, "downsample", "conv", rest @ ..] if is_layer(layer) => {
            Ok((join(&format!("{layer}.{block}.downsample.0"), rest), mm))
        }
        [layer, block, "downsample", "bn", rest @ ..] if is_layer(layer) => {
            Ok((join(&format!("{layer}.{block}.downsample.1"), rest), mm))
        }
        _ => Ok((body.to_string(), None)),
    }
}

fn join(head: &str, rest: &[&str]) -> String {
    if rest.is_empty() {
        head.to_string()
    } else {
        format!("{head}.{}", rest.join("."))
    }
}

/// (stage, block) of every block whose `conv1` the checkpoint wraps in a temporal shift.
fn shift_wrapped_blocks(names: &[String]) -> BTreeSet<(usize, usize)> {
    let mut out = BTreeSet::new();
    for name in names {
        let parts: Vec<&str> = name.split('.').collect();
        if let Some(i) = parts.iter().position(|p| p.starts_with("layer")) {
            if let (Some(stage), Some(block), Some(conv)) = (
                parts[i].strip_prefix("layer").and_then(|d| d.parse::<usize>().ok()),
                parts.get(i + 1).and_then(|b| b.parse::<usize>().ok()),
                parts.get(i + 2),
            ) {
                let wrapped = parts.get(i + 3) == Some(&"net")
                    || (parts.get(i + 3) == Some(&"conv") && parts.get(i + 4) == Some(&"net"));
                if conv.starts_with("conv") && wrapped {
                    out.insert((stage, block));
                }
            }
        }
    }
    out
}

/// The blocks our TSM shifts (`ResNet::new`: every block, or only the even-numbered ones when
/// layer3 has 23 or more, as mmaction2's `ResNetTSM` n_round = 2).
fn shifted_blocks(depth: usize) -> BTreeSet<(usize, usize)> {
    let Some((_, counts)) = resnet_layout(depth) else { return BTreeSet::new() };
    let every = if counts[2] >= 23 { 2 } else { 1 };
    let mut out = BTreeSet::new();
    for (s, &n) in counts.iter().enumerate() {
        for b in (0..n).step_by(every) {
            out.insert((s + 1, b));
        }
    }
    out
}

/// The ResNet depth whose layout the mapped names show, when it is a registered one.
fn guess_depth(names: &HashMap<String, Tensor>) -> Option<usize> {
    let mut blocks = [0usize; 4];
    let mut bottleneck = false;
    for name in names.keys() {
        let mut parts = name.split('.');
        if parts.next() != Some("backbone") {
            continue;
        }
        let Some(stage) =
            parts.next().and_then(|l| l.strip_prefix("layer")).and_then(|d| d.parse::<usize>().ok())
        else {
            continue;
        };
        let Some(block) = parts.next().and_then(|b| b.parse::<usize>().ok()) else { continue };
        if (1..=4).contains(&stage) {
            blocks[stage - 1] = blocks[stage - 1].max(block + 1);
        }
        bottleneck |= parts.next() == Some("conv3");
    }
    [18, 34, 50, 101, 152].into_iter().find(|&d| {
        resnet_layout(d).is_some_and(|(kind, counts)| {
            counts == blocks && (kind == super::resnet::BlockKind::Bottleneck) == bottleneck
        })
    })
}

/// The ResNet depth of a registered `tsn_rNN` / `tsm_rNN` name.
fn arch_depth(arch: &str) -> Option<(bool, usize)> {
    let (family, depth) = arch.split_once("_r")?;
    let tsm = match family {
        "tsn" => false,
        "tsm" => true,
        _ => return None,
    };
    Some((tsm, depth.parse().ok()?))
}

/// Maps checkpoint tensors onto `arch`'s names; returns them with the scheme recognised and the
/// number dropped.
fn map_tensors(arch: &str, tensors: NamedTensors) -> Result<(HashMap<String, Tensor>, &'static str, usize)> {
    let originals: Vec<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
    let mut out: HashMap<String, Tensor> = HashMap::new();
    let mut from: HashMap<String, String> = HashMap::new();
    let mut schemes = BTreeSet::new();
    let mut dropped = 0;
    for (name, t) in tensors {
        let Some((mapped, scheme)) = map_name(&name)? else {
            dropped += 1;
            continue;
        };
        if let Some(s) = scheme {
            schemes.insert(s);
        }
        if let Some(first) = from.get(&mapped) {
            bail!("checkpoint tensors {first:?} and {name:?} both map to {mapped:?}");
        }
        from.insert(mapped.clone(), name);
        out.insert(mapped, t);
    }
    // A TSM checkpoint must shift exactly where our TSM shifts, and a TSN must not lose a shift.
    let wrapped = shift_wrapped_blocks(&originals);
    if let Some((tsm, depth)) = arch_depth(arch) {
        if !wrapped.is_empty() && !tsm {
            bail!(
                "the checkpoint is a TSM model (temporal shifts around {} convs); import it as tsm_r{depth}",
                wrapped.len()
            );
        }
        if !wrapped.is_empty() && wrapped != shifted_blocks(depth) {
            let ours = shifted_blocks(depth);
            let (s, b) = wrapped.symmetric_difference(&ours).next().expect("sets differ");
            bail!(
                "the checkpoint shifts other blocks than {arch} does (first difference: layer{s}.{b}; \
                 {} shifted blocks there, {} here)",
                wrapped.len(),
                ours.len()
            );
        }
    }
    // Names that are the same in several schemes say nothing; the most specific one seen wins.
    let layout = if schemes.contains(&Scheme::Mmaction2) {
        "mmaction2"
    } else if schemes.contains(&Scheme::TsmRepo) {
        "tsm-repo"
    } else if schemes.contains(&Scheme::Torchvision) {
        "torchvision"
    } else {
        "vidkit"
    };
    Ok((out, layout, dropped))
}

/// The config of an imported `arch`: its defaults, `num_classes` from the classifier and
/// `base_width` from the output channels of the `stem` conv, then the `-o key=value` overrides.
pub(super) fn config_from_weights(
    path: &Path,
    arch: &str,
    tensors: &HashMap<String, Tensor>,
    stem: &str,
    overrides: &[String],
) -> Result<ModelConfig> {
    if overrides.iter().any(|o| o.split_once('=').is_some_and(|(k, _)| k.trim() == "arch")) {
        bail!("set the architecture with --arch, not -o arch=...");
    }
    let mut config = ModelConfig::defaults(arch);
    if let Some(fc) = tensors.get("head.fc.weight") {
        config.num_classes = fc.dims().first().copied().unwrap_or(0);
    }
    if let Some(stem) = tensors.get(stem) {
        config.base_width = stem.dims().first().copied().unwrap_or(config.base_width);
    }
    config.apply_overrides(overrides).with_context(|| format!("{}: config", path.display()))?;
    Ok(config)
}

/// Imports a checkpoint as `arch`: Paddle's `.pdparams` (and any file for a PaddleVideo
/// architecture) through `import_paddle`, everything else as PyTorch's.
pub fn import_checkpoint(path: &Path, arch: &str, overrides: &[String]) -> Result<Imported> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if arch.starts_with("stnet_") {
        // The 2019 zoo's fluid parameters.
        super::import_stnet_pdparams(path, arch, overrides)
    } else if ext == "pdparams" || super::PADDLE_ARCHS.contains(&arch) {
        super::import_paddle(path, arch, overrides)
    } else {
        import_torch(path, arch, overrides)
    }
}

/// Imports a PyTorch checkpoint as `arch`: reads its state dict, maps the names, builds the config
/// (`num_classes` and `base_width` from the weights unless overridden, then `-o key=value`
/// overrides) and fills the model, refusing weights that do not fit. Errors name `path`.
pub fn import_torch(path: &Path, arch: &str, overrides: &[String]) -> Result<Imported> {
    use super::Task;
    super::require_task(arch, &[Task::Recognizer, Task::SequenceRecognizer])?;
    if arch == "timesformer_vit_b" {
        return super::import_timesformer(path, arch, overrides);
    }
    let (tensors, state_dict_key) = read_torch_state_dict(path)?;
    let tensors_read = tensors.len();
    if ModelConfig::is_sequence_arch(arch) {
        let (tensors, mut config, dropped) =
            super::sequence::adopt_checkpoint(arch, tensors).with_context(|| path.display().to_string())?;
        config.apply_overrides(overrides).with_context(|| format!("{}: config", path.display()))?;
        let model =
            from_tensors(config, tensors, &Device::Cpu).map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
        return Ok(Imported { model, state_dict_key, layout: "vidkit", tensors_read, dropped });
    }
    if super::MvitOptions::for_arch(arch).is_some() {
        return super::import_mvit::import_mvit(path, arch, overrides, tensors, state_dict_key);
    }
    if ModelConfig::is_zoo_arch(arch) {
        return super::import_3d::import_zoo(path, arch, overrides, tensors, state_dict_key);
    }
    let (tensors, layout, dropped) =
        map_tensors(arch, tensors).with_context(|| path.display().to_string())?;
    let config = config_from_weights(path, arch, &tensors, "backbone.conv1.weight", overrides)?;

    let guessed = guess_depth(&tensors);
    let model = from_tensors(config, tensors, &Device::Cpu).map_err(|e| {
        let hint = match (guessed, arch_depth(arch)) {
            (Some(g), Some((_, d))) if g != d => {
                format!(" (the checkpoint looks like a ResNet-{g}: try --arch tsn_r{g} or tsm_r{g})")
            }
            _ => String::new(),
        };
        anyhow!("{}: {e:#}{hint}", path.display())
    })?;
    Ok(Imported { model, state_dict_key, layout, tensors_read, dropped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str) -> Option<String> {
        map_name(name).unwrap().map(|(n, _)| n)
    }

    #[test]
    fn torchvision_names() {
        assert_eq!(m("conv1.weight").unwrap(), "backbone.conv1.weight");
        assert_eq!(m("bn1.running_var").unwrap(), "backbone.bn1.running_var");
        assert_eq!(m("layer1.0.conv1.weight").unwrap(), "backbone.layer1.0.conv1.weight");
        assert_eq!(m("layer4.2.bn3.bias").unwrap(), "backbone.layer4.2.bn3.bias");
        assert_eq!(m("layer2.0.downsample.0.weight").unwrap(), "backbone.layer2.0.downsample.0.weight");
        assert_eq!(
            m("layer2.0.downsample.1.running_mean").unwrap(),
            "backbone.layer2.0.downsample.1.running_mean"
        );
        assert_eq!(m("fc.weight").unwrap(), "head.fc.weight");
        assert_eq!(m("module.module.fc.bias").unwrap(), "head.fc.bias");
        assert_eq!(m("bn1.num_batches_tracked"), None);
    }

    #[test]
    fn mmaction2_names() {
        assert_eq!(m("backbone.conv1.conv.weight").unwrap(), "backbone.conv1.weight");
        assert_eq!(m("backbone.conv1.bn.weight").unwrap(), "backbone.bn1.weight");
        assert_eq!(m("backbone.layer1.0.conv1.conv.weight").unwrap(), "backbone.layer1.0.conv1.weight");
        assert_eq!(m("backbone.layer1.0.conv1.conv.net.weight").unwrap(), "backbone.layer1.0.conv1.weight");
        assert_eq!(m("backbone.layer3.5.conv3.bn.running_var").unwrap(), "backbone.layer3.5.bn3.running_var");
        assert_eq!(
            m("backbone.layer2.0.downsample.conv.weight").unwrap(),
            "backbone.layer2.0.downsample.0.weight"
        );
        assert_eq!(m("backbone.layer2.0.downsample.bn.bias").unwrap(), "backbone.layer2.0.downsample.1.bias");
        assert_eq!(m("cls_head.fc_cls.weight").unwrap(), "head.fc.weight");
        assert_eq!(m("backbone.layer1.0.conv1.bn.num_batches_tracked"), None);
        // torchvision backbone inside mmaction2, our own names: unchanged
        assert_eq!(m("backbone.layer1.0.bn2.weight").unwrap(), "backbone.layer1.0.bn2.weight");
        assert_eq!(m("head.fc.bias").unwrap(), "head.fc.bias");
        let err = format!("{:#}", map_name("backbone.layer1.0.net.conv1.conv.weight").unwrap_err());
        assert!(err.contains("shift_place='block'"), "{err}");
    }

    #[test]
    fn tsm_repository_names() {
        assert_eq!(m("module.base_model.conv1.weight").unwrap(), "backbone.conv1.weight");
        assert_eq!(
            m("module.base_model.layer1.0.conv1.net.weight").unwrap(),
            "backbone.layer1.0.conv1.weight"
        );
        assert_eq!(m("module.new_fc.weight").unwrap(), "head.fc.weight");
    }

    #[test]
    fn shifted_block_sets() {
        assert_eq!(shifted_blocks(50).len(), 16);
        let r101 = shifted_blocks(101);
        assert_eq!(r101.len(), 2 + 2 + 12 + 2);
        assert!(r101.contains(&(3, 22)) && !r101.contains(&(3, 21)));
        let names = vec![
            "backbone.layer1.0.conv1.conv.net.weight".to_string(),
            "base_model.layer2.1.conv1.net.weight".to_string(),
            "backbone.layer2.1.conv2.conv.weight".to_string(),
        ];
        assert_eq!(shift_wrapped_blocks(&names), BTreeSet::from([(1, 0), (2, 1)]));
    }

    #[test]
    fn tsm_checkpoint_is_not_imported_as_tsn() {
        let t = Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = map_tensors("tsn_r50", vec![("backbone.layer1.0.conv1.conv.net.weight".into(), t.clone())])
            .err()
            .unwrap();
        assert!(err.to_string().contains("import it as tsm_r50"), "{err}");
        let err = map_tensors("tsm_r50", vec![("backbone.layer1.0.conv1.conv.net.weight".into(), t.clone())])
            .err()
            .unwrap();
        assert!(err.to_string().contains("first difference: layer1.1"), "{err}");
        let err = map_tensors("tsm_r18", vec![("fc.weight".into(), t.clone()), ("head.fc.weight".into(), t)])
            .err()
            .unwrap();
        assert!(err.to_string().contains("both map to"), "{err}");
    }
}
