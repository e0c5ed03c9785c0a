#!/usr/bin/env bash
# Builds the pinned Python peers (decord, PyAV, OpenCV, torch, ...) that parity tests and
# benchmarks compare vidkit against.
#
#   bash scripts/peers.sh TARGET_DIR [decode|models|full|paddle|captions|tfrecord|all]  (default: all)
#
# Tiers, one venv each, so that a test pays only for what it imports:
#   TARGET_DIR/decode  scripts/peers-decode.txt  numpy, av, decord, opencv  (pixel parity test)
#   TARGET_DIR/models  scripts/peers-models.txt  numpy, safetensors, pytorchvideo and torch's
#                                                requirements less triton, then torch and
#                                                torchvision --no-deps (peers-models-nodeps.txt):
#                                                2D and 3D model parity tests, zoo bench
#   TARGET_DIR/full    scripts/peers-full.txt    decode + torch, torchvision, torchcodec (bench)
#   TARGET_DIR/paddle  scripts/peers-paddle.txt  numpy, paddlepaddle (CPU), ppvideo's deps, then
#                      ppvideo --no-deps (peers-paddle-nodeps.txt), the paddle.fluid stub
#                      (peers-paddle-fluid-stub.py) and a .pth that makes `import paddlevideo`
#                      work as in a PaddleVideo checkout (Paddle parity test)
#   TARGET_DIR/captions scripts/peers-captions.txt numpy, then pycocoevalcap --no-deps
#                      (peers-captions-nodeps.txt; its pycocotools dependency only loads COCO
#                      JSON, which the fixture script does not use): veval --captions checks.
#                      Its wheel is 104 MB (the METEOR, PTB tokenizer and SPICE jars); the
#                      tokenizer and METEOR need a JRE (`java`) when the fixtures are made
#   TARGET_DIR/tfrecord scripts/peers-tfrecord.txt numpy, protobuf, crc32c and the pure-Python
#                      `tfrecord` writer: YouTube-8M TFRecord fixtures (recipes_youtube8m test)
#
# Idempotent: a venv is rebuilt only when the hash of its pinned requirements (and of the Python
# that runs it) differs from the stamp written after its last successful build, so a second run
# returns in well under a second. Concurrent callers (a test and `make peers`) serialise on a lock.
# Exit status: 0 when every requested tier is ready, non-zero otherwise (e.g. no network).
set -euo pipefail

usage() { echo "usage: $0 TARGET_DIR [decode|models|full|paddle|captions|tfrecord|all]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
target=$1
case "${2:-all}" in
  decode) tiers=(decode) ;;
  models) tiers=(models) ;;
  full) tiers=(full) ;;
  paddle) tiers=(paddle) ;;
  captions) tiers=(captions) ;;
  tfrecord) tiers=(tfrecord) ;;
  all) tiers=(decode models full paddle captions tfrecord) ;;
  *) usage ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}
mkdir -p "$target"
target=$(cd "$target" && pwd)

# The files whose contents define a tier (full includes decode through `-r`).
tier_files() {
  case $1 in
    decode) echo "$here/peers-decode.txt" ;;
    models) echo "$here/peers-models.txt $here/peers-models-nodeps.txt" ;;
    full) echo "$here/peers-decode.txt $here/peers-full.txt" ;;
    paddle) echo "$here/peers-paddle.txt $here/peers-paddle-nodeps.txt $here/peers-paddle-fluid-stub.py" ;;
    captions) echo "$here/peers-captions.txt $here/peers-captions-nodeps.txt" ;;
    tfrecord) echo "$here/peers-tfrecord.txt" ;;
  esac
}

# ppvideo without its impossible pins, and what it needs under Paddle 3 (shared/PEERS.md).
install_paddle_extras() {
  local venv=$1 site sub
  pip_install "$venv" --no-deps -r "$here/peers-paddle-nodeps.txt"
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  for sub in __init__ framework core layer_helper data_feeder dygraph/__init__; do
    mkdir -p "$(dirname "$site/paddle/fluid/$sub.py")"
    cp "$here/peers-paddle-fluid-stub.py" "$site/paddle/fluid/$sub.py"
  done
  # ppvideo's modules import each other as `paddlevideo.*` (as in a PaddleVideo checkout).
  echo "$site/ppvideo" > "$site/vidkit-paddlevideo.pth"
}

# No wheel cache: torch's wheels alone are 2 GB that would stay in ~/.cache beside the venv.
pip_install() {
  local venv=$1
  shift
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input --no-cache-dir "$@"
}

build_tier() {
  local tier=$1 venv="$target/$1" stamp="$target/$1/.vidkit-peers-stamp" want
  # shellcheck disable=SC2046
  want=$( { cat $(tier_files "$tier"); "$python" -c 'import sys; print(sys.version)'; } \
    | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  (
    # One builder at a time per tier; whoever waited re-checks the stamp.
    flock 9
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
      exit 0
    fi
    echo "peers: building $venv (pinned in $(tier_files "$tier" | xargs -n1 basename | tr '\n' ' '))" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    pip_install "$venv" -r "$here/peers-$tier.txt"
    case $tier in
      paddle) install_paddle_extras "$venv" ;;
      models) pip_install "$venv" --no-deps -r "$here/peers-models-nodeps.txt" ;;
      captions) pip_install "$venv" --no-deps -r "$here/peers-captions-nodeps.txt" ;;
    esac
    # Smoke-import what the tier promises, so a broken wheel fails here, not in a test.
    case $tier in
      decode) imports="numpy, av, decord, cv2" ;;
      models) imports="numpy, torch, torchvision, safetensors.torch, pytorchvideo.models.hub, transformers" ;;
      full) imports="numpy, av, decord, cv2, torch, torchvision, torchcodec.decoders" ;;
      paddle) imports="numpy, paddle, paddlevideo.modeling.backbones, paddlevideo.modeling.heads" ;;
      captions) imports="numpy, pycocoevalcap.bleu.bleu, pycocoevalcap.cider.cider, pycocoevalcap.rouge.rouge, pycocoevalcap.meteor.meteor, pycocoevalcap.tokenizer.ptbtokenizer" ;;
      tfrecord) imports="numpy, tfrecord, tfrecord.writer" ;;
    esac
    "$venv/bin/python" -W ignore -c "import $imports"
    echo "$want" > "$stamp"
    echo "peers: $venv ready" >&2
  ) 9> "$target/.$tier.lock"
}

for tier in "${tiers[@]}"; do
  build_tier "$tier"
done
