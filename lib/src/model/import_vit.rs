//! Importer: PyTorch TimeSformer checkpoints → `timesformer_vit_b` (DESIGN.md §2.4). Two
//! layouts, told apart by their names:
//!
//! * facebookresearch TimeSformer (`.pyth`, `{"model_state": ...}`): `model.cls_token`,
//!   `model.blocks.0.temporal_attn.qkv.weight`, ..., `model.head.weight` — our names with
//!   `model.` → `backbone.` and `model.head` → `head.fc` (PaddleVideo's `vit.py` kept them).
//! * Hugging Face transformers' `TimesformerForVideoClassification` (`model.safetensors` or
//!   `pytorch_model.bin`): `timesformer.embeddings.position_embeddings`,
//!   `timesformer.encoder.layer.0.temporal_attention.attention.qkv.weight`, ...,
//!   `classifier.weight`; the names are mapped one by one below. Its `config.json`, when it lies
//!   beside the weights, gives the head count, LayerNorm eps and the class names (`id2label`).
//!
//! * MMAction2's `TimeSformer` backbone + `TimeSformerHead` (`.pth`, `{"state_dict": ...}`):
//!   mmcv's transformer layers, `backbone.transformer_layers.layers.0.attentions.0.attn.in_proj_weight`
//!   (`nn.MultiheadAttention`: q, k, v stacked as timm's qkv), `attentions.0` temporal (with its
//!   `norm` and `temporal_fc`), `attentions.1` spatial, `ffns.0.layers.0.0` / `ffns.0.layers.1` the
//!   MLP, `cls_head.fc_cls`. Its blocks compute what facebookresearch's do
//!   (`mmaction/models/common/transformer.py`); its configs normalise with mean and std 127.5.
//!
//! * An ImageNet ViT (timm's `vit_base_patch16_224`, `blocks.0.attn.qkv.weight`, `pos_embed`, ...;
//!   PaddleClas's `ViT_base_patch16_224.pdparams` has the same names) as initialisation, as
//!   PaddleVideo's `pretrain_vit_param_trans` does it: the classifier dropped, each block's
//!   spatial attention and its norm copied into the temporal ones; the time embedding, every
//!   `temporal_fc` and the new head start as the model's own initialisation (seed 0).
//!
//! Sizes (width, depth, patch, frames, crop) come from the shapes; `-o` overrides win, and other
//! frames or crop than the checkpoint's resize its embeddings (`resize_embeddings`).

use super::import::config_from_weights;
use super::timesformer::{resize_embeddings, vit_overrides_from_weights};
use super::{from_tensors, read_torch_state_dict, Imported, NamedTensors, VitOptions};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// A Hugging Face TimeSformer name → ours.
fn map_hf_name(name: &str) -> Option<String> {
    let name = name.strip_prefix("timesformer.").unwrap_or(name);
    if let Some(rest) = name.strip_prefix("classifier.") {
        return Some(format!("head.fc.{rest}"));
    }
    let fixed = match name {
        "embeddings.cls_token" => "cls_token",
        "embeddings.position_embeddings" => "pos_embed",
        "embeddings.time_embeddings" => "time_embed",
        "embeddings.patch_embeddings.projection.weight" => "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias" => "patch_embed.proj.bias",
        "layernorm.weight" => "norm.weight",
        "layernorm.bias" => "norm.bias",
        _ => "",
    };
    if !fixed.is_empty() {
        return Some(format!("backbone.{fixed}"));
    }
    let rest = name.strip_prefix("encoder.layer.")?;
    let (i, part) = rest.split_once('.')?;
    let i: usize = i.parse().ok()?;
    const PARTS: [(&str, &str); 9] = [
        ("attention.attention.qkv.", "attn.qkv."),
        ("attention.output.dense.", "attn.proj."),
        ("temporal_attention.attention.qkv.", "temporal_attn.qkv."),
        ("temporal_attention.output.dense.", "temporal_attn.proj."),
        ("temporal_dense.", "temporal_fc."),
        ("layernorm_before.", "norm1."),
        ("temporal_layernorm.", "temporal_norm1."),
        ("layernorm_after.", "norm2."),
        ("intermediate.dense.", "mlp.fc1."),
    ];
    if let Some(leaf) = part.strip_prefix("output.dense.") {
        return Some(format!("backbone.blocks.{i}.mlp.fc2.{leaf}"));
    }
    PARTS
        .iter()
        .find_map(|(hf, ours)| part.strip_prefix(hf).map(|leaf| format!("backbone.blocks.{i}.{ours}{leaf}")))
}

