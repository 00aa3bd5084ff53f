// modulated_conv2d kernels (docs/ops.md §4). Pure CUDA: raw pointers + stream, no torch headers.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common.cuh"

namespace anyres_fast {

// d[b,o] = rsqrt(Σ_i s[b,i]² · Σ_k W[o,i,k]² + eps). weight (O,I,taps) of `dtype`, styles (B,I) float32,
// energy_scratch (O,I) float32, d (B,O) float32.
int modulated_conv2d_demod(const void* weight, const float* styles, float* energy_scratch, float* d, int batch,
                           int out_channels, int in_channels, int taps, float eps, DType dtype, cudaStream_t stream);

// One implicit-GEMM convolution (csrc/kernels/implicit_gemm.cuh) with a per-channel input scale `pre`
// (B,C) and output scale `post` (B,M), both float32. `weight_gemm` is GEMM-ready (M, kh, kw, C):
// forward (input x (B,I,..), C = I, M = O, pre = s, post = d) uses W (O,I,kh,kw) permuted to (O,kh,kw,I);
// the adjoint for backward dx (input grad (B,O,..), C = O, M = I, pre = d, post = ones) uses W permuted to
// (I,kh,kw,O). mode: implicit_gemm.cuh ConvMode.
int modulated_conv2d_igemm(const void* input, const void* weight_gemm, const float* pre, const float* post, void* out,
                           int batch, int channels, int h_in, int w_in, int m_out, int h_out, int w_out, int kh,
                           int kw, int pad, int mode, DType dtype, bool exact_fp32, cudaStream_t stream);

}  // namespace anyres_fast
