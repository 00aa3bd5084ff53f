// Separable Lanczos resampling (docs/ops.md §3). See lanczos_resample.cuh for the interface and
// anyres_fast/ops/lanczos_resample.py for the definition (the tables here follow its formulas).
//
// Forward:  tables for both axes (one thread per output row/column, float64 math), then a pass along
//           W into a float32 intermediate (B,C,H,W_out), then a pass along H into the output.
// Backward: the transpose of each pass, in reverse order. Each input element gathers from the
//           contiguous range of outputs whose tap window holds it (ranges found by binary search over
//           the monotone tap windows), so there are no atomics and the result is deterministic.
#include "lanczos_resample.cuh"

#include "common.cuh"

#ifdef ANYRES_FAST_HOST_EMULATION
// Host emulation, for checking the kernels on a machine without a GPU: python_tests build this file with
// g++ -x c++ -DANYRES_FAST_HOST_EMULATION and compare with the reference. Never defined in the extension
// or CMake builds. A launch runs every (block, thread) of its grid serially. That is exact for these
// kernels: no shared memory, no synchronisation, no atomics, and each thread writes only the outputs of
// its own grid-stride indices, so the order of the threads cannot change any result. Float math matches
// the GPU's except the last bits of the double sin(): fmaf is fused on the host too, the double _rn
// intrinsics are plain +, * (the test compiles with -ffp-contract=off, so nothing else gets fused).
#include <algorithm>
#include <cmath>
namespace anyres_fast::lanczos::emulation {
inline uint3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
// 0: every launch runs its own grid. n > 0: at most n blocks, so each thread walks several
// grid-stride indices (the path real launches take only at huge sizes).
inline unsigned max_blocks = 0;
template <typename... Params>
auto launch(void (*kernel)(Params...), unsigned grid, unsigned block) {
  return [=](auto&&... args) {
    grid_dim = dim3(max_blocks != 0 && grid > max_blocks ? max_blocks : grid);
    block_dim = dim3(block);
    for (unsigned b = 0; b < grid_dim.x; ++b)
      for (unsigned t = 0; t < block; ++t) {
        block_idx = {b, 0, 0};
        thread_idx = {t, 0, 0};
        kernel(args...);
      }
  };
}
}  // namespace anyres_fast::lanczos::emulation
#define threadIdx ::anyres_fast::lanczos::emulation::thread_idx
#define blockIdx ::anyres_fast::lanczos::emulation::block_idx
#define blockDim ::anyres_fast::lanczos::emulation::block_dim
#define gridDim ::anyres_fast::lanczos::emulation::grid_dim
#define ANYRES_LAUNCH(grid, block, smem, stream, ...) \
  ::anyres_fast::lanczos::emulation::launch(__VA_ARGS__, grid, block)
#define cudaGetLastError() cudaSuccess  // emulated launches cannot fail (no CUDA runtime linked)
using std::max;
using std::min;
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
#else
// kernel<<<grid, block, smem, stream>>>(args); the kernel comes last because template argument
// lists hold commas.
#define ANYRES_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
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
__device__ __forceinline__ int64_t weight_offset(const AxisTables& t, int64_t b, int i, int k) {
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
    const double support = a * fs;
    // Explicit roundings (no FMA contraction) so the tap windows match the float64 reference exactly.
    const double centre = __dadd_rn(start, __dmul_rn(i + 0.5, scale));
    const double lo_raw = floor(centre - support + 0.5);
    const double hi_raw = floor(centre + support + 0.5);
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

template <typename Tin, typename Tout>
__global__ void resample_axis_kernel(const Tin* __restrict__ in, Tout* __restrict__ out, int64_t planes,
                                     int64_t planes_per_sample, int64_t inner, AxisTables t) {
  const int64_t total = planes * t.out_size * inner;
  for (int64_t idx = thread_index(); idx < total; idx += grid_stride()) {
    const int64_t q = idx % inner;
    const int64_t rest = idx / inner;
    const int i = static_cast<int>(rest % t.out_size);
    const int64_t p = rest / t.out_size;
    const int64_t b = p / planes_per_sample;
    const int64_t row = b * t.out_size + i;
    const int lo = t.lo[row];
    const int count = min(t.count[row], t.in_size - lo);  // lo + count <= in_size by construction
    const float* w = t.weights + weight_offset(t, b, i, 0);
    const int64_t w_stride = t.k_major ? t.out_size : 1;
    const Tin* src = in + (p * t.in_size + lo) * inner + q;
    float acc = 0.0f;
    for (int k = 0; k < count; ++k) acc = fmaf(w[k * w_stride], to_float<Tin>(src[k * inner]), acc);
    out[idx] = from_float<Tout>(acc);
  }
}

template <typename Tin, typename Tout>
__global__ void resample_axis_transpose_kernel(const Tin* __restrict__ grad_out, Tout* __restrict__ grad_in,
                                               int64_t planes, int64_t planes_per_sample, int64_t inner,
                                               AxisTables t) {
  const int64_t total = planes * t.in_size * inner;
  for (int64_t idx = thread_index(); idx < total; idx += grid_stride()) {
    const int64_t q = idx % inner;
    const int64_t rest = idx / inner;
    const int j = static_cast<int>(rest % t.in_size);
    const int64_t p = rest / t.in_size;
    const int64_t b = p / planes_per_sample;
    const int64_t col = b * t.in_size + j;
    const int begin = max(t.inv_begin[col], 0);
    const int end = min(t.inv_end[col], t.out_size);
    const Tin* src = grad_out + p * t.out_size * inner + q;
    float acc = 0.0f;
    for (int i = begin; i < end; ++i) {
      const int64_t row = b * t.out_size + i;
      const int k = j - t.lo[row];
      if (k >= 0 && k < t.count[row]) acc = fmaf(t.weights[weight_offset(t, b, i, k)], to_float<Tin>(src[i * inner]), acc);
    }
    grad_in[idx] = from_float<Tout>(acc);
  }
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
  return with_elem_type(float_in ? out_type : in_type, [&](auto other) {
    using T = decltype(other);
    if (float_in) {
      ANYRES_LAUNCH(grid, kThreads, 0, stream, resample_axis_kernel<float, T>)(
          static_cast<const float*>(in), static_cast<T*>(out), planes, planes_per_sample, inner, t);
    } else {
      ANYRES_LAUNCH(grid, kThreads, 0, stream, resample_axis_kernel<T, float>)(
          static_cast<const T*>(in), static_cast<float*>(out), planes, planes_per_sample, inner, t);
    }
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
  return with_elem_type(float_in ? out_type : in_type, [&](auto other) {
    using T = decltype(other);
    if (float_in) {
      ANYRES_LAUNCH(grid, kThreads, 0, stream, resample_axis_transpose_kernel<float, T>)(
          static_cast<const float*>(grad_out), static_cast<T*>(grad_in), planes, planes_per_sample, inner, t);
    } else {
      ANYRES_LAUNCH(grid, kThreads, 0, stream, resample_axis_transpose_kernel<T, float>)(
          static_cast<const T*>(grad_out), static_cast<float*>(grad_in), planes, planes_per_sample, inner, t);
    }
    return static_cast<int>(cudaGetLastError());
  });
}

}  // namespace lanczos
}  // namespace anyres_fast
