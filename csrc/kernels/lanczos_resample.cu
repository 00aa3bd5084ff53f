// Separable Lanczos resampling (docs/ops.md §3). See lanczos_resample.cuh for the interface and
// anyres_fast/ops/lanczos_resample_op.py for the definition (the tables here follow its formulas).
//
// Forward:  tables for both axes (one thread per output row/column, float64 math), then a pass along
//           W into a float32 intermediate (B,C,H,W_out), then a pass along H into the output.
// Backward: the transpose of each pass, in reverse order. Each input element gathers from the
//           contiguous range of outputs whose tap window holds it (ranges found by binary search over
//           the monotone tap windows), so there are no atomics and the result is deterministic.
#include "lanczos_resample.cuh"

#include "common.cuh"

#include <algorithm>

#ifdef ANYRES_FAST_HOST_EMULATION
// Host emulation, for checking the kernels on a machine without a GPU: python_tests build this file with
// g++ -x c++ -DANYRES_FAST_HOST_EMULATION and compare with the reference. Never defined in the extension
// or CMake builds. A grid-stride launch (ANYRES_LAUNCH) runs every (block, thread) of its grid serially.
// That is exact for those kernels: no shared memory, no synchronisation, no atomics, and each thread
// writes only the outputs of its own grid-stride indices, so the order of the threads cannot change any
// result. The fused kernel (ANYRES_LAUNCH_CTA: phases of block-strided loops between __syncthreads) runs
// each CTA as one thread, which is exact for such kernels; with -DANYRES_FAST_HOST_EMULATION_THREADS as
// well, as its real number of threads taking turns at the barriers (host_emulation.h), which checks the
// barriers. Float math matches the GPU's except the last bits of the double sin() and where the two
// compilers contract a*b+c differently (fmaf is fused on the host too). The tap windows do not depend on
// that: they use the explicitly rounded __dadd_rn/__dsub_rn/__dmul_rn, which round every step on both
// (test_tap_windows_do_not_depend_on_fma_contraction builds this file with FMA contraction on).
#include <algorithm>
#include <cmath>
#include <vector>
#ifdef ANYRES_FAST_HOST_EMULATION_THREADS
#include "host_emulation.h"
namespace anyres_fast::lanczos::emulation {
namespace vars = ::anyres_fast::emulation_threads;
}
#else
namespace anyres_fast::lanczos::emulation::vars {
inline uint3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline unsigned char* shared_memory = nullptr;
}  // namespace anyres_fast::lanczos::emulation::vars
#define threadIdx ::anyres_fast::lanczos::emulation::vars::thread_idx
#define blockIdx ::anyres_fast::lanczos::emulation::vars::block_idx
#define blockDim ::anyres_fast::lanczos::emulation::vars::block_dim
#define gridDim ::anyres_fast::lanczos::emulation::vars::grid_dim
#define __syncthreads() ((void)0)
#endif
namespace anyres_fast::lanczos::emulation {
// 0: every launch runs its own grid. n > 0: at most n blocks, so each thread walks several
// grid-stride indices (the path real launches take only at huge sizes).
inline unsigned max_blocks = 0;
template <typename... Params>
auto launch(void (*kernel)(Params...), unsigned grid, unsigned block) {
  return [=](auto&&... args) {
    vars::grid_dim = dim3(max_blocks != 0 && grid > max_blocks ? max_blocks : grid);
    vars::block_dim = dim3(block);
    for (unsigned b = 0; b < vars::grid_dim.x; ++b)
      for (unsigned t = 0; t < block; ++t) {
        vars::block_idx = {b, 0, 0};
        vars::thread_idx = {t, 0, 0};
        kernel(args...);
      }
  };
}
template <typename... Params>
auto launch_cta(void (*kernel)(Params...), dim3 grid, unsigned block, size_t smem) {
  return [=](auto&&... args) {
    std::vector<double> buffer((smem + sizeof(double) - 1) / sizeof(double) + 1);
    vars::shared_memory = reinterpret_cast<unsigned char*>(buffer.data());
    vars::grid_dim = grid;
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          vars::block_idx = {x, y, z};
#ifdef ANYRES_FAST_HOST_EMULATION_THREADS
          vars::run_cta(int(block), smem, [&] { kernel(args...); });
#else
          (void)block;
          vars::block_dim = dim3(1);
          vars::thread_idx = {0, 0, 0};
          kernel(args...);
#endif
        }
    vars::shared_memory = nullptr;
  };
}
}  // namespace anyres_fast::lanczos::emulation
#define ANYRES_LAUNCH(grid, block, smem, stream, ...) \
  ::anyres_fast::lanczos::emulation::launch(__VA_ARGS__, grid, block)
