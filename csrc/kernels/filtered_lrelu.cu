// Fused filtered leaky ReLU (see filtered_lrelu.cuh for the math and the sign-record layout).
//
// One CTA computes one output tile (tile_w x tile_h) of one (n, c) plane, entirely in shared memory:
//   1. filters -> smem, with up^2 and the activation gain folded into fu (gain·lrelu(v) = lrelu(gain·v)
//      for gain > 0, and in read mode the gain is a plain factor); input tile (+ bias, zeros outside the
//      image) -> smem as float
//   2. polyphase upsampling with fu: separable = horizontal pass then vertical pass; full = 2-D taps
//   3. leaky ReLU, clamp (or, in read mode, the mask from the sign record); write mode also stores the
//      2-bit codes, then the CTA writes the 32-bit words of the record it owns (every word of the record
//      belongs to one CTA, padding included, so the record needs no zero fill)
//   4. fd filter + decimation: separable = horizontal then vertical pass; full = 2-D taps; store y
// up and down are template parameters (1, 2, 4), so the polyphase index math is shifts and masks.
// The filter shapes the StyleGAN3 layers use (12 and 24 separable taps, the 12x12 radial down filter, and
// their transposes in the backward pass) are compiled with the tap counts as template parameters: each
// thread keeps a sliding window of inputs and the taps in registers and produces a block of consecutive
// outputs (kRU input steps = UP·kRU outputs in the up passes, kRD outputs in the down passes), so a
// shared-memory load feeds several FMAs. Other shapes use the runtime-tap loops (one output per step).
// Work items are walked without integer division per element (for_each_2d).
#include "filtered_lrelu.cuh"

#include <algorithm>
#include <cmath>
#ifdef ANYRES_FAST_HOST_EMULATION
#include <vector>
#else
#include <atomic>
#include <mutex>
#include <unordered_map>
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
inline long misaligned_stores = 0;  // word stores to an address that is not 4-byte aligned (a GPU faults)
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
constexpr int kRU = 4;  // up passes: input steps per thread block (UP·kRU outputs)
constexpr int kRD = 4;  // down passes: outputs per thread block
// Labels of stage 4's memory accesses in the emulation's access trace (benchmarks/access_counts.py).
enum TraceSite { kTraceActLoad = 0, kTraceFilterLoad = 1, kTraceMidStore = 2, kTraceMidLoad = 3, kTraceOutStore = 4 };

__host__ __device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }
__host__ __device__ __forceinline__ int round4(int a) { return (a + 3) & ~3; }

struct TileDims {
  int tw, th;           // output tile
  int aw, ah;           // upsampled-buffer tile read by the outputs
  int mw, mh;           // buffer tile the up passes compute: whole blocks, room for the phase offset
  int iw, ih;           // input tile
  int in_stride, act_stride, down_stride;  // row strides of s_in, s_mid (up) / s_act, s_mid (down)
  int fu_count, fd_count, mid_count;
};

// Same formulas on host (smem size) and device (carving smem); anyres_fast/ops/filtered_lrelu_op.py
// (cuda_launch_plan) mirrors them to predict the launch.
__host__ __device__ __forceinline__ TileDims tile_dims(const FilteredLReluParams& p, int tw, int th) {
  TileDims d;
  d.tw = tw;
  d.th = th;
  d.aw = (tw - 1) * p.down + p.fd_w;
  d.ah = (th - 1) * p.down + p.fd_h;
  // The up passes work in blocks of up·kRU buffer positions aligned to the polyphase phase, starting up
  // to up-1 positions before the tile (the phase offset of this CTA), so they cover aw + up - 1.
  const int bu = p.up * kRU;
  const int nbx = (d.aw + p.up - 1 + bu - 1) / bu;
  const int nby = (d.ah + p.up - 1 + bu - 1) / bu;
  d.mw = nbx * bu;
  d.mh = nby * bu;
  d.iw = nbx * kRU + (p.fu_w + p.up - 2) / p.up;
  d.ih = nby * kRU + (p.fu_h + p.up - 2) / p.up;
  d.in_stride = d.iw | 1;  // odd strides: threads of a warp on consecutive rows hit distinct banks
  d.act_stride = d.mw | 1;
  d.down_stride = d.tw + 1;
  d.fu_count = round4(p.fu_separable ? p.fu_w : p.fu_w * p.fu_h);
  d.fd_count = round4(p.fd_separable ? p.fd_w : p.fd_w * p.fd_h);
  const int mid_up = p.fu_separable ? d.ih * d.act_stride : 0;  // after the horizontal upsampling pass
  // after the horizontal downsampling pass (separable), the output tile (2-D: stored from there)
  const int mid_down = p.fd_separable ? d.ah * d.down_stride : d.th * d.down_stride;
  d.mid_count = round4(imax(mid_up, mid_down));
  return d;
}

