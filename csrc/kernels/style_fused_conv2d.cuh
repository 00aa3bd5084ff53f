// style_fused_conv2d kernel (docs/ops.md §5). Pure CUDA: raw pointers + stream, no torch headers.
#pragma once
#include <cuda_runtime.h>

#include "kernels/common.cuh"

namespace anyres_fast {

// out = conv_mode(x ⊙ S, W) [⊙ rsqrt(conv_mode(S ⊙ S, W ⊙ W) + eps) when exact]: one implicit-GEMM pass
// with two accumulators over the same window (csrc/kernels/implicit_gemm.cuh). x, style_map (B,I,H,W),
// weight_gemm = W (O,I,kh,kw) permuted to (O,kh,kw,I) contiguous, out (B,O,H_out,W_out), all of `dtype`.
// mode: ConvMode (0 conv, 3 transposed up=2).
int style_fused_conv2d_igemm(const void* x, const void* weight_gemm, const void* style_map, void* out, int batch,
                             int in_channels, int h_in, int w_in, int out_channels, int h_out, int w_out, int kh,
                             int kw, int pad, int mode, bool exact, float eps, DType dtype, bool exact_fp32,
                             cudaStream_t stream);

}  // namespace anyres_fast
