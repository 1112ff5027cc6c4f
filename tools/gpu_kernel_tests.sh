#!/usr/bin/env bash
# gpu_kernel_tests.sh: builds and runs the CUDA KV-kernel tests, the prefill-attention test and
# the fused batch-1 GEMV tests
# (test_gemv: gemv.cu against layers.cu's unfused kernels), a compute-sanitizer memcheck of
# small cases, and the kernel benchmark (ours vs torch SDPA) on a GPU machine.
#
#   tools/gpu_kernel_tests.sh OUT_DIR [--quick] [--ncu] [--build-only | --bench-only]
#
# OUT_DIR receives: build.log (ptxas registers/spills), test.log, memcheck.log, bench.log,
# bench.md (the combined table), bench.json, and with --ncu ncu.log. Exit status: non-zero when
# the build, the tests, memcheck or the benchmark fail (the benchmark still runs after failed
# tests). --bench-only skips the tests and memcheck (`deno task bench --kernels`).
# Needs nvcc (sm_90), g++, python3 with torch; no cuBLAS. Run from anywhere in the repo.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: tools/gpu_kernel_tests.sh OUT_DIR [--quick] [--ncu]}
shift
QUICK=""
NCU=0
BUILD_ONLY=0
BENCH_ONLY=0
for a in "$@"; do
  case "$a" in
    --quick) QUICK=--quick ;;
    --ncu) NCU=1 ;;
    --build-only) BUILD_ONLY=1 ;;
    --bench-only) BENCH_ONLY=1 ;;
  esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
B=${BUILD_DIR:-cuda/build/gpu_kernels}
mkdir -p "$B"
NVCC=${NVCC:-nvcc}
FLAGS="-std=c++17 -O3 -gencode arch=compute_90,code=sm_90 -lineinfo"
# The CPU reference is compiled as the library would be without -march: no FMA contraction,
# so its float operations are the ones the kernels mirror.
CXXFLAGS="-std=c++17 -O2"

echo "== build ($(date -u +%H:%M:%S))" | tee "$OUT/build.log"
pids=()
for f in kv_encode decode_attention decode_attention_ref gemv layers prefill_attention; do
  ($NVCC $FLAGS -Xptxas -v -c cuda/src/gpu/$f.cu -o "$B/$f.o" >"$B/$f.log" 2>&1) &
  pids+=($!)
done
for f in test_kv_kernels test_gemv test_prefill_attention bench_attention; do
  ($NVCC $FLAGS -c cuda/tests/gpu/$f.cu -o "$B/$f.o" >"$B/$f.log" 2>&1) &
  pids+=($!)
done
for f in cuda/src/quant/*.cpp cuda/src/errors.cpp; do
  (g++ $CXXFLAGS -c "$f" -o "$B/cpu_$(basename "$f" .cpp).o" >"$B/cpu_$(basename "$f" .cpp).log" 2>&1) &
  pids+=($!)
done
build_ok=1
for p in "${pids[@]}"; do wait "$p" || build_ok=0; done
cat "$B"/*.log | grep -E "error|warning|registers|spill|entry function" >>"$OUT/build.log"
if [ $build_ok = 1 ]; then
  KOBJ="$B/kv_encode.o $B/decode_attention.o $B/decode_attention_ref.o"
  $NVCC $FLAGS "$B/test_kv_kernels.o" $KOBJ "$B"/cpu_*.o -o "$B/test_kv_kernels" >>"$OUT/build.log" 2>&1 || build_ok=0
  $NVCC $FLAGS "$B/bench_attention.o" $KOBJ "$B"/cpu_*.o -o "$B/bench_attention" >>"$OUT/build.log" 2>&1 || build_ok=0
  $NVCC $FLAGS "$B/test_gemv.o" "$B/gemv.o" "$B/layers.o" "$B"/cpu_*.o -o "$B/test_gemv" >>"$OUT/build.log" 2>&1 || build_ok=0
  $NVCC $FLAGS "$B/test_prefill_attention.o" "$B/prefill_attention.o" "$B"/cpu_*.o \
    -o "$B/test_prefill_attention" >>"$OUT/build.log" 2>&1 || build_ok=0
fi
if [ $build_ok = 0 ]; then
  echo "BUILD FAILED" | tee -a "$OUT/build.log"
  cat "$B"/*.log >>"$OUT/build.log"
  exit 2
fi
echo "build ok ($(date -u +%H:%M:%S))" | tee -a "$OUT/build.log"
if command -v cuobjdump >/dev/null; then  # instruction mix of the head_dim-128 decode kernel
  echo "== SASS instruction histogram, decode_attn_kernel<128>" >>"$OUT/build.log"
  cuobjdump -sass "$B/decode_attention.o" 2>/dev/null |
    awk -v pat="decode_attn_kernelILi128EE" '$0 ~ "Function : .*" pat {f=1; next} /Function :/{f=0} f' |
    grep -oE '^ +/\*[0-9a-f]{4,}\*/ +[A-Z][A-Z0-9_.]*' | awk '{sub(/\..*/, "", $2); print $2}' |
    sort | uniq -c | sort -rn | head -25 >>"$OUT/build.log"
