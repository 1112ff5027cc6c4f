#!/usr/bin/env bash
# gpu_profile.sh: a development round on the GPU machine: the KV-kernel tests and the quick
# kernel table (tools/gpu_kernel_tests.sh --quick), `deno task test:gpu`, and batch-1/32
# decode step times of synthetic llama-3-8b with CUDA graphs on and off (tools/decode_profile.ts).
# With NCU=1 also ncu warp-state statistics of the decode-attention kernel at 32K x 16 and
# per-SASS-instruction execution counts and stall samples (sass_1.csv.xz, sass_2.csv.xz: NSN-1,
# NSN-2). With NCU_STEP=1 the per-kernel GPU time of about
# one batch-1 decode step (step_kernels.txt; STEP_BITS picks kv_bits, default 16).
#
#   source .gpu/env.sh && [NCU=1] [NCU_STEP=1] tools/gpu_profile.sh OUT_DIR
#
# OUT_DIR gets profile.log, kernels.log, gpu_tests.log (and ncu.log, sass_*.csv.xz,
# step_kernels.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: tools/gpu_profile.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
K=$(mktemp -d)
DENO="deno run --cached-only -A"
(make -C cuda -j12 CUDA=1 >"$K/make.log" 2>&1; echo "make rc=$?" >>"$K/make.log") &
make_pid=$!
BUILD_DIR="$K/kb" tools/gpu_kernel_tests.sh "$K/kernels" --quick >"$K/kernels.out" 2>&1
echo "kernel tests rc=$?" >>"$K/kernels.out"
{
  grep -E "registers|spill|^ +[0-9]+ [A-Z]|==" "$K/kernels/build.log" | head -150
  cat "$K/kernels.out"
  tail -n 6 "$K/kernels/memcheck.log"
} >"$OUT/kernels.log" 2>&1
wait $make_pid
tail -n 3 "$K/make.log" >"$OUT/profile.log"
NSN_TEST_GPU=1 deno test --cached-only -A tests/gpu/ >"$OUT/gpu_tests.log" 2>&1
echo "test:gpu rc=$?" >>"$OUT/gpu_tests.log"
{
  for g in 1 0; do
    for bits in 16 2 1; do
      NSN_CUDA_GRAPHS=$g $DENO tools/decode_profile.ts --batch 1 --kv-bits $bits --steps 64 2>&1 | tail -n 2 | sed "s/^/graphs=$g /"
    done
    for bits in 16 1; do
      NSN_CUDA_GRAPHS=$g $DENO tools/decode_profile.ts --batch 32 --kv-bits $bits --steps 32 2>&1 | tail -n 2 | sed "s/^/graphs=$g /"
    done
  done
} >>"$OUT/profile.log" 2>&1
if [ "${NCU_STEP:-0}" = 1 ] && command -v ncu >/dev/null; then
  # per-kernel durations of ~one batch-1 decode step (eager launches; the graph runs the same)
  NSN_CUDA_GRAPHS=0 ncu --clock-control none --metrics gpu__time_duration.sum --print-units base --launch-skip 3000 \
    --launch-count 240 --csv $DENO tools/decode_profile.ts --batch 1 --kv-bits ${STEP_BITS:-16} --steps 24 \
    >"$K/step.csv" 2>&1
  python3 - "$K/step.csv" >"$OUT/step_kernels.txt" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; ki = hdr.index("Kernel Name"); vi = hdr.index("Metric Value")
tot = collections.defaultdict(float); cnt = collections.Counter()
for r in rows[1:]:
    name = r[ki].split("(")[0][-60:]
    tot[name] += float(r[vi].replace(",", "")) / 1e3; cnt[name] += 1
all_us = sum(tot.values())
print(f"{len(rows) - 1} kernels, {all_us:.1f} us total (GPU time, serialized by ncu)")
for n, t in sorted(tot.items(), key=lambda x: -x[1]):
    print(f"{t:9.1f} us {cnt[n]:4d} x {t / cnt[n]:7.2f} us  {n}")
PY
fi
if [ "${NCU:-0}" = 1 ] && command -v ncu >/dev/null; then
  for bits in 2 1; do
    echo "#### kv_bits $bits"
    ncu --clock-control none -k regex:decode_attn_kernel --launch-skip 3 --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section WarpStateStats --section InstructionStats \
      --section SchedulerStats "$K/kb/bench_attention" --only $bits 32768 16
  done >"$OUT/ncu.log" 2>&1
  # per-instruction execution counts and stall samples (SASS), NSN-1 and NSN-2 at 32K x 16
  for bits in 1 2; do
    ncu --clock-control none -k regex:decode_attn_kernel --launch-skip 3 --launch-count 1 \
      --section SourceCounters --import-source yes -o "$K/src$bits" "$K/kb/bench_attention" --only $bits 32768 16 >/dev/null 2>&1
    ncu -i "$K/src$bits.ncu-rep" --page source --csv --print-source sass 2>&1 | xz -9 >"$OUT/sass_$bits.csv.xz"
  done
fi
echo done
