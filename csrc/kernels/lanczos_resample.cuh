// Separable Lanczos resampling with per-sample boxes (docs/ops.md §3); launchers for the binding.
// Pure CUDA interface: raw pointers, sizes and a stream; no torch headers (docs/build.md §1).
//
// A resampling is two 1-D passes. Each pass works on a tensor viewed as (P, L, Q): P planes, the
// resampled axis of length L, Q contiguous elements after it (Q = 1 along W, Q = W along H). Plane p
// belongs to sample p / planes_per_sample, whose weight table row the pass reads.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace anyres_fast {
namespace lanczos {

// Element type codes (same values as anyres_fast::DType in common.cuh).
enum ElemType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

// Weight tables of one axis, all on the device. Rows are (sample b, output index i), b-major.
struct AxisTables {
  int32_t* lo = nullptr;         // (B, out_size): first input tap, in [0, in_size]
  int32_t* count = nullptr;      // (B, out_size): taps used, lo + count <= in_size, count <= taps
  float* weights = nullptr;      // normalised weights, 0 past count; layout set by k_major:
                                 //   false: (B, out_size, taps)   true: (B, taps, out_size)
  uint8_t* valid = nullptr;      // (B, out_size) or null: all nonzero-weight taps inside the input
  int32_t* inv_begin = nullptr;  // (B, in_size) or null: outputs [inv_begin, inv_end) read input j
  int32_t* inv_end = nullptr;
  int in_size = 0;
  int out_size = 0;
  int taps = 0;                  // table width (max taps of any output), >= 1
  // k-major suits the forward pass along W (a warp's threads are consecutive outputs, so a load of tap k
  // is coalesced); output-major suits the transposed pass along W (consecutive inputs read
  // consecutive taps of the same output). Along H a warp shares one output row, so either layout works.
  bool k_major = false;
};

// Fills lo/count/weights (and valid if non-null) for `batch` samples. boxes: (B,4) float64
// (x0, y0, x1, y1); axis 0 uses (x0, x1), axis 1 uses (y0, y1). Returns a cudaError_t as int.
int compute_tables(const double* boxes, int64_t batch, int axis, int a, bool antialias,
                   const AxisTables& t, cudaStream_t stream);

// Fills inv_begin/inv_end from lo/count (needed by the transpose pass only).
int compute_inverse_ranges(int64_t batch, const AxisTables& t, cudaStream_t stream);

// out (P, out_size, Q) = resampling of in (P, in_size, Q) along the middle axis.
// One of in_type / out_type must be kF32 (the intermediate of the two passes is float32).
int resample_axis(int in_type, const void* in, int out_type, void* out, int64_t planes,
                  int64_t planes_per_sample, int64_t inner, const AxisTables& t, cudaStream_t stream);

// y (B, C, H_out, W_out) = both passes of x (B, C, H, W), fused through shared memory (tables: forward,
// k-major, both axes). Returns kNotFused, without launching, when the tile's tables do not fit `max_smem`
// bytes or the sizes leave the kernel's 32-bit in-plane offsets or grid limits: then run the two passes.
constexpr int kNotFused = -2;
int resample_fused(int type, const void* x, void* y, int64_t batch, int64_t channels, int64_t h, int64_t w,
                   int64_t ho, int64_t wo, const AxisTables& rows, const AxisTables& cols, size_t max_smem,
                   cudaStream_t stream);

// grad_in (P, in_size, Q) = transpose of resample_axis applied to grad_out (P, out_size, Q); a gather
// over the outputs that read each input (deterministic, no atomics).
int resample_axis_transpose(int in_type, const void* grad_out, int out_type, void* grad_in,
                            int64_t planes, int64_t planes_per_sample, int64_t inner,
                            const AxisTables& t, cudaStream_t stream);

}  // namespace lanczos
}  // namespace anyres_fast
