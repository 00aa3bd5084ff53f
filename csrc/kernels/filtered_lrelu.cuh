// filtered_lrelu: one fused kernel for bias + upsample/FIR + gain + leaky ReLU + clamp + FIR/downsample
// (docs/ops.md §2). Pure CUDA, no torch headers.
//
// Geometry (per axis, x shown; y alike). The input plane (in_w samples, + bias) is zero-inserted by `up`
// and shifted by pad_x0; the "upsampled buffer" is
//     v[i] = up*up * sum_k zp[i + k] * fu[k],   zp[m] = in[(m - pad_x0) / up] if (m - pad_x0) % up == 0
// (fu, fd in correlation order; with fu_reverse/fd_reverse the kernel reads the stored taps in reverse,
// which flips a 1-D filter and both axes of a row-major 2-D one: the convolution case), then
//     a[i] = clamp(gain * (v > 0 ? v : slope * v), -clamp, clamp)
//     y[o] = sum_k a[o * down + k] * fd[k],   o in [0, out_w).
// Separable filters are 1-D arrays applied along x then y; full filters are row-major [h][w].
//
// Sign record (sign_mode = write / read), uint8, contiguous [N*C][sign_h][sign_row_bytes]:
//   element (r, c) of the upsampled buffer, for r < sign_h = (out_h-1)*down + fd_h and
//   c < sign_w = (out_w-1)*down + fd_w (exactly the region the down filter reads), has a 2-bit code at
//   byte c / 4, bits 2*(c % 4) .. 2*(c % 4)+1:
//     0 = v > 0 (derivative gain), 1 = v <= 0 (gain*slope), 2 = clamped (0). 3 is unused.
//   Rows are padded to 16 elements (sign_row_bytes = ceil(sign_w / 16) * 4); padding codes are 0.
//   A write launch writes every 32-bit word of the record (code 0 where no output reads an element),
//   so the buffer needs no zero fill.
// Write mode stores the codes with sign_ofs = 0. Read mode (the backward pass) replaces the activation by
//   a[i] = gain * v[i] * {1, slope, 0}[code at (i_y + sign_ofs_y, i_x + sign_ofs_x)]
// and uses 0 for positions outside the record; clamp is ignored. The backward of a forward call is this
// kernel on dy with up<->down, fu<->fd, both filters flipped, gain*up^2/down^2 (see filtered_lrelu.py).
//
// Each word of the record is written by exactly one CTA (tiles own disjoint, 16-element-aligned column
// ranges and disjoint row ranges), so the word stores never race.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"

namespace anyres_fast {

enum FilteredLReluSignMode : int { kSignNone = 0, kSignWrite = 1, kSignRead = 2 };

struct FilteredLReluParams {
  // input [N, C, in_h, in_w], arbitrary strides in elements
  const void* x = nullptr;
  int64_t x_stride_n = 0, x_stride_c = 0, x_stride_h = 0, x_stride_w = 0;
  int N = 0, C = 0, in_h = 0, in_w = 0;
  const void* bias = nullptr;  // [C] of x's type, or nullptr
  // filters (float32, device memory, correlation order)
  const float* fu = nullptr;
  int fu_w = 1, fu_h = 1;
  bool fu_separable = false;  // true: fu is a 1-D array of fu_w (== fu_h) taps
  bool fu_reverse = false;    // read the taps in reverse order (flip)
  const float* fd = nullptr;
  int fd_w = 1, fd_h = 1;
  bool fd_separable = false;
  bool fd_reverse = false;
  // output, contiguous [N, C, out_h, out_w], x's type
  void* y = nullptr;
  int out_h = 0, out_w = 0;
  int up = 1, down = 1;
  int pad_x0 = 0, pad_y0 = 0;
  float gain = 1.f, slope = 0.2f, clamp = 0.f;  // clamp: +inf for none
  int sign_mode = kSignNone;
  uint8_t* signs = nullptr;
  int sign_h = 0, sign_w = 0, sign_row_bytes = 0;
  int sign_ofs_x = 0, sign_ofs_y = 0;
};

// Limits of the kernel (the Python side checks them before launching).
constexpr int kFilteredLReluMaxTaps1D = 64;
constexpr int kFilteredLReluMaxTaps2D = 32;

// Bound on sizes, paddings and sign offsets: keeps every int coordinate expression (dim * 4 + pad) in range.
constexpr int kFilteredLReluMaxDim = 1 << 28;
// Shared memory per CTA the host emulation assumes (sm_90's opt-in maximum).
constexpr int kFilteredLReluEmulatedSmem = 227 * 1024;

// Error codes beyond cudaError_t values, returned by the launcher for bad parameters.
constexpr int kFilteredLReluBadParams = 100000;
constexpr int kFilteredLReluTooLarge = 100001;

// Launches the kernel on `stream`; returns 0, a cudaError_t, or one of the codes above.
int filtered_lrelu_launch(const FilteredLReluParams& p, DType dtype, cudaStream_t stream);

// Shared-memory bytes and tile the launcher would use (exposed for the self-test and diagnostics).
struct FilteredLReluTile {
  int tile_w, tile_h;   // output tile
  int act_w, act_h;     // upsampled-buffer tile the tile's outputs read
  int in_w, in_h;       // input tile
  size_t smem_bytes;
};
FilteredLReluTile filtered_lrelu_tile(const FilteredLReluParams& p, int tile_w, int tile_h);

// The launch the launcher would make with `max_smem` bytes of shared memory per CTA: tile and grid, and
// 0, kFilteredLReluBadParams or kFilteredLReluTooLarge (what the launch would return before launching).
int filtered_lrelu_plan(const FilteredLReluParams& p, int max_smem, FilteredLReluTile& tile, int64_t& grid_x,
                        int64_t& grid_y);

// True when the filter shapes have a kernel with compile-time tap counts (else the runtime-tap kernel).
bool filtered_lrelu_specialised(const FilteredLReluParams& p);

}  // namespace anyres_fast
