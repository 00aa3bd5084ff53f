// modulated_conv2d: demodulation pre-kernel and the implicit-GEMM launcher (docs/ops.md §4).
//
// Forward:  d = demod(W, s) (two tiny kernels), then one implicit-GEMM pass: the B operand is x·s staged
//           into shared memory, the epilogue multiplies by d. No (B,O,I,k,k) weight is ever formed.
// Backward: dx = s · adjointconv(g·d): the same kernel in the adjoint geometry (TConvS1 for up=1, ConvS2
//           for up=2) reading g with the per-channel scale d and the weight GEMM-ready as (I, kh, kw, O).
//           dW and ds are reductions done in Python with cuDNN/cuBLAS on activation-sized tensors
//           (conv2d_weight of x·s against g·d, Σ_pix x·gxs, and the demodulation terms); see
//           anyres_fast/ops/modulated_conv2d_op.py backward_math.
#include "kernels/modulated_conv2d.cuh"

#include "kernels/implicit_gemm.cuh"

namespace anyres_fast {
// The demodulation kernels use warp shuffles, which the host emulation of implicit_gemm.cuh does not
// model; the emulation tests compute d in PyTorch and check the implicit GEMM only.
#ifndef ANYRES_FAST_HOST_EMULATION
namespace {

template <typename T>
__global__ void weight_energy_kernel(const T* __restrict__ w, float* __restrict__ energy, int64_t rows, int taps) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  float acc = 0.f;
  for (int t = 0; t < taps; ++t) {
    const float v = to_float(w[r * taps + t]);
    acc = fmaf(v, v, acc);
  }
  energy[r] = acc;
}

// One warp per (b, o).
__global__ void demod_kernel(const float* __restrict__ energy, const float* __restrict__ styles,
                             float* __restrict__ d, int batch, int out_channels, int in_channels, float eps) {
  const int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= (int64_t)batch * out_channels) return;  // whole warp leaves together
  const int b = (int)(warp / out_channels), o = (int)(warp % out_channels);
  const float* s = styles + (int64_t)b * in_channels;
  const float* q = energy + (int64_t)o * in_channels;
  float acc = 0.f;
  for (int i = lane; i < in_channels; i += 32) acc = fmaf(s[i] * s[i], q[i], acc);
  for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) d[warp] = rsqrtf(acc + eps);
}

template <typename T>
cudaError_t demod_typed(const void* weight, const float* styles, float* energy, float* d, int batch, int out_channels,
                        int in_channels, int taps, float eps, cudaStream_t stream) {
  const int64_t rows = (int64_t)out_channels * in_channels;
  const int threads = 256;
  const int64_t blocks1 = ceil_div64(rows, threads);
  const int64_t blocks2 = ceil_div64((int64_t)batch * out_channels * 32, threads);
  if (blocks1 > 2147483647LL || blocks2 > 2147483647LL) return cudaErrorInvalidConfiguration;
  weight_energy_kernel<T><<<(unsigned)blocks1, threads, 0, stream>>>(static_cast<const T*>(weight), energy, rows, taps);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  demod_kernel<<<(unsigned)blocks2, threads, 0, stream>>>(energy, styles, d, batch, out_channels, in_channels, eps);
  return cudaGetLastError();
}

}  // namespace

int modulated_conv2d_demod(const void* weight, const float* styles, float* energy_scratch, float* d, int batch,
                           int out_channels, int in_channels, int taps, float eps, DType dtype, cudaStream_t stream) {
  if (batch <= 0 || out_channels <= 0 || in_channels <= 0 || taps <= 0) return (int)cudaErrorInvalidValue;
  switch (dtype) {
    case DType::f32:
      return (int)demod_typed<float>(weight, styles, energy_scratch, d, batch, out_channels, in_channels, taps, eps, stream);
    case DType::f16:
      return (int)demod_typed<__half>(weight, styles, energy_scratch, d, batch, out_channels, in_channels, taps, eps, stream);
    case DType::bf16:
      return (int)demod_typed<__nv_bfloat16>(weight, styles, energy_scratch, d, batch, out_channels, in_channels, taps,
                                             eps, stream);
    default: return (int)cudaErrorInvalidValue;
  }
}

#endif  // ANYRES_FAST_HOST_EMULATION

int implicit_gemm_smem_bytes(int dtype, bool exact_fp32, bool dual) {
  return igemm::gemm_smem_bytes(static_cast<DType>(dtype), exact_fp32, dual);
}

int implicit_gemm_min_arch() { return igemm::kMinArch; }

int implicit_gemm_scratch(const ImplicitGemmShape& shape, bool dual, ImplicitGemmScratch* out) {
  if (out == nullptr) return (int)cudaErrorInvalidValue;
  return (int)igemm::scratch(shape, dual, *out);
}

int modulated_conv2d_igemm(const ImplicitGemmShape& shape, const ImplicitGemmOperands& o, DType dtype, bool exact_fp32,
                           cudaStream_t stream) {
  return (int)igemm::run<false, false>(shape, o, dtype, exact_fp32, 0.f, stream);
}

}  // namespace anyres_fast
