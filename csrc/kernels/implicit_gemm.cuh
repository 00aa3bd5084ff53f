// Implicit-GEMM convolution shared by modulated_conv2d and style_fused_conv2d. Pure CUDA (DESIGN §3).
//
// out[b,m,Y,X] = post[b,m] · Σ_{c,ky,kx} Wt(m,c,ky,kx) · in[b,c,src(Y,ky),src(X,kx)] · scale(b,c,src)
//   scale = pre[b,c] (per-channel style: modulated_conv2d) or pre_map[b,c,iy,ix] (style_fused_conv2d).
// With `dual`, a second accumulator over the same window sums Wt² · scale² and the epilogue multiplies
// by rsqrt(acc2 + eps): the exact per-pixel demodulation of style_fused_conv2d.
//
// GEMM view: M = output channels, N = B·H_out·W_out output pixels (batch folded in, so small layers still
// fill the GPU), K = C·kh·kw. Weights are shared by the whole batch: the style is applied to the input
// while it is staged into shared memory, never to a per-sample weight tensor.
//
// Geometry modes (src = input coordinate read by output coordinate o through tap k, padding p):
//   ConvS1   src = o - p + k                     stride-1 conv (modulated_conv2d up=1)
//   ConvS2   src = 2o - p + k                    stride-2 conv (adjoint of the up=2 transposed conv)
//   TConvS1  src = o + p - k                     adjoint of ConvS1 (backward dx for up=1)
//   TConvS2  src = (o + p - k)/2 when even       stride-2 transposed conv (up=2)
// Reads outside the input are zeros (zero padding); every global access is bounds-checked, offsets are
// 64-bit.
//
// Math: fp16/bf16 use tensor cores through WMMA (mma.sync m16n16k16, fp32 accumulation); fp32 uses TF32
// tensor cores (m16n16k8) or, with exact_fp32, a plain FMA path. Tiles 64×64×32, 4 warps (2×2, 32×32
// each), single-stage shared memory with the next tile prefetched into registers during the MMAs.
// The caller passes the weight permuted to (M, kh, kw, C) (a few MB, once per call): K = tap·C + c.
#pragma once
#include "kernels/common.cuh"

#ifdef ANYRES_FAST_HOST_EMULATION
#include "kernels/implicit_gemm_emulation.h"  // g++ host emulation (python_tests), never in the real build
#else
#include <mma.h>
#define ANYRES_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