__host__ __device__ __forceinline__ size_t smem_bytes(const FilteredLReluParams& p, const TileDims& d) {
  const size_t floats = size_t(d.fu_count) + d.fd_count + round4(d.ih * d.in_stride) + d.mid_count +
                        size_t(d.mh) * d.act_stride;
  const size_t codes = p.sign_mode == kSignWrite ? size_t(d.mh) * d.mw : 0;
  return floats * sizeof(float) + codes;
}

// body(a, b) for every (a, b) in [0, na) x [0, nb) of this thread, a fastest, block-strided over the
// flat index b·na + a: one division per call, none per element.
template <class Body>
__device__ __forceinline__ void for_each_2d(int na, int nb, Body&& body) {
  const int bd = int(blockDim.x);
  int b = int(threadIdx.x) / na;
  int a = int(threadIdx.x) - b * na;
  const int sb = bd / na, sa = bd - sb * na;
  while (b < nb) {
    body(a, b);
    a += sa;
    b += sb;
    if (a >= na) {
      a -= na;
      ++b;
    }
  }
}

template <int UP> struct Log2;
template <> struct Log2<1> { static constexpr int v = 0; };
template <> struct Log2<2> { static constexpr int v = 1; };
template <> struct Log2<4> { static constexpr int v = 2; };

// Polyphase block of an up pass with K taps (compile time): outputs j = 0 .. UP·kRU-1 of a block whose
// first output has phase 0 read inputs win[(j + k0) / UP + q] with taps k0 + UP·q, k0 = (-j) mod UP.
template <int UP, int K>
struct UpBlock {
  static constexpr int B = UP * kRU;
  static constexpr int W = kRU + (K + UP - 2) / UP;  // window: inputs one block reads
  // out[j] = sum_q in[(j + k0)/UP + q] · f[k0 + UP q]; `in` strided by `step`.
  __device__ __forceinline__ static void run(const float* in, int step, const float (&f)[K], float (&out)[B]) {
    float w[W];
#pragma unroll
    for (int t = 0; t < W; ++t) w[t] = in[t * step];
#pragma unroll
    for (int j = 0; j < B; ++j) {
      const int k0 = (UP - j % UP) % UP;
      const int base = (j + k0) / UP;
      float acc = 0.f;
#pragma unroll
      for (int k = k0, q = 0; k < K; k += UP, ++q) acc = fmaf(w[base + q], f[k], acc);
      out[j] = acc;
    }
  }
};

// Block of kRD decimated outputs of a down pass with K taps: out[j] = sum_k in[j·DOWN + k] · f[k].
template <int DOWN, int K>
struct DownBlock {
  static constexpr int W = (kRD - 1) * DOWN + K;  // window: inputs one block reads
  // w[t] = in[t·step], one 4-byte load each (`site`: the access-trace label of these loads)
  __device__ __forceinline__ static void load(const float* in, int step, float (&w)[W], int site) {
    (void)site;
#pragma unroll
    for (int t = 0; t < W; ++t) {
      ANYRES_TRACE_ACCESS(site, in + t * step, 4);
      w[t] = in[t * step];
    }
  }
  // The same window of contiguous inputs with 8-byte loads (one 4-byte load at each end when `in` is
  // not 8-byte aligned): threads of a warp whose windows start 2·odd words apart then cover all 32
  // banks once per half warp, where 4-byte loads would hit only the even or only the odd banks.
  __device__ __forceinline__ static void load_pairs(const float* in, float (&w)[W], int site) {
    static_assert(W % 2 == 0, "load_pairs needs an even window");
    (void)site;
    if (reinterpret_cast<uintptr_t>(in) % 8 == 0) {  // uniform over the CTA (see the caller)
      const float2* pairs = reinterpret_cast<const float2*>(in);
#pragma unroll
      for (int t = 0; t < W / 2; ++t) {
        ANYRES_TRACE_ACCESS(site, pairs + t, 8);
        const float2 v = pairs[t];
        w[2 * t] = v.x;
        w[2 * t + 1] = v.y;
      }
    } else {
      ANYRES_TRACE_ACCESS(site, in, 4);
      w[0] = in[0];
      const float2* pairs = reinterpret_cast<const float2*>(in + 1);
#pragma unroll
      for (int t = 0; t < W / 2 - 1; ++t) {
        ANYRES_TRACE_ACCESS(site, pairs + t, 8);
        const float2 v = pairs[t];
        w[2 * t + 1] = v.x;
        w[2 * t + 2] = v.y;
      }
      ANYRES_TRACE_ACCESS(site, in + W - 1, 4);
      w[W - 1] = in[W - 1];
    }
  }
  __device__ __forceinline__ static void apply(const float (&w)[W], const float (&f)[K], float (&out)[kRD]) {
#pragma unroll
    for (int j = 0; j < kRD; ++j) {
      float acc = 0.f;
#pragma unroll
      for (int k = 0; k < K; ++k) acc = fmaf(w[j * DOWN + k], f[k], acc);
      out[j] = acc;
    }
  }
  __device__ __forceinline__ static void run(const float* in, int step, const float (&f)[K], float (&out)[kRD],
                                             int site) {
    float w[W];
    load(in, step, w, site);
    apply(w, f, out);
  }
};

