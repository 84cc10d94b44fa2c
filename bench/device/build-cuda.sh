#!/usr/bin/env bash
# Builds the `--features cuda` release binary on a machine with no GPU and no CUDA toolkit, for
# carrying to a lent GPU machine (which has the driver and PyTorch's CUDA 13 libraries but no Rust).
#
# The compiler and headers come from NVIDIA's CUDA 13.0 PyPI wheels (as `.ci/cuda-check` installs
# them); cuBLAS and cuRAND from their 13.0 wheels, only to link against. candle links cudarc
# dynamically (-lcuda -lnvrtc -lcublas -lcublasLt -lcurand -lcudart) and the wheels ship only
# versioned `.so.N` files and no driver, so a link folder gets unversioned symlinks and a stub
# `libcuda.so` (soname `libcuda.so.1`, as NVIDIA's own `lib/stubs/libcuda.so`) defining the `cu*`
# driver symbols the compiled crates reference, read from their object code with `nm`; each
# returns CUDA_ERROR_STUB_LIBRARY. At run time the real `libcuda.so.1` of the driver replaces it.
#
# The stripped binary is ~70 MB, over the device tool's 64 MiB carry limit, so it is
# xz-compressed to bench/device/out/medbridge.xz (ignored by git; carry `bench/device/out`);
# check.sh unpacks it with Python's lzma.
#
# Usage: bench/device/build-cuda.sh
#   CARGO_TARGET_DIR   the build folder (default: target)
#   MEDBRIDGE_CUDA_WHEELS  the compiler wheels' folder (default ~/.cache/medbridge/cuda13.0);
#                          the link-only wheels go to the same path with a `-link` suffix.
set -euo pipefail

# One function, read whole before it runs: editing this file during a long build cannot change
# what the running build does next.
main() {
  cd "$(dirname "$0")/../.."

  wheels="${MEDBRIDGE_CUDA_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/medbridge/cuda13.0}"
  linkwheels="$wheels-link"
  cu="$wheels/nvidia/cu13"
  target="${CARGO_TARGET_DIR:-target}"
  out=bench/device/out
  link="$target/cuda-link"

  pip_target() {
    python3 -m pip install --quiet --disable-pip-version-check --target "$@"
  }
  if [ ! -x "$cu/bin/nvcc" ]; then
    echo "== installing the CUDA 13.0 compiler wheels into $wheels"
    pip_target "$wheels" \
      nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
      nvidia-cuda-runtime==13.0.96 'nvidia-cuda-cccl==13.0.*' 'nvidia-cuda-nvrtc==13.0.*'
  fi
  # A separate folder: `pip --target` does not merge into an existing `nvidia/` package folder.
  if [ ! -e "$linkwheels/nvidia/cu13/lib/libcublas.so.13" ]; then
    echo "== installing the cuBLAS and cuRAND 13.0 wheels (link only) into $linkwheels"
    pip_target "$linkwheels" 'nvidia-cublas==13.0.*' 'nvidia-curand==10.4.0.*'
  fi

  export PATH="$cu/bin:$PATH" CUDA_ROOT="$cu" CUDA_PATH="$cu" CUDA_COMPUTE_CAP=90
  mkdir -p "$link" "$out"
  # LIBRARY_PATH rather than RUSTFLAGS: the C linker searches it and cargo's fingerprints ignore it.
  export LIBRARY_PATH="$(cd "$link" && pwd)${LIBRARY_PATH:+:$LIBRARY_PATH}"

  echo "== unversioned symlinks in $link"
  for lib in "$cu"/lib/libcudart.so.13 "$cu"/lib/libnvrtc.so.13 \
    "$linkwheels"/nvidia/cu13/lib/libcublas.so.13 "$linkwheels"/nvidia/cu13/lib/libcublasLt.so.13 \
    "$linkwheels"/nvidia/cu13/lib/libcurand.so.10; do
    [ -e "$lib" ] || { echo "missing $lib (reinstall the wheels: remove $wheels or $linkwheels)" >&2; exit 1; }
    name=$(basename "$lib")
    ln -sf "$(cd "$(dirname "$lib")" && pwd)/$name" "$link/${name%%.so.*}.so"
  done

  echo "== compiling the libraries (cudarc's object code names the driver symbols)"
  cargo build --release -p medbridge-runtime --features cuda --lib

  echo "== stub libcuda.so from the cu* symbols the compiled crates reference"
  symbols=$(nm -u "$target"/release/deps/*.rlib 2>/dev/null | awk '$1 == "U" && $2 ~ /^cu[A-Z]/ { print $2 }' | sort -u)
  [ -n "$symbols" ] || { echo "no cu* symbols found in $target/release/deps: did cudarc compile?" >&2; exit 1; }
  # Each returns CUDA_ERROR_STUB_LIBRARY (34), as NVIDIA's stub does, so a run that reaches the
  # stub instead of a driver gets an error that says so (device.rs explains it), never garbage.
  printf '%s\n' "$symbols" | sed 's/.*/int &(void) { return 34; }/' >"$link/libcuda-stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/libcuda-stub.c"
  # The binary asks for the soname at run time; here the stub answers it.
  ln -sf libcuda.so "$link/libcuda.so.1"
  echo "$(printf '%s\n' "$symbols" | wc -l) driver symbols"

  echo "== linking the medbridge binary"
  cargo build --release --features cuda --bin medbridge
  bin="$target/release/medbridge"
  strip -o "$out/medbridge" "$bin"
  xz -T0 -9 -c "$out/medbridge" >"$out/medbridge.xz.tmp" && mv "$out/medbridge.xz.tmp" "$out/medbridge.xz"
  rm "$out/medbridge"
  ls -l "$bin" "$out/medbridge.xz"
  echo "== done: carry bench/device/out; on the device, bench/device/check.sh unpacks it"
  echo "   here: LD_LIBRARY_PATH=$link:$cu/lib:$linkwheels/nvidia/cu13/lib $bin run SCRIPT"
}

main "$@"
