//! `vconvert`: imports a PyTorch checkpoint (torchvision ResNet, mmaction2 TSN/TSM/I3D/Slow-only/
//! SlowFast/X3D/ir-CSN, pytorchvideo's 3D CNNs, the TSM authors' repository) or a PaddleVideo `.pdparams` (PP-TSM) as a vidkit model file. The work is
//! `vidkit::model::import_checkpoint`.
use crate::Outcome;
use anyhow::{bail, Result};
use std::path::PathBuf;
use vidkit::model::{arch_info, arch_names, import_checkpoint, save_model, Task};

const ABOUT: &str =
    "Import a PyTorch (torchvision, mmaction2, pytorchvideo) or Paddle (PaddleVideo) checkpoint as a vidkit model file";

const LONG_ABOUT: &str = "\
Import a PyTorch (torchvision, mmaction2, pytorchvideo) or Paddle (PaddleVideo) checkpoint as a vidkit model file.

Reads IN, a .pth/.pt/.pyth written by torch.save, a .pdparams written by paddle.save or a Hugging \
Face model.safetensors (TimeSformer), and writes OUT, one .safetensors file holding \
the weights and, in its metadata (key \"vidkit_config\"), the model's config: architecture, \
classes, input spec (frames, short side, crop size, sampler) and mean/std, so that vclassify \
needs nothing else.

Reading runs no code from the file: the pickle inside is interpreted, never executed, and only \
dicts and tensors (numpy arrays for .pdparams) are rebuilt; a file naming anything else is refused. The state dict is taken from the top level or from under \
\"state_dict\" (mmaction2), \"model_state\" (pytorchvideo) or \"model\"; \"module.\" prefixes are \
stripped and BatchNorm's num_batches_tracked dropped.

Names understood: torchvision's ResNet (conv1.weight, bn1.*, layer1.0.conv1.weight, \
layer1.0.downsample.0.weight, ..., fc.weight), which imports as TSN or TSM of that depth; \
mmaction2's ResNet/ResNetTSM (backbone.conv1.conv.weight, backbone.conv1.bn.*, \
backbone.layer1.0.conv1.conv.weight, the shifted backbone.layer1.0.conv1.conv.net.weight, \
backbone.layer1.0.downsample.conv/bn.*, cls_head.fc_cls.*); the TSM authors' repository \
(base_model.*, new_fc.*); and vidkit's own. A checkpoint with temporal shifts imports only as the \
TSM that shifts the same blocks (mmaction2 shift_place='blockres'; ResNet-101 shifts every other \
block).

Video transformers: pptimesformer_vit_b from PaddleVideo's .pdparams (backbone.blocks.N.attn.qkv.*, \
Linear weights stored [in, out]); timesformer_vit_b from facebookresearch's .pyth (model.blocks.N.*, \
model.head.*) or Hugging Face's TimesformerForVideoClassification (timesformer.encoder.layer.N.*, \
classifier.*; its config.json beside the weights gives the head count, eps and class names) or \
MMAction2's .pth (backbone.transformer_layers.layers.N.attentions.0/1.*, ffns.0.*, cls_head.fc_cls.*; \
its configs' mean and std 127.5 kept); an \
ImageNet ViT (timm's or PaddleClas's names: pos_embed, blocks.N.attn.qkv.*, head.*) starts either as \
PaddleVideo's pretrain_vit_param_trans does: head dropped, spatial attention and norm1 copied into \
the temporal ones, time embedding, temporal_fc and a new head (-o num_classes) initialised. \
Width, depth, patch, frames and crop come from the shapes (the head count: 12 unless -o num_heads); \
-o frames=F or -o crop_size=S other than the checkpoint's resizes the time embedding (nearest, along \
time) and the position embedding (bilinear, over the patch grid) once, here. (PaddleVideo resizes \
in every forward instead, and its time-embedding resize interpolates the wrong axes: a 16-frame \
input to an 8-frame model fails there.) \
mvit_base_16x4 and mvit_base_32x3 (MViT-B) from pytorchvideo's .pyth (patch_embed.patch_model.*, \
blocks.N.attn.pool_q.*, head.proj.*: vidkit's names) or torchvision's mvit_v1_b state dict \
(conv_proj.*, blocks.N.attn.qkv.*, its pools' LayerNorm eps 1e-6 kept); widths, depth, stages, \
heads and kernels come from the shapes, and -o frames or -o crop_size resizes the position \
embeddings (temporal linearly, spatial bilinearly) once, here: pytorchvideo itself runs only the \
input it was built for.

3D CNNs (c2d_r50, i3d_r50, slow_r50, r2plus1d_r50, csn_r101, slowfast_r50/r101, x3d_*): \
pytorchvideo's names are vidkit's and import as they are (a .pyth with \"model_state\"), \
with the input spec of pytorchvideo's model zoo (dense sampler, mean 0.45 and std 0.225 of 255). \
mmaction2's ResNet3d recognizers (backbone.conv1.conv.weight, backbone.layer1.0.conv1.conv/bn.*, \
backbone.layer1.0.downsample.conv/bn.*, cls_head.fc_cls.*) import as i3d_r50 (mmaction2's I3D: \
stem conv and pool strided 2 in time, stem_stride_t=2 and stem_pool_stride_t=2; 32 frames every \
2) and slow_r50 (Slow-only: 8 frames every 8), and ResNet3dSlowFast (backbone.slow_path.*, \
backbone.fast_path.*, the laterals backbone.slow_path.conv1_lateral/layerN_lateral.conv.weight) \
as slowfast_r50/r101 (32 frames every 2, slow frames 0, alpha, 2 alpha, ...: slow_frames=stride; \
laterals without BN: fusion_norm=false; alpha 8 with lateral kernel 5, 4 with kernel 7, as \
mmaction2's configs pair them, else -o alpha=N; the head's (fast, slow) columns reordered), all \
with mmaction2's ImageNet mean/std. mmaction2's X3D (backbone.conv1_s/conv1_t.*, \
backbone.layerS.J.conv1-3/se_module/downsample.*, backbone.conv5.*, cls_head.fc1/fc2.*) imports \
as x3d_xs/s/m/l (BN on every projection shortcut: shortcut_norm_always=true; X3DHead's global \
pool: head_pool=global; mean 114.75, std 57.38; X3DHead's fc1 must have no bias, as in its \
configs). mmaction2's ResNet3dCSN with \
bottleneck_mode='ir' (backbone.layerS.J.conv2.0.conv/bn.*) imports as csn_r101 whatever its \
depth, 50, 101 or 152 (stage_depths from the names), with BN eps 1e-3 (bn_eps=0.001), 32 frames \
every 2 and ImageNet mean/std (the Sports-1M and from-scratch configs use mean \
[110.2008,100.63983,95.99475] and std [58.14765,56.46975,55.332195]: give them with -o). \
Refused, by name: ip-CSN (conv2.1), which has no vidkit architecture, and ResNet2Plus1d \
(*.conv.conv_s.*: R18/R34 on basic blocks with every conv a spatial-then-temporal (2+1)D conv, \
not pytorchvideo's R(2+1)D-50 that r2plus1d_r50 is); a backbone imported as another's \
architecture is refused naming the ones it imports as.

Temporal localizers: bmn from PaddleVideo's .pdparams (backbone.b_conv1.*, ...) or MMAction2's \
.pth (x_1d_b.0.*, ..., its saved sample_mask checked); bsn from MMAction2's two checkpoints, the \
TEM's as IN (conv1-3.*) and the PEM's with --pem (fc1-2.*), into one model file (widths from the \
weights; temporal_dim 100 and the PGM, soft-NMS and post-processing settings of MMAction2's \
ActivityNet configs, any of them by -o, e.g. -o temporal_dim=128); ctcn from the 2019 Paddle \
video zoo's CTCN.pdparams (fluid.save: conv2d_N.*, batch_norm_N.* matched in the order fpn_ctcn.py \
creates its layers, the heads' loc/cls_pred_conv1/2_weights/bias; concepts, anchors and classes \
from the heads; img_size 512 and ctcn.yaml's TEST decoding settings, any of them by -o).

Captioners: ets from the 2019 Paddle video zoo's ETS.pdparams (fluid.save: fc_N.*, gru_N.*, \
embedding_N.w_0, gru_unit_N.* matched in the order ets_net.py creates them) with its dictionary \
by --vocab (dict.txt: one `word count` line per id, <s> <e> <unk> first), which goes into the model \
file; sizes from the weights; ets.yaml's max_length 80 and beam_size 3, either by -o.

Temporal grounders: tall from the 2019 Paddle video zoo's TALL.pdparams (fluid.save: \
v2s_lt_weights, s2s_lt_weights, mid_out_weights, sim_mat_weights; sizes from their shapes; \
tall.yaml's windows of 128 and 256 frames, overlap 0.8, context 128 frames, any of them by -o).

Non-local blocks: in a ResNet-3D (c2d/i3d/slow/r2plus1d/csn) the config key non_local lists, per \
stage, a 0/1 flag per residual block (as mmaction2 writes non_local), and non_local_cfg sets them \
up: mode (softmax, alias embedded_gaussian, or dot_product), use_scale, reduction (inner width = \
channels / reduction), pool ([t,h,w] max-pool kernel over phi and g), pool_after_conv (mmcv's \
sub_sample), norm, out_bias; the defaults are pytorchvideo create_nonlocal's (softmax, scaled, \
no pooling, BN) with half the channels inside. Both are read from the checkpoint where the names \
tell: pytorchvideo-style blocks are res_blocks.J.0 (the residual block) and res_blocks.J.1 \
(conv_theta, conv_phi, conv_g, conv_out, norm); mmaction2's are \
backbone.layerS.J.non_local_block.{theta,phi,g,conv_out}.*, whose phi.0/g.0 mean sub_sample \
(pool [1,2,2] after the convs). The mode is not in the weights: for an mmaction2 checkpoint it \
must be given (-o non_local_cfg.mode=dot_product; use_scale is false unless set, as mmaction2's \
configs have it), for a pytorchvideo one it defaults to softmax.

Paddle: a .pdparams (a PaddleVideo Recognizer2D state dict, as PaddleVideo saves and releases \
its models) imports only as a PaddleVideo architecture, and those only from .pdparams: pptsm_r50vd \
is PP-TSM (ResNet-50-vd, ResNetTweaksTSM + ppTSMHead), pptsmv2_lcnetv2 PP-TSMv2 (PP-LCNetV2, \
PPTSM_v2 + MoViNetHead; dropout 0.2 in Paddle's downscale_in_infer mode; its temporal attention \
is on when the checkpoint has backbone.global_attention.fc weights); both shift with ratio \
1/frames as PaddleVideo ties it to num_seg, so shift_div is not used. Names map by one rule: _conv -> conv, _batch_norm -> \
bn, _mean -> running_mean, _variance -> running_var, the rest unchanged \
(backbone.bb_1_0.short._batch_norm._variance -> backbone.bb_1_0.short.bn.running_var); Linear \
weights, [in, out] in Paddle, are transposed; PP-TSMv2's backbone.fc becomes head.fc and the \
deployment-only fused kernels of its re-parameterisable blocks (*.dw_conv.weight/bias) are dropped.

Config: num_classes is read from the classifier's weight and base_width from the stem; the rest \
starts from the defaults (8 frames, segment sampler, short side 256, crop 224, ImageNet mean/std \
on the 0-255 scale as mmaction2 writes them, shift_div 8, dropout 0.5, softmax averaging) and is \
changed with -o key=value, the value parsed as JSON (a bare word is a string); a dotted key \
sets one field of an object and keeps the others (-o non_local_cfg.mode=dot_product). Keys: \
frames, dropout, mean, std, sampler, interval, short_side, crop_size, shift_div, labels (a list of \
class names), aggregate (softmax or logits), for the ResNet-3Ds non_local, non_local_cfg, \
stem_stride_t, stem_pool_stride_t, bn_eps, for SlowFast alpha, fusion_kernel, fusion_norm, \
slow_frames (linspace or stride), for X3D shortcut_norm_always and head_pool (global, or the \
average pool's [t,h,w] kernel; default the hub model's, e.g. [4,5,5] for x3d_xs), for the 3D CNNs \
stage_depths; \
num_classes, when given, must agree with the weights.

When the names or shapes do not fit the architecture, nothing is written and the one-line error \
names the file and the first tensor that differs. Exit status: 0 success, 2 any error.";

const EXAMPLES: &str = "\
Examples:
  # An mmaction2 TSM-R50 trained on Kinetics-400 with 8 segments
  vconvert --arch tsm_r50 tsm_r50_1x1x8_50e_kinetics400_rgb.pth tsm_r50_k400.safetensors

  # A 16-segment model whose inputs were normalised to [-1, 1]
  vconvert --arch tsn_r101 -o frames=16 -o 'mean=[127.5,127.5,127.5]' \\
      -o 'std=[127.5,127.5,127.5]' tsn_r101_sthv2.pth tsn_r101_sthv2.safetensors

  # torchvision's ImageNet ResNet-18 as a TSM (its 1000 ImageNet classes)
  vconvert --arch tsm_r18 resnet18-f37072fd.pth tsm_r18_imagenet.safetensors

  # PaddleVideo's PP-TSM trained on Kinetics-400 (8 segments, its defaults)
  vconvert --arch pptsm_r50vd ppTSM_k400_uniform.pdparams pptsm_k400.safetensors

  # mmaction2's I3D-R50 with dot-product non-local blocks (Kinetics-400, 32 x 2 frames)
  vconvert --arch i3d_r50 -o non_local_cfg.mode=dot_product \\
      i3d_imagenet-pretrained-r50-nl-dot-product_8xb8-32x2x1-100e_kinetics400-rgb.pth i3d_nl.safetensors

  # mmaction2's ir-CSN-R152 (IG65M-pretrained, Kinetics-400): csn_r101 with R152's blocks per stage
  vconvert --arch csn_r101 ircsn_ig65m-pretrained-r152_8xb12-32x2x1-58e_kinetics400-rgb.pth ircsn.safetensors

  # PaddleVideo's BMN (temporal action proposals; 100 steps of 400-d features)
  vconvert --arch bmn BMN.pdparams bmn.safetensors

  # MMAction2's BMN (its own post-processing and times come with it: vpropose follows them)
  vconvert --arch bmn bmn_400x100_2x8_9e_activitynet_feature_20200619-42a3b111.pth bmn.safetensors

  # the 2019 Paddle zoo's C-TCN (temporal action detection on 402 concept scores per step)
  vconvert --arch ctcn CTCN.pdparams ctcn.safetensors

  # the 2019 Paddle zoo's TALL (sentence grounding on TACoS: C3D fc6 + skip-thought vectors)
  vconvert --arch tall TALL.pdparams tall.safetensors

  # the 2019 Paddle zoo's ETS captioner with its vocabulary (ActivityNet Captions, ResNet-152 5 fps)
  vconvert --arch ets ETS.pdparams --vocab dict.txt ets.safetensors

  # MMAction2's BSN: its TEM and PEM checkpoints into one model file
  vconvert --arch bsn tem_epoch_20.pth --pem pem_epoch_20.pth bsn.safetensors

  # PaddleVideo's PP-TimeSformer (ViT-B/16, divided space-time attention, 8 frames)
  vconvert --arch pptimesformer_vit_b ppTimeSformer_k400_8f.pdparams pptimesformer_k400.safetensors

  # A Hugging Face TimeSformer (config.json beside the weights gives heads and class names),
  # run at 16 frames: the time embedding is resized once, here
  vconvert --arch timesformer_vit_b -o frames=16 timesformer-base-finetuned-k400/model.safetensors ts16.safetensors

  # MMAction2's TimeSformer
  vconvert --arch timesformer_vit_b timesformer_divST_8xb8-8x32x1-15e_kinetics400-rgb.pth ts_mm.safetensors

  # facebookresearch's TimeSformer checkpoint
  vconvert --arch timesformer_vit_b TimeSformer_divST_8x32_224_K400.pyth timesformer_k400.safetensors

  # pytorchvideo's MViT-B 16x4, or torchvision's mvit_v1_b (the same network)
  vconvert --arch mvit_base_16x4 MVIT_B_16x4.pyth mvit_b_16x4.safetensors
  vconvert --arch mvit_base_16x4 mvit_v1_b-dbeb1030.pth mvit_v1_b.safetensors

  # Which architectures can be imported
  vconvert --list-archs

  # UCF101's official split 1 as vidkit lists (train.list, val.list, labels.txt)
  vconvert --lists ucf101 --data ~/data/ucf101 --split 1 --out lists/ucf101

  # YouTube-8M as downloaded (vocabulary.csv, frame/train/*.tfrecord, frame/validate/*.tfrecord),
  # read without TensorFlow into feature stores (train.h5, val.h5: rgb [T, 1024] and audio
  # [T, 128] per video, dequantised as the starter code does) with train.list, val.list and
  # labels.txt; a damaged file loses the records from the bad one on (reported, counted, exit 1)
  vconvert --lists youtube8m --data ~/data/yt8m --out runs/yt8m

  # int8: calibrate a model's convolutions on clips sampled as the model wants, report the
  # accuracy cost on held-apart clips, write the model with its calibration and precision int8
  vsample --spec-from tsm.safetensors --list calib.list > calib.clips
  vsample --spec-from tsm.safetensors --list val.list > val.clips
  vconvert --quantize int8 --calib calib.clips --val val.clips tsm.safetensors tsm_int8.safetensors
  vsample --spec-from tsm_int8.safetensors clip.mp4 | vclassify --model tsm_int8.safetensors";

#[derive(clap::Parser, Debug)]
#[command(name = "vconvert", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
pub struct Args {
    /// Architecture to import as (see --list-archs).
    #[arg(long, value_name = "NAME", required_unless_present_any = ["list_archs", "lists", "quantize"],
          value_parser = clap::builder::PossibleValuesParser::new(arch_names()))]
    pub arch: Option<String>,

    /// Config override, KEY=VALUE with VALUE as JSON (e.g. frames=16, 'mean=[127.5,127.5,127.5]');
    /// repeatable.
    #[arg(short = 'o', long = "override", value_name = "KEY=VALUE")]
    pub options: Vec<String>,

    /// List the registered architectures, one per line, and exit.
    #[arg(long)]
    pub list_archs: bool,

    /// PyTorch checkpoint (.pth, .pt, .pyth) or Paddle checkpoint (.pdparams); for bsn, the TEM's.
    #[arg(value_name = "IN", required_unless_present_any = ["list_archs", "lists"])]
    pub input: Option<PathBuf>,

    /// With --arch bsn: MMAction2's PEM checkpoint, which goes into the same model file as the
    /// TEM's (IN).
    #[arg(long, value_name = "PEM.pth")]
    pub pem: Option<PathBuf>,

    /// With --arch ets: the reference's dictionary (dict.txt), stored in the model file.
    #[arg(long, value_name = "DICT")]
    pub vocab: Option<PathBuf>,

    /// Model file to write (.safetensors), atomically.
    #[arg(value_name = "OUT.safetensors", required_unless_present_any = ["list_archs", "lists"])]
    pub output: Option<PathBuf>,

    /// Convert a dataset's official annotations into vidkit lists instead: ucf101, hmdb51,
    /// kinetics (400/600/700; its CSVs, videos named id_start_end; videos not on disk are
    /// reported and left out), sthv2 (Something-Something v2's JSONs, template → class) or
    /// charades (multi-label: each video's set of action classes, `path c1,c2,...`; videos
    /// without actions left out) (--data DIR, --split N, --out DIR: writes train.list, val.list,
    /// labels.txt with class indices as MMAction2 assigns them; paths relative to DIR), or
    /// youtube8m (its TFRecords, frame- or video-level, and vocabulary.csv: also writes the
    /// features as train.h5 and val.h5; list lines are `id l1,l2,...`).
    #[arg(long, value_name = "DATASET", value_parser = ["ucf101", "hmdb51", "kinetics", "sthv2", "charades", "youtube8m"], requires_all = ["data", "out"],
          conflicts_with_all = ["arch", "list_archs", "input", "output"])]
    pub lists: Option<String>,
    /// With --lists: the dataset as downloaded (official layout or MMAction2's videos/ + annotations/).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// With --lists: the split (1-3).
    #[arg(long, default_value_t = 1)]
    pub split: u32,
    /// With --lists: where to write the lists.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// With --lists youtube8m: frames kept per video (the first N, as the starter code's
    /// max_frames and PaddleVideo's tf2pkl.py); 0 keeps all.
    #[arg(long, value_name = "N", default_value_t = vidkit::data::MAX_FRAMES)]
    pub max_frames: usize,
    /// With --lists youtube8m: store float16 instead of float32 (half the size; the 256
    /// dequantised levels stay distinct, each within 5e-4 of its float32 value).
    #[arg(long)]
    pub f16: bool,
    /// With --lists youtube8m: store frame-level rgb as the 2019 Paddle zoo's NeXtVLAD takes it,
    /// for its imported weights (nextvlad.py: dequantised with bias -2, without the 4/512 offset,
    /// times sqrt(eigenvalue) + 1e-4 per dimension from its yt8m_pca/eigenvals.npy); audio stays
    /// the starter code's, as there.
    #[arg(long, value_name = "EIGENVALS.npy")]
    pub nextvlad_eigenvals: Option<PathBuf>,

    /// Post-training quantization of a vidkit model file (IN) instead of an import: int8 runs
    /// the dense convolutions and Linear layers on int8 weights (symmetric, per output channel,
    /// BatchNorm folded)
    /// and 7-bit activations whose ranges come from --calib (by --calibration); OUT is IN with
    /// the ranges and `precision: int8` in its config. Reports top-1 agreement with f32 and the
    /// largest probability change over --calib and --val.
    #[arg(long, value_name = "KIND", value_parser = ["int8"], requires = "calib",
          conflicts_with_all = ["arch", "lists", "list_archs", "pem", "vocab"])]
    pub quantize: Option<String>,
    /// With --quantize: clip stream files (vsample --spec-from IN ...; read twice, so not
    /// stdin) to calibrate on.
    #[arg(long, value_name = "CLIPS", requires = "quantize")]
    pub calib: Vec<PathBuf>,
    /// With --quantize: how each convolution's input range is chosen from what --calib shows:
    /// histogram (PyTorch's HistogramObserver, its x86 default: the range whose 8-bit
    /// quantization has the least L2 error), minmax (everything seen), or percentile:P (the
    /// (100-P)th to Pth percentile, e.g. percentile:99.99).
    #[arg(long, value_name = "METHOD", default_value = "histogram", requires = "quantize")]
    pub calibration: vidkit::quantize::RangeMethod,
    /// With --quantize: held-apart clip streams the accuracy cost is also measured on.
    #[arg(long, value_name = "CLIPS", requires = "quantize")]
    pub val: Vec<PathBuf>,

    /// No summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn main(args: Args) -> Result<Outcome> {
    if let (Some(_), Some(input), Some(output)) = (&args.quantize, &args.input, &args.output) {
        return super::vconvert_quantize::quantize_int8(
            input,
            output,
            &args.calib,
            &args.val,
            args.calibration,
            args.quiet,
        );
    }
    if let (Some("youtube8m"), Some(data), Some(out)) = (args.lists.as_deref(), &args.data, &args.out) {
        let nextvlad_eigen_scale =
            args.nextvlad_eigenvals.as_deref().map(vidkit::data::read_nextvlad_eigen_scale).transpose()?;
        let opts = vidkit::data::Youtube8mOptions {
            max_frames: args.max_frames,
            f16: args.f16,
            nextvlad_eigen_scale,
        };
        return youtube8m(data, out, &opts, args.quiet);
    }
    if let (Some(name), Some(data), Some(out)) = (&args.lists, &args.data, &args.out) {
        let lists = match name.as_str() {
            "ucf101" => vidkit::data::ucf101_lists(data, args.split)?,
            "kinetics" => vidkit::data::kinetics_lists(data)?,
            "sthv2" => vidkit::data::sthv2_lists(data)?,
            "charades" => vidkit::data::charades_lists(data)?,
            _ => vidkit::data::hmdb51_lists(data, args.split)?,
        };
        if lists.train.is_empty() || lists.val.is_empty() {
            bail!(
                "{}: split {} has {} training and {} test videos on disk",
                data.display(),
                args.split,
                lists.train.len(),
                lists.val.len()
            );
        }
        vidkit::data::write_dataset_lists(&lists, out)?;
        for m in lists.missing.iter().take(5) {
            eprintln!("vconvert: listed but not on disk (left out): {m}");
        }
        if !lists.skipped.is_empty() {
            eprintln!(
                "vconvert: {} listed videos without any action left out (first {})",
                lists.skipped.len(),
                lists.skipped[0]
            );
        }
        if !args.quiet {
            eprintln!(
                "vconvert: {name} split {}: {} training, {} test videos, {} classes{} -> {}",
                args.split,
                lists.train.len(),
                lists.val.len(),
                lists.labels.len(),
                if lists.missing.is_empty() {
                    String::new()
                } else {
                    format!(", {} missing", lists.missing.len())
                },
                out.display()
            );
        }
        return Ok(Outcome::Success);
    }
    if args.list_archs {
        let mut out = String::new();
        for a in arch_names() {
            out.push_str(a);
            out.push('\n');
        }
        std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes())?;
        return Ok(Outcome::Success);
    }
    let (Some(arch), Some(input), Some(output)) = (&args.arch, &args.input, &args.output) else {
        bail!("--arch, IN and OUT are required (see --help)");
    };
    if input == output {
        bail!("{}: the output would overwrite the input", output.display());
    }
    if args.pem.is_some() && arch != "bsn" {
        bail!("--pem is for --arch bsn (MMAction2's PEM checkpoint)");
    }
    if args.vocab.is_some() != (arch == "ets") {
        bail!("--arch ets and --vocab DICT go together (the ETS dictionary, dict.txt)");
    }
    if let Some(vocab) = &args.vocab {
        let (config, tensors) = vidkit::model::import_ets_pdparams(input, vocab, &args.options)?;
        vidkit::model::save_tensors(&tensors, &config, output)?;
        if !args.quiet {
            let (spec, vocab) = vidkit::model::ets_spec(&config)?;
            eprintln!(
                "vconvert: {} -> {}: ets (the 2019 Paddle zoo), features {} wide, {} words, beam {}, at most {} words; {} tensors",
                input.display(),
                output.display(),
                spec.feat_size,
                vocab.len(),
                spec.beam_size,
                spec.max_length,
                tensors.len()
            );
        }
        return Ok(Outcome::Success);
    }
    if arch == "ctcn" {
        let (config, tensors) = vidkit::model::import_ctcn_pdparams(input, &args.options)?;
        vidkit::model::save_tensors(&tensors, &config, output)?;
        if !args.quiet {
            let spec = vidkit::model::ctcn_spec(&config)?;
            eprintln!(
                "vconvert: {} -> {}: ctcn (the 2019 Paddle zoo), features {} wide at {} steps, {} classes with the background, {} anchors; {} tensors",
                input.display(),
                output.display(),
                spec.concept_size,
                spec.img_size,
                spec.num_classes,
                spec.total_anchors(),
                tensors.len()
            );
        }
        return Ok(Outcome::Success);
    }
    if arch == "tall" {
        let (config, tensors) = vidkit::model::import_tall_pdparams(input, &args.options)?;
        vidkit::model::save_tensors(&tensors, &config, output)?;
        if !args.quiet {
            let spec = vidkit::model::tall_spec(&config)?;
            eprintln!(
                "vconvert: {} -> {}: tall (the 2019 Paddle zoo), snippet features {} wide, sentences {}, semantic {}, hidden {}; {} tensors",
                input.display(),
                output.display(),
                spec.snippet_width(),
                spec.sentence_embedding_size,
                spec.semantic_size,
                spec.hidden_size,
                tensors.len()
            );
        }
        return Ok(Outcome::Success);
    }
    if arch == "bsn" {
        let Some(pem) = &args.pem else {
            bail!("{}: bsn needs MMAction2's PEM checkpoint too: --pem PEM.pth", input.display());
        };
        if pem == output {
            bail!("{}: the output would overwrite the input", output.display());
        }
        let (config, tensors) = vidkit::model::import_bsn_mmaction2(input, pem, &args.options)?;
        vidkit::model::save_tensors(&tensors, &config, output)?;
        if !args.quiet {
            let spec = vidkit::model::bsn_spec(&config)?;
            eprintln!(
                "vconvert: {} + {} -> {}: bsn (MMAction2 TEM + PEM), features {} wide, T {}, TEM {} wide, PEM {} wide; {} tensors",
                input.display(),
                pem.display(),
                output.display(),
                spec.feat_dim,
                spec.temporal_dim,
                spec.tem_hidden_dim,
                spec.pem_hidden_dim,
                tensors.len()
            );
        }
        return Ok(Outcome::Success);
    }
    if arch_info(arch)?.task == Task::Localizer {
        // Temporal localizers are not recognizers: their own importer and model file check.
        // PaddleVideo saves .pdparams, MMAction2 .pth.
        let paddle = input.extension().is_some_and(|e| e == "pdparams");
        let (config, tensors) = if paddle {
            vidkit::model::import_bmn_pdparams(input, &args.options)?
        } else {
            vidkit::model::import_bmn_mmaction2(input, &args.options)?
        };
        vidkit::model::save_tensors(&tensors, &config, output)?;
        if !args.quiet {
            let spec = vidkit::model::bmn_spec(&config)?;
            eprintln!(
                "vconvert: {} -> {}: bmn ({}), features {} wide, T {} D {}, {} samples per proposal; {} tensors",
                input.display(),
                output.display(),
                if paddle { "PaddleVideo" } else { "MMAction2" },
                spec.feat_dim,
                spec.tscale,
                spec.dscale,
                spec.num_sample,
                tensors.len()
            );
        }
        return Ok(Outcome::Success);
    }
    let imported = import_checkpoint(input, arch, &args.options)?;
    let config = imported.model.model.config();
    save_model(&imported.model.varmap, config, output)?;
    if !args.quiet {
        let under = match &imported.state_dict_key {
            Some(k) => format!("under {k:?}"),
            None => "at the top level".to_string(),
        };
        eprintln!(
            "vconvert: {} -> {}: {}, {} classes, {} frames; {} tensors ({} layout, {under}; {} unused dropped)",
            input.display(),
            output.display(),
            config.arch,
            config.num_classes,
            config.frames,
            imported.tensors_read - imported.dropped,
            imported.layout,
            imported.dropped,
        );
    }
    Ok(Outcome::Success)
}

