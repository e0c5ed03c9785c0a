#!/usr/bin/env bash
# A CUDA 13.0 build toolchain from PyPI wheels, for `cargo build --features cuda` on a machine
# with no GPU and no system CUDA (how the H100 check in README "On a GPU" was built):
#
#   bash scripts/cuda-toolchain.sh DIR && source DIR/env.sh && cargo build --release --features cuda
#
# The versions are those of a PyTorch 2.11 + cu130 install, so the binaries find their libraries
# (libcudart/libcublas .so.13, libcurand .so.10) in such a venv's nvidia/cu13/lib on the GPU
# machine. Keep nvcc at 13.0: cudarc 0.19.10 knows CUDA versions up to 13.4. libcuda.so.1 is the
# driver's; for the link only, a stub exporting every driver function cudarc declares.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
mkdir -p "$1"
dir=$(cd "$1" && pwd)
python3 -m pip install -q --disable-pip-version-check --no-deps --target "$dir/site" \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35
root=$dir/site/nvidia/cu13
ln -sfn lib "$root/lib64"
for lib in cudart cublas cublasLt nvrtc; do ln -sf "lib$lib.so.13" "$root/lib/lib$lib.so"; done
ln -sf libcurand.so.10 "$root/lib/libcurand.so"

cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | head -1)
[ -n "$cudarc" ] || { echo "$0: cudarc's source is not in the cargo registry: run 'cargo fetch' first" >&2; exit 1; }
mkdir -p "$root/lib/stubs"
{
  echo "/* link-only stub of libcuda.so.1; the real one comes with the NVIDIA driver */"
  grep -rhoE "pub (unsafe )?fn cu[A-Za-z0-9_]+" "$cudarc/src/driver/sys" | awk '{print $NF}' | sort -u \
    | sed 's/.*/int &(void) { return 0; }/'
} > "$dir/libcuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$dir/libcuda_stub.c"

cat > "$dir/env.sh" <<ENV
# source me before: cargo build --features cuda (from scripts/cuda-toolchain.sh)
export CUDA_ROOT=$root
export CUDA_HOME=$root CUDA_PATH=$root CUDA_TOOLKIT_ROOT_DIR=$root
export NVCC=$root/bin/nvcc
export PATH=$root/bin:\$PATH
# No GPU to ask: the H100/H200's compute capability.
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$root/lib:$root/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}
export CPATH=$root/include\${CPATH:+:\$CPATH}
ENV
echo "cuda-toolchain: ready; source $dir/env.sh" >&2
