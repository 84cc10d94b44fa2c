#!/usr/bin/env bash
# The prepared device check (issue 13): on a lent GPU machine, with the `--features cuda` binary
# built here by bench/device/build-cuda.sh and carried as bench/device/out/medbridge.xz, measure in
# under 10 minutes, each stage under its own time limit so one slow stage cannot eat the rest:
#   parity       the committed fixture on CUDA vs CPU: f32 logits within 1e-4, greedy tokens identical
#   sampling     7B preset, bf16: 32 prompts x K = 16 x 256 new tokens, tokens/s
#   sampling_hf  transformers generate(num_return_sequences=16), same shapes, random init on the GPU
#   grpo         one LoRA GRPO step at 7B (G = 8, 1,024-token completions): time, peak GPU memory,
#                and memory_plan's peak for the same step
#   grpo_peft    the same step in plain PyTorch + PEFT
# then writes check.json and prints a summary (summarize.py). The GPU machine has the driver,
# PyTorch, transformers and peft but no Rust and no network; the binary links cuBLAS, cuRAND,
# NVRTC and cudart 13, which this script finds inside that PyTorch's site-packages (nvidia/cu13/lib
# or nvidia/*/lib), beside the driver's libcuda.so.1.
#
# `--dry`: the same stages on the CPU with the tiny preset and small shapes, the binary from this
# checkout's build (MEDBRIDGE_BIN, else $CARGO_TARGET_DIR or target/release/medbridge), the
# Python stages skipped with a note unless torch with a GPU is importable. tests/device_check.rs
# runs it in CI so the check cannot rot; its numbers mean nothing.
#
# Usage: bench/device/check.sh [--dry]
#   output folder: $MEDBRIDGE_CHECK_OUT, else $OUT (the device tool's returned folder), else
#   bench/device/results; MEDBRIDGE_CHECK_STAGES="parity grpo" runs only those; PYTHON picks the
#   interpreter with torch (default python3).
set -uo pipefail
cd "$(dirname "$0")/../.."

mode=gpu
[ "${1:-}" = "--dry" ] && mode=dry
out="${MEDBRIDGE_CHECK_OUT:-${OUT:-bench/device/results}}"
py="${PYTHON:-python3}"
stages="${MEDBRIDGE_CHECK_STAGES:-parity sampling sampling_hf grpo grpo_peft}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
here=bench/device

if [ "$mode" = gpu ]; then
  echo "== unpacking the carried binary ($here/out/medbridge.xz)"
  bin="$(mktemp -d)/medbridge"
  "$py" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$here/out/medbridge.xz" "$bin" || { echo "cannot unpack $here/out/medbridge.xz: build it with $here/build-cuda.sh and carry $here/out" >&2; exit 1; }
  chmod +x "$bin"
  # CUDA 13 libraries from the PyTorch environment, and the driver's folder.
  libs=$("$py" - <<'EOF'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
dirs = []
for root in roots:
    for pattern in ("nvidia/cu13/lib", "nvidia/*/lib"):
        dirs += [d for d in sorted(glob.glob(os.path.join(root, pattern))) if os.path.isdir(d)]
print(":".join(dict.fromkeys(dirs)))
EOF
)
  for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 /usr/lib/wsl/lib; do
    [ -e "$d/libcuda.so.1" ] && libs="$libs:$d"
  done
  export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  missing=$(ldd "$bin" | grep "not found")
  if [ -n "$missing" ]; then
    echo "the binary's libraries are not all found (LD_LIBRARY_PATH=$LD_LIBRARY_PATH):" >&2
    echo "$missing" >&2
    exit 1
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
  device=cuda gpu_flag=(--gpu 0)
  parity_set=(--set device=cuda)
  sampling_set=(--set device=cuda --set preset=qwen2_5_vl_7b --set dtype=bf16 --set prompts=32 --set k=16 --set new_tokens=256)
  grpo_set=(--set device=cuda --set preset=qwen2_5_vl_7b --set dtype=bf16 --set group=8 --set new_tokens=1024)
  hf_sizes=(--prompts 32 --k 16 --new-tokens 256)
  peft_sizes=(--group 8 --new-tokens 1024)
  limits=(parity=40 sampling=130 sampling_hf=100 grpo=160 grpo_peft=100)
else
  bin="${MEDBRIDGE_BIN:-${CARGO_TARGET_DIR:-target}/release/medbridge}"
  [ -x "$bin" ] || { echo "no medbridge binary at $bin: cargo build --release, or set MEDBRIDGE_BIN" >&2; exit 1; }
  device=cpu gpu_flag=()
  parity_set=(--set device=cpu)
  sampling_set=(--set device=cpu --set preset=qwen2_5_vl_tiny --set dtype=f32 --set prompts=2 --set k=4 --set new_tokens=8 --set chunk=1)
  grpo_set=(--set device=cpu --set preset=qwen2_5_vl_tiny --set dtype=f32 --set group=4 --set new_tokens=8)
  hf_sizes=(--prompts 2 --k 4 --new-tokens 8)
  peft_sizes=(--group 4 --new-tokens 8)
  limits=(parity=60 sampling=60 sampling_hf=60 grpo=60 grpo_peft=60)
fi
echo "== device check ($mode) with $bin -> $out"

limit() { for l in "${limits[@]}"; do [ "${l%%=*}" = "$1" ] && echo "${l#*=}"; done; }
wanted() { [[ " $stages " == *" $1 "* ]]; }
stage() {
  local name=$1; shift
  "$py" "$here/stage.py" --out "$out" --timeout "$(limit "$name")" "${gpu_flag[@]}" "$name" -- "$@" || failed="$failed $name"
}
# A stage's run folder is made fresh: medbridge refuses to mix a new run into an old one.
run_stage() {
  local name=$1 script=$2; shift 2
  rm -rf "${out:?}/$name"
  stage "$name" "$bin" run "$here/$script" --quiet --out "$out/$name" "$@"
}
# The prompt length the medbridge stage used, so the Python side matches it.
prompt_tokens() { "$py" -c 'import json, sys
try: print(json.load(open(sys.argv[1]))["prompt_tokens"])
except Exception: print(64)' "$1"; }

failed=""
wanted parity && run_stage parity parity.rhai "${parity_set[@]}"
wanted sampling && run_stage sampling sampling.rhai "${sampling_set[@]}"
wanted sampling_hf && stage sampling_hf "$py" "$here/hf_generate.py" --out "$out/sampling_hf.json" \
  "${hf_sizes[@]}" --prompt-tokens "$(prompt_tokens "$out/sampling/sampling.json")"
wanted grpo && run_stage grpo grpo_step.rhai "${grpo_set[@]}"
wanted grpo_peft && stage grpo_peft "$py" "$here/peft_grpo_step.py" --out "$out/grpo_peft.json" \
  "${peft_sizes[@]}" --prompt-tokens "$(prompt_tokens "$out/grpo/grpo.json")"

"$py" "$here/summarize.py" "$out" "$mode"
if [ -n "$failed" ]; then
  echo "failed or timed out:$failed (logs in $out)" >&2
  exit 1
fi
