// Fused filtered leaky ReLU (see filtered_lrelu.cuh for the math and the sign-record layout).
//
// One CTA computes one output tile (tile_w x tile_h) of one (n, c) plane, entirely in shared memory:
//   1. filters -> smem; input tile (+ bias, zeros outside the image) -> smem as float
//   2. polyphase upsampling with fu: separable = horizontal pass then vertical pass; full = 2-D taps
//   3. x up^2, leaky ReLU, x gain, clamp (or, in read mode, x gain x mask from the sign record);
//      write mode also stores the 2-bit codes, then the CTA writes the bytes of the record it owns
//   4. fd filter + decimation: separable = horizontal then vertical pass; full = 2-D taps; store y
// up and down are template parameters (1, 2, 4) so the polyphase index math is shifts and masks; the
// tap counts are runtime values (any filter up to the limits in the header).
#include "filtered_lrelu.cuh"

#include <algorithm>
#include <cmath>
#ifdef ANYRES_FAST_HOST_EMULATION
#include <vector>
#endif

#ifdef ANYRES_FAST_HOST_EMULATION
// Host emulation, for checking the index math on a machine without a GPU (python_tests build this file
// with g++ -DANYRES_FAST_HOST_EMULATION and compare with the reference). Each CTA runs as ONE thread,
// which is exact here because every phase is a block-strided loop and phases are separated by
// __syncthreads. With -DANYRES_FAST_HOST_EMULATION_THREADS too, each CTA runs as kThreads real threads
// taking turns between barriers instead (host_emulation.h), which checks the barriers themselves.
// Never defined in the extension or CMake builds.
#ifdef ANYRES_FAST_HOST_EMULATION_THREADS
#include "host_emulation.h"
#else
namespace anyres_fast::emulation {
inline uint3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline unsigned char* shared_memory = nullptr;  // sized per launch, so sanitizers see overruns
}  // namespace anyres_fast::emulation
#define threadIdx ::anyres_fast::emulation::thread_idx
#define blockIdx ::anyres_fast::emulation::block_idx
#define blockDim ::anyres_fast::emulation::block_dim
#define gridDim ::anyres_fast::emulation::grid_dim
#define __syncthreads() ((void)0)
#endif
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#define ANYRES_DYNAMIC_SMEM(name) unsigned char* name = ::anyres_fast::emulation::shared_memory
#else
#define ANYRES_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace anyres_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxGridY = 65535;
constexpr int kMaxGridZ = 65535;

__host__ __device__ __forceinline__ int floor_div(int a, int b) {  // b > 0
  int q = a / b;
  return (a % b < 0) ? q - 1 : q;
}
__host__ __device__ __forceinline__ int ceil_div_signed(int a, int b) { return -floor_div(-a, b); }
__host__ __device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int pos_mod(int a, int b) {  // b > 0
  int r = a % b;
  return r < 0 ? r + b : r;
}

struct TileDims {
  int tw, th;  // output tile
  int aw, ah;  // upsampled-buffer tile read by the outputs
  int iw, ih;  // input tile (bound on the number of input samples the buffer tile touches)
  int fu_count, fd_count, mid_count;
};

// Same formulas on host (smem size) and device (carving smem).
__host__ __device__ __forceinline__ TileDims tile_dims(const FilteredLReluParams& p, int tw, int th) {
  TileDims d;
  d.tw = tw;
  d.th = th;
  d.aw = (tw - 1) * p.down + p.fd_w;
  d.ah = (th - 1) * p.down + p.fd_h;
  // the buffer tile plus the fu footprint spans aw + fu_w - 1 zero-inserted positions; at most
  // ceil(that / up) of them are input samples
  d.iw = (d.aw + p.fu_w - 1 + p.up - 1) / p.up;
  d.ih = (d.ah + p.fu_h - 1 + p.up - 1) / p.up;
  d.fu_count = p.fu_separable ? p.fu_w : p.fu_w * p.fu_h;
  d.fd_count = p.fd_separable ? p.fd_w : p.fd_w * p.fd_h;
  int mid_up = p.fu_separable ? d.ih * d.aw : 0;    // after the horizontal upsampling pass
  int mid_down = p.fd_separable ? d.ah * d.tw : 0;  // after the horizontal downsampling pass
  d.mid_count = mid_up > mid_down ? mid_up : mid_down;
  return d;
}