#define ANYRES_LAUNCH_CTA(grid, block, smem, stream, ...) \
  ::anyres_fast::lanczos::emulation::launch_cta(__VA_ARGS__, grid, block, smem)
#define ANYRES_DYNAMIC_SMEM(name) unsigned char* name = ::anyres_fast::lanczos::emulation::vars::shared_memory
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#define cudaGetLastError() cudaSuccess  // emulated launches cannot fail (no CUDA runtime linked)
using std::max;
using std::min;
// The _rn intrinsics round each result on the GPU whatever ptxas contracts; here the volatile store
// does the same whatever g++ contracts (-ffp-contract=fast -mfma in the sweep test).
inline double __dadd_rn(double a, double b) { volatile double r = a + b; return r; }
inline double __dsub_rn(double a, double b) { volatile double r = a - b; return r; }
inline double __dmul_rn(double a, double b) { volatile double r = a * b; return r; }
#else
// kernel<<<grid, block, smem, stream>>>(args); the kernel comes last because template argument
// lists hold commas.
#define ANYRES_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define ANYRES_LAUNCH_CTA(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define ANYRES_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace anyres_fast {
namespace lanczos {
namespace {

constexpr int kThreads = 256;
constexpr double kPi = 3.14159265358979323846;

// Enough blocks to cover `total` threads, capped; the kernels loop with a grid stride.
unsigned grid_for(int64_t total) {
  const int64_t blocks = ceil_div64(total, kThreads);
  return static_cast<unsigned>(blocks < 65536 * 8 ? (blocks > 0 ? blocks : 1) : 65536 * 8);
}

__device__ __forceinline__ int64_t thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// Offset of the weight of tap k of output i of sample b (see AxisTables::k_major).
template <typename I>
__device__ __forceinline__ I weight_offset(const AxisTables& t, I b, int i, int k) {
  return t.k_major ? (b * t.taps + k) * t.out_size + i : (b * t.out_size + i) * t.taps + k;
}

// L(t) = sinc(t)·sinc(t/a) on |t| < a; exactly 1 at 0 and exactly 0 at nonzero integers and |t| >= a.
__device__ double lanczos_kernel(double t, int a) {
  if (t == 0.0) return 1.0;
  if (fabs(t) >= a || t == rint(t)) return 0.0;
  const double pt = kPi * t;
  return a * sin(pt) * sin(pt / a) / (pt * pt);
}

// True when none of the n outside taps first, first+step, ... (at most m_max of them) has a nonzero
// weight; more than m_max outside taps always include a nonzero one (see the Python docstring).
__device__ bool outside_taps_zero(double n, double first, double step, int m_max, double centre,
                                  double fs, int a) {
  if (n > m_max) return false;
  const int count = static_cast<int>(n);
  for (int m = 0; m < count; ++m) {
    const double tap = first + step * m;
    if (lanczos_kernel((tap + 0.5 - centre) / fs, a) != 0.0) return false;
  }
  return true;
}

__global__ void tables_kernel(const double* __restrict__ boxes, int64_t batch, int axis, int a,
                              bool antialias, AxisTables t) {
  const int64_t rows = batch * t.out_size;
  for (int64_t row = thread_index(); row < rows; row += grid_stride()) {
    const int64_t b = row / t.out_size;
    const int i = static_cast<int>(row % t.out_size);
    const double start = boxes[b * 4 + axis];
    const double end = boxes[b * 4 + axis + 2];
    const double scale = (end - start) / t.out_size;
    const double fs = antialias ? fmax(scale, 1.0) : 1.0;
    // Every step rounded on its own, as the float64 reference computes it: ptxas would otherwise contract
    // centre ± a·fs into one DFMA and move lo / count by one tap on some rows.
    const double support = __dmul_rn(static_cast<double>(a), fs);
    const double centre = __dadd_rn(start, __dmul_rn(i + 0.5, scale));
    const double lo_raw = floor(__dadd_rn(__dsub_rn(centre, support), 0.5));
    const double hi_raw = floor(__dadd_rn(__dadd_rn(centre, support), 0.5));
    // Clamp in floating point first so huge boxes never overflow the int conversion.
    const double in = static_cast<double>(t.in_size);
    const int lo = static_cast<int>(fmin(fmax(lo_raw, 0.0), in));
    const int hi = static_cast<int>(fmin(fmax(hi_raw, 0.0), in));
    const int count = max(0, min(hi - lo, t.taps));

    double total = 0.0;
    for (int k = 0; k < count; ++k) total += lanczos_kernel((lo + k + 0.5 - centre) / fs, a);
    const double norm = total != 0.0 ? total : 1.0;
    for (int k = 0; k < t.taps; ++k) {
      t.weights[weight_offset(t, b, i, k)] =
          k < count ? static_cast<float>(lanczos_kernel((lo + k + 0.5 - centre) / fs, a) / norm) : 0.0f;
    }
    t.lo[row] = lo;
    t.count[row] = count;

    if (t.valid != nullptr) {
      const int m_max = 2 * a + 2;
      const double left_end = fmin(hi_raw, 0.0);   // outside taps on the left: [lo_raw, left_end)
      const double right_begin = fmax(lo_raw, in);  // outside taps on the right: [right_begin, hi_raw)
      const bool ok =
          outside_taps_zero(fmax(left_end - lo_raw, 0.0), left_end - 1.0, -1.0, m_max, centre, fs, a) &&
          outside_taps_zero(fmax(hi_raw - right_begin, 0.0), right_begin, 1.0, m_max, centre, fs, a);
      t.valid[row] = ok ? 1 : 0;
    }
  }
}

// For input j of sample b: outputs [begin, end) are those with lo <= j < lo + count. Both lo and
// lo + count are non-decreasing in the output index (the centres increase), so these are binary searches.
__global__ void inverse_ranges_kernel(int64_t batch, AxisTables t) {
  const int64_t cols = batch * t.in_size;
  for (int64_t col = thread_index(); col < cols; col += grid_stride()) {
    const int64_t b = col / t.in_size;
    const int j = static_cast<int>(col % t.in_size);
    const int32_t* lo = t.lo + b * t.out_size;
    const int32_t* count = t.count + b * t.out_size;
    int low = 0, high = t.out_size;
    while (low < high) {  // first output whose window ends after j
      const int mid = low + (high - low) / 2;
      if (lo[mid] + count[mid] > j) high = mid; else low = mid + 1;
    }
    const int begin = low;
    high = t.out_size;
    while (low < high) {  // first output whose window starts after j
      const int mid = low + (high - low) / 2;
      if (lo[mid] > j) high = mid; else low = mid + 1;
    }
    t.inv_begin[col] = begin;
    t.inv_end[col] = low;
  }
}

// I: index type of the flat output index, int32_t when every index of the launch fits (the launcher
// checks), else int64_t; the divisions and modulos below are then 32-bit (no 64-bit division calls).
template <typename Tin, typename Tout, typename I>
__global__ void __launch_bounds__(kThreads)
resample_axis_kernel(const Tin* __restrict__ in, Tout* __restrict__ out, I planes, I planes_per_sample, I inner,
                     AxisTables t) {
  const I total = planes * t.out_size * inner;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I idx = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const I q = idx % inner;
    const I rest = idx / inner;
    const int i = static_cast<int>(rest % t.out_size);
    const I p = rest / t.out_size;
    const I b = p / planes_per_sample;
    const I row = b * t.out_size + i;
    const int lo = t.lo[row];
    const int count = min(t.count[row], t.in_size - lo);  // lo + count <= in_size by construction
    const float* w = t.weights + weight_offset(t, b, i, 0);
    const I w_stride = t.k_major ? t.out_size : 1;
    const Tin* src = in + (p * t.in_size + lo) * inner + q;
    float acc = 0.0f;
    for (int k = 0; k < count; ++k) acc = fmaf(w[k * w_stride], to_float<Tin>(src[k * inner]), acc);
    out[idx] = from_float<Tout>(acc);
  }
}

template <typename Tin, typename Tout, typename I>
__global__ void __launch_bounds__(kThreads)
resample_axis_transpose_kernel(const Tin* __restrict__ grad_out, Tout* __restrict__ grad_in, I planes,
                               I planes_per_sample, I inner, AxisTables t) {
  const I total = planes * t.in_size * inner;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I idx = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const I q = idx % inner;
    const I rest = idx / inner;
    const int j = static_cast<int>(rest % t.in_size);
    const I p = rest / t.in_size;
    const I b = p / planes_per_sample;
    const I col = b * t.in_size + j;
    const int begin = max(t.inv_begin[col], 0);
    const int end = min(t.inv_end[col], t.out_size);
    const Tin* src = grad_out + p * t.out_size * inner + q;
    float acc = 0.0f;
    for (int i = begin; i < end; ++i) {
      const I row = b * t.out_size + i;
      const int k = j - t.lo[row];
      if (k >= 0 && k < t.count[row]) acc = fmaf(t.weights[weight_offset(t, b, i, k)], to_float<Tin>(src[i * inner]), acc);
    }
    grad_in[idx] = from_float<Tout>(acc);
  }
}