/// A facebookresearch TimeSformer name → ours.
fn map_fb_name(name: &str) -> Option<String> {
    let name = name.strip_prefix("module.").unwrap_or(name);
    let rest = name.strip_prefix("model.")?;
    Some(match rest.strip_prefix("head.") {
        Some(leaf) => format!("head.fc.{leaf}"),
        None => format!("backbone.{rest}"),
    })
}

/// An MMAction2 TimeSformer name → ours.
fn map_mmaction2_name(name: &str) -> Option<String> {
    let name = name.strip_prefix("module.").unwrap_or(name);
    if let Some(leaf) = name.strip_prefix("cls_head.fc_cls.") {
        return Some(format!("head.fc.{leaf}"));
    }
    let rest = name.strip_prefix("backbone.")?;
    if let Some(leaf) = rest.strip_prefix("patch_embed.projection.") {
        return Some(format!("backbone.patch_embed.proj.{leaf}"));
    }
    let Some(layer) = rest.strip_prefix("transformer_layers.layers.") else {
        return matches!(rest, "cls_token" | "pos_embed" | "time_embed" | "norm.weight" | "norm.bias")
            .then(|| format!("backbone.{rest}"));
    };
    let (i, part) = layer.split_once('.')?;
    let i: usize = i.parse().ok()?;
    const PARTS: [(&str, &str); 12] = [
        ("attentions.0.norm.", "temporal_norm1."),
        ("attentions.0.attn.in_proj_weight", "temporal_attn.qkv.weight"),
        ("attentions.0.attn.in_proj_bias", "temporal_attn.qkv.bias"),
        ("attentions.0.attn.out_proj.", "temporal_attn.proj."),
        ("attentions.0.temporal_fc.", "temporal_fc."),
        ("attentions.1.norm.", "norm1."),
        ("attentions.1.attn.in_proj_weight", "attn.qkv.weight"),
        ("attentions.1.attn.in_proj_bias", "attn.qkv.bias"),
        ("attentions.1.attn.out_proj.", "attn.proj."),
        ("ffns.0.norm.", "norm2."),
        ("ffns.0.layers.0.0.", "mlp.fc1."),
        ("ffns.0.layers.1.", "mlp.fc2."),
    ];
    PARTS
        .iter()
        .find_map(|(mm, ours)| part.strip_prefix(mm).map(|leaf| format!("backbone.blocks.{i}.{ours}{leaf}")))
}

/// An image ViT's name → ours; its classifier is dropped (a video model gets a new head).
fn map_image_vit_name(name: &str) -> Option<String> {
    let name = name.strip_prefix("module.").unwrap_or(name);
    (!name.starts_with("head.")).then(|| format!("backbone.{name}"))
}

/// An image ViT as a divided space-time model's start (`pretrain_vit_param_trans`): each block's
/// `attn` and `norm1` copied into `temporal_attn` and `temporal_norm1` where those are absent.
pub(super) fn adopt_image_vit(tensors: &mut HashMap<String, Tensor>) {
    let copies: Vec<(String, Tensor)> = tensors
        .iter()
        .filter(|(n, _)| n.starts_with("backbone.blocks."))
        .filter_map(|(n, t)| {
            let to = if n.contains(".attn.") {
                n.replacen(".attn.", ".temporal_attn.", 1)
            } else if n.contains(".norm1.") {
                n.replacen(".norm1.", ".temporal_norm1.", 1)
            } else {
                return None;
            };
            Some((to, t.clone()))
        })
        .collect();
    for (to, t) in copies {
        tensors.entry(to).or_insert(t);
    }
}

/// Fills the tensors a checkpoint lacks (time embedding, `temporal_fc`, head) with `config`'s
/// model as `init_weights_for` starts it, seed 0.
pub(super) fn complete_from_init(
    tensors: &mut HashMap<String, Tensor>,
    config: &super::ModelConfig,
) -> Result<()> {
    let varmap = candle_nn::VarMap::new();
    super::build(config, candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu))?;
    super::init_weights_for(&varmap, &config.arch, 0)?;
    for (name, var) in varmap.data().lock().expect("varmap lock").iter() {
        tensors.entry(name.clone()).or_insert_with(|| var.as_tensor().detach());
    }
    Ok(())
}