namespace anyres_fast {
namespace igemm {

enum ConvMode : int { kConvS1 = 0, kConvS2 = 1, kTConvS1 = 2, kTConvS2 = 3 };

struct Problem {
  const void* input = nullptr;    // (B, C, H_in, W_in), element type T
  const void* weight = nullptr;   // type T, GEMM-ready (M, kh, kw, C) contiguous: (m, tap, c) at (m·taps + tap)·C + c
  const float* pre = nullptr;     // (B, C) per-channel input scale (used when pre_map is null)
  const void* pre_map = nullptr;  // (B, C, H_in, W_in) per-pixel input scale, type T, or null
  const float* post = nullptr;    // (B, M) per-output-channel scale, or null (= 1)
  void* out = nullptr;            // (B, M, H_out, W_out), type T
  int batch = 0, channels = 0, h_in = 0, w_in = 0;
  int m_out = 0, h_out = 0, w_out = 0;
  int kh = 0, kw = 0, pad = 0, mode = kConvS1;
  bool dual = false;
  float eps = 1e-8f;
};

enum class Math { kMma16, kTf32, kFma };

constexpr int kBM = 64, kBN = 64, kBK = 32, kThreads = 128;
constexpr int kRowsA = kBM * kBK / kThreads;   // 16 A elements per thread per K step
constexpr int kRowsB = kBK * kBN / kThreads;   // 16 B elements per thread per K step

__device__ __forceinline__ bool source_coord(int mode, int o, int k, int pad, int size_in, int& src) {
  int t;
  switch (mode) {
    case kConvS1: t = o - pad + k; break;
    case kConvS2: t = 2 * o - pad + k; break;
    case kTConvS1: t = o + pad - k; break;
    default:
      t = o + pad - k;
      if (t & 1) return false;  // also right for negative odd t (two's complement)
      t >>= 1;                  // negative even t stays negative and fails the range check
      break;
  }
  src = t;
  return t >= 0 && t < size_in;
}

template <typename S> __device__ __forceinline__ S to_smem(float v);
template <> __device__ __forceinline__ float to_smem<float>(float v) { return v; }
template <> __device__ __forceinline__ __half to_smem<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 to_smem<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Shared-memory layout (bytes); leading dimensions padded to keep WMMA pointers 32-byte aligned and
// spread banks.
template <typename S> struct Layout {
  static constexpr int kLdA = kBK + (sizeof(S) == 2 ? 8 : 4);
  static constexpr int kLdB = kBN + (sizeof(S) == 2 ? 8 : 4);
  static constexpr int kLdC = kBN + 4;
  static constexpr int kBytesA = kBM * kLdA * (int)sizeof(S);
  static constexpr int kBytesB = kBK * kLdB * (int)sizeof(S);
  static constexpr int kBytesTiles = kBytesA + kBytesB;
  static constexpr int kBytesC = kBM * kLdC * (int)sizeof(float);
  static constexpr int kBytesHalf = kBytesTiles > kBytesC ? kBytesTiles : kBytesC;
  static_assert(kBytesA % 32 == 0 && kBytesB % 32 == 0 && kBytesC % 32 == 0, "WMMA alignment");
};

// Per-thread registers holding the next K step's values (prefetch while the tensor cores work).
template <bool kDual> struct Staged {
  float a[kRowsA], b[kRowsB];
  float a2[kDual ? kRowsA : 1], b2[kDual ? kRowsB : 1];
};

// K is ordered tap-major, kk = tap·C + c, and the weight arrives GEMM-ready as Wt (M, kh·kw, C): A rows are
// contiguous in memory, and a thread's B rows (kk stepping by 2) walk the channels of one tap, so the
// source pixel is located once per tap instead of once per element.
template <typename T, bool kDual, bool kPixelStyle>
__device__ __forceinline__ void load_step(const Problem& p, int k0, int k_total, int m0, int tid,
                                          bool n_valid, int b, int oy, int ox, Staged<kDual>& st) {
  const T* __restrict__ w = static_cast<const T*>(p.weight);
  const T* __restrict__ in = static_cast<const T*>(p.input);
  const int taps = p.kh * p.kw;
  const int chans = p.channels;
  // A (weights): this thread owns column ka and rows tid/kBK + 4j.
  {
    const int kk = k0 + tid % kBK;
    const bool k_ok = kk < k_total;
#pragma unroll
    for (int j = 0; j < kRowsA; ++j) {
      const int gm = m0 + tid / kBK + (kThreads / kBK) * j;
      float v = 0.f;
      if (k_ok && gm < p.m_out) v = to_float(w[(int64_t)gm * k_total + kk]);
      st.a[j] = v;
      if constexpr (kDual) st.a2[j] = v * v;
    }
  }
  // B (modulated input, im2col on the fly): this thread owns column tid % kBN and rows tid/kBN + 2j.
  constexpr int kStep = kThreads / kBN;
  const int64_t plane = (int64_t)p.h_in * p.w_in;
  const int64_t sample = (int64_t)b * chans;  // first channel row of this thread's sample
  // Offset of the source pixel inside a channel plane for tap t, or -1 (padding / out of range).
  auto locate = [&](int t) -> int64_t {
    if (!n_valid || t >= taps) return -1;
    const int ky = t / p.kw, kx = t - ky * p.kw;
    int iy, ix;
    if (!source_coord(p.mode, oy, ky, p.pad, p.h_in, iy) || !source_coord(p.mode, ox, kx, p.pad, p.w_in, ix))
      return -1;
    return (int64_t)iy * p.w_in + ix;
  };
  int kk = k0 + tid / kBN;
  int tap = kk / chans;  // 32-bit index math: launch() checks K = C·kh·kw < 2^31 - 2·kBK
  int c = kk - tap * chans;
  int64_t src = locate(tap);
#pragma unroll
  for (int j = 0; j < kRowsB; ++j) {
    float v = 0.f, s2 = 0.f;
    if (src >= 0 && kk < k_total) {
      const int64_t off = (sample + c) * plane + src;
      float s;
      if constexpr (kPixelStyle) s = to_float(static_cast<const T*>(p.pre_map)[off]);
      else s = p.pre[sample + c];
      v = to_float(in[off]) * s;
      s2 = s * s;
    }
    st.b[j] = v;
    if constexpr (kDual) st.b2[j] = s2;
    kk += kStep;
    c += kStep;
    if (c >= chans) {
      do {
        c -= chans;
        ++tap;
      } while (c >= chans);
      src = locate(tap);
    }
  }
}

template <typename S, bool kDual>
__device__ __forceinline__ void store_step(const Staged<kDual>& st, unsigned char* smem, int tid) {
  using L = Layout<S>;
  S* As = reinterpret_cast<S*>(smem);
  S* Bs = reinterpret_cast<S*>(smem + L::kBytesA);
  const int ka = tid % kBK, nb = tid % kBN;
#pragma unroll
  for (int j = 0; j < kRowsA; ++j) As[(tid / kBK + (kThreads / kBK) * j) * L::kLdA + ka] = to_smem<S>(st.a[j]);
#pragma unroll
  for (int j = 0; j < kRowsB; ++j) Bs[(tid / kBN + (kThreads / kBN) * j) * L::kLdB + nb] = to_smem<S>(st.b[j]);
  if constexpr (kDual) {
    S* As2 = reinterpret_cast<S*>(smem + L::kBytesTiles);
    S* Bs2 = reinterpret_cast<S*>(smem + L::kBytesTiles + L::kBytesA);
#pragma unroll
    for (int j = 0; j < kRowsA; ++j) As2[(tid / kBK + (kThreads / kBK) * j) * L::kLdA + ka] = to_smem<S>(st.a2[j]);
#pragma unroll
    for (int j = 0; j < kRowsB; ++j) Bs2[(tid / kBN + (kThreads / kBN) * j) * L::kLdB + nb] = to_smem<S>(st.b2[j]);
  }
}

// ---- tensor-core accumulation (WMMA) -----------------------------------------------------------------

template <typename S, Math kMath> struct Wmma;

template <typename S> struct Wmma<S, Math::kMma16> {
  static constexpr int kK = 16;
  using FragA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, S, nvcuda::wmma::row_major>;
  using FragB = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, S, nvcuda::wmma::row_major>;
  using FragC = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>;
  template <typename F> __device__ static void round(F&) {}
};

template <> struct Wmma<float, Math::kTf32> {
  static constexpr int kK = 8;
  using FragA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 8, nvcuda::wmma::precision::tf32,
                                       nvcuda::wmma::row_major>;
  using FragB = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 8, nvcuda::wmma::precision::tf32,
                                       nvcuda::wmma::row_major>;
  using FragC = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float>;
  template <typename F> __device__ static void round(F& f) {
#pragma unroll
    for (int t = 0; t < f.num_elements; ++t) f.x[t] = nvcuda::wmma::__float_to_tf32(f.x[t]);
  }
};

template <typename S, Math kMath>
__device__ __forceinline__ void mma_tile(const S* As, const S* Bs, int wm, int wn,
                                         typename Wmma<S, kMath>::FragC (&acc)[2][2]) {
  using Wm = Wmma<S, kMath>;
  using L = Layout<S>;
#pragma unroll
  for (int ks = 0; ks < kBK; ks += Wm::kK) {
    typename Wm::FragA a[2];
    typename Wm::FragB bf[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      nvcuda::wmma::load_matrix_sync(a[i], As + (wm * 32 + i * 16) * L::kLdA + ks, L::kLdA);
      Wm::round(a[i]);
      nvcuda::wmma::load_matrix_sync(bf[i], Bs + ks * L::kLdB + wn * 32 + i * 16, L::kLdB);
      Wm::round(bf[i]);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) nvcuda::wmma::mma_sync(acc[i][j], a[i], bf[j], acc[i][j]);
  }
}

// ---- FMA accumulation (exact fp32) ---------------------------------------------------------------
// Thread (tx = tid%16, ty = tid/16) owns rows ty*8 + i and columns tx + 16 j.
__device__ __forceinline__ void fma_tile(const float* As, const float* Bs, int tid, float (&acc)[8][4]) {
  using L = Layout<float>;
  const int tx = tid % 16, ty = tid / 16;
#pragma unroll 8
  for (int k = 0; k < kBK; ++k) {
    float a[8], bv[4];
#pragma unroll
    for (int i = 0; i < 8; ++i) a[i] = As[(ty * 8 + i) * L::kLdA + k];
#pragma unroll
    for (int j = 0; j < 4; ++j) bv[j] = Bs[k * L::kLdB + tx + 16 * j];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], bv[j], acc[i][j]);
  }
}

