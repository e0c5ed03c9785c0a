#!/usr/bin/env bash
# `make demo`: the main job end to end on generated data.
#   vsynth (a labelled synthetic set) → vtrain (a small TSM) →
#   vsample | vclassify (the validation videos through the pipe) → veval (metrics);
#   then VideoTag's two stages: vsample | vfeat → HDF5 → vtrain AttentionLSTM → vsample | vfeat | vclassify;
#   then temporal proposals: vsynth --segments → snippet features → vtrain BMN → vpropose → veval
set -euo pipefail
bin=${1:-target/debug}
out=${DEMO_DIR:-target/demo}
mkdir -p "$out"
say() { printf '\n== %s\n' "$*" >&2; }
# candle's thread pool spins between small ops; one thread is faster for models this small.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}

say "1. vsynth: 4 classes that differ only in temporal order (left/right/up/down), 150 videos each"
"$bin/vsynth" --out "$out/synth" --classes left,right,up,down --per-class 150 --size 32x32 --seed 1 -j 2
head -3 "$out/synth/train.list" >&2

say "2. vtrain: a quarter-width TSM-R18 (8 frames, 32 px), about three minutes on 2 cores"
epochs=${DEMO_EPOCHS:-12}
"$bin/vtrain" --arch tsm_r18 --train-list "$out/synth/train.list" --val-list "$out/synth/val.list" --out "$out/tsm" \
  -o frames=8 -o base_width=16 -o short_side=32 -o crop_size=32 -o train_crop=center -o batch_size=16 -o dropout=0 \
  -o epochs="$epochs" -o 'optimizer={"name":"adamw","lr":0.002,"weight_decay":0.0001}' \
  -o "schedule={\"name\":\"cosine\",\"base_lr\":0.002,\"epochs\":$epochs}" --seed 3

say "3. vsample | vclassify: the validation videos through the pipe"
"$bin/vsample" --list "$out/synth/val.list" --root "$out/synth" --frames 8 --size 32 --crop-size 32 -j 2 -q \
  | "$bin/vclassify" --model "$out/tsm/best.safetensors" --topk 2 > "$out/predictions.jsonl"
head -2 "$out/predictions.jsonl" | cut -c1-200 >&2

say "4. veval: the model's metrics on the validation set (chance is 0.25)"
"$bin/veval" --pred "$out/predictions.jsonl" --gt "$out/synth/val.list" --labels "$out/synth/labels.txt"

say "5. VideoTag's two stages (recipes/videotag.mk) on grow/shrink/appear/disappear: a frame model's"
say "   per-frame features into HDF5, AttentionLSTM trained on them, then vsample | vfeat | vclassify"
"$bin/vsynth" --out "$out/synth2" --classes grow,shrink,appear,disappear --per-class 100 --size 32x32 --seed 2 -j 2 -q
# The extractor: a TSN of the same size, briefly trained. Alone it sees each frame's object size
# and presence but not their order (about 0.3 here); the LSTM reads the order from its features.
"$bin/vtrain" --arch tsn_r18 --train-list "$out/synth2/train.list" --val-list "$out/synth2/val.list" --out "$out/tsn" \
  -o frames=8 -o base_width=16 -o short_side=32 -o crop_size=32 -o train_crop=center -o batch_size=16 -o dropout=0 \
  -o epochs="${DEMO_TSN_EPOCHS:-3}" -o 'optimizer={"name":"adamw","lr":0.002,"weight_decay":0.0001}' --seed 3 -q
make -s -f recipes/videotag.mk BIN="$bin" DATA="$out/synth2" EXTRACTOR="$out/tsn/best.safetensors" \
  OUT="$out/videotag" FRAMES=8 SIZE=32 EPOCHS="${DEMO_LSTM_EPOCHS:-40}" LR=0.003 \
  LSTM_OPTS='-o sequence.embedding_size=64 -o sequence.lstm_size=64 -o sequence.hidden_sizes=[128,64]'

say "6. Temporal action proposals (recipes/activitynet.mk) on untrimmed videos with known actions:"
say "   snippet features from the TSN above, BMN trained on them, AR@AN of its proposals"
"$bin/vsynth" --segments -o "$out/untrimmed" --classes left,grow --videos 48 --duration 16-24 --size 64x48 --seed 7 -j 2 -q
make -s -f recipes/activitynet.mk BIN="$bin" DATA="$out/untrimmed" EXTRACTOR="$out/tsn/best.safetensors" \
  OUT="$out/activitynet" INTERVAL=6 SIZE=64 CROP=48 TSCALE=32 \
  BMN_OPTS='-o num_sample=8 -o hidden_1d=64 -o hidden_2d=32 -o hidden_3d=128' \
  TRAIN_OPTS="-o epochs=${DEMO_BMN_EPOCHS:-30} -o batch_size=4 -o 'schedule={\"name\":\"piecewise\",\"base_lr\":0.003,\"boundaries\":[24],\"values\":[0.003,0.0003]}'"
