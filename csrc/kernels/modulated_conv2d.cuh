// modulated_conv2d kernels (docs/ops.md §4). Pure CUDA: raw pointers + stream, no torch headers.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common.cuh"
#include "kernels/implicit_gemm_api.h"

namespace anyres_fast {

// d[b,o] = rsqrt(Σ_i s[b,i]² · Σ_k W[o,i,k]² + eps). weight (O,I,taps) of `dtype`, styles (B,I) float32,
// energy_scratch (O,I) float32, d (B,O) float32.
int modulated_conv2d_demod(const void* weight, const float* styles, float* energy_scratch, float* d, int batch,
                           int out_channels, int in_channels, int taps, float eps, DType dtype, cudaStream_t stream);

// One implicit-GEMM convolution (csrc/kernels/implicit_gemm.cuh) with a per-channel input scale o.pre (B,C)
// and output scale o.post (B,M), both float32. o.weight is GEMM-ready (M, kh, kw, Cp): forward (x (B,I,..),
// C = I, M = O, pre = s, post = d) uses W (O,I,kh,kw) as (O,kh,kw,Ip); the adjoint for backward dx (input
// grad (B,O,..), C = O, M = I, pre = d, post = ones) uses W as (I,kh,kw,Op).
int modulated_conv2d_igemm(const ImplicitGemmShape& shape, const ImplicitGemmOperands& o, DType dtype, bool exact_fp32,
                           cudaStream_t stream);

}  // namespace anyres_fast
