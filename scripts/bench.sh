#!/usr/bin/env bash
# `make bench`: vidkit against the Python peers, same inputs, same run, alternating.
#
#   bash scripts/bench.sh BIN_DIR PEERS_DIR
#
# BIN_DIR holds the built tools (vsample); PEERS_DIR is where scripts/peers.sh keeps the pinned
# venvs (the full, models and paddle tiers are built here if they are not yet). Inputs are generated once into
# target/bench/ (regenerated when the recipe below changes); results go to target/bench/*.json.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 BIN_DIR PEERS_DIR" >&2; exit 2; }
bin=$(cd "$1" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
bash "$here/peers.sh" "$2" full
peers=$(cd "$2" && pwd)
out="$root/target/bench"
mkdir -p "$out"

# Ten seconds of testsrc2 with temporal + uniform noise, so the encoders spend realistic bitrates
# (a clean testsrc2 compresses to almost nothing and decodes unrealistically fast).
src() { echo "testsrc2=size=$1:rate=$2:duration=10,noise=alls=12:allf=t+u"; }
recipe="v1
720p.mp4 $(src 1280x720 30) -c:v libx264 -pix_fmt yuv420p
240p.mp4 $(src 320x240 25) -c:v libx264 -pix_fmt yuv420p
256p_mpeg4.avi $(src 340x256 25) -c:v mpeg4 -q:v 4 -pix_fmt yuv420p
batch: 50 copies of 240p.mp4"
if [ "$(cat "$out/.inputs" 2>/dev/null)" != "$recipe" ]; then
  echo "bench: generating inputs in $out" >&2
  rm -rf "$out/batch"
  # x264's default GOP (keyint 250, scenecut) and mpeg4's default (12: 21 keyframes in 10 s).
  while read -r name filter args; do
    case $name in v1|batch:) continue ;; esac
    # shellcheck disable=SC2086
    ffmpeg -v error -nostdin -y -f lavfi -i "$filter" $args "$out/$name"
  done <<< "$recipe"
  mkdir -p "$out/batch"
  for i in $(seq -w 1 50); do cp "$out/240p.mp4" "$out/batch/v$i.mp4"; done
  echo "$recipe" > "$out/.inputs"
fi

"$peers/full/bin/python" "$here/bench_decode.py" --vsample "$bin/vsample" --dir "$out" \
  --json "$out/decode.json"

# Models: vidkit's bench_models example against PyTorch, same shapes and threads.
cargo build -q --example bench_models
examples="$(dirname "$bin")/examples"
[ -x "$examples/bench_models" ] || examples="$root/target/debug/examples"
"$peers/full/bin/python" "$here/bench_models.py" --vidkit "$examples/bench_models" --threads 2 \
  --json "$out/models.json"

# Features: vfeat (tsn_r50 at 224) against torchvision's ResNet-50 as an extractor, and the HDF5
# feature store against h5py.
cargo build -q --example bench_featstore
"$peers/full/bin/python" "$here/bench_features.py" --bin "$bin" --featstore "$examples/bench_featstore" \
  --dir "$out" --threads 2 --json "$out/features.json"
# A 2-hour video (320x240, 25 fps, clean testsrc2: memory and rate are the point, not decoding
# cost) through `vsample --fps 5 | vfeat` with the ResNet-50 extractor above at 112x112: peak
# memory of each tool and the rate over the run (issue 19: pipeline <= 1 GB, steady rate).
if [ ! -s "$out/long2h.mp4" ]; then
  echo "bench: generating the 2-hour video (a few minutes)" >&2
  ffmpeg -v error -nostdin -y -f lavfi -i "testsrc2=size=320x240:rate=25:duration=7200" \
    -c:v libx264 -preset ultrafast -pix_fmt yuv420p -f mp4 "$out/long2h.mp4.part"
  mv "$out/long2h.mp4.part" "$out/long2h.mp4"
fi
python3 "$here/bench_long.py" --bin "$bin" --video "$out/long2h.mp4" --model "$out/feat_r50.safetensors" \
  --json "$out/long.json"