// FU, FD: tap count known at compile time (> 0: separable, K taps; < 0: 2-D, |K| x |K|) or 0: any filter,
// shape from the parameters (runtime loops).
template <typename T, int UP, int DOWN, int FU, int FD>
__global__ void __launch_bounds__(kThreads)
filtered_lrelu_kernel(FilteredLReluParams p, int tile_w, int tile_h, int64_t nc_offset) {
  ANYRES_DYNAMIC_SMEM(smem_raw);
  constexpr int kLogUp = Log2<UP>::v;
  constexpr int KU = FU > 0 ? FU : -FU;
  constexpr int KD = FD > 0 ? FD : -FD;
  const bool fu_sep = FU > 0 || (FU == 0 && p.fu_separable);
  const bool fd_sep = FD > 0 || (FD == 0 && p.fd_separable);
  const TileDims d = tile_dims(p, tile_w, tile_h);
  float* s_fu = reinterpret_cast<float*>(smem_raw);
  float* s_fd = s_fu + d.fu_count;
  float* s_in = s_fd + d.fd_count;
  float* s_mid = s_in + round4(d.ih * d.in_stride);
  float* s_act = s_mid + d.mid_count;
  uint8_t* s_code = reinterpret_cast<uint8_t*>(s_act + d.mh * d.act_stride);

  const int64_t nc = int64_t(blockIdx.z) + nc_offset;
  const int n = int(nc / p.C);  // once per CTA
  const int c = int(nc - int64_t(n) * p.C);
  const int ox0 = int(blockIdx.x) * d.tw;
  const int oy0 = int(blockIdx.y) * d.th;
  const int ax0 = ox0 * DOWN;  // buffer tile origin
  const int ay0 = oy0 * DOWN;
  // Zero-inserted coordinate of buffer position i with tap k is i + k - pad0. The up passes start at
  // buffer position -p0 (phase 0: m = UP·n_lo) and the input tile at sample n_lo = floor(m_lo / UP).
  const int mx_lo = ax0 - p.pad_x0;
  const int my_lo = ay0 - p.pad_y0;
  const int p0x = mx_lo & (UP - 1);
  const int p0y = my_lo & (UP - 1);
  const int nx_lo = mx_lo >> kLogUp;  // arithmetic shift = floor division
  const int ny_lo = my_lo >> kLogUp;

  // gain folding (see the file comment); the activation multiplies by g_rest only when it could not fold
  const bool fold = p.sign_mode == kSignRead || p.gain > 0.f;
  const float fu_scale = float(UP * UP) * (fold ? p.gain : 1.f);
  const float g_pos = fold ? 1.f : p.gain;
  const float g_neg = g_pos * p.slope;

  // 1. filters and input tile
  {
    const int cu = p.fu_separable ? p.fu_w : p.fu_w * p.fu_h;
    const int cd = p.fd_separable ? p.fd_w : p.fd_w * p.fd_h;
    // a separable fu runs twice (x and y): its scale goes into the horizontal pass's taps instead
    const float scale = fu_sep ? 1.f : fu_scale;
    for (int i = threadIdx.x; i < cu; i += blockDim.x) s_fu[i] = p.fu[p.fu_reverse ? cu - 1 - i : i] * scale;
    for (int i = threadIdx.x; i < cd; i += blockDim.x) s_fd[i] = p.fd[p.fd_reverse ? cd - 1 - i : i];
    const T* x = static_cast<const T*>(p.x) + int64_t(n) * p.x_stride_n + int64_t(c) * p.x_stride_c;
    const float bias = p.bias ? to_float(static_cast<const T*>(p.bias)[c]) : 0.f;
    for_each_2d(d.iw, d.ih, [&](int col, int r) {
      const int gy = ny_lo + r;
      const int gx = nx_lo + col;
      float v = 0.f;
      if (gy >= 0 && gy < p.in_h && gx >= 0 && gx < p.in_w)
        v = to_float(x[int64_t(gy) * p.x_stride_h + int64_t(gx) * p.x_stride_w]) + bias;
      s_in[r * d.in_stride + col] = v;
    });
  }
  __syncthreads();

  // 2 + 3. upsampled buffer tile (rows/cols in the up passes' padded frame: tile position = frame - p0)
  const uint8_t* sign_plane = p.signs ? p.signs + nc * int64_t(p.sign_h) * p.sign_row_bytes : nullptr;
  auto activate = [&](float v, int fr, int fc) -> float {
    if (p.sign_mode == kSignRead) {
      const int sy = ay0 + fr - p0y + p.sign_ofs_y;
      const int sx = ax0 + fc - p0x + p.sign_ofs_x;
      float mask = 0.f;
      if (sy >= 0 && sy < p.sign_h && sx >= 0 && sx < p.sign_w) {
        const int code = (sign_plane[int64_t(sy) * p.sign_row_bytes + (sx >> 2)] >> (2 * (sx & 3))) & 3;
        mask = code == 0 ? 1.f : (code == 1 ? p.slope : 0.f);
      }
      return v * mask;
    }
    float a = v * (v > 0.f ? g_pos : g_neg);
    uint8_t code = v > 0.f ? 0 : 1;
    if (fabsf(a) > p.clamp) {
      a = copysignf(p.clamp, a);
      code = 2;
    }
    if (p.sign_mode == kSignWrite) s_code[fr * d.mw + fc] = code;
    return a;
  };

  if (fu_sep) {
    constexpr int BU = UP * kRU;
    // horizontal: s_mid[r][fc] for input rows r and frame columns fc
    if constexpr (FU > 0) {
      float f[KU];
#pragma unroll
      for (int k = 0; k < KU; ++k) f[k] = s_fu[k] * fu_scale;
      for_each_2d(d.ih, d.mw / BU, [&](int r, int bx) {
        float out[BU];
        UpBlock<UP, KU>::run(s_in + r * d.in_stride + bx * kRU, 1, f, out);
        float* dst = s_mid + r * d.act_stride + bx * BU;
#pragma unroll
        for (int j = 0; j < BU; ++j) dst[j] = out[j];
      });
    } else {
      const int taps = p.fu_w;
      for_each_2d(d.ih, d.mw, [&](int r, int fc) {
        const int k0 = (UP - (fc & (UP - 1))) & (UP - 1);
        const float* row = s_in + r * d.in_stride + ((fc + k0) >> kLogUp);
        float acc = 0.f;
        for (int k = k0, q = 0; k < taps; k += UP, ++q) acc = fmaf(row[q], s_fu[k], acc);
        s_mid[r * d.act_stride + fc] = acc * fu_scale;
      });
    }
    __syncthreads();
    // vertical + activation: s_act[fr][fc]
    if constexpr (FU > 0) {
      float f[KU];
#pragma unroll
      for (int k = 0; k < KU; ++k) f[k] = s_fu[k];
      for_each_2d(d.mw, d.mh / BU, [&](int fc, int by) {
        float out[BU];
        UpBlock<UP, KU>::run(s_mid + by * kRU * d.act_stride + fc, d.act_stride, f, out);
#pragma unroll
        for (int j = 0; j < BU; ++j) {
          const int fr = by * BU + j;
          s_act[fr * d.act_stride + fc] = activate(out[j], fr, fc);
        }
      });
    } else {
      const int taps = p.fu_h;
      for_each_2d(d.mw, d.mh, [&](int fc, int fr) {
        const int k0 = (UP - (fr & (UP - 1))) & (UP - 1);
        const float* col = s_mid + ((fr + k0) >> kLogUp) * d.act_stride + fc;
        float acc = 0.f;
        for (int k = k0, q = 0; k < taps; k += UP, ++q) acc = fmaf(col[q * d.act_stride], s_fu[k], acc);
        s_act[fr * d.act_stride + fc] = activate(acc, fr, fc);
      });
    }
  } else {
    if constexpr (FU < 0) {
      constexpr int BU = UP * kRU;
      for_each_2d(d.mh, d.mw / BU, [&](int fr, int bx) {
        const int k0y = (UP - (fr & (UP - 1))) & (UP - 1);
        const float* base = s_in + ((fr + k0y) >> kLogUp) * d.in_stride + bx * kRU;
        float acc[BU];
#pragma unroll
        for (int j = 0; j < BU; ++j) acc[j] = 0.f;
        for (int ky = k0y, qy = 0; ky < KU; ky += UP, ++qy) {
          float f[KU];
#pragma unroll
          for (int k = 0; k < KU; ++k) f[k] = s_fu[ky * KU + k];
          float part[BU];
          UpBlock<UP, KU>::run(base + qy * d.in_stride, 1, f, part);
#pragma unroll
          for (int j = 0; j < BU; ++j) acc[j] += part[j];
        }
#pragma unroll
        for (int j = 0; j < BU; ++j) {
          const int fc = bx * BU + j;
          s_act[fr * d.act_stride + fc] = activate(acc[j], fr, fc);
        }
      });
    } else {
      for_each_2d(d.mw, d.mh, [&](int fc, int fr) {
        const int k0x = (UP - (fc & (UP - 1))) & (UP - 1);
        const int k0y = (UP - (fr & (UP - 1))) & (UP - 1);
        const float* base = s_in + ((fr + k0y) >> kLogUp) * d.in_stride + ((fc + k0x) >> kLogUp);
        float acc = 0.f;
        for (int ky = k0y, qy = 0; ky < p.fu_h; ky += UP, ++qy) {
          const float* row = base + qy * d.in_stride;
          const float* frow = s_fu + ky * p.fu_w;
          for (int kx = k0x, qx = 0; kx < p.fu_w; kx += UP, ++qx) acc = fmaf(row[qx], frow[kx], acc);
        }
        s_act[fr * d.act_stride + fc] = activate(acc, fr, fc);
      });
    }
  }
  __syncthreads();

  // 3b. sign record: this CTA owns rows [ay0, row_end) and the 32-bit words of columns [ax0, col_end)
  if (p.sign_mode == kSignWrite) {
    const bool last_x = blockIdx.x == gridDim.x - 1;
    const bool last_y = blockIdx.y == gridDim.y - 1;
    const int row_end = last_y ? p.sign_h : imin(p.sign_h, (oy0 + d.th) * DOWN);
    const int word_begin = ax0 >> 4;  // ax0 is a multiple of 16 (host: tile_w * down % 16 == 0)
    const int word_end = last_x ? (p.sign_row_bytes >> 2) : imin((ox0 + d.tw) * DOWN, p.sign_w + 15) >> 4;
    const int rows = row_end - ay0;
    const int words = word_end - word_begin;
    if (rows > 0 && words > 0) {
      uint8_t* plane = p.signs + nc * int64_t(p.sign_h) * p.sign_row_bytes;
      for_each_2d(words, rows, [&](int wi, int r) {
        const int col0 = wi * 16;  // tile column of the word's first element
        unsigned v = 0;
        if (r < d.ah) {
          const uint8_t* codes = s_code + (r + p0y) * d.mw + p0x;
#pragma unroll
          for (int e = 0; e < 16; ++e) {
            const int li = col0 + e;
            if (li < d.aw && ax0 + li < p.sign_w) v |= unsigned(codes[li]) << (2 * e);
          }
        }
        uint32_t* word = reinterpret_cast<uint32_t*>(plane + int64_t(ay0 + r) * p.sign_row_bytes) + word_begin + wi;
#ifdef ANYRES_FAST_HOST_EMULATION
        if (reinterpret_cast<uintptr_t>(word) % 4 != 0) ++emulation::misaligned_stores;
#endif
        *word = v;
      });
    }
  }

  // 4. fd filter + decimation (reads the tile at frame offset (p0y, p0x) of s_act)
  T* y = static_cast<T*>(p.y) + nc * int64_t(p.out_h) * p.out_w;
  const float* act = s_act + p0y * d.act_stride + p0x;
  if (fd_sep) {
    if constexpr (FD > 0) {
      float f[KD];
#pragma unroll
      for (int k = 0; k < KD; ++k) f[k] = s_fd[k];
      for_each_2d(d.ah, d.tw / kRD, [&](int r, int bj) {
        float out[kRD];
        DownBlock<DOWN, KD>::run(act + r * d.act_stride + bj * kRD * DOWN, 1, f, out, kTraceActLoad);
#pragma unroll
        for (int j = 0; j < kRD; ++j) {
          float* dst = s_mid + r * d.down_stride + bj * kRD + j;
          ANYRES_TRACE_ACCESS(kTraceMidStore, dst, 4);
          *dst = out[j];
        }
      });
      __syncthreads();
      for_each_2d(d.tw, d.th / kRD, [&](int oj, int bi) {
        float out[kRD];
        DownBlock<DOWN, KD>::run(s_mid + bi * kRD * DOWN * d.down_stride + oj, d.down_stride, f, out, kTraceMidLoad);
        const int gx = ox0 + oj;
#pragma unroll
        for (int j = 0; j < kRD; ++j) {
          const int gy = oy0 + bi * kRD + j;
          if (gy < p.out_h && gx < p.out_w) {
            T* dst = y + int64_t(gy) * p.out_w + gx;
            ANYRES_TRACE_ACCESS(kTraceOutStore, dst, int(sizeof(T)));
            *dst = from_float<T>(out[j]);
          }
        }
      });
    } else {
      const int taps = p.fd_w;
      for_each_2d(d.ah, d.tw, [&](int r, int oj) {
        const float* row = act + r * d.act_stride + oj * DOWN;
        float acc = 0.f;
        for (int k = 0; k < taps; ++k) acc = fmaf(row[k], s_fd[k], acc);
        s_mid[r * d.down_stride + oj] = acc;
      });
      __syncthreads();
      for_each_2d(d.tw, d.th, [&](int oj, int oi) {
        const int gy = oy0 + oi;
        const int gx = ox0 + oj;
        if (gy >= p.out_h || gx >= p.out_w) return;
        const float* col = s_mid + oi * DOWN * d.down_stride + oj;
        float acc = 0.f;
        for (int k = 0; k < taps; ++k) acc = fmaf(col[k * d.down_stride], s_fd[k], acc);
        y[int64_t(gy) * p.out_w + gx] = from_float<T>(acc);
      });
    }
  } else {
    if constexpr (FD < 0) {
      // Work item (oi, bj): outputs bj·kRD .. +kRD-1 of row oi, one window load per filter row reused by
      // all kRD. Consecutive threads take consecutive rows oi, so their windows start DOWN·act_stride =
      // 2·odd words apart: 8-byte loads (load_pairs) keep every half warp on 32 distinct banks. The row
      // parity of the window start is the same for the whole CTA at each ky, so load_pairs' branch is
      // uniform. The results go through s_mid (row stride tw + 1: distinct banks down a column) and are
      // stored row by row, so a warp writes consecutive output columns.
      static_assert(DOWN == 2, "the 2-D down pass relies on windows 2·odd words apart");
      for_each_2d(d.th, d.tw / kRD, [&](int oi, int bj) {
        const float* base = act + oi * DOWN * d.act_stride + bj * kRD * DOWN;
        float acc[kRD];
#pragma unroll
        for (int j = 0; j < kRD; ++j) acc[j] = 0.f;
        for (int ky = 0; ky < KD; ++ky) {
          float f[KD];
#pragma unroll
          for (int k = 0; k < KD; ++k) {
            ANYRES_TRACE_ACCESS(kTraceFilterLoad, s_fd + ky * KD + k, 4);
            f[k] = s_fd[ky * KD + k];
          }
          float w[DownBlock<DOWN, KD>::W];
          DownBlock<DOWN, KD>::load_pairs(base + ky * d.act_stride, w, kTraceActLoad);
          float part[kRD];
          DownBlock<DOWN, KD>::apply(w, f, part);
#pragma unroll
          for (int j = 0; j < kRD; ++j) acc[j] += part[j];
        }
#pragma unroll
        for (int j = 0; j < kRD; ++j) {
          float* dst = s_mid + oi * d.down_stride + bj * kRD + j;
          ANYRES_TRACE_ACCESS(kTraceMidStore, dst, 4);
          *dst = acc[j];
        }
      });
      __syncthreads();
      for_each_2d(d.tw, d.th, [&](int oj, int oi) {
        const int gy = oy0 + oi;
        const int gx = ox0 + oj;
        if (gy >= p.out_h || gx >= p.out_w) return;
        const float* src = s_mid + oi * d.down_stride + oj;
        ANYRES_TRACE_ACCESS(kTraceMidLoad, src, 4);
        T* dst = y + int64_t(gy) * p.out_w + gx;
        ANYRES_TRACE_ACCESS(kTraceOutStore, dst, int(sizeof(T)));
        *dst = from_float<T>(*src);
      });
    } else {
      for_each_2d(d.tw, d.th, [&](int oj, int oi) {
        const int gy = oy0 + oi;
        const int gx = ox0 + oj;
        if (gy >= p.out_h || gx >= p.out_w) return;
        const float* base = act + oi * DOWN * d.act_stride + oj * DOWN;
        float acc = 0.f;
        for (int ky = 0; ky < p.fd_h; ++ky) {
          const float* row = base + ky * d.act_stride;
          const float* frow = s_fd + ky * p.fd_w;
          for (int kx = 0; kx < p.fd_w; ++kx) acc = fmaf(row[kx], frow[kx], acc);
        }
        y[int64_t(gy) * p.out_w + gx] = from_float<T>(acc);
      });
    }
  }
}

