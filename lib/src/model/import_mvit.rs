//! Importer: PyTorch MViT checkpoints → `mvit_base_16x4` / `mvit_base_32x3` (DESIGN.md §2.4).
//! Two layouts, told apart by their names:
//!
//! * pytorchvideo (`MVIT_B_16x4.pyth`, `{"model_state": ...}`, and PySlowFast's MViT, whose
//!   names pytorchvideo kept): our names as they are.
//! * torchvision's `mvit_v1_b` state dict (`mvit_v1_b-dbeb1030.pth`): the same network under
//!   other names, with one joint `qkv` projection (split here into q, k, v: torchvision reshapes
//!   its output as [3, heads, head_dim]) and its pools' LayerNorms at eps 1e-6
//!   (`attn_ln_eps=1e-6`).
//!
//! Sizes come from the shapes (`mvit_overrides_from_weights`); `-o` overrides win, and other
//! frames or crop than the checkpoint's resize its position embeddings.

use super::import::config_from_weights;
use super::mvit::{mvit_overrides_from_weights, resize_mvit_embeddings};
use super::{from_tensors, Imported, NamedTensors};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// A torchvision `mvit_v1_b` name → pytorchvideo's (`qkv` is split separately).
fn map_torchvision_name(name: &str) -> Option<String> {
    let fixed = match name {
        "conv_proj.weight" => "patch_embed.patch_model.weight",
        "conv_proj.bias" => "patch_embed.patch_model.bias",
        "pos_encoding.class_token" => "cls_positional_encoding.cls_token",
        "pos_encoding.spatial_pos" => "cls_positional_encoding.pos_embed_spatial",
        "pos_encoding.temporal_pos" => "cls_positional_encoding.pos_embed_temporal",
        "pos_encoding.class_pos" => "cls_positional_encoding.pos_embed_class",
        "norm.weight" => "norm_embed.weight",
        "norm.bias" => "norm_embed.bias",
        "head.1.weight" => "head.proj.weight",
        "head.1.bias" => "head.proj.bias",
        _ => "",
    };
    if !fixed.is_empty() {
        return Some(fixed.into());
    }
    let rest = name.strip_prefix("blocks.")?;
    let (i, part) = rest.split_once('.')?;
    let i: usize = i.parse().ok()?;
    const PARTS: [(&str, &str); 13] = [
        ("norm1.", "norm1."),
        ("norm2.", "norm2."),
        ("attn.project.0.", "attn.proj."),
        ("attn.pool_q.pool.", "attn.pool_q."),
        ("attn.pool_q.norm_act.0.", "attn.norm_q."),
        ("attn.pool_k.pool.", "attn.pool_k."),
        ("attn.pool_k.norm_act.0.", "attn.norm_k."),
        ("attn.pool_v.pool.", "attn.pool_v."),
        ("attn.pool_v.norm_act.0.", "attn.norm_v."),
        ("mlp.0.", "mlp.fc1."),
        ("mlp.3.", "mlp.fc2."),
        ("project.", "proj."),
        ("attn.qkv.", "attn.qkv."),
    ];
    PARTS.iter().find_map(|(tv, ours)| part.strip_prefix(tv).map(|leaf| format!("blocks.{i}.{ours}{leaf}")))
}

/// torchvision's tensors under pytorchvideo's names: `qkv` [3C, C] split into `q`, `k`, `v`;
/// the position embeddings given their leading axis back.
fn from_torchvision(tensors: NamedTensors) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (name, t) in tensors {
        let Some(mapped) = map_torchvision_name(&name) else {
            bail!("{name}: not a tensor of torchvision's mvit_v1_b (MViTv2 is not supported)");
        };
        let mut put = |n: String, t: Tensor| -> Result<()> {
            if out.insert(n.clone(), t).is_some() {
                bail!("two checkpoint tensors map to {n:?}");
            }
            Ok(())
        };
        if let Some(stem) = mapped.strip_suffix(".qkv.weight").or_else(|| mapped.strip_suffix(".qkv.bias")) {
            let leaf = if mapped.ends_with("weight") { "weight" } else { "bias" };
            let rows = t.dim(0)?;
            if rows % 3 != 0 {
                bail!("{name}: {rows} rows are not q, k and v");
            }
            for (j, p) in ["q", "k", "v"].iter().enumerate() {
                put(format!("{stem}.{p}.{leaf}"), t.narrow(0, j * rows / 3, rows / 3)?.contiguous()?)?;
            }
        } else if mapped.starts_with("cls_positional_encoding.") {
            let t = match t.rank() {
                1 => t.reshape((1, 1, ()))?,
                _ => t.unsqueeze(0)?,
            };
            put(mapped, t)?;
        } else {
            put(mapped, t)?;
        }
    }
    Ok(out)
}