fi

[ $BUILD_ONLY = 1 ] && exit 0
rc_test=0
rc_mc=0
if [ $BENCH_ONLY = 0 ]; then
echo "== tests"
"$B/test_kv_kernels" 2>&1 | tee "$OUT/test.log"
rc_test=${PIPESTATUS[0]}
"$B/test_gemv" 2>&1 | tee -a "$OUT/test.log"
[ "${PIPESTATUS[0]}" = 0 ] || rc_test=1
"$B/test_prefill_attention" 2>&1 | tee -a "$OUT/test.log"
[ "${PIPESTATUS[0]}" = 0 ] || rc_test=1

echo "== compute-sanitizer memcheck (--small)"
if command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck --error-exitcode 3 "$B/test_kv_kernels" --small >"$OUT/memcheck.log" 2>&1
  rc_mc=$?
  tail -n 4 "$OUT/memcheck.log"
  echo "== memcheck test_gemv --small" >>"$OUT/memcheck.log"
  compute-sanitizer --tool memcheck --error-exitcode 3 "$B/test_gemv" --small >>"$OUT/memcheck.log" 2>&1 || rc_mc=3
  tail -n 2 "$OUT/memcheck.log"
  # shared-memory races (the cp.async ring, prep buffers): informative, bounded in time
  echo "== racecheck (--small)" >>"$OUT/memcheck.log"
  timeout 60 compute-sanitizer --tool racecheck --racecheck-report hazard "$B/test_kv_kernels" --small \
    >>"$OUT/memcheck.log" 2>&1
  echo "racecheck rc=$?" | tee -a "$OUT/memcheck.log"
else
  echo "compute-sanitizer not found" | tee "$OUT/memcheck.log"
  rc_mc=0
fi

fi

echo "== benchmark"
{
  "$B/bench_attention" --json "$B/bench_ours.json" $QUICK
  PYTHONUNBUFFERED=1 python3 tools/bench_sdpa.py --json "$B/bench_sdpa.json" $QUICK
} 2>&1 | tee "$OUT/bench.log"
rc_bench=0
python3 tools/bench_combine.py "$B/bench_ours.json" "$B/bench_sdpa.json" --md "$OUT/bench.md" --json "$OUT/bench.json" \
  >/dev/null || rc_bench=1
[ -s "$OUT/bench.md" ] && cat "$OUT/bench.md" || { rc_bench=1; echo "benchmark failed (see $OUT/bench.log)"; }

if [ $NCU = 1 ] && command -v ncu >/dev/null; then
  echo "== ncu (32K context x batch 16; 1K x 512)"
  for shape in "32768 16" "1024 512"; do
    for bits in 16 2 1; do
      echo "#### kv_bits $bits ctx x batch $shape"
      ncu --clock-control none -k regex:decode_attn_kernel --launch-skip 3 --launch-count 1 \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
        --section Occupancy --section WarpStateStats \
        "$B/bench_attention" --only $bits $shape
    done
  done >"$OUT/ncu.log" 2>&1
fi

echo "tests rc=$rc_test memcheck rc=$rc_mc benchmark rc=$rc_bench"
[ "$rc_test" = 0 ] && [ "$rc_mc" = 0 ] && [ "$rc_bench" = 0 ]
