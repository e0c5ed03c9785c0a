#!/usr/bin/env bash
# Issue 24's checks on the CPU of a lent device machine (its 16-core host may have AMX and
# AVX-512 BF16 when ours do not). That image has torch and torchvision but no Rust toolchain, so
# the binaries are built and stripped here and travel in .devcpu/ (git-ignored, ~25 MB):
#
#   here:  bash scripts/device_cpu_checks.sh prepare
#   there: the device tool's run, carry [".devcpu"], command
#          bash scripts/device_cpu_checks.sh run          (a few minutes; results under $OUT)
#
# `run` writes the CPU's flags; the GEMM, int8, weight-cache and precision unit tests (which
# print the kernel paths they ran: `bf16 paths`, `block kernels`, `int8 paths`); the bf16 and
# int8 products' rates against the unit's measured peak (TDPBF16PS or VDPBF16PS, with
# VDPBF16PS forced too where both exist); and TSN-R50 / TSM-R50 in bf16 and TSN-R50 in int8
# against PyTorch's fastest CPU modes, alternating (scripts/bench_models.py). The zoo rows need
# pytorchvideo, which that image lacks. To try it here: `OUT=dir PYTHON=target/peers/models/bin/python
# ROUNDS=1 REPS=1 bash scripts/device_cpu_checks.sh run` (3 minutes on a 2-core AVX2 EPYC,
# where PyTorch's bf16 takes ~10 s a forward).
set -uo pipefail
cd "$(dirname "$0")/.."
dir=.devcpu

case "${1:-}" in
  prepare)
    set -e
    mkdir -p "$dir"
    tests=$(cargo test --release -p vidkit --lib --no-run --message-format=json 2>/dev/null \
      | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "vidkit" and m.get("executable"):
        print(m["executable"])' | tail -1)
    cargo build --release -p vidkit-cli --example bench_models
    strip -o "$dir/vidkit-lib-tests" "$tests"
    strip -o "$dir/bench_models" target/release/examples/bench_models
    ls -l "$dir"
    ;;
  run)
    : "${OUT:?set OUT to the folder for the results}"
    py=${PYTHON:-python3}
    for f in vidkit-lib-tests bench_models; do
      [ -x "$dir/$f" ] || { echo "no $dir/$f: run 'prepare' here and carry $dir" >&2; exit 2; }
    done
    {
      grep -m1 'model name' /proc/cpuinfo
      echo "cores: $(nproc)"
      grep -m1 '^flags' /proc/cpuinfo | grep -o -w -E 'avx2|avx512f|avx512_vnni|avx512_bf16|amx_tile|amx_bf16|amx_int8' \
        | tr '\n' ' '
      echo
    } > "$OUT/cpu.txt" 2>&1
    cat "$OUT/cpu.txt"
    RAYON_NUM_THREADS=2 "$dir/vidkit-lib-tests" gemm qgemm int8 weight_cache precision --nocapture \
      > "$OUT/unit_tests.txt" 2>&1
    echo "unit tests: exit $?; $(grep -E '^test result' "$OUT/unit_tests.txt")"
    grep -E 'paths|kernels' "$OUT/unit_tests.txt" | sort -u
    export RAYON_NUM_THREADS=2
    "$dir/bench_models" bf16_rate 5 > "$OUT/bf16_rate.jsonl" 2>&1
    if grep -q -w amx_bf16 /proc/cpuinfo && grep -q -w avx512_bf16 /proc/cpuinfo; then
      VIDKIT_GEMM=avx512bf16 "$dir/bench_models" bf16_rate 5 > "$OUT/bf16_rate_vdpbf16ps.jsonl" 2>&1
    fi
    "$dir/bench_models" int8_rate 5 > "$OUT/int8_rate.jsonl" 2>&1
    for f in "$OUT"/*_rate*.jsonl; do
      echo "$(basename "$f"):"
      "$py" -c 'import json,sys
for l in open(sys.argv[1]):
    try: r = json.loads(l)
    except ValueError: print("  " + l.rstrip()); continue
    print("  %-38s %-10s %7.1f GMAC/s  %s of peak" % (r["layer"], r["kernel"], r["gmacs"], "%.3f" % r["of_peak"] if r.get("of_peak") else "-"))' "$f"
    done
    bench=(scripts/bench_models.py --vidkit "$dir/bench_models" --threads 2 --rounds "${ROUNDS:-3}" --reps "${REPS:-3}")
    "$py" "${bench[@]}" --bf16 --arch tsn_r50 --arch tsm_r50 --json "$OUT/bf16.json" 2>&1 | tail -6
    if grep -q -w amx_bf16 /proc/cpuinfo && grep -q -w avx512_bf16 /proc/cpuinfo; then
      VIDKIT_GEMM=avx512bf16 "$py" "${bench[@]}" --bf16 --arch tsn_r50 --json "$OUT/bf16_vdpbf16ps.json" 2>&1 | tail -4
    fi
    "$py" "${bench[@]}" --int8 --arch tsn_r50 --json "$OUT/int8.json" 2>&1 | tail -5
    ;;
  *)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
