#!/usr/bin/env bash
# gpu_results.sh: the GPU figures of the README in one run on the GPU machine (H200).
#
#   source .gpu/env.sh && tools/gpu_results.sh OUT_DIR [--quick]
#
# 1. builds libnsn with the CUDA backend (in the background) while tools/gpu_kernel_tests.sh
#    builds and runs the KV-kernel tests, compute-sanitizer memcheck and the kernel benchmark
#    (ours vs torch SDPA, side by side);
# 2. `deno task test:gpu`: the CUDA backend against the CPU backend and the HF fixtures;
# 3. the serving benchmark on synthetic:llama-3-8b with 4K-token prompts and 256 output tokens,
#    per kv_bits, at concurrency 1 and 128.
# 4. batch-1 / batch-32 decode step times with CUDA graphs on and off (tools/decode_profile.ts).
# OUT_DIR gets at most 8 files: kernels.md, kernel_tests.log, gpu_tests.log, decode.log,
# serve.log, serve_c1.json, serve_c128.json.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: tools/gpu_results.sh OUT_DIR [--quick]}
QUICK=${2:-}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
K=$(mktemp -d)
DENO="deno run --cached-only -A"

(make -C cuda -j12 CUDA=1 >"$K/make.log" 2>&1; echo "make rc=$?" >>"$K/make.log") &
make_pid=$!
tools/gpu_kernel_tests.sh "$K/kernels" $QUICK >"$K/kernels.out" 2>&1
echo "kernel tests rc=$?" >>"$K/kernels.out"
wait $make_pid
cp "$K/kernels/bench.md" "$OUT/kernels.md" 2>/dev/null
{
  tail -n 3 "$K/make.log"
  grep -E "registers|spill" "$K/kernels/build.log" | head -20
  cat "$K/kernels.out"
  tail -n 6 "$K/kernels/memcheck.log"
} >"$OUT/kernel_tests.log" 2>&1

NSN_TEST_GPU=1 deno test --cached-only -A tests/gpu/ >"$OUT/gpu_tests.log" 2>&1
echo "test:gpu rc=$?" >>"$OUT/gpu_tests.log"

# batch-1 and batch-32 decode steps of synthetic llama-3-8b, CUDA graphs on and off
for g in 1 0; do
  for b in 1 32; do
    for bits in 16 2 1; do
      NSN_CUDA_GRAPHS=$g $DENO tools/decode_profile.ts --batch $b --kv-bits $bits --steps 64 2>&1 | tail -n 1 |
        sed "s/^/graphs=$g /"
    done
  done
done >"$OUT/decode.log" 2>&1

{
  $DENO bench/bench.ts --backend cuda --input-len 4096 --output-len 256 --concurrency 1 \
    --num-prompts 4 --json "$OUT/serve_c1.json" --no-progress
  $DENO bench/bench.ts --backend cuda --input-len 4096 --output-len 256 --concurrency 128 \
    --num-prompts 128 --json "$OUT/serve_c128.json" --no-progress
} >"$OUT/serve.log" 2>&1
rm -f "$OUT"/*.svg
echo "done"