fn map_tensors(tensors: NamedTensors) -> Result<(HashMap<String, Tensor>, &'static str, usize)> {
    let hf = tensors.iter().any(|(n, _)| n.contains("embeddings.position_embeddings"));
    let fb = tensors.iter().any(|(n, _)| n.ends_with("model.pos_embed"));
    let mm = tensors.iter().any(|(n, _)| n.contains("backbone.transformer_layers.layers."));
    let vit = tensors.iter().any(|(n, _)| n == "pos_embed");
    let (layout, map): (&str, fn(&str) -> Option<String>) = match (hf, fb, mm, vit) {
        (true, ..) => ("transformers", map_hf_name),
        (false, true, ..) => ("timesformer", map_fb_name),
        (false, false, true, _) => ("mmaction2", map_mmaction2_name),
        (false, false, false, true) => ("vit", map_image_vit_name),
        _ => bail!("neither a TimeSformer (facebookresearch's model.pos_embed, Hugging Face's timesformer.embeddings.position_embeddings, MMAction2's backbone.transformer_layers.*) nor an image ViT (pos_embed)"),
    };
    let mut out = HashMap::new();
    let mut dropped = 0;
    for (name, t) in tensors {
        match map(&name) {
            Some(m) => {
                if out.insert(m.clone(), t).is_some() {
                    bail!("two checkpoint tensors map to {m:?}");
                }
            }
            None => dropped += 1,
        }
    }
    Ok((out, layout, dropped))
}

/// Overrides from a Hugging Face `config.json` beside the weights: heads, eps, q/k/v bias and
/// class names.
fn hf_config_overrides(path: &Path) -> Result<Vec<String>> {
    let Some(json) = path.parent().map(|d| d.join("config.json")).filter(|p| p.is_file()) else {
        return Ok(vec![]);
    };
    let text = std::fs::read_to_string(&json).with_context(|| format!("{}: cannot read", json.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", json.display()))?;
    let mut o = Vec::new();
    if let Some(h) = v.get("num_attention_heads").and_then(|x| x.as_u64()) {
        o.push(format!("num_heads={h}"));
    }
    if let Some(e) = v.get("layer_norm_eps").and_then(|x| x.as_f64()) {
        o.push(format!("ln_eps={e}"));
    }
    if let Some(act) = v.get("hidden_act").and_then(|x| x.as_str()) {
        if act != "gelu" {
            bail!(
                "{}: hidden_act {act:?}; vidkit's TimeSformer has the exact GELU (\"gelu\")",
                json.display()
            );
        }
    }
    if let Some(t) = v.get("attention_type").and_then(|x| x.as_str()) {
        if t != "divided_space_time" {
            bail!("{}: attention_type {t:?}; vidkit's TimeSformer is divided_space_time", json.display());
        }
    }
    if let Some(map) = v.get("id2label").and_then(|x| x.as_object()) {
        let mut labels: Vec<(usize, String)> =
            map.iter().filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string()))).collect();
        labels.sort();
        let in_order = labels.iter().enumerate().all(|(i, (k, _))| i == *k);
        // transformers writes LABEL_0, LABEL_1, ... when it was given no names.
        let generic = labels.iter().all(|(k, l)| *l == format!("LABEL_{k}"));
        if in_order && !generic && !labels.is_empty() {
            let names: Vec<String> = labels.into_iter().map(|(_, l)| l).collect();
            o.push(format!("labels={}", serde_json::to_string(&names)?));
        }
    }
    Ok(o)
}