using KernelFn = void (*)(FilteredLReluParams, int, int, int64_t);

// Filter code of the template: K separable taps -> K, K x K 2-D -> -K, anything else -> 0 (runtime).
int filter_code(int w, int h, bool separable) { return separable ? w : (w == h ? -w : 0); }

// The compiled tap counts (up, down, fu code, fd code): the StyleGAN3 layers' forward (12/24 separable up
// filters, 12-tap separable or 12x12 radial down filters) and their backward passes (filters swapped).
template <typename T>
KernelFn pick_specialised(int up, int down, int fu, int fd) {
#define ANYRES_FLRELU_CASE(U, D, FU, FD) \
  if (up == U && down == D && fu == FU && fd == FD) return filtered_lrelu_kernel<T, U, D, FU, FD>;
  ANYRES_FLRELU_CASE(2, 2, 12, 12)
  ANYRES_FLRELU_CASE(4, 2, 24, 12)
  ANYRES_FLRELU_CASE(2, 2, 12, -12)
  ANYRES_FLRELU_CASE(4, 2, 24, -12)
  ANYRES_FLRELU_CASE(2, 4, 12, 24)
  ANYRES_FLRELU_CASE(2, 2, -12, 12)
  ANYRES_FLRELU_CASE(2, 4, -12, 24)
#undef ANYRES_FLRELU_CASE
  return nullptr;
}

