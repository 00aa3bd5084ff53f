// style_fused_conv2d: the shared implicit-GEMM kernel with a per-pixel input scale and, for exact
// demodulation, a second accumulator (S², W²) over the same window (docs/ops.md §5).
//
// Backward: explicit formulas on cuDNN convolutions in float32 (anyres_fast/ops/style_fused_conv2d_op.py,
// backward_math); no custom kernel yet.
#include "kernels/style_fused_conv2d.cuh"

#include "kernels/implicit_gemm.cuh"

namespace anyres_fast {

int style_fused_conv2d_igemm(const ImplicitGemmShape& shape, const ImplicitGemmOperands& o, bool exact, float eps,
                             DType dtype, bool exact_fp32, cudaStream_t stream) {
  if (shape.mode != igemm::kConvS1 && shape.mode != igemm::kTConvS2) return (int)cudaErrorInvalidValue;
  return exact ? (int)igemm::run<true, true>(shape, o, dtype, exact_fp32, eps, stream)
               : (int)igemm::run<false, true>(shape, o, dtype, exact_fp32, eps, stream);
}

}  // namespace anyres_fast
