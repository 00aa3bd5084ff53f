// style_fused_conv2d: the shared implicit-GEMM kernel with a per-pixel input scale and, for exact
// demodulation, a second accumulator (S², W²) over the same window (docs/ops.md §5).
//
// Backward: explicit formulas on cuDNN convolutions in float32 (anyres_fast/ops/style_fused_conv2d.py,
// backward_math); no custom kernel yet.
#include "kernels/style_fused_conv2d.cuh"

#include "kernels/implicit_gemm.cuh"

namespace anyres_fast {

int style_fused_conv2d_igemm(const void* x, const void* weight_gemm, const void* style_map, void* out, int batch,
                             int in_channels, int h_in, int w_in, int out_channels, int h_out, int w_out, int kh,
                             int kw, int pad, int mode, bool exact, float eps, DType dtype, bool exact_fp32,
                             cudaStream_t stream) {
  if (style_map == nullptr) return (int)cudaErrorInvalidValue;
  igemm::Problem p;
  p.input = x;
  p.weight = weight_gemm;
  p.pre_map = style_map;
  p.out = out;
  p.batch = batch;
  p.channels = in_channels;
  p.h_in = h_in;
  p.w_in = w_in;
  p.m_out = out_channels;
  p.h_out = h_out;
  p.w_out = w_out;
  p.kh = kh;
  p.kw = kw;
  p.pad = pad;
  p.mode = mode;
  p.dual = exact;
  p.eps = eps;
  return exact ? (int)igemm::launch<true, true>(p, dtype, exact_fp32, stream)
               : (int)igemm::launch<false, true>(p, dtype, exact_fp32, stream);
}

}  // namespace anyres_fast