// ---- Fused forward: both passes through shared memory ------------------------------------------------
// A CTA owns an output tile of kTW columns x kOB rows of one sample and a chunk of its channels. It loads
// the tile's table entries into shared memory once and reuses them for every plane of the chunk. Per
// plane it walks the input rows the tile needs, [lo of its first row, lo + count of its last row), in
// sub-batches of kSB rows: pass 1 resamples those rows along W into shared memory (kSB x kTW), pass 2
// adds their contribution to the tile's accumulators (shared memory too): no full-size intermediate
// in global memory. Every phase is a block-strided loop between barriers. Offsets inside a plane are
// 32-bit (the launcher checks H·W and H_out·W_out < 2^31); the plane base is 64-bit, once per plane.
constexpr int kTW = 16, kOB = 16, kSB = 16;

struct FusedSmem {
  int taps_x, taps_y;
  // floats: col weights [taps_x][kTW], row weights [kOB][taps_y], mid [kSB][kTW], acc [kOB][kTW]
  // ints: col lo, col count [kTW], row lo, row count [kOB]
  __host__ __device__ size_t bytes() const {
    return sizeof(float) * (size_t(taps_x) * kTW + size_t(kOB) * taps_y + kSB * kTW + kOB * kTW) +
           sizeof(int32_t) * 2 * (kTW + kOB);
  }
};

