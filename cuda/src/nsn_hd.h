// nsn_hd.h: NSN_HD marks functions compiled for both the host and the device (under nvcc),
// so the CPU reference and the CUDA kernels share one definition of the math.
#pragma once

#ifndef NSN_HD
#ifdef __CUDACC__
#define NSN_HD __host__ __device__
#else
#define NSN_HD
#endif
#endif
