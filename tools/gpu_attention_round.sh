#!/usr/bin/env bash
# gpu_attention_round.sh: one GPU-machine round for the decode-attention work (issue 11), sized
# to fit one device call: builds the library, runs the KV-kernel tests (+ memcheck/racecheck of
# the small set) and the kernel benchmark (quick or full), `deno task test:gpu`, and the decode
# step at 512 sequences x 64 tokens per kv_bits with the decode-attention kernels' own GPU time
# (ncu). With a pre-change checkout in .old/ (git archive of an older commit's cuda/), it also
# builds that library and benchmark and times the same shapes side by side (same card, same run).
#
#   source .gpu/env.sh && tools/gpu_attention_round.sh OUT_DIR [quick|full|engine] [STAGES...]
#
# Stages (default all): kernels, ab, gputest, step, engine. OUT_DIR gets run.log (everything,
# in order) and detail.tgz (every log, the benchmark JSON/markdown). Environment: KERNEL_ARGS (more
# gpu_kernel_tests.sh flags, e.g. --ncu), KERNEL_TIMEOUT (s), ENGINE_ARGS (bench --engine flags),
# ROUND_WORK_DIR (the logs' folder; under OUT_DIR, a run cut short still returns them), STEP_OLD=0
# (no old library), AB_SHAPES (e.g. "32768x16 1024x512"), AB_NCU=0.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: tools/gpu_attention_round.sh OUT_DIR [quick|full] [STAGES...]}
MODE=${2:-quick}
shift 2 || shift $#
STAGES=${*:-kernels ab gputest step}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
W=${ROUND_WORK_DIR:-$(mktemp -d)}  # set it under OUT_DIR to keep the logs of a run cut short
KB=$(mktemp -d)
LOG="$OUT/run.log"
DENO="deno run --cached-only --node-modules-dir=manual --no-check -A"
FLAGS="-std=c++17 -O3 -gencode arch=compute_90,code=sm_90 -lineinfo"
has() { [[ " $STAGES " == *" $1 "* ]]; }
say() { echo "== $* ($(date -u +%H:%M:%S))" | tee -a "$LOG"; }
finish() { tar czf "$OUT/detail.tgz" -C "$W" . 2>/dev/null; }
trap finish EXIT
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee -a "$LOG"