// Minimum resident CTAs per SM for ptxas. Without it ptxas fits the 16-bit variants into 32 registers on sm_90
// (full occupancy) and spills the channel loop's counters (28 B of spill traffic per thread, kernel_report);
// 6 CTAs x 256 threads allows 40 registers, which every variant fits without spilling (float used 40 on sm_90
// already; 8 CTAs makes it spill there, none lets it take 66-72). Register allocation only: same arithmetic.
constexpr int kFusedMinBlocks = 6;

template <typename Tin, typename Tout>
__global__ void __launch_bounds__(kThreads, kFusedMinBlocks)
resample_fused_kernel(const Tin* __restrict__ in, Tout* __restrict__ out, int channels, int chunk, int chunks,
                      int h, int w, int ho, int wo, AxisTables rows, AxisTables cols) {
  ANYRES_DYNAMIC_SMEM(smem);
  const FusedSmem layout{cols.taps, rows.taps};
  float* s_cw = reinterpret_cast<float*>(smem);
  float* s_rw = s_cw + layout.taps_x * kTW;
  float* s_mid = s_rw + kOB * layout.taps_y;
  float* s_acc = s_mid + kSB * kTW;
  int32_t* s_clo = reinterpret_cast<int32_t*>(s_acc + kOB * kTW);
  int32_t* s_ccnt = s_clo + kTW;
  int32_t* s_rlo = s_ccnt + kTW;
  int32_t* s_rcnt = s_rlo + kOB;

  const int j0 = int(blockIdx.x) * kTW;
  const int i0 = int(blockIdx.y) * kOB;
  const int b = int(blockIdx.z) / chunks;  // once per CTA
  const int c0 = (int(blockIdx.z) - b * chunks) * chunk;
  const int c1 = min(channels, c0 + chunk);
  const int ncols = min(kTW, wo - j0);
  const int nrows = min(kOB, ho - i0);
  const int tid = int(threadIdx.x), bd = int(blockDim.x);

  // tables of the tile (k-major weights: element (k, i) of sample b at (b·taps + k)·out + i)
  for (int j = tid; j < kTW; j += bd) {
    const bool ok = j < ncols;
    const int64_t row = int64_t(b) * wo + j0 + j;
    s_clo[j] = ok ? cols.lo[row] : 0;
    s_ccnt[j] = ok ? min(cols.count[row], w - cols.lo[row]) : 0;
  }
  for (int i = tid; i < kOB; i += bd) {
    const bool ok = i < nrows;
    const int64_t row = int64_t(b) * ho + i0 + i;
    s_rlo[i] = ok ? rows.lo[row] : 0;
    s_rcnt[i] = ok ? min(rows.count[row], h - rows.lo[row]) : 0;
  }
  for (int idx = tid; idx < layout.taps_x * kTW; idx += bd) {  // kTW is a power of two: shift and mask
    const int k = idx / kTW, j = idx % kTW;
    s_cw[idx] = j < ncols ? cols.weights[(int64_t(b) * layout.taps_x + k) * wo + j0 + j] : 0.f;
  }
  for (int idx = tid; idx < layout.taps_y * kOB; idx += bd) {
    const int k = idx / kOB, i = idx % kOB;
    s_rw[i * layout.taps_y + k] = i < nrows ? rows.weights[(int64_t(b) * layout.taps_y + k) * ho + i0 + i] : 0.f;
  }
  __syncthreads();
  const int r0 = s_rlo[0];
  const int r1 = s_rlo[nrows - 1] + s_rcnt[nrows - 1];  // lo and lo + count never decrease along the axis

  for (int c = c0; c < c1; ++c) {
    const int64_t plane = int64_t(b) * channels + c;
    const Tin* src = in + plane * (int64_t(h) * w);
    Tout* dst = out + plane * (int64_t(ho) * wo);
    // s_acc[idx] is only ever touched by the thread owning idx (same mapping in every phase): no barrier
    for (int idx = tid; idx < kOB * kTW; idx += bd) s_acc[idx] = 0.f;
    for (int sb0 = r0; sb0 < r1; sb0 += kSB) {
      __syncthreads();  // pass 2 of the previous sub-batch is done with s_mid
      // pass 1: rows sb0 .. sb0 + kSB - 1 along W
      for (int idx = tid; idx < kSB * kTW; idx += bd) {
        const int rr = idx / kTW, j = idx % kTW;
        const int row = sb0 + rr;
        float acc = 0.f;
        if (row < r1) {
          const Tin* line = src + row * w + s_clo[j];  // 32-bit in-plane offset
          const int count = s_ccnt[j];
          for (int k = 0; k < count; ++k) acc = fmaf(s_cw[k * kTW + j], to_float<Tin>(line[k]), acc);
        }
        s_mid[idx] = acc;
      }
      __syncthreads();
      // pass 2: their contribution to each output row of the tile
      for (int idx = tid; idx < kOB * kTW; idx += bd) {
        const int i = idx / kTW, j = idx % kTW;
        const int lo = s_rlo[i];
        const int k_begin = max(0, sb0 - lo);
        const int k_end = min(s_rcnt[i], sb0 + kSB - lo);
        const float* wrow = s_rw + i * layout.taps_y;
        float acc = s_acc[idx];
        for (int k = k_begin; k < k_end; ++k) acc = fmaf(wrow[k], s_mid[(lo + k - sb0) * kTW + j], acc);
        s_acc[idx] = acc;
      }
    }
    for (int idx = tid; idx < kOB * kTW; idx += bd) {
      const int i = idx / kTW, j = idx % kTW;
      if (i < nrows && j < ncols) dst[(i0 + i) * wo + j0 + j] = from_float<Tout>(s_acc[idx]);
    }
  }
}

