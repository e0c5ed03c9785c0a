//! The 2019 PaddlePaddle video zoo's ETS parameters (`ETS.pdparams`, written by Paddle 1.x's
//! `fluid.save`: a pickled dict of numpy arrays) and its vocabulary (`dict.txt`, as
//! `generate_data.py` writes it: one `word count` line per id). fluid names the parameters by
//! layer type and creation count; `ets_net.py` creates, in its training program: the encoder's
//! fc (`fc_0.w_0`, `.b_0`), the forward GRU's fc and GRU (`fc_1`, `gru_0`), the backward ones
//! (`fc_2`, `gru_1`), the pooling score fc (`fc_3`), the attention projection (`fc_4`), the
//! decoder's boot fc (`fc_5`), the word embedding (`embedding_0`), then inside the decoder step
//! the state projection (`fc_6`), the attention score (`fc_7`), the GRU input fc with one weight
//! per input (`fc_8.w_0` words, `.w_1` context), the GRU cell (`gru_unit_0`) and the output fc
//! (`fc_9`). They are matched in that order, whatever the first number, and every shape checked.

use super::import_bsn::apply_spec_overrides;
use super::import_ctcn::numbered;
use super::{ets_config, ets_from_tensors, EtsSpec, ModelConfig};
use crate::caption::Vocabulary;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The reference's dictionary file: the first word of each line, in line order (`load_file`).
pub fn read_ets_vocabulary(path: &Path) -> Result<Vocabulary> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let words: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            l.split_whitespace().next().map(str::to_string).ok_or_else(|| {
                anyhow!("{}: line {} is empty (one `word count` per line)", path.display(), i + 1)
            })
        })
        .collect::<Result<_>>()?;
    Vocabulary::new(words).map_err(|e| anyhow!("{}: {e:#}", path.display()))
}

/// Imports `ETS.pdparams` with its `dict.txt`: sizes from the tensors, `max_length` and
/// `beam_size` from `ets.yaml` unless set with `-o`.
pub fn import_ets_pdparams(
    path: &Path,
    vocab_path: &Path,
    overrides: &[String],
) -> Result<(ModelConfig, Vec<(String, Tensor)>)> {
    let vocab = read_ets_vocabulary(vocab_path)?;
    let mut read: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in super::read_pdparams(path)? {
        read.insert(name, t.to_dtype(DType::F32)?);
    }
    let fail = |e: anyhow::Error| anyhow!("{}: {e:#}", path.display());
    let fcs = numbered(&read, "fc", ".w_0");
    let grus = numbered(&read, "gru", ".w_0");
    let units = numbered(&read, "gru_unit", ".w_0");
    let embs = numbered(&read, "embedding", ".w_0");
    if fcs.len() != 10 || grus.len() != 2 || units.len() != 1 || embs.len() != 1 {
        bail!(
            "{}: {} fc, {} gru, {} gru_unit and {} embedding parameters; ETS has 10, 2, 1 and 1",
            path.display(),
            fcs.len(),
            grus.len(),
            units.len(),
            embs.len()
        );
    }
    let mut used = 0usize;
    let mut take = |name: String| -> Result<Tensor> {
        used += 1;
        read.get(&name).cloned().ok_or_else(|| anyhow!("{}: no tensor {name:?}", path.display()))
    };
    let fc = |i: usize, leaf: &str| format!("fc_{}.{leaf}", fcs[i]);
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let flat = |x: Tensor| -> Result<Tensor> { Ok(x.flatten_all()?) };
    t.insert("encoder.input_fc.weight".into(), take(fc(0, "w_0"))?);
    t.insert("encoder.input_fc.bias".into(), flat(take(fc(0, "b_0"))?)?);
    for (dir, f, g) in [("gru_forward", 1, grus[0]), ("gru_backward", 2, grus[1])] {
        t.insert(format!("encoder.{dir}.proj"), take(fc(f, "w_0"))?);
        t.insert(format!("encoder.{dir}.weight"), take(format!("gru_{g}.w_0"))?);
        t.insert(format!("encoder.{dir}.bias"), flat(take(format!("gru_{g}.b_0"))?)?);
    }
    for (i, ours) in [
        (3, "encoder.pool_attention.weight"),
        (4, "encoder.proj.weight"),
        (5, "decoder.boot.weight"),
        (6, "decoder.state_proj.weight"),
        (7, "decoder.attention.weight"),
        (8, "decoder.input_word.weight"),
        (9, "decoder.out.weight"),
    ] {
        t.insert(ours.into(), take(fc(i, "w_0"))?);
    }
    t.insert("decoder.input_context.weight".into(), take(fc(8, "w_1"))?);
    t.insert("decoder.out.bias".into(), flat(take(fc(9, "b_0"))?)?);
    t.insert("decoder.embedding".into(), take(format!("embedding_{}.w_0", embs[0]))?);
    t.insert("decoder.gru.weight".into(), take(format!("gru_unit_{}.w_0", units[0]))?);
    t.insert("decoder.gru.bias".into(), flat(take(format!("gru_unit_{}.b_0", units[0]))?)?);
    if used != read.len() {
        bail!(
            "{}: {} tensors that ETS does not have (another model's parameters?)",
            path.display(),
            read.len() - used
        );
    }
    let dims = |k: &str| t[k].dims().to_vec();
    let (fw, gw, uw, ew) = (
        dims("encoder.input_fc.weight"),
        dims("encoder.gru_forward.weight"),
        dims("decoder.gru.weight"),
        dims("decoder.embedding"),
    );
    if fw.len() != 2 || gw.len() != 2 || uw.len() != 2 || ew.len() != 2 {
        bail!("{}: the encoder fc, GRU, GRU cell and embedding must be matrices", path.display());
    }
    if ew[0] != vocab.len() {
        bail!(
            "{}: the embedding has {} words, {} has {}: not this model's dictionary",
            path.display(),
            ew[0],
            vocab_path.display(),
            vocab.len()
        );
    }
    let base = EtsSpec {
        feat_size: fw[0],
        fc_dim: fw[1],
        gru_hidden_dim: gw[0],
        decoder_size: uw[0],
        word_emb_dim: ew[1],
        ..Default::default()
    };
    let spec: EtsSpec = apply_spec_overrides(&base, overrides, "ets").map_err(fail)?;
    let cfg = ets_config(&spec, &vocab).map_err(fail)?;
    let mut named: Vec<(String, Tensor)> = t.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    ets_from_tensors(cfg.clone(), t).map_err(fail)?;
    Ok((cfg, named))
}