template <typename T, int UP>
KernelFn pick_down(int down) {
  switch (down) {
    case 1: return filtered_lrelu_kernel<T, UP, 1, 0, 0>;
    case 2: return filtered_lrelu_kernel<T, UP, 2, 0, 0>;
    case 4: return filtered_lrelu_kernel<T, UP, 4, 0, 0>;
    default: return nullptr;
  }
}

template <typename T>
KernelFn pick_typed(const FilteredLReluParams& p) {
  if (KernelFn k = pick_specialised<T>(p.up, p.down, filter_code(p.fu_w, p.fu_h, p.fu_separable),
                                       filter_code(p.fd_w, p.fd_h, p.fd_separable)))
    return k;
  switch (p.up) {
    case 1: return pick_down<T, 1>(p.down);
    case 2: return pick_down<T, 2>(p.down);
    case 4: return pick_down<T, 4>(p.down);
    default: return nullptr;
  }
}

KernelFn pick_kernel(DType dtype, const FilteredLReluParams& p) {
  switch (dtype) {
    case DType::f32: return pick_typed<float>(p);
    case DType::f16: return pick_typed<__half>(p);
    case DType::bf16: return pick_typed<__nv_bfloat16>(p);
    default: return nullptr;
  }
}

bool valid_factor(int f) { return f == 1 || f == 2 || f == 4; }