__host__ __device__ __forceinline__ size_t smem_bytes(const FilteredLReluParams& p, const TileDims& d) {
  size_t floats = size_t(d.fu_count) + d.fd_count + size_t(d.ih) * d.iw + d.mid_count + size_t(d.ah) * d.aw;
  size_t codes = p.sign_mode == kSignWrite ? size_t(d.ah) * d.aw : 0;
  return floats * sizeof(float) + codes;
}

template <typename T, int UP, int DOWN>
__global__ void __launch_bounds__(kThreads)
filtered_lrelu_kernel(FilteredLReluParams p, int tile_w, int tile_h, int64_t nc_offset) {
  ANYRES_DYNAMIC_SMEM(smem_raw);
  const TileDims d = tile_dims(p, tile_w, tile_h);
  float* s_fu = reinterpret_cast<float*>(smem_raw);
  float* s_fd = s_fu + d.fu_count;
  float* s_in = s_fd + d.fd_count;
  float* s_mid = s_in + d.ih * d.iw;
  float* s_act = s_mid + d.mid_count;
  uint8_t* s_code = reinterpret_cast<uint8_t*>(s_act + d.ah * d.aw);

  const int64_t nc = int64_t(blockIdx.z) + nc_offset;
  const int n = int(nc / p.C);
  const int c = int(nc % p.C);
  const int ox0 = int(blockIdx.x) * d.tw;
  const int oy0 = int(blockIdx.y) * d.th;
  const int ax0 = ox0 * DOWN;  // buffer tile origin
  const int ay0 = oy0 * DOWN;
  // zero-inserted coordinate m of buffer position i with tap k is i + k - pad0; input sample m / UP
  const int mx_lo = ax0 - p.pad_x0;
  const int my_lo = ay0 - p.pad_y0;
  const int nx_lo = ceil_div_signed(mx_lo, UP);  // first input column the tile touches
  const int ny_lo = ceil_div_signed(my_lo, UP);

  // 1. filters and input tile
  for (int i = threadIdx.x; i < d.fu_count; i += blockDim.x) s_fu[i] = p.fu[p.fu_reverse ? d.fu_count - 1 - i : i];
  for (int i = threadIdx.x; i < d.fd_count; i += blockDim.x) s_fd[i] = p.fd[p.fd_reverse ? d.fd_count - 1 - i : i];
  {
    const T* x = static_cast<const T*>(p.x) + int64_t(n) * p.x_stride_n + int64_t(c) * p.x_stride_c;
    const float bias = p.bias ? to_float(static_cast<const T*>(p.bias)[c]) : 0.f;
    const int count = d.ih * d.iw;
    for (int idx = threadIdx.x; idx < count; idx += blockDim.x) {
      const int r = idx / d.iw;
      const int col = idx - r * d.iw;
      const int gy = ny_lo + r;
      const int gx = nx_lo + col;
      float v = 0.f;
      if (gy >= 0 && gy < p.in_h && gx >= 0 && gx < p.in_w)
        v = to_float(x[int64_t(gy) * p.x_stride_h + int64_t(gx) * p.x_stride_w]) + bias;
      s_in[idx] = v;
    }
  }
  __syncthreads();

  // 2 + 3. upsampled buffer tile and activation
  const float up_gain = float(UP * UP);
  const uint8_t* sign_plane = p.signs ? p.signs + nc * int64_t(p.sign_h) * p.sign_row_bytes : nullptr;
  auto activate = [&](float v, int ai, int i, int idx) -> float {
    if (p.sign_mode == kSignRead) {
      const int sy = ay0 + ai + p.sign_ofs_y;
      const int sx = ax0 + i + p.sign_ofs_x;
      float mask = 0.f;
      if (sy >= 0 && sy < p.sign_h && sx >= 0 && sx < p.sign_w) {
        const int code = (sign_plane[int64_t(sy) * p.sign_row_bytes + (sx >> 2)] >> (2 * (sx & 3))) & 3;
        mask = code == 0 ? 1.f : (code == 1 ? p.slope : 0.f);
      }
      return v * p.gain * mask;
    }
    float a = (v > 0.f ? v : v * p.slope) * p.gain;
    uint8_t code = v > 0.f ? 0 : 1;
    if (fabsf(a) > p.clamp) {
      a = copysignf(p.clamp, a);
      code = 2;
    }
    if (p.sign_mode == kSignWrite) s_code[idx] = code;
    return a;
  };

  const int act_count = d.ah * d.aw;
  if (p.fu_separable) {
    const int taps = p.fu_w;
    const int count = d.ih * d.aw;
    for (int idx = threadIdx.x; idx < count; idx += blockDim.x) {
      const int r = idx / d.aw;
      const int i = idx - r * d.aw;
      const int t = mx_lo + i;          // zero-inserted coordinate for tap 0
      const int k0 = pos_mod(-t, UP);   // first tap that lands on an input sample
      const float* row = s_in + r * d.iw + ((t + k0) / UP - nx_lo);
      float acc = 0.f;
      for (int k = k0, q = 0; k < taps; k += UP, ++q) acc += row[q] * s_fu[k];
      s_mid[idx] = acc;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < act_count; idx += blockDim.x) {
      const int ai = idx / d.aw;
      const int i = idx - ai * d.aw;
      const int t = my_lo + ai;
      const int k0 = pos_mod(-t, UP);
      const float* col = s_mid + ((t + k0) / UP - ny_lo) * d.aw + i;
      float acc = 0.f;
      for (int k = k0, q = 0; k < taps; k += UP, ++q) acc += col[q * d.aw] * s_fu[k];
      s_act[idx] = activate(acc * up_gain, ai, i, idx);
    }
  } else {
    for (int idx = threadIdx.x; idx < act_count; idx += blockDim.x) {
      const int ai = idx / d.aw;
      const int i = idx - ai * d.aw;
      const int tx = mx_lo + i;
      const int ty = my_lo + ai;
      const int k0x = pos_mod(-tx, UP);
      const int k0y = pos_mod(-ty, UP);
      const float* base = s_in + ((ty + k0y) / UP - ny_lo) * d.iw + ((tx + k0x) / UP - nx_lo);
      float acc = 0.f;
      for (int ky = k0y, qy = 0; ky < p.fu_h; ky += UP, ++qy) {
        const float* row = base + qy * d.iw;
        const float* frow = s_fu + ky * p.fu_w;
        for (int kx = k0x, qx = 0; kx < p.fu_w; kx += UP, ++qx) acc += row[qx] * frow[kx];
      }
      s_act[idx] = activate(acc * up_gain, ai, i, idx);
    }
  }
  __syncthreads();

  // 3b. sign record: this CTA owns rows [ay0, row_end) and the bytes of columns [ax0, col_end)
  if (p.sign_mode == kSignWrite) {
    const bool last_x = blockIdx.x == gridDim.x - 1;
    const bool last_y = blockIdx.y == gridDim.y - 1;
    int row_end = last_y ? p.sign_h : imin(p.sign_h, (oy0 + d.th) * DOWN);
    row_end = imin(row_end, ay0 + d.ah);
    const int col_end = last_x ? p.sign_w : imin(p.sign_w, (ox0 + d.tw) * DOWN);
    const int byte_begin = ax0 >> 2;  // ax0 is a multiple of 4 (host picks tile_w * down % 4 == 0)
    const int byte_end = imin((col_end + 3) >> 2, p.sign_row_bytes);
    const int rows = row_end - ay0;
    const int bytes = byte_end - byte_begin;
    if (rows > 0 && bytes > 0) {
      uint8_t* plane = p.signs + nc * int64_t(p.sign_h) * p.sign_row_bytes;
      for (int idx = threadIdx.x; idx < rows * bytes; idx += blockDim.x) {
        const int r = idx / bytes;
        const int bb = idx - r * bytes;
        const int col0 = (byte_begin + bb) * 4;
        unsigned v = 0;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int li = col0 + e - ax0;
          if (col0 + e < col_end && li < d.aw) v |= unsigned(s_code[r * d.aw + li]) << (2 * e);
        }
        plane[int64_t(ay0 + r) * p.sign_row_bytes + byte_begin + bb] = uint8_t(v);
      }
    }
  }

  // 4. fd filter + decimation
  T* y = static_cast<T*>(p.y) + nc * int64_t(p.out_h) * p.out_w;
  const int out_count = d.th * d.tw;
  if (p.fd_separable) {
    const int taps = p.fd_w;
    const int count = d.ah * d.tw;
    for (int idx = threadIdx.x; idx < count; idx += blockDim.x) {
      const int ai = idx / d.tw;
      const int oj = idx - ai * d.tw;
      const float* row = s_act + ai * d.aw + oj * DOWN;
      float acc = 0.f;
      for (int k = 0; k < taps; ++k) acc += row[k] * s_fd[k];
      s_mid[idx] = acc;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < out_count; idx += blockDim.x) {
      const int oi = idx / d.tw;
      const int oj = idx - oi * d.tw;
      const int gy = oy0 + oi;
      const int gx = ox0 + oj;
      if (gy >= p.out_h || gx >= p.out_w) continue;
      const float* col = s_mid + oi * DOWN * d.tw + oj;
      float acc = 0.f;
      for (int k = 0; k < taps; ++k) acc += col[k * d.tw] * s_fd[k];
      y[int64_t(gy) * p.out_w + gx] = from_float<T>(acc);
    }
  } else {
    for (int idx = threadIdx.x; idx < out_count; idx += blockDim.x) {
      const int oi = idx / d.tw;
      const int oj = idx - oi * d.tw;
      const int gy = oy0 + oi;
      const int gx = ox0 + oj;
      if (gy >= p.out_h || gx >= p.out_w) continue;
      const float* base = s_act + oi * DOWN * d.aw + oj * DOWN;
      float acc = 0.f;
      for (int ky = 0; ky < p.fd_h; ++ky) {
        const float* row = base + ky * d.aw;
        const float* frow = s_fd + ky * p.fd_w;
        for (int kx = 0; kx < p.fd_w; ++kx) acc += row[kx] * frow[kx];
      }
      y[int64_t(gy) * p.out_w + gx] = from_float<T>(acc);
    }
  }
}