// True when every flat index, weight offset and element offset of a pass over (planes, in/out, inner) fits
// int32 (then the pass runs with 32-bit index math). The grid-stride loop may step past the total by one
// grid, hence the margin.
bool fits_int32(int64_t planes, int64_t inner, const AxisTables& t) {
  const int64_t limit = (int64_t(1) << 31) - int64_t(65536) * 8 * kThreads;
  const int64_t longest = std::max<int64_t>(t.in_size, t.out_size);
  const int64_t samples = planes;  // at most one table row block per plane
  return planes * longest * inner < limit && samples * longest * t.taps < limit;
}

// Calls fn(T{}) with the element type of `code` (float, __half, __nv_bfloat16).
template <typename Fn>
int with_elem_type(int code, Fn&& fn) {
  switch (code) {
    case kF32: return fn(float{});
    case kF16: return fn(__half{});
    case kBF16: return fn(__nv_bfloat16{});
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

}  // namespace

int compute_tables(const double* boxes, int64_t batch, int axis, int a, bool antialias,
                   const AxisTables& t, cudaStream_t stream) {
  if (batch <= 0 || t.out_size <= 0 || t.in_size <= 0 || t.taps <= 0 || (axis != 0 && axis != 1) || a < 1)
    return static_cast<int>(cudaErrorInvalidValue);
  ANYRES_LAUNCH(grid_for(batch * t.out_size), kThreads, 0, stream, tables_kernel)(
      boxes, batch, axis, a, antialias, t);
  return static_cast<int>(cudaGetLastError());
}

int compute_inverse_ranges(int64_t batch, const AxisTables& t, cudaStream_t stream) {
  if (batch <= 0 || t.in_size <= 0 || t.out_size <= 0 || t.inv_begin == nullptr || t.inv_end == nullptr)
    return static_cast<int>(cudaErrorInvalidValue);
  ANYRES_LAUNCH(grid_for(batch * t.in_size), kThreads, 0, stream, inverse_ranges_kernel)(batch, t);
  return static_cast<int>(cudaGetLastError());
}

int resample_axis(int in_type, const void* in, int out_type, void* out, int64_t planes,
                  int64_t planes_per_sample, int64_t inner, const AxisTables& t, cudaStream_t stream) {
  if (planes <= 0 || planes_per_sample <= 0 || inner <= 0 || (in_type != kF32 && out_type != kF32))
    return static_cast<int>(cudaErrorInvalidValue);
  const unsigned grid = grid_for(planes * t.out_size * inner);
  const bool float_in = in_type == kF32;
  const bool narrow = fits_int32(planes, inner, t);
  return with_elem_type(float_in ? out_type : in_type, [&](auto other) {
    using T = decltype(other);
    if (float_in && narrow) {
      ANYRES_LAUNCH(grid, kThreads, 0, stream, resample_axis_kernel<float, T, int32_t>)(
          static_cast<const float*>(in), static_cast<T*>(out), int32_t(planes), int32_t(planes_per_sample),
          int32_t(inner), t);
    } else if (float_in) {
      ANYRES_LAUNCH(grid, kThreads, 0, stream, resample_axis_kernel<float, T, int64_t>)(
          static_cast<const float*>(in), static_cast<T*>(out), planes, planes_per_sample, inner, t);
    } else if (narrow) {
      ANYRES_LAUNCH(grid, kThreads, 0, stream, resample_axis_kernel<T, float, int32_t>)(
          static_cast<const T*>(in), static_cast<float*>(out), int32_t(planes), int32_t(planes_per_sample),
          int32_t(inner), t);
    } else {
      ANYRES_LAUNCH(grid, kThreads, 0, stream, resample_axis_kernel<T, float, int64_t>)(
          static_cast<const T*>(in), static_cast<float*>(out), planes, planes_per_sample, inner, t);
    }
    return static_cast<int>(cudaGetLastError());
  });
}

int resample_fused(int type, const void* in, void* out, int64_t batch, int64_t channels, int64_t h, int64_t w,
                   int64_t ho, int64_t wo, const AxisTables& rows, const AxisTables& cols, size_t max_smem,
                   cudaStream_t stream) {
  if (batch <= 0 || channels <= 0 || h <= 0 || w <= 0 || ho <= 0 || wo <= 0 || !rows.k_major || !cols.k_major)
    return static_cast<int>(cudaErrorInvalidValue);
  const FusedSmem layout{cols.taps, rows.taps};
  const int64_t limit = int64_t(1) << 31;
  const int64_t row_tiles = ceil_div64(ho, kOB);
  if (layout.bytes() > max_smem || h * w >= limit || ho * wo >= limit || batch > 65535 || row_tiles > 65535 ||
      channels >= limit)
    return kNotFused;
  // channels per CTA: one whenever batch · channels <= 65535 (the most CTAs, each reloading the tap tables
  // into shared memory for its one channel: tables are taps x tile, small next to the image rows a channel
  // reads; not measured on a GPU), else the fewest per CTA that keep batch · chunks <= 65535 (grid.z)
  const int64_t chunks = std::min<int64_t>(channels, std::max<int64_t>(1, 65535 / batch));
  const int chunk = static_cast<int>(ceil_div64(channels, chunks));
  const int nchunks = static_cast<int>(ceil_div64(channels, chunk));
  const dim3 grid(static_cast<unsigned>(ceil_div64(wo, kTW)), static_cast<unsigned>(row_tiles),
                  static_cast<unsigned>(batch * nchunks));
  return with_elem_type(type, [&](auto elem) {
    using T = decltype(elem);
    ANYRES_LAUNCH_CTA(grid, kThreads, layout.bytes(), stream, resample_fused_kernel<T, T>)(
        static_cast<const T*>(in), static_cast<T*>(out), static_cast<int>(channels), chunk, nchunks,
        static_cast<int>(h), static_cast<int>(w), static_cast<int>(ho), static_cast<int>(wo), rows, cols);
    return static_cast<int>(cudaGetLastError());
  });
}

int resample_axis_transpose(int in_type, const void* grad_out, int out_type, void* grad_in,
                            int64_t planes, int64_t planes_per_sample, int64_t inner,
                            const AxisTables& t, cudaStream_t stream) {
  if (planes <= 0 || planes_per_sample <= 0 || inner <= 0 || (in_type != kF32 && out_type != kF32) ||
      t.inv_begin == nullptr || t.inv_end == nullptr)
    return static_cast<int>(cudaErrorInvalidValue);
  const unsigned grid = grid_for(planes * t.in_size * inner);
  const bool float_in = in_type == kF32;
  const bool narrow = fits_int32(planes, inner, t);
  return with_elem_type(float_in ? out_type : in_type, [&](auto other) {
    using T = decltype(other);
    if (float_in && narrow) {
      ANYRES_LAUNCH(grid, kThreads, 0, stream, resample_axis_transpose_kernel<float, T, int32_t>)(
          static_cast<const float*>(grad_out), static_cast<T*>(grad_in), int32_t(planes),
          int32_t(planes_per_sample), int32_t(inner), t);
    } else if (float_in) {
      ANYRES_LAUNCH(grid, kThreads, 0, stream, resample_axis_transpose_kernel<float, T, int64_t>)(
          static_cast<const float*>(grad_out), static_cast<T*>(grad_in), planes, planes_per_sample, inner, t);
    } else if (narrow) {
      ANYRES_LAUNCH(grid, kThreads, 0, stream, resample_axis_transpose_kernel<T, float, int32_t>)(
          static_cast<const T*>(grad_out), static_cast<float*>(grad_in), int32_t(planes),
          int32_t(planes_per_sample), int32_t(inner), t);
    } else {
      ANYRES_LAUNCH(grid, kThreads, 0, stream, resample_axis_transpose_kernel<T, float, int64_t>)(
          static_cast<const T*>(grad_out), static_cast<float*>(grad_in), planes, planes_per_sample, inner, t);
    }
    return static_cast<int>(cudaGetLastError());
  });
}

}  // namespace lanczos
}  // namespace anyres_fast
