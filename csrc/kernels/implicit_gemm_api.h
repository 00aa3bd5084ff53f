// Host-side interface of the implicit-GEMM convolution (csrc/kernels/implicit_gemm.cuh): plain structs the
// bindings fill, with no device code, so C++ files compiled without nvcc can include it.
#pragma once
#include <cstdint>

namespace anyres_fast {

// Channels of the staged input and of the GEMM-ready weight are padded to this multiple (zeros), so a
// pixel's channels are whole 16-byte chunks for every element type (8 × 16-bit, 4 × fp32).
constexpr int kImplicitGemmChannelMultiple = 8;

inline int padded_channels(int channels) {
  return (channels + kImplicitGemmChannelMultiple - 1) / kImplicitGemmChannelMultiple * kImplicitGemmChannelMultiple;
}

// One convolution: input (batch, channels, h_in, w_in) -> output (batch, m_out, h_out, w_out), kernel
// kh × kw, zero padding pad, geometry mode (implicit_gemm.cuh ConvMode: 0 conv, 1 stride-2 conv,
// 2 adjoint of conv, 3 stride-2 transposed conv).
struct ImplicitGemmShape {
  int batch = 0, channels = 0, h_in = 0, w_in = 0;
  int m_out = 0, h_out = 0, w_out = 0;
  int kh = 0, kw = 0, pad = 0, mode = 0;
};

// Device pointers of one call. Element type T = the call's dtype unless noted.
struct ImplicitGemmOperands {
  const void* x = nullptr;          // (B, C, H_in, W_in) NCHW
  const float* pre = nullptr;       // (B, C) float32 per-channel input scale (modulated_conv2d)
  const void* pre_map = nullptr;    // (B, C, H_in, W_in) per-pixel input scale (style_fused_conv2d)
  const void* weight = nullptr;     // GEMM-ready (M, kh, kw, Cp), Cp = padded_channels(C), zero above C
  const void* weight_sq = nullptr;  // dual accumulator only: the same layout holding W²
  const float* post = nullptr;      // (B, M) float32 output scale, or null
  void* out = nullptr;              // (B, M, H_out, W_out) NCHW
  void* staged = nullptr;           // scratch (B, H_in, W_in, Cp): x · scale, channels-last
  void* staged_sq = nullptr;        // dual only: scratch (B, H_in, W_in, Cp): scale²
  float* workspace = nullptr;       // split-K partial sums, workspace_floats of them (may be null when 0)
  int64_t workspace_floats = 0;
};

// Scratch the binding allocates before a call (elements of T, resp. float32).
struct ImplicitGemmScratch {
  int channels_padded = 0;
  int64_t staged_elements = 0;   // each of staged / staged_sq
  int64_t workspace_floats = 0;  // 0 when the call does not split K
};

// Fills `out` for one call (dual: the two-accumulator form); returns a cudaError_t code (0 = success).
// Defined in csrc/kernels/modulated_conv2d.cu. The split-K decision reads the current device's SM count.
int implicit_gemm_scratch(const ImplicitGemmShape& shape, bool dual, ImplicitGemmScratch* out);

// Shared memory (bytes) of one GEMM CTA for dtype (DType as int), fp32 mode and the dual accumulator,
// and the lowest arch (major*10+minor) the GEMM runs on; anyres_fast/ops/_arch.py mirrors both.
int implicit_gemm_smem_bytes(int dtype, bool exact_fp32, bool dual);
int implicit_gemm_min_arch();

}  // namespace anyres_fast