/// `--lists youtube8m`: the TFRecords into feature stores and lists; damaged records and files
/// are reported, skipped and counted (exit 1), the rest converted.
fn youtube8m(
    data: &std::path::Path,
    out: &std::path::Path,
    opts: &vidkit::data::Youtube8mOptions,
    quiet: bool,
) -> Result<Outcome> {
    let report = &mut |m: &str| eprintln!("vconvert: {m}");
    let s = vidkit::data::youtube8m_lists(data, out, opts, report)?;
    let (bad, damaged) =
        (s.train.bad_records + s.val.bad_records, s.train.damaged_files + s.val.damaged_files);
    if !quiet {
        let level = s.train.level.map(|l| l.name()).unwrap_or("");
        let skipped = if bad > 0 {
            format!("; {bad} records skipped, {damaged} damaged files not read to the end")
        } else {
            String::new()
        };
        eprintln!(
            "vconvert: youtube8m ({level}): {} training videos from {} files, {} validation videos from {} files, {} classes{skipped} -> {}",
            s.train.videos,
            s.train.files,
            s.val.videos,
            s.val.files,
            s.classes,
            out.display()
        );
    }
    if bad > 0 {
        // Inputs are records here: the skipped ones against all that were read.
        return Ok(Outcome::PartialFailure { failed: bad, total: bad + s.train.videos + s.val.videos });
    }
    Ok(Outcome::Success)
}