bool params_ok(const FilteredLReluParams& p) {
  if (!p.x || !p.y || !p.fu || !p.fd) return false;
  if (p.N < 1 || p.C < 1 || p.in_h < 1 || p.in_w < 1 || p.out_h < 1 || p.out_w < 1) return false;
  if (p.in_h > kFilteredLReluMaxDim || p.in_w > kFilteredLReluMaxDim || p.out_h > kFilteredLReluMaxDim ||
      p.out_w > kFilteredLReluMaxDim)
    return false;
  auto in_range = [](int v) { return v <= kFilteredLReluMaxDim && v >= -kFilteredLReluMaxDim; };
  if (!in_range(p.pad_x0) || !in_range(p.pad_y0)) return false;
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
    // the write mode stores 32-bit words (rows are whole words, so the base decides)
    if (p.sign_mode == kSignWrite && reinterpret_cast<uintptr_t>(p.signs) % 4 != 0) return false;
    if (!in_range(p.sign_ofs_x) || !in_range(p.sign_ofs_y)) return false;
  }
  if (p.sign_mode == kSignWrite) {
    // the record covers exactly what the down filter reads, from buffer position 0, rows padded to words
    if (p.sign_ofs_x != 0 || p.sign_ofs_y != 0) return false;
    if (p.sign_h != (p.out_h - 1) * p.down + p.fd_h || p.sign_w != (p.out_w - 1) * p.down + p.fd_w) return false;
    if (p.sign_row_bytes != (p.sign_w + 15) / 16 * 4) return false;
  }
  return true;
}

}  // namespace