# The same 2-hour video classified window by window (issue 22 point 2): `vsample --fps 4 |
# vclassify --window 8 --stride 1` with TSM-R50 (torchvision's ResNet-50 layout, random weights,
# converted by vconvert) at 56x56 (memory and a steady rate are the point; the forward at the zoo
# size is timed above): one window per second of video, 7193 in all; peak memory of
# each tool (target: pipeline <= 1 GB) and the rate by tenth of the run (steady).
if [ ! -s "$out/tsm_r50_long.safetensors" ]; then
  "$peers/full/bin/python" -c 'import sys, torch, torchvision; torch.manual_seed(0); torch.save(torchvision.models.resnet50(num_classes=400).state_dict(), sys.argv[1])' "$out/tsm_r50_long.pth"
  "$bin/vconvert" --arch tsm_r50 -o num_classes=400 "$out/tsm_r50_long.pth" "$out/tsm_r50_long.safetensors"
fi
python3 "$here/bench_long.py" --bin "$bin" --video "$out/long2h.mp4" --model "$out/tsm_r50_long.safetensors" \
  --fps 4 --size 64 --crop-size 56 --window 8 --stride 1 --out "$out/long2h_windows.jsonl" \
  --json "$out/long_windows.json"
# Zoo models (the 3D CNNs and MViT-B): forward at each model's zoo input against pytorchvideo
# (models tier).
bash "$here/peers.sh" "$peers" models
"$peers/models/bin/python" "$here/bench_models.py" --zoo --vidkit "$examples/bench_models" --threads 2 \
  --json "$out/zoo.json"
# bf16 inference (issue 24): --precision bf16 against torch.autocast bf16 + channels_last, TSN/TSM-R50
# and the zoo at their inputs (models tier).
"$peers/models/bin/python" "$here/bench_models.py" --bf16 --vidkit "$examples/bench_models" --threads 2 \
  --json "$out/bf16.json"
# int8 inference (issue 24): vidkit's int8 convolutions against PyTorch's FX int8 (x86 backend),
# TSN-R50 8 × 224², with vidkit's f32 in the same rounds (models tier).
"$peers/models/bin/python" "$here/bench_models.py" --int8 --vidkit "$examples/bench_models" --threads 2 \
  --json "$out/int8.json"
# The int8 product alone on ResNet-50's largest layers against the rate of its dot-product
# instruction measured on the same threads (issue 24: the kernel's share of the unit's peak).
RAYON_NUM_THREADS=2 "$examples/bench_models" int8_rate 15 > "$out/int8_rate.json"
# The bf16 product alone on the same layers, against the bf16 unit's rate on the same threads
# (issue 24: achieved TFLOP/s against the unit's peak): TDPBF16PS where the CPU has AMX,
# VDPBF16PS where it has AVX-512 BF16 alone. A CPU with both also times the VDPBF16PS path
# (VIDKIT_GEMM=avx512bf16), the one CPUs without AMX (Zen 4, Cooper Lake) take.
RAYON_NUM_THREADS=2 "$examples/bench_models" bf16_rate 15 > "$out/bf16_rate.json"
rates=("$out/int8_rate.json" "$out/bf16_rate.json")
if grep -q amx_bf16 /proc/cpuinfo && grep -q avx512_bf16 /proc/cpuinfo; then
  VIDKIT_GEMM=avx512bf16 RAYON_NUM_THREADS=2 "$examples/bench_models" bf16_rate 15 > "$out/bf16_rate_vdpbf16ps.json"
  rates+=("$out/bf16_rate_vdpbf16ps.json")
fi
python3 - "${rates[@]}" <<'PY'
import json, sys
kinds = [("int8", "TOPS", "tops")] + [("bf16", "TFLOP/s", "tflops")] * (len(sys.argv) - 2)
for path, (what, unit, ops) in zip(sys.argv[1:], kinds):
    rows = [json.loads(l) for l in open(path)]
    print(f"\n{what} product alone ({rows[0]['kernel']}, 2 threads), against its instruction's rate here:")
    for r in rows:
        share = f"{100 * r['of_peak']:.0f}% of {r['peak_gmacs']:.0f} GMAC/s" if r["of_peak"] is not None else "no peak here"
        print(f"  {r['layer']:38s} {r['m']:5d}x{r['k']:5d}x{r['n']:6d}  {r[ops]:.2f} {unit}  {share}")
