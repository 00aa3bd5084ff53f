// style_fused_conv2d kernel (docs/ops.md §5). Pure CUDA: raw pointers + stream, no torch headers.
#pragma once
#include <cuda_runtime.h>

#include "kernels/common.cuh"
#include "kernels/implicit_gemm_api.h"

namespace anyres_fast {

// out = conv_mode(x ⊙ S, W) [⊙ rsqrt(conv_mode(S ⊙ S, W ⊙ W) + eps) when exact]: the implicit GEMM
// (csrc/kernels/implicit_gemm.cuh) with o.pre_map = S and, when exact, a second accumulator over the same
// window (o.weight_sq = W² GEMM-ready, o.staged_sq scratch). All tensors of `dtype`; mode 0 or 3.
int style_fused_conv2d_igemm(const ImplicitGemmShape& shape, const ImplicitGemmOperands& o, bool exact, float eps,
                             DType dtype, bool exact_fp32, cudaStream_t stream);

}  // namespace anyres_fast