FilteredLReluTile filtered_lrelu_tile(const FilteredLReluParams& p, int tile_w, int tile_h) {
  TileDims d = tile_dims(p, tile_w, tile_h);
  return {d.tw, d.th, d.aw, d.ah, d.iw, d.ih, smem_bytes(p, d)};
}

int filtered_lrelu_plan(const FilteredLReluParams& p, int max_smem, FilteredLReluTile& tile, int64_t& grid_x,
                        int64_t& grid_y) {
  if (!params_ok(p)) return kFilteredLReluBadParams;
  // 32x32 outputs per CTA (16x16 when down = 4). tile_w * down stays a multiple of 16, so every CTA owns
  // whole 32-bit words of the sign record, and both sides multiples of kRD. Halve the tile height, then
  // the width, until shared memory fits.
  int tile_w = p.down == 4 ? 16 : 32;
  int tile_h = tile_w;
  const int min_w = imax(kRD, 16 / p.down);
  tile = filtered_lrelu_tile(p, tile_w, tile_h);
  while (tile.smem_bytes > size_t(max_smem) && (tile_h > kRD || tile_w > min_w)) {
    if (tile_h > kRD) tile_h /= 2;
    else tile_w /= 2;
    tile = filtered_lrelu_tile(p, tile_w, tile_h);
  }
  if (tile.smem_bytes > size_t(max_smem)) return kFilteredLReluTooLarge;
  grid_x = (int64_t(p.out_w) + tile_w - 1) / tile_w;
  grid_y = (int64_t(p.out_h) + tile_h - 1) / tile_h;
  if (grid_y > kMaxGridY || grid_x > int64_t(0x7fffffff)) return kFilteredLReluTooLarge;
  return 0;
}