/// Imports a TimeSformer checkpoint (facebookresearch `.pyth`, Hugging Face `.safetensors` /
/// `.bin`, MMAction2 `.pth`) as `arch`. Errors name `path`.
pub fn import_timesformer(path: &Path, arch: &str, overrides: &[String]) -> Result<Imported> {
    if arch != "timesformer_vit_b" {
        bail!(
            "{}: a PyTorch TimeSformer checkpoint imports as timesformer_vit_b, not {arch}",
            path.display()
        );
    }
    let (tensors, state_dict_key) = if path.extension().is_some_and(|e| e == "safetensors") {
        let map = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| anyhow!("{}: unreadable safetensors: {e}", path.display()))?;
        let mut v: NamedTensors = map.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        (v, None)
    } else {
        read_torch_state_dict(path)?
    };
    let tensors_read = tensors.len();
    let (tensors, layout, dropped) = map_tensors(tensors).with_context(|| path.display().to_string())?;
    let mut tensors = tensors;
    let mut all = vit_overrides_from_weights(&tensors);
    match layout {
        "transformers" => all.extend(hf_config_overrides(path)?),
        // An image ViT has no time embedding, but starts a divided model.
        "vit" => all.retain(|o| o != "attention_type=space_only"),
        // MMAction2's TimeSformer configs: mean and std 127.5 on the 0–255 scale.
        "mmaction2" => all.extend(["mean=[127.5,127.5,127.5]".into(), "std=[127.5,127.5,127.5]".into()]),
        _ => {}
    }
    all.extend(overrides.iter().cloned());
    let config = config_from_weights(path, arch, &tensors, "backbone.patch_embed.proj.weight", &all)?;
    if layout == "vit" {
        if VitOptions::from_config(&config)?.attention_type == "divided_space_time" {
            adopt_image_vit(&mut tensors);
        }
        complete_from_init(&mut tensors, &config).with_context(|| path.display().to_string())?;
    }
    resize_embeddings(&mut tensors, &config).with_context(|| path.display().to_string())?;
    let model =
        from_tensors(config, tensors, &Device::Cpu).map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
    Ok(Imported { model, state_dict_key, layout, tensors_read, dropped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugging_face_and_facebookresearch_names_map_onto_ours() {
        let hf = |n: &str| map_hf_name(n).unwrap();
        assert_eq!(hf("timesformer.embeddings.position_embeddings"), "backbone.pos_embed");
        assert_eq!(
            hf("timesformer.encoder.layer.3.temporal_attention.attention.qkv.weight"),
            "backbone.blocks.3.temporal_attn.qkv.weight"
        );
        assert_eq!(
            hf("timesformer.encoder.layer.0.attention.output.dense.bias"),
            "backbone.blocks.0.attn.proj.bias"
        );
        assert_eq!(
            hf("timesformer.encoder.layer.11.output.dense.weight"),
            "backbone.blocks.11.mlp.fc2.weight"
        );
        assert_eq!(
            hf("timesformer.encoder.layer.2.temporal_dense.weight"),
            "backbone.blocks.2.temporal_fc.weight"
        );
        assert_eq!(hf("timesformer.layernorm.bias"), "backbone.norm.bias");
        assert_eq!(hf("classifier.weight"), "head.fc.weight");
        assert_eq!(map_hf_name("timesformer.encoder.layer.2.unknown.weight"), None);
        assert_eq!(
            map_fb_name("model.blocks.0.temporal_fc.bias").unwrap(),
            "backbone.blocks.0.temporal_fc.bias"
        );
        assert_eq!(map_fb_name("model.head.weight").unwrap(), "head.fc.weight");
        assert_eq!(map_fb_name("model.time_embed").unwrap(), "backbone.time_embed");
        let mm = |n: &str| map_mmaction2_name(n).unwrap();
        assert_eq!(
            mm("backbone.transformer_layers.layers.4.attentions.0.attn.in_proj_weight"),
            "backbone.blocks.4.temporal_attn.qkv.weight"
        );
        assert_eq!(
            mm("backbone.transformer_layers.layers.4.attentions.1.attn.out_proj.bias"),
            "backbone.blocks.4.attn.proj.bias"
        );
        assert_eq!(
            mm("backbone.transformer_layers.layers.0.ffns.0.layers.1.weight"),
            "backbone.blocks.0.mlp.fc2.weight"
        );
        assert_eq!(mm("backbone.patch_embed.projection.bias"), "backbone.patch_embed.proj.bias");
        assert_eq!(mm("cls_head.fc_cls.weight"), "head.fc.weight");
        assert_eq!(map_mmaction2_name("backbone.transformer_layers.layers.0.attentions.2.norm.weight"), None);
    }
}
