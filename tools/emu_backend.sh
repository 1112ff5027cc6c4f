#!/usr/bin/env bash
# emu_backend.sh: builds cuda/build/emu_backend/libnsn.so, the native library with its CUDA
# backend compiled for the CPU emulator: the CPU backend, the engine and the quantizer as in the
# normal build (cuda/Makefile's sources and flags), plus every cuda/src/gpu/*.cu compiled as C++
# with -DNSN_EMU -include cuda/tests/gpu/cuda_emu.h (kernels run as fibers, the runtime API in
# cuda/tests/gpu/cuda_emu_runtime.h) and cuda/tests/gpu/cublas_emu.cpp instead of
# cublas_loader.cu. nsn_cuda_available() is then 1 and backend "cuda" runs the real host code
# (backend_cuda*.cu) and the real kernels, slowly, on a machine without a GPU:
#
#   tools/emu_backend.sh
#   NSN_LIB=$PWD/cuda/build/emu_backend/libnsn.so NSN_TEST_GPU=1 deno test -A tests/gpu/cuda_backend_test.ts ...
#
# Needs g++, make and the CUDA headers (for the fp16/bf16 types and the runtime's declarations:
# CUDA_INC, default /usr/local/cuda/include). Incremental (make with dependency files); objects
# compile in parallel (JOBS, default: the number of cores).
#
#   BUILD_DIR=DIR tools/emu_backend.sh     builds DIR/libnsn.so instead (relative to the repo root)
#   SANITIZE=1 tools/emu_backend.sh        with AddressSanitizer + UBSan, in cuda/build/emu_backend_asan
#                                          (run Deno with LD_PRELOAD=$(g++ -print-file-name=libasan.so),
#                                          as tests/asan_slow_test.ts does)
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/cuda_headers.sh
OPT="-O3" EMU_OPT="-O2" DEFAULT_DIR=cuda/build/emu_backend
if [ "${SANITIZE:-0}" = 1 ]; then
  OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer" EMU_OPT=$OPT
  DEFAULT_DIR=cuda/build/emu_backend_asan
fi
mkdir -p "${BUILD_DIR:-$DEFAULT_DIR}"
B=$(cd "${BUILD_DIR:-$DEFAULT_DIR}" && pwd)
exec 9>"$B/.lock"
flock 9
make -s -C cuda -j"${JOBS:-$(nproc)}" -f - B="$B" CUDA_INC="$CUDA_INC" OPT="$OPT" EMU_OPT="$EMU_OPT" <<'MAKEFILE'
include flags.mk
EMU_SRCS := $(filter-out src/gpu/cublas_loader.cu,$(sort $(wildcard src/gpu/*.cu))) tests/gpu/cublas_emu.cpp
CXXFLAGS := $(COMMON) $(OPT) $(SIMD)
EMUFLAGS := -std=c++17 -fPIC -pthread -MMD -MP $(EMU_OPT) -DNSN_EMU -Wno-unknown-pragmas \
            -include tests/gpu/cuda_emu.h -I$(CUDA_INC) -x c++
OBJ := $(patsubst %.cpp,$(B)/obj/%.o,$(CPP_SRCS))
EMU_OBJ := $(patsubst %,$(B)/emu/%.o,$(EMU_SRCS))
$(B)/libnsn.so: $(OBJ) $(EMU_OBJ) src/exports.map
	$(CXX) -shared -Wl,--version-script=src/exports.map -o $@ $(OBJ) $(EMU_OBJ) -pthread $(filter -fsanitize=%,$(OPT))
$(B)/obj/%.o: %.cpp
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) -c $< -o $@
$(B)/emu/%.o: %
	@mkdir -p $(@D)
	$(CXX) $(EMUFLAGS) -c $< -o $@
-include $(OBJ:.o=.d) $(EMU_OBJ:.o=.d)
MAKEFILE
echo "built $B/libnsn.so"