PY
# PP-TSMv2: vidkit's forward against PaddlePaddle's inference predictor with oneDNN on (paddle
# tier); prints the ratio vidkit / Paddle.
bash "$here/peers.sh" "$peers" paddle
"$peers/paddle/bin/python" "$here/bench_paddle.py" --vidkit "$examples/bench_models" --threads 2 \
  --json "$out/paddle.json"
# PP-TimeSformer (ViT-B/16, 8 × 224²): vidkit's forward against ppvideo's VisionTransformer in
# Paddle's dynamic graph.
"$peers/paddle/bin/python" "$here/bench_paddle.py" --vidkit "$examples/bench_models" --threads 2 \
  --arch pptimesformer_vit_b --reps 3 --json "$out/pptimesformer.json"
# ... at 16 frames, and the peak resident memory of one 16-frame forward on each side.
"$peers/paddle/bin/python" "$here/bench_paddle.py" --vidkit "$examples/bench_models" --threads 2 \
  --arch pptimesformer_vit_b --frames 16 --reps 3 --json "$out/pptimesformer16.json"
"$peers/paddle/bin/python" "$here/bench_paddle.py" --vidkit "$examples/bench_models" --threads 2 \
  --arch pptimesformer_vit_b --frames 16 --memory --json "$out/pptimesformer16_memory.json"
# StNet (7 segments of 5 frames at 224²): vidkit's forward against the PyTorch restatement of the
# 2019 zoo's fluid code (models tier).
"$peers/models/bin/python" "$here/bench_models.py" --stnet --vidkit "$examples/bench_models" --threads 2 \
  --json "$out/stnet.json"
# Attention alone (the transformers' shapes) against torch's scaled_dot_product_attention.
"$peers/models/bin/python" "$here/bench_models.py" --attention --vidkit "$examples/bench_models" --threads 2 \
  --reps 5 --json "$out/attention.json"
# BMN: features -> proposals per video, vpropose against PaddleVideo's BMN + bmn_metric.py's
# post-processing (paddle tier).
"$peers/paddle/bin/python" "$here/bench_bmn.py" --bin "$bin" --dir "$out" --threads 2 --json "$out/bmn.json"
# The same against MMAction2's BMN (a PyTorch restatement of it: mmcv does not install; models tier).
"$peers/models/bin/python" "$here/bench_bmn_mmaction2.py" --bin "$bin" --dir "$out" --threads 2 \
  --json "$out/bmn_mmaction2.json"
# ETS: features -> captions per video (beam 3, 80 words), vcaption against the PyTorch restatement of
# the 2019 zoo's fluid infer_decoder and beam_search / beam_search_decode ops (models tier).
"$peers/models/bin/python" "$here/bench_ets.py" --bin "$bin" --dir "$out" --threads 2 --json "$out/ets.json"
# Full-size parity: each zoo model at its own input size, the hub head with its fixed
# pooling kernel, logits against pytorchvideo's (the tests run at reduced sizes).
cargo test -q --test parity_zoo zoo_models_match_pytorchvideo_at_full_size -- --ignored --nocapture
# The video transformers at full size (ViT-B/16, 12 blocks, 8 × 224²; MViT-B 16 × 4 and 32 × 3)
# against PaddleVideo, transformers, pytorchvideo and torchvision.
cargo test -q --test parity_transformer transformers_match_their_references_at_full_size -- --ignored --nocapture
# C-TCN at the zoo's own size (512 steps, 402 concepts, 201 classes) against its restatement.
cargo test -q --test parity_ctcn ctcn_matches_the_paddle_zoo_at_full_size -- --ignored --nocapture
# StNet at the zoo's size (ResNet-50, 224², 7 and 25 segments of 5 frames) against its restatement.
cargo test -q --test parity_stnet stnet_full_size_matches_the_paddle_zoo -- --ignored --nocapture
# ETS at ets.yaml's sizes (2048 / 1024 / 512, 6000 words, 80-word beam search) against its restatement.
cargo test -q --test parity_ets ets_full_size_matches_the_paddle_zoo -- --ignored --nocapture
# TALL at configs/tall.yaml's sizes (12288 / 4800 / 1024 / 1000, batch 56) against its restatement.
cargo test -q --test parity_tall tall_full_size_matches_the_paddle_zoo -- --ignored --nocapture