/// Imports an MViT checkpoint (pytorchvideo `.pyth` or torchvision `.pth`) as `arch`, already
/// read into `tensors`. Errors name `path`.
pub(super) fn import_mvit(
    path: &Path,
    arch: &str,
    overrides: &[String],
    tensors: NamedTensors,
    state_dict_key: Option<String>,
) -> Result<Imported> {
    let tensors_read = tensors.len();
    let strip = |n: &str| {
        let mut n = n;
        while let Some(rest) = n.strip_prefix("module.") {
            n = rest;
        }
        n.to_string()
    };
    let tensors: NamedTensors = tensors.into_iter().map(|(n, t)| (strip(&n), t)).collect();
    let torchvision = tensors.iter().any(|(n, _)| n == "conv_proj.weight");
    let pytorchvideo = tensors.iter().any(|(n, _)| n == "patch_embed.patch_model.weight");
    let (tensors, layout, dropped) = match (torchvision, pytorchvideo) {
        (true, _) => {
            (from_torchvision(tensors).with_context(|| path.display().to_string())?, "torchvision", 0)
        }
        (false, true) => (tensors.into_iter().collect(), "pytorchvideo", 0),
        _ => bail!(
            "{}: not an MViT checkpoint (neither pytorchvideo's patch_embed.patch_model.weight nor torchvision's conv_proj.weight)",
            path.display()
        ),
    };
    let mut tensors = tensors;
    let mut all = mvit_overrides_from_weights(&tensors);
    if layout == "torchvision" {
        all.push("attn_ln_eps=1e-6".into());
    }
    all.extend(overrides.iter().cloned());
    let config = config_from_weights(path, arch, &tensors, "", &all)?;
    resize_mvit_embeddings(&mut tensors, &config).with_context(|| path.display().to_string())?;
    let model =
        from_tensors(config, tensors, &Device::Cpu).map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
    Ok(Imported { model, state_dict_key, layout, tensors_read, dropped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_names_map_onto_pytorchvideos() {
        let m = |n: &str| map_torchvision_name(n).unwrap();
        assert_eq!(m("conv_proj.weight"), "patch_embed.patch_model.weight");
        assert_eq!(m("pos_encoding.temporal_pos"), "cls_positional_encoding.pos_embed_temporal");
        assert_eq!(m("blocks.3.attn.pool_q.norm_act.0.bias"), "blocks.3.attn.norm_q.bias");
        assert_eq!(m("blocks.0.attn.pool_k.pool.weight"), "blocks.0.attn.pool_k.weight");
        assert_eq!(m("blocks.13.mlp.3.weight"), "blocks.13.mlp.fc2.weight");
        assert_eq!(m("blocks.13.project.bias"), "blocks.13.proj.bias");
        assert_eq!(m("blocks.2.attn.project.0.weight"), "blocks.2.attn.proj.weight");
        assert_eq!(m("head.1.bias"), "head.proj.bias");
        assert_eq!(map_torchvision_name("blocks.2.attn.rel_pos_h"), None);
        let e = from_torchvision(vec![(
            "blocks.2.attn.rel_pos_h".into(),
            Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap(),
        )])
        .unwrap_err();
        assert!(e.to_string().contains("MViTv2 is not supported"), "{e}");
        // The joint projection splits in torchvision's order: q, then k, then v.
        let qkv = Tensor::arange(0f32, 6., &Device::Cpu).unwrap().reshape((6, 1)).unwrap();
        let out = from_torchvision(vec![("blocks.0.attn.qkv.weight".into(), qkv)]).unwrap();
        let col = |n: &str| out[n].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            (col("blocks.0.attn.q.weight"), col("blocks.0.attn.k.weight"), col("blocks.0.attn.v.weight")),
            (vec![0., 1.], vec![2., 3.], vec![4., 5.])
        );
    }
}