using KernelFn = void (*)(FilteredLReluParams, int, int, int64_t);

template <typename T, int UP>
KernelFn pick_down(int down) {
  switch (down) {
    case 1: return filtered_lrelu_kernel<T, UP, 1>;
    case 2: return filtered_lrelu_kernel<T, UP, 2>;
    case 4: return filtered_lrelu_kernel<T, UP, 4>;
    default: return nullptr;
  }
}

template <typename T>
KernelFn pick_up(int up, int down) {
  switch (up) {
    case 1: return pick_down<T, 1>(down);
    case 2: return pick_down<T, 2>(down);
    case 4: return pick_down<T, 4>(down);
    default: return nullptr;
  }
}

KernelFn pick_kernel(DType dtype, int up, int down) {
  switch (dtype) {
    case DType::f32: return pick_up<float>(up, down);
    case DType::f16: return pick_up<__half>(up, down);
    case DType::bf16: return pick_up<__nv_bfloat16>(up, down);
    default: return nullptr;
  }
}

bool valid_factor(int f) { return f == 1 || f == 2 || f == 4; }

bool params_ok(const FilteredLReluParams& p) {
  const int kMaxDim = 1 << 28;  // keeps every int coordinate expression (dim * 4 + pad) in range
  if (!p.x || !p.y || !p.fu || !p.fd) return false;
  if (p.N < 1 || p.C < 1 || p.in_h < 1 || p.in_w < 1 || p.out_h < 1 || p.out_w < 1) return false;
  if (p.in_h > kMaxDim || p.in_w > kMaxDim || p.out_h > kMaxDim || p.out_w > kMaxDim) return false;
  if (p.pad_x0 > kMaxDim || p.pad_x0 < -kMaxDim || p.pad_y0 > kMaxDim || p.pad_y0 < -kMaxDim) return false;
  if (!valid_factor(p.up) || !valid_factor(p.down)) return false;
  auto taps_ok = [](int w, int h, bool sep) {
    if (w < 1 || h < 1) return false;
    if (sep) return w == h && w <= kFilteredLReluMaxTaps1D;
    return w <= kFilteredLReluMaxTaps2D && h <= kFilteredLReluMaxTaps2D;
  };
  if (!taps_ok(p.fu_w, p.fu_h, p.fu_separable) || !taps_ok(p.fd_w, p.fd_h, p.fd_separable)) return false;
  if (p.sign_mode != kSignNone && p.sign_mode != kSignWrite && p.sign_mode != kSignRead) return false;
  if (p.sign_mode != kSignNone) {
    if (!p.signs || p.sign_h < 1 || p.sign_w < 1 || p.sign_row_bytes * 4 < p.sign_w) return false;
    if (p.sign_ofs_x > kMaxDim || p.sign_ofs_x < -kMaxDim || p.sign_ofs_y > kMaxDim || p.sign_ofs_y < -kMaxDim)
      return false;
  }
  if (p.sign_mode == kSignWrite) {
    // the record covers exactly what the down filter reads, from buffer position 0
    if (p.sign_ofs_x != 0 || p.sign_ofs_y != 0) return false;
    if (p.sign_h != (p.out_h - 1) * p.down + p.fd_h || p.sign_w != (p.out_w - 1) * p.down + p.fd_w) return false;
  }
  return true;
}

}  // namespace