template <typename T, typename S, Math kMath, bool kDual, bool kPixelStyle>
__global__ void __launch_bounds__(kThreads) conv_kernel(const __grid_constant__ Problem p) {
  using L = Layout<S>;
  constexpr int kSmemBytes = (kDual ? 2 : 1) * L::kBytesHalf;
  ANYRES_DYNAMIC_SMEM(smem);

  const int tid = threadIdx.x;
  const int m0 = blockIdx.y * kBM;
  const int64_t n0 = (int64_t)blockIdx.x * kBN;
  const int64_t n_total = (int64_t)p.batch * p.h_out * p.w_out;
  const int k_total = p.channels * p.kh * p.kw;

  // The output pixel of this thread's B column (also its epilogue column).
  const int64_t gn = n0 + tid % kBN;
  const bool n_valid = gn < n_total;
  int b = 0, oy = 0, ox = 0;
  if (n_valid) {
    ox = (int)(gn % p.w_out);
    const int64_t r = gn / p.w_out;
    oy = (int)(r % p.h_out);
    b = (int)(r / p.h_out);
  }

  const int warp = tid / 32, wm = warp / 2, wn = warp % 2;
  using Frag = typename Wmma<S, kMath == Math::kFma ? Math::kTf32 : kMath>::FragC;
  Frag acc[2][2], acc2[2][2];
  float facc[kMath == Math::kFma ? 8 : 1][4] = {}, facc2[kMath == Math::kFma && kDual ? 8 : 1][4] = {};
  if constexpr (kMath != Math::kFma) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        nvcuda::wmma::fill_fragment(acc[i][j], 0.f);
        if constexpr (kDual) nvcuda::wmma::fill_fragment(acc2[i][j], 0.f);
      }
  }

  Staged<kDual> st;
  load_step<T, kDual, kPixelStyle>(p, 0, k_total, m0, tid, n_valid, b, oy, ox, st);
  for (int k0 = 0; k0 < k_total; k0 += kBK) {
    __syncthreads();  // previous step's MMAs are done with the tiles
    store_step<S, kDual>(st, smem, tid);
    __syncthreads();
    if (k0 + kBK < k_total) load_step<T, kDual, kPixelStyle>(p, k0 + kBK, k_total, m0, tid, n_valid, b, oy, ox, st);
    const S* As = reinterpret_cast<const S*>(smem);
    const S* Bs = reinterpret_cast<const S*>(smem + L::kBytesA);
    if constexpr (kMath == Math::kFma) {
      fma_tile(As, Bs, tid, facc);
      if constexpr (kDual)
        fma_tile(reinterpret_cast<const S*>(smem + L::kBytesTiles),
                 reinterpret_cast<const S*>(smem + L::kBytesTiles + L::kBytesA), tid, facc2);
    } else {
      mma_tile<S, kMath>(As, Bs, wm, wn, acc);
      if constexpr (kDual)
        mma_tile<S, kMath>(reinterpret_cast<const S*>(smem + L::kBytesTiles),
                           reinterpret_cast<const S*>(smem + L::kBytesTiles + L::kBytesA), wm, wn, acc2);
    }
  }
  __syncthreads();  // tiles are dead; reuse the buffer for the accumulator tile(s)

  float* Cs = reinterpret_cast<float*>(smem);
  float* Cs2 = reinterpret_cast<float*>(smem + kSmemBytes / 2);  // only used when kDual
  if constexpr (kMath == Math::kFma) {
    const int tx = tid % 16, ty = tid / 16;
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        Cs[(ty * 8 + i) * L::kLdC + tx + 16 * j] = facc[i][j];
        if constexpr (kDual) Cs2[(ty * 8 + i) * L::kLdC + tx + 16 * j] = facc2[i][j];
      }
  } else {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        float* dst = Cs + (wm * 32 + i * 16) * L::kLdC + wn * 32 + j * 16;
        nvcuda::wmma::store_matrix_sync(dst, acc[i][j], L::kLdC, nvcuda::wmma::mem_row_major);
        if constexpr (kDual)
          nvcuda::wmma::store_matrix_sync(Cs2 + (dst - Cs), acc2[i][j], L::kLdC, nvcuda::wmma::mem_row_major);
      }
  }
  __syncthreads();

  // Epilogue: thread owns column tid % kBN (its pixel) and rows tid / kBN + 2 j.
  if (!n_valid) return;
  T* __restrict__ out = static_cast<T*>(p.out);
  const int nb = tid % kBN;
  const int64_t pix = (int64_t)oy * p.w_out + ox;
  const int64_t plane = (int64_t)p.h_out * p.w_out;
  for (int j = 0; j < kBM * kBN / kThreads; ++j) {
    const int mb = tid / kBN + (kThreads / kBN) * j;
    const int gm = m0 + mb;
    if (gm >= p.m_out) break;  // rows increase with j
    float v = Cs[mb * L::kLdC + nb];
    if (p.post != nullptr) v *= p.post[(int64_t)b * p.m_out + gm];
    if constexpr (kDual) v *= rsqrtf(Cs2[mb * L::kLdC + nb] + p.eps);
    out[((int64_t)b * p.m_out + gm) * plane + pix] = from_float<T>(v);
  }
}