bool filtered_lrelu_specialised(const FilteredLReluParams& p) {
  return pick_specialised<float>(p.up, p.down, filter_code(p.fu_w, p.fu_h, p.fu_separable),
                                 filter_code(p.fd_w, p.fd_h, p.fd_separable)) != nullptr;
}

#ifndef ANYRES_FAST_HOST_EMULATION
// The device's opt-in shared-memory limit, queried once per device (not per launch).
static cudaError_t device_smem_optin(int device, int& bytes) {
  static std::atomic<int> cached[64] = {};
  if (device >= 0 && device < 64 && (bytes = cached[device].load(std::memory_order_relaxed)) > 0) return cudaSuccess;
  cudaError_t err = cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err == cudaSuccess && device >= 0 && device < 64) cached[device].store(bytes, std::memory_order_relaxed);
  return err;
}

// cudaFuncSetAttribute once per kernel and device, to the device's limit (the attribute is a ceiling, not
// a reservation: each launch still gets the dynamic shared memory it asks for), not on every launch.
static cudaError_t allow_dynamic_smem(KernelFn kernel, int device, int bytes) {
  static std::mutex mutex;
  static std::unordered_map<const void*, unsigned long long> done;   // kernel -> devices already set
  const unsigned long long bit = 1ull << (device & 63);
  std::lock_guard<std::mutex> lock(mutex);
  unsigned long long& devices = done[reinterpret_cast<const void*>(kernel)];
  if (devices & bit) return cudaSuccess;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (err == cudaSuccess) devices |= bit;
  return err;
}
#endif

int filtered_lrelu_launch(const FilteredLReluParams& p, DType dtype, cudaStream_t stream) {
  if (!params_ok(p)) return kFilteredLReluBadParams;
  KernelFn kernel = pick_kernel(dtype, p);
  if (!kernel) return kFilteredLReluBadParams;

  cudaError_t err = cudaSuccess;
  int max_smem = 0;
#ifdef ANYRES_FAST_HOST_EMULATION
  max_smem = kFilteredLReluEmulatedSmem;
#else
  int device = 0;
  err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  err = device_smem_optin(device, max_smem);
  if (err != cudaSuccess) return err;
#endif
  FilteredLReluTile tile;
  int64_t grid_x = 0, grid_y = 0;
  if (int rc = filtered_lrelu_plan(p, max_smem, tile, grid_x, grid_y)) return rc;
  const int tile_w = tile.tile_w, tile_h = tile.tile_h;

#ifndef ANYRES_FAST_HOST_EMULATION
  if (tile.smem_bytes > 48 * 1024) {
    err = allow_dynamic_smem(kernel, device, max_smem);
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