FilteredLReluTile filtered_lrelu_tile(const FilteredLReluParams& p, int tile_w, int tile_h) {
  TileDims d = tile_dims(p, tile_w, tile_h);
  return {d.tw, d.th, d.aw, d.ah, d.iw, d.ih, smem_bytes(p, d)};
}

int filtered_lrelu_launch(const FilteredLReluParams& p, DType dtype, cudaStream_t stream) {
  if (!params_ok(p)) return kFilteredLReluBadParams;
  KernelFn kernel = pick_kernel(dtype, p.up, p.down);
  if (!kernel) return kFilteredLReluBadParams;

  cudaError_t err = cudaSuccess;
  int max_smem = 0;
#ifdef ANYRES_FAST_HOST_EMULATION
  max_smem = 227 * 1024;
#else
  int device = 0;
  err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err != cudaSuccess) return err;
#endif

  // 32x32 outputs per CTA (16x16 when down = 4); tile_w * down stays a multiple of 4 so every CTA owns
  // whole bytes of the sign record. Halve the tile height (then width) until shared memory fits.
  int tile_w = p.down == 4 ? 16 : 32;
  int tile_h = tile_w;
  FilteredLReluTile tile = filtered_lrelu_tile(p, tile_w, tile_h);
  while (tile.smem_bytes > size_t(max_smem) && (tile_h > 1 || tile_w > 4)) {
    if (tile_h > 1) tile_h /= 2;
    else tile_w /= 2;
    tile = filtered_lrelu_tile(p, tile_w, tile_h);
  }
  if (tile.smem_bytes > size_t(max_smem)) return kFilteredLReluTooLarge;

  const int64_t grid_x = (int64_t(p.out_w) + tile_w - 1) / tile_w;
  const int64_t grid_y = (int64_t(p.out_h) + tile_h - 1) / tile_h;
  if (grid_y > kMaxGridY || grid_x > int64_t(0x7fffffff)) return kFilteredLReluTooLarge;

