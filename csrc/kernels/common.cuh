// Helpers shared by the kernels. Pure CUDA: no torch headers (docs/build.md §1).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

// A memory access recorded in the threaded host emulation's access trace (host_emulation.h,
// benchmarks/access_counts.py); nothing in any other build.
#ifndef ANYRES_TRACE_ACCESS
#define ANYRES_TRACE_ACCESS(site, address, bytes) ((void)0)
#endif

namespace anyres_fast {

// Element types the launchers accept; the binding maps torch dtypes onto these.
enum class DType : int { f32 = 0, f16 = 1, bf16 = 2, f64 = 3 };

template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }
inline int64_t ceil_div64(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace anyres_fast