template <typename T, typename S, Math kMath, bool kDual, bool kPixelStyle>
cudaError_t launch_variant(const Problem& p, cudaStream_t stream) {
  const int64_t n_total = (int64_t)p.batch * p.h_out * p.w_out;
  const int64_t grid_x = ceil_div64(n_total, kBN);
  const int64_t grid_y = ceil_div64(p.m_out, kBM);
  if (grid_x > 2147483647LL || grid_y > 65535) return cudaErrorInvalidConfiguration;
  const dim3 grid((unsigned)grid_x, (unsigned)grid_y);
  constexpr size_t kSmemBytes = (kDual ? 2 : 1) * Layout<S>::kBytesHalf;  // < 48 KB: no opt-in needed
#ifdef ANYRES_FAST_HOST_EMULATION
  (void)stream;
  igemm_emulation::launch(grid, kThreads, kSmemBytes, [&] { conv_kernel<T, S, kMath, kDual, kPixelStyle>(p); });
  return cudaSuccess;
#else
  conv_kernel<T, S, kMath, kDual, kPixelStyle><<<grid, kThreads, kSmemBytes, stream>>>(p);
  return cudaGetLastError();
#endif
}

template <bool kDual, bool kPixelStyle>
cudaError_t launch(const Problem& p, DType dtype, bool exact_fp32, cudaStream_t stream) {
  if (p.batch <= 0 || p.channels <= 0 || p.m_out <= 0 || p.h_out <= 0 || p.w_out <= 0 || p.h_in <= 0 ||
      p.w_in <= 0 || p.kh <= 0 || p.kw <= 0 || p.pad < 0 || p.mode < kConvS1 || p.mode > kTConvS2)
    return cudaErrorInvalidValue;
  if ((int64_t)p.channels * p.kh * p.kw > (int64_t)INT32_MAX - 2 * kBK) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::f16: return launch_variant<__half, __half, Math::kMma16, kDual, kPixelStyle>(p, stream);
    case DType::bf16:
      return launch_variant<__nv_bfloat16, __nv_bfloat16, Math::kMma16, kDual, kPixelStyle>(p, stream);
    case DType::f32:
      return exact_fp32 ? launch_variant<float, float, Math::kFma, kDual, kPixelStyle>(p, stream)
                        : launch_variant<float, float, Math::kTf32, kDual, kPixelStyle>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace igemm
}  // namespace anyres_fast
