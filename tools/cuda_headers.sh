# Sourced by tools/emu_kernel_tests.sh and tools/emu_backend.sh: sets CUDA_INC (unless given) to
# a folder holding cuda_fp16.h, whose fp16/bf16 types the CPU emulator builds use; exits 2
# when there is none.
if [ -z "${CUDA_INC:-}" ]; then
  for d in /usr/local/cuda/include /usr/include; do
    if [ -f "$d/cuda_fp16.h" ]; then CUDA_INC=$d; break; fi
  done
fi
[ -n "${CUDA_INC:-}" ] || { echo "no CUDA headers found (set CUDA_INC)" >&2; exit 2; }