say build
(make -C cuda -j16 CUDA=1 >"$W/make.log" 2>&1; echo "make rc=$?" >>"$W/make.log") &
mk=$!
if [ -d .old/cuda ] && { has ab || has step; }; then
  if has step && [ "${STEP_OLD:-1}" = 1 ]; then  # STEP_OLD=0: the old library is not built or profiled
    (make -C .old/cuda -j8 CUDA=1 >"$W/make_old.log" 2>&1; echo "make old rc=$?" >>"$W/make_old.log") &
    mko=$!
  fi
  O="$W/oldb"
  mkdir -p "$O"
  (
    for f in kv_encode decode_attention decode_attention_ref; do nvcc $FLAGS -c .old/cuda/src/gpu/$f.cu -o "$O/$f.o" & done
    nvcc $FLAGS -c .old/cuda/tests/gpu/bench_attention.cu -o "$O/bench.o" &
    for f in .old/cuda/src/quant/*.cpp .old/cuda/src/errors.cpp; do g++ -std=c++17 -O2 -c "$f" -o "$O/cpu_$(basename "$f" .cpp).o" & done
    wait
    nvcc $FLAGS "$O/bench.o" "$O/kv_encode.o" "$O/decode_attention.o" "$O/decode_attention_ref.o" "$O"/cpu_*.o -o "$O/bench_old"
  ) >"$W/build_old_bench.log" 2>&1 &
  bo=$!
fi

if has kernels; then
  say "kernel tests + benchmark ($MODE)"
  Q=""
  [ "$MODE" = quick ] && Q=--quick
  BUILD_DIR="$KB" timeout 420 tools/gpu_kernel_tests.sh "$W/k" $Q ${KERNEL_ARGS:-} >"$W/kernels.out" 2>&1
  echo "gpu_kernel_tests rc=$?" | tee -a "$LOG"
  grep -E "registers|spill" "$W/k/build.log" | tee -a "$LOG"
  grep -E "FAIL|PASSED|FAILED|attn .*splits|attn .*ctas" "$W/k/test.log" | tail -n 40 >>"$LOG"
  tail -n 4 "$W/k/memcheck.log" >>"$LOG" 2>/dev/null
  cat "$W/k/bench.md" >>"$LOG" 2>/dev/null
  grep -E "copy|^device" "$W/k/bench.log" >>"$LOG" 2>/dev/null
fi

if [ -n "${bo:-}" ]; then
  wait "$bo"
  if has ab && [ -x "$W/oldb/bench_old" ] && [ -x "$KB/bench_attention" ]; then
    say "A/B: old (HEAD before this work) vs new, same card"
    for shape_x in ${AB_SHAPES:-32768x16 4096x64 1024x512 4096x512 128x512}; do
      shape=${shape_x/x/ }
      for bits in 16 2 1; do
        o=$("$W/oldb/bench_old" --only $bits $shape --no-variants 2>&1 | grep -E "^$bits " | head -1)
        n=$("$KB/bench_attention" --only $bits $shape 2>&1 | grep -E "^$bits " | head -1)
        echo "old: $o" | tee -a "$LOG"
        echo "new: $n" | tee -a "$LOG"
      done
    done
    if [ "${AB_NCU:-1}" = 1 ] && command -v ncu >/dev/null; then  # old vs new at 32K x 16: where the time goes (stalls, issue)
      for bits in 1 16; do
        for v in old new; do
          bin="$KB/bench_attention"
          extra=""
          [ $v = old ] && bin="$W/oldb/bench_old" && extra=--no-variants
          timeout 60 ncu --clock-control none -k regex:decode_attn_kernel --launch-skip 3 --launch-count 1 \
            --section SpeedOfLight --section WarpStateStats --section InstructionStats --section LaunchStats \
            --section MemoryWorkloadAnalysis "$bin" --only $bits 32768 16 $extra >"$W/ncu_ab_${v}_$bits.log" 2>&1
          echo "ncu $v kv $bits 32K x 16:" | tee -a "$LOG"
          grep -E "Duration|Executed Ipc A|Issue Slots Busy|Memory Throughput|DRAM Throughput|Warp Cycles Per Issued|Executed Instructions  |Grid Size|Block Size" \
            "$W/ncu_ab_${v}_$bits.log" | head -n 12 | tee -a "$LOG"
        done
      done
    fi
  else
    tail -n 20 "$W/build_old_bench.log" >>"$LOG"
  fi
fi

wait $mk
tail -n 2 "$W/make.log" | tee -a "$LOG"
if has gputest; then
  say "deno task test:gpu"
  NSN_TEST_GPU=1 timeout 300 deno test --cached-only --node-modules-dir=manual --no-check -A tests/gpu/ >"$W/gpu_tests.log" 2>&1
  echo "test:gpu rc=$?" | tee -a "$LOG"
  grep -E "^ok|FAILED|passed|failed|=>" "$W/gpu_tests.log" | tail -n 30 >>"$LOG"
fi

if has step; then
  [ -n "${mko:-}" ] && wait "$mko" && tail -n 1 "$W/make_old.log" | tee -a "$LOG"
  say "decode step at 512 sequences x 64 tokens"
  for bits in 1 2 16; do
    for lib in new old; do
      L=""
      if [ $lib = old ]; then
        [ -f .old/cuda/build/libnsn.so ] || continue
        L=$(pwd)/.old/cuda/build/libnsn.so
      fi
      env ${L:+NSN_LIB=$L} timeout 120 $DENO tools/decode_profile.ts --batch 512 --ctx 64 --kv-bits $bits --steps 16 --pool-gb 24 \
        >"$W/step_${lib}_$bits.log" 2>&1
      tail -n 1 "$W/step_${lib}_$bits.log" | sed "s/^/$lib: /" | tee -a "$LOG"
      # the decode-attention kernels' GPU time (plan + attention) per layer, from ncu
      if command -v ncu >/dev/null; then
        env ${L:+NSN_LIB=$L} timeout 150 ncu --clock-control none -k regex:"decode_attn|attn_plan|attn_reduce" \
          --metrics gpu__time_duration.sum --print-units base --launch-skip 96 --launch-count 96 --csv \
          $DENO tools/decode_profile.ts --batch 512 --ctx 64 --kv-bits $bits --steps 4 --pool-gb 24 \
          >"$W/ncu_step_${lib}_$bits.csv" 2>&1
        python3 - "$W/ncu_step_${lib}_$bits.csv" "$lib" "$bits" <<'PY' | tee -a "$LOG"
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows:
    print(f"{sys.argv[2]}: kv {sys.argv[3]}: no ncu rows"); sys.exit()
hdr = rows[0]; ki = hdr.index("Kernel Name"); vi = hdr.index("Metric Value")
tot = collections.defaultdict(float); cnt = collections.Counter()
for r in rows[1:]:
    n = r[ki].split("(")[0].split("<")[0][-40:]
    tot[n] += float(r[vi].replace(",", "")) / 1e3; cnt[n] += 1
launches = max(cnt.values())
print(f"{sys.argv[2]}: kv {sys.argv[3]}: decode attention per layer {sum(tot.values()) / launches:.1f} us ("
      + ", ".join(f"{n} {t / cnt[n]:.1f} us x{cnt[n]}" for n, t in tot.items()) + ")")
PY
      fi
    done
  done
fi

if has engine; then
  say "bench --engine"
  timeout 500 $DENO bench/bench.ts --engine ${ENGINE_ARGS:-} --json "$W/engine_peak.json" >"$W/engine.log" 2>&1
  echo "engine rc=$?" | tee -a "$LOG"
  tail -n 40 "$W/engine.log" >>"$LOG"
  cp "$W"/engine_peak.* "$OUT/" 2>/dev/null
fi
[ -f "$W/k/bench.json" ] && cp "$W/k/bench.json" "$OUT/kernels.json"
say done
