#!/usr/bin/env bash
# emu_kernel_tests.sh: runs cuda/tests/gpu/test_kv_kernels.cu (the KV kernels),
# cuda/tests/gpu/test_prefill_attention.cu (prefill attention against nsn.h's rule) and
# cuda/tests/gpu/test_gemv.cu (the batch-1 GEMVs with RMSNorm / SwiGLU fused in, against
# layers.cu's unfused kernels) with the CUDA kernels compiled for the CPU emulator
# (cuda/tests/gpu/cuda_emu.h): no GPU needed, only g++ and the CUDA headers (for the fp16/bf16
# types). Checks the kernels' logic (fragment layouts, indexing, formats) against the CPU
# reference; it says nothing about speed or async-copy races.
#
#   tools/emu_kernel_tests.sh [--small]      (--small: the quick subset, ~20 s; full: minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/cuda_headers.sh
B=${BUILD_DIR:-cuda/build/emu_kernels}
mkdir -p "$B"
EMU="-std=c++17 -O2 -DNSN_EMU -Wno-unknown-pragmas -include cuda/tests/gpu/cuda_emu.h -I$CUDA_INC -x c++"
pids=()
for f in cuda/src/gpu/kv_encode.cu cuda/src/gpu/decode_attention.cu cuda/src/gpu/decode_attention_ref.cu \
  cuda/src/gpu/gemv.cu cuda/src/gpu/layers.cu cuda/src/gpu/prefill_attention.cu \
  cuda/tests/gpu/test_kv_kernels.cu cuda/tests/gpu/test_gemv.cu cuda/tests/gpu/test_prefill_attention.cu; do
  g++ $EMU -c "$f" -o "$B/$(basename "$f" .cu).o" &
  pids+=($!)
done
for f in cuda/src/quant/*.cpp cuda/src/errors.cpp; do
  g++ -std=c++17 -O2 -c "$f" -o "$B/cpu_$(basename "$f" .cpp).o" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
g++ -o "$B/test_kv_kernels_emu" "$B"/kv_encode.o "$B"/decode_attention.o "$B"/decode_attention_ref.o \
  "$B"/test_kv_kernels.o "$B"/cpu_*.o
g++ -o "$B/test_gemv_emu" "$B"/gemv.o "$B"/layers.o "$B"/test_gemv.o "$B"/cpu_*.o
g++ -o "$B/test_prefill_attention_emu" "$B"/prefill_attention.o "$B"/test_prefill_attention.o "$B"/cpu_*.o
rc=0
"$B/test_kv_kernels_emu" "$@" || rc=1
"$B/test_gemv_emu" "$@" || rc=1
"$B/test_prefill_attention_emu" "$@" || rc=1
exit $rc