#ifndef ANYRES_FAST_HOST_EMULATION
  if (tile.smem_bytes > 48 * 1024) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(tile.smem_bytes));
    if (err != cudaSuccess) return err;
  }
#endif
  const int64_t planes = int64_t(p.N) * p.C;
  for (int64_t nc0 = 0; nc0 < planes; nc0 += kMaxGridZ) {
    const unsigned gz = unsigned(std::min<int64_t>(kMaxGridZ, planes - nc0));
    dim3 grid(unsigned(grid_x), unsigned(grid_y), gz);
#ifdef ANYRES_FAST_HOST_EMULATION
    (void)stream;
    emulation::grid_dim = grid;
    emulation::block_dim = dim3(1, 1, 1);
    emulation::thread_idx = {0, 0, 0};
    std::vector<float4> smem((tile.smem_bytes + sizeof(float4) - 1) / sizeof(float4));
    emulation::shared_memory = reinterpret_cast<unsigned char*>(smem.data());
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          emulation::block_idx = {bx, by, bz};
#ifdef ANYRES_FAST_HOST_EMULATION_THREADS
          emulation::run_cta(kThreads, tile.smem_bytes, [&] { kernel(p, tile_w, tile_h, nc0); });
#else
          kernel(p, tile_w, tile_h, nc0);
#endif
        }
#else
    kernel<<<grid, kThreads, tile.smem_bytes, stream>>>(p, tile_w, tile_h, nc0);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
#endif
  }
  return 0;
}

}  // namespace anyres_fast
