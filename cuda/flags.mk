# Compiler flags shared by cuda/Makefile and tools/emu_backend.sh (the library with its CUDA
# backend built for the CPU emulator), so both builds compile the C++ sources alike.
# ffi/library.ts rebuilds the library when this file changes, as for the Makefile.

CXX ?= g++
CPP_SRCS := $(filter-out src/gpu_stub.cpp,$(sort $(wildcard src/*.cpp src/cpu/*.cpp src/quant/*.cpp)))

# AVX2/FMA/F16C when both the compiler and this CPU have them (CI runs on the same kind of
# machine that builds), else portable code.
SIMD := $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo && \
          grep -qw f16c /proc/cpuinfo && echo 'int main(){return 0;}' | \
          $(CXX) -x c++ -mavx2 -mfma -mf16c -o /dev/null - 2>/dev/null && echo -mavx2 -mfma -mf16c)

COMMON := -std=c++17 -Wall -Wextra -fPIC -pthread -MMD -MP
