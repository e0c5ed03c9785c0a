//! `vconvert --quantize int8 --calib CLIPS [--val CLIPS] IN OUT`: calibrates IN's convolutions
//! on the clip streams, reports the accuracy cost and writes OUT with the calibration. The work
//! is `vidkit::quantize`.
use crate::Outcome;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use vidkit::infer::{check_record, clip_tensor, record_context};
use vidkit::io::open_input;
use vidkit::model::{load_model, save_model, ModelConfig};
use vidkit::nn::int8::Int8Plan;
use vidkit::precision::{store_int8_calibration, Precision};
use vidkit::quantize::{agreement, calibrate_model, RangeMethod};
use vidkit::stream::StreamReader;

pub fn quantize_int8(
    input: &Path,
    output: &Path,
    calib: &[PathBuf],
    val: &[PathBuf],
    method: RangeMethod,
    quiet: bool,
) -> Result<Outcome> {
    let dev = Device::Cpu;
    let loaded = load_model(input, &dev)?;
    let model = loaded.for_inference()?;
    let cfg = model.config().clone();
    if model.takes_features() {
        bail!(
            "{}: {} takes feature sequences, which have no convolutions to quantize",
            input.display(),
            cfg.arch
        );
    }
    let cal = calibrate_model(&model, clips(calib, &cfg, &dev)?, method)
        .with_context(|| format!("{}: calibrating", input.display()))?;
    let plan = Int8Plan::new(cal.clone());
    let on_calib = agreement(&model, &plan, clips(calib, &cfg, &dev)?)?;
    let on_val = if val.is_empty() { None } else { Some(agreement(&model, &plan, clips(val, &cfg, &dev)?)?) };
    let mut out_cfg = cfg.clone();
    store_int8_calibration(&mut out_cfg.extra, &cal);
    out_cfg.extra.insert(Precision::CONFIG_KEY.into(), Precision::Int8.to_string().into());
    save_model(&loaded.varmap, &out_cfg, output)?;
    if !quiet {
        eprintln!(
            "vconvert: {}: int8, {} convolutions calibrated ({method})",
            output.display(),
            cal.ranges.len()
        );
        eprintln!("vconvert: calibration: {on_calib}");
        if let Some(v) = on_val {
            eprintln!("vconvert: validation: {v}");
        }
    }
    Ok(Outcome::Success)
}

/// The clips of `inputs` (clip streams) as the model takes them, read again on every call
/// (calibration and measurement pass over them twice; memory stays one clip).
fn clips<'a>(
    inputs: &'a [PathBuf],
    cfg: &'a ModelConfig,
    dev: &'a Device,
) -> Result<impl Iterator<Item = Result<Tensor>> + 'a> {
    if inputs.iter().filter(|p| p.as_os_str() == "-").count() > 0 {
        bail!(
            "--calib/--val: clip streams are read twice, so `-` (stdin) cannot be one: write them to files"
        );
    }
    Ok(inputs.iter().flat_map(move |input| {
        let name = input.display().to_string();
        let reader = open_input(input).map(|r| StreamReader::new(r, name.clone()));
        let mut reader = match reader {
            Ok(r) => Some(r),
            Err(e) => return Box::new(std::iter::once(Err(e))) as Box<dyn Iterator<Item = Result<Tensor>>>,
        };
        let mut n = 0usize;
        Box::new(std::iter::from_fn(move || {
            let r = reader.as_mut()?;
            match r.next_record() {
                Ok(Some(rec)) => {
                    n += 1;
                    let ctx = record_context(&name, n - 1, &rec);
                    Some(
                        check_record(&rec, cfg.frames)
                            .and_then(|_| clip_tensor(&rec, &cfg.mean, &cfg.std, dev))
                            .with_context(|| ctx),
                    )
                }
                Ok(None) => None,
                Err(e) => {
                    reader = None;
                    Some(Err(e))
                }
            }
        }))
    }))
}
