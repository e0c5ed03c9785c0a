#!/usr/bin/env bash
# `make demo`: the main job end to end on generated data.
#   generate a labelled synthetic set (vsynth) → sample clips (vsample) → predict → evaluate (veval)
# The classifier (vclassify/vtrain) arrives with the 2D recognition issue; until then the
# prediction step is a MAJORITY-CLASS BASELINE, clearly not a model.
set -euo pipefail
bin=${1:-target/debug}
out=${DEMO_DIR:-target/demo}
mkdir -p "$out"
say() { printf '\n== %s\n' "$*" >&2; }

say "1. vsynth: 4 classes that differ only in temporal order (left/right/up/down), 12 videos each"
"$bin/vsynth" --out "$out/synth" --classes left,right,up,down --per-class 12 --size 112x112 --seed 1 -j 2
head -3 "$out/synth/train.list" >&2
echo "   labels: $(tr '\n' ' ' < "$out/synth/labels.txt")" >&2

say "2. vsample: TSN test protocol, 8 segments, 112px centre crop, 2 decoders"
"$bin/vsample" --list "$out/synth/val.list" --root "$out/synth" --frames 8 --size 112 --crop-size 112 -j 2 \
  -o "$out/val.vks"
ls -l "$out/val.vks" >&2

say "3. predictions: majority-class baseline (no model yet: vclassify arrives with issue 3)"
# The most frequent training label, predicted for every validation video with probability 1.
classes=$(wc -l < "$out/synth/labels.txt")
major=$(awk '{print $NF}' "$out/synth/train.list" | sort | uniq -c | sort -k1,1nr -k2,2n | awk 'NR==1{print $2}')
awk -v k="$classes" -v m="$major" '{
  path=$1; for (i = 2; i < NF; i++) path = path " " $i
  s = ""; for (c = 0; c < k; c++) s = s (c ? "," : "") (c == m ? 1 : 0)
  printf "{\"video\":\"%s\",\"scores\":[%s],\"top\":[{\"class\":%d,\"score\":1}]}\n", path, s, m
}' "$out/synth/val.list" > "$out/baseline.jsonl"

say "4. veval: metrics of the baseline (chance is $(awk -v k="$classes" 'BEGIN{printf "%.2f", 1/k}'))"
"$bin/veval" --pred "$out/baseline.jsonl" --gt "$out/synth/val.list" --labels "$out/synth/labels.txt"
