// Implicit-GEMM convolution shared by modulated_conv2d and style_fused_conv2d. Pure CUDA (docs/build.md §1).
//
// out[b,m,Y,X] = post[b,m] · Σ_{c,ky,kx} W(m,c,ky,kx) · in[b,c,src(Y,ky),src(X,kx)] · scale(b,c,src)
//   scale = pre[b,c] (per-channel style: modulated_conv2d) or pre_map[b,c,iy,ix] (style_fused_conv2d).
// With `dual`, a second accumulator over the same window sums W² · scale² and the epilogue multiplies
// by rsqrt(acc2 + eps): the exact per-pixel demodulation of style_fused_conv2d.
//
// Three kernels per call:
//  1. stage: x·scale (and scale² for dual) written channels-last, (B, H_in, W_in, Cp) with Cp = C rounded
//     up to kChannelMultiple and zero channels above C, so every 8 (16-bit) or 4 (fp32) channels of a
//     pixel are one aligned 16-byte chunk. The weight arrives GEMM-ready the same way, (M, kh, kw, Cp).
//  2. GEMM: M = output channels, N = output pixels (batch folded in), K = taps × Cp. CTA tile 64×64,
//     K step 32 channels of one tap, 4 warps (2×2, 32×32 each) on WMMA tensor cores (fp16/bf16
//     m16n16k16, fp32 as TF32 m16n16k8, fp32 accumulation) or plain FMA (exact fp32). Operands move
//     global -> shared with 16-byte cp.async (zero fill for padding and tails) through kStages = 3
//     shared-memory stages, one barrier per K step.
//     up=2 (TConvS2) runs as four output-parity sub-convolutions (grid z): outputs of parity (py, px)
//     only meet the taps ky ≡ py + p, kx ≡ px + p (mod 2), so no multiply-add touches a zero tap.
//     The grid walks the M tiles fastest, so CTAs running together share an input tile (L2 reuse) and
//     the weights (small) are re-read instead. Layers with fewer CTAs than SMs split K (grid z) into
//     float32 partial sums.
//  3. reduce (split-K only): sums the partials and applies the epilogue.
//
// Geometry modes (src = input coordinate read by output coordinate o through tap k, padding p):
//   ConvS1   src = o - p + k                     stride-1 conv (modulated_conv2d up=1)
//   ConvS2   src = 2o - p + k                    stride-2 conv (adjoint of the up=2 transposed conv)
//   TConvS1  src = o + p - k                     adjoint of ConvS1 (backward dx for up=1)
//   TConvS2  src = (o + p - k)/2 when even       stride-2 transposed conv (up=2)
// Reads outside the input are zeros (zero padding); global offsets are 64-bit.
#pragma once
#include "kernels/common.cuh"

#ifdef ANYRES_FAST_HOST_EMULATION
#include "kernels/implicit_gemm_emulation.h"  // g++ host emulation (python_tests), never in the real build
#else
#include <mma.h>
#define ANYRES_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

#include "kernels/implicit_gemm_api.h"

#include <atomic>

// The GEMM needs sm_80: cp.async, and bf16 / TF32 WMMA fragments. A device pass for an older arch
// (the extension also builds for sm_75) compiles the kernels as empty stubs, and the launcher refuses
// such a device before launching anything (run_typed), as the Python side does (OpUnsupported).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define ANYRES_IGEMM_DEVICE_CODE 0
#else
#define ANYRES_IGEMM_DEVICE_CODE 1
#endif

namespace anyres_fast {
namespace igemm {

constexpr int kMinArch = 80;  // major * 10 + minor

enum ConvMode : int { kConvS1 = 0, kConvS2 = 1, kTConvS1 = 2, kTConvS2 = 3 };
enum class Math { kMma16, kTf32, kFma };

constexpr int kBM = 64, kBN = 64, kBK = 32, kThreads = 128, kStages = 3;
constexpr int kMaxSplits = 8;

struct Problem {
  ImplicitGemmShape s;
  int cp = 0;                       // channels padded to kChannelMultiple (the staged/weight row length)
  const void* input = nullptr;      // staged (B, H_in, W_in, cp), type T, already × scale
  const void* input_sq = nullptr;   // dual: staged scale² (B, H_in, W_in, cp)
  const void* weight = nullptr;     // (M, kh, kw, cp), type T
  const void* weight_sq = nullptr;  // dual: W² (M, kh, kw, cp)
  const float* post = nullptr;      // (B, M) per-output-channel scale, or null (= 1)
  void* out = nullptr;              // (B, M, H_out, W_out), type T
  float* partial = nullptr;         // split-K: (splits, B, M, H_out, W_out) float [× 2 for dual]
  int splits = 1;
  float eps = 1e-8f;
};

// ---- geometry shared by host (planning) and device ---------------------------------------------------------

struct ClassGeometry {
  int py, px;        // output parity (TConvS2) or 0
  int hc, wc;        // outputs of this class per axis
  int ty0, tx0;      // first tap of the class
  int nty, ntx;      // taps of the class per axis
  int tstep;         // tap stride (2 for the parity classes)
};

__host__ __device__ __forceinline__ int parity_classes(int mode) { return mode == kTConvS2 ? 4 : 1; }

__host__ __device__ __forceinline__ ClassGeometry class_geometry(const ImplicitGemmShape& s, int cls) {
  ClassGeometry g;
  if (s.mode == kTConvS2) {
    g.py = cls >> 1;
    g.px = cls & 1;
    g.hc = (s.h_out - g.py + 1) / 2;
    g.wc = (s.w_out - g.px + 1) / 2;
    g.ty0 = (g.py + s.pad) & 1;  // Y + p - ky must be even
    g.tx0 = (g.px + s.pad) & 1;
    g.nty = (s.kh - g.ty0 + 1) / 2;
    g.ntx = (s.kw - g.tx0 + 1) / 2;
    g.tstep = 2;
  } else {
    g = ClassGeometry{0, 0, s.h_out, s.w_out, 0, 0, s.kh, s.kw, 1};
  }
  return g;
}

// Input coordinate read by class-local output coordinate o through tap k (parity par for TConvS2).
__device__ __forceinline__ int source_coord(int mode, int o, int k, int pad, int par) {
  switch (mode) {
    case kConvS1: return o - pad + k;
    case kConvS2: return 2 * o - pad + k;
    case kTConvS1: return o + pad - k;
    default: return (2 * o + par + pad - k) >> 1;  // exact: the class only meets taps of matching parity
  }
}

struct Plan {
  int64_t n_tiles = 0;
  int m_tiles = 0, classes = 1, splits = 1;
  int64_t workspace_floats = 0;
};

inline int64_t class_iterations(const ImplicitGemmShape& s, int cp, int cls) {
  const ClassGeometry g = class_geometry(s, cls);
  return int64_t(g.nty) * g.ntx * ((cp + kBK - 1) / kBK);
}

inline Plan make_plan(const ImplicitGemmShape& s, bool dual, int num_sms) {
  Plan plan;
  const int cp = padded_channels(s.channels);
  const ClassGeometry g0 = class_geometry(s, 0);  // class 0 has the most outputs
  plan.classes = parity_classes(s.mode);
  plan.n_tiles = ceil_div64(int64_t(s.batch) * g0.hc * g0.wc, kBN);
  plan.m_tiles = ceil_div(s.m_out, kBM);
  int64_t iters = 0;
  for (int c = 0; c < plan.classes; ++c) iters = iters > class_iterations(s, cp, c) ? iters : class_iterations(s, cp, c);
  const int64_t ctas = plan.n_tiles * plan.m_tiles * plan.classes;
  // Split K only when the output tiles cannot fill the GPU, keeping >= 4 K steps per split.
  if (ctas < num_sms && iters >= 8) {
    int64_t want = ceil_div64(2 * int64_t(num_sms), ctas);
    if (want > iters / 4) want = iters / 4;
    if (want > kMaxSplits) want = kMaxSplits;
    plan.splits = want > 1 ? int(want) : 1;
  }
  if (plan.splits > 1)
    plan.workspace_floats = int64_t(plan.splits) * (dual ? 2 : 1) * s.batch * s.m_out * int64_t(s.h_out) * s.w_out;
  return plan;
}

// ---- shared-memory tiles -----------------------------------------------------------------------------------
// A (weights) and B (staged input) tiles are both [64 rows][kBK channels], channels contiguous: A is the
// row-major M×K operand, B the column-major K×N operand. Row pitch kLd (elements) keeps rows 16-byte
// multiples for cp.async and WMMA pointers 32-byte aligned, and shifts banks between rows.
template <typename T> struct Tile {
  static constexpr int kLd = kBK + (sizeof(T) == 2 ? 8 : 4);
  static constexpr int kChunkElems = 16 / int(sizeof(T));
  static constexpr int kChunksPerRow = kBK / kChunkElems;      // 4 (16-bit) or 8 (fp32)
  static constexpr int kRowsPerPass = kThreads / kChunksPerRow;  // rows one pass of the CTA covers
  static constexpr int kPasses = kBM / kRowsPerPass;             // 16-byte copies per thread per operand
  static constexpr int kOperandBytes = kBM * kLd * int(sizeof(T));
  static constexpr int kLdC = kBN + 4;
  static constexpr int kBytesC = kBM * kLdC * int(sizeof(float));
  static_assert(kOperandBytes % 128 == 0 && kBytesC % 128 == 0, "WMMA/cp.async alignment of the tiles");
  static_assert((kLd * sizeof(T)) % 16 == 0, "rows must be whole 16-byte chunks");
  static_assert(kBM == kBN && kBM % kRowsPerPass == 0, "A and B tiles share one copy pattern");
};

// A stage holds A, B (and A², B² for dual); the accumulator tile(s) reuse the stages after the K loop.
template <typename T, bool kDual> struct Smem {
  static constexpr int kStage = (kDual ? 4 : 2) * Tile<T>::kOperandBytes;
  static constexpr int kPipeline = kStages * kStage;
  static constexpr int kEpilogue = (kDual ? 2 : 1) * Tile<T>::kBytesC;
  static constexpr int kTotal = kPipeline > kEpilogue ? kPipeline : kEpilogue;
};

// Labels of the operand tiles' shared-memory accesses in the emulation's access trace (benchmarks/access_counts.py).
enum IgemmTraceSite { kTraceCpAsyncStore = 10, kTraceFmaALoad = 11, kTraceFmaBLoad = 12 };

// ---- cp.async -----------------------------------------------------------------------------------------------
// 16-byte copy global -> shared; valid=false writes 16 zero bytes (src must still be a valid address).
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* global_src, bool valid) {
  ANYRES_TRACE_ACCESS(kTraceCpAsyncStore, smem_dst, 16);
#ifdef ANYRES_FAST_HOST_EMULATION
  igemm_emulation::cp_async16(smem_dst, global_src, valid ? 16 : 0);
#elif ANYRES_IGEMM_DEVICE_CODE
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global_src), "r"(valid ? 16 : 0));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifdef ANYRES_FAST_HOST_EMULATION
  igemm_emulation::cp_async_commit();
#elif ANYRES_IGEMM_DEVICE_CODE
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
#ifdef ANYRES_FAST_HOST_EMULATION
#define ANYRES_CP_ASYNC_WAIT(n) ::anyres_fast::igemm_emulation::cp_async_wait(n, __LINE__)
#else
#define ANYRES_CP_ASYNC_WAIT(n) asm volatile("cp.async.wait_group %0;\n" ::"n"(n) : "memory")
#endif

// ---- tensor-core accumulation (WMMA) ----------------------------------------------------------------------

template <typename S, Math kMath> struct Wmma;

template <typename S> struct Wmma<S, Math::kMma16> {
  static constexpr int kK = 16;
  using FragA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, S, nvcuda::wmma::row_major>;
  using FragB = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, S, nvcuda::wmma::col_major>;
  using FragC = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>;
  template <typename F> __device__ static void round(F&) {}
};

#if ANYRES_IGEMM_DEVICE_CODE
template <> struct Wmma<float, Math::kTf32> {
  static constexpr int kK = 8;
  using FragA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 8, nvcuda::wmma::precision::tf32,
                                       nvcuda::wmma::row_major>;
  using FragB = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 8, nvcuda::wmma::precision::tf32,
                                       nvcuda::wmma::col_major>;
  using FragC = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float>;
  template <typename F> __device__ static void round(F& f) {
#pragma unroll
    for (int t = 0; t < f.num_elements; ++t) f.x[t] = nvcuda::wmma::__float_to_tf32(f.x[t]);
  }
};
#endif  // ANYRES_IGEMM_DEVICE_CODE

template <typename S, Math kMath>
__device__ __forceinline__ void mma_tile(const S* As, const S* Bs, int wm, int wn,
                                         typename Wmma<S, kMath>::FragC (&acc)[2][2]) {
  using Wm = Wmma<S, kMath>;
  constexpr int kLd = Tile<S>::kLd;
#pragma unroll
  for (int ks = 0; ks < kBK; ks += Wm::kK) {
    typename Wm::FragA a[2];
    typename Wm::FragB bf[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      nvcuda::wmma::load_matrix_sync(a[i], As + (wm * 32 + i * 16) * kLd + ks, kLd);
      Wm::round(a[i]);
      nvcuda::wmma::load_matrix_sync(bf[i], Bs + (wn * 32 + i * 16) * kLd + ks, kLd);
      Wm::round(bf[i]);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) nvcuda::wmma::mma_sync(acc[i][j], a[i], bf[j], acc[i][j]);
  }
}

// ---- FMA accumulation (exact fp32) -------------------------------------------------------------------------
// Thread (tx = tid%16, ty = tid/16) owns rows ty*8 + i and columns tx + 16 j. A warp's 16 B rows tx + 16 j
// are kLd = 36 words apart (a multiple of 4 for the 16-byte copies), so one word per row reaches only 8
// banks (2-way conflicts), and its two A rows (ty, ty + 1) are 8 kLd words apart, in the same bank. Each
// thread therefore reads 4 consecutive k of a row with one 16-byte load: a quarter warp's 8 B rows then
// fall on 8 distinct 16-byte bank groups, and an A row is one broadcast (nvcc already merged the former
// one-k-at-a-time loads into these LDS.128; written out, the access trace sees what the SASS does).
// The FMAs run k ascending for every accumulator, as before.
__device__ __forceinline__ void fma_tile(const float* As, const float* Bs, int tid, float (&acc)[8][4]) {
  constexpr int kLd = Tile<float>::kLd;
  static_assert(kLd % 4 == 0 && kBK % 4 == 0, "16-byte row reads");
  const int tx = tid % 16, ty = tid / 16;
#pragma unroll 1
  for (int k = 0; k < kBK; k += 4) {
    float4 a[8], bv[4];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float* src = As + (ty * 8 + i) * kLd + k;
      ANYRES_TRACE_ACCESS(kTraceFmaALoad, src, 16);
      a[i] = *reinterpret_cast<const float4*>(src);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float* src = Bs + (tx + 16 * j) * kLd + k;
      ANYRES_TRACE_ACCESS(kTraceFmaBLoad, src, 16);
      bv[j] = *reinterpret_cast<const float4*>(src);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        acc[i][j] = fmaf(a[i].x, bv[j].x, acc[i][j]);
        acc[i][j] = fmaf(a[i].y, bv[j].y, acc[i][j]);
        acc[i][j] = fmaf(a[i].z, bv[j].z, acc[i][j]);
        acc[i][j] = fmaf(a[i].w, bv[j].w, acc[i][j]);
      }
  }
}

// ---- the GEMM kernel ---------------------------------------------------------------------------------------

// 16-bit single-accumulator kernels: at least 6 CTAs per SM (<= 85 registers), where ptxas otherwise
// lands on 92 for fp16 (5 CTAs) after a change of the copy mapping; 0: no minimum.
template <typename T, Math kMath, bool kDual>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 2 && !kDual ? 6 : 0) conv_kernel(const __grid_constant__ Problem p) {
#if ANYRES_IGEMM_DEVICE_CODE
  using TL = Tile<T>;
  constexpr int kStage = Smem<T, kDual>::kStage;
  ANYRES_DYNAMIC_SMEM(smem);
  const ImplicitGemmShape& s = p.s;

  const int tid = threadIdx.x;
  const int m_tiles = (s.m_out + kBM - 1) / kBM;
  const int m0 = int(blockIdx.x % unsigned(m_tiles)) * kBM;  // M tiles fastest: neighbours share the input tile
  const int64_t n0 = int64_t(blockIdx.x / unsigned(m_tiles)) * kBN;
  const int cls = int(blockIdx.z) / p.splits, split = int(blockIdx.z) % p.splits;
  const ClassGeometry g = class_geometry(s, cls);
  const int64_t n_class = int64_t(s.batch) * g.hc * g.wc;
  if (n0 >= n_class) return;  // the whole CTA: this parity class has fewer outputs than class 0

  const int cchunks = (p.cp + kBK - 1) / kBK;
  const int64_t iters = int64_t(g.nty) * g.ntx * cchunks;
  const int64_t it_begin = iters * split / p.splits, it_end = iters * (split + 1) / p.splits;
  const int n_iter = int(it_end - it_begin);

  // This thread's copy rows (the same for A and B) and the output pixels of its B rows. Eight
  // consecutive threads (a quarter warp: one shared-memory wavefront of 16-byte stores) take eight
  // consecutive rows of one 16-byte column: the row pitch is an odd number of 16-byte units
  // (Tile::kLd), so their stores land in 8 distinct bank groups. A warp reads 8 rows x 64 bytes of global
  // memory: as many 32-byte sectors as the former row-after-row order (16 per warp instruction).
  static_assert(kThreads % (8 * TL::kChunksPerRow) == 0, "whole groups of 8 rows per pass");
  const int row0 = tid % 8 + 8 * (tid / (8 * TL::kChunksPerRow)), col = tid / 8 % TL::kChunksPerRow;
  int oy[TL::kPasses], ox[TL::kPasses];
  int64_t sample[TL::kPasses];
#pragma unroll
  for (int r = 0; r < TL::kPasses; ++r) {
    const int64_t n = n0 + row0 + r * TL::kRowsPerPass;
    oy[r] = -(1 << 28);  // out of range for every mode: the row loads zeros
    ox[r] = 0;
    sample[r] = 0;
    if (n < n_class) {
      ox[r] = int(n % g.wc);
      const int64_t t = n / g.wc;
      oy[r] = int(t % g.hc);
      sample[r] = (t / g.hc) * s.h_in * s.w_in;
    }
  }
  const T* __restrict__ w = static_cast<const T*>(p.weight);
  const T* __restrict__ x = static_cast<const T*>(p.input);
  const T* __restrict__ w2 = static_cast<const T*>(p.weight_sq);
  const T* __restrict__ x2 = static_cast<const T*>(p.input_sq);
  const int taps = s.kh * s.kw;

  auto load_stage = [&](int it, int stage) {
    const int64_t gi = it_begin + it;
    const int tap = int(gi / cchunks);
    const int c = int(gi - int64_t(tap) * cchunks) * kBK + col * TL::kChunkElems;
    const int jy = tap / g.ntx, jx = tap - jy * g.ntx;
    const int ky = g.ty0 + g.tstep * jy, kx = g.tx0 + g.tstep * jx;
    const bool c_ok = c < p.cp;  // cp is a multiple of the chunk: a chunk is wholly in or out
    unsigned char* st = smem + stage * kStage;
    T* As = reinterpret_cast<T*>(st);
    T* Bs = reinterpret_cast<T*>(st + TL::kOperandBytes);
#pragma unroll
    for (int r = 0; r < TL::kPasses; ++r) {
      const int row = row0 + r * TL::kRowsPerPass;
      const int m = m0 + row;
      const bool a_ok = c_ok && m < s.m_out;
      const int64_t a_off = a_ok ? (int64_t(m) * taps + ky * s.kw + kx) * p.cp + c : 0;
      cp_async16(As + row * TL::kLd + col * TL::kChunkElems, w + a_off, a_ok);
      const int iy = source_coord(s.mode, oy[r], ky, s.pad, g.py);
      const int ix = source_coord(s.mode, ox[r], kx, s.pad, g.px);
      const bool b_ok = c_ok && iy >= 0 && iy < s.h_in && ix >= 0 && ix < s.w_in;
      const int64_t b_off = b_ok ? (sample[r] + int64_t(iy) * s.w_in + ix) * p.cp + c : 0;
      cp_async16(Bs + row * TL::kLd + col * TL::kChunkElems, x + b_off, b_ok);
      if constexpr (kDual) {
        cp_async16(As + 2 * kBM * TL::kLd + row * TL::kLd + col * TL::kChunkElems, w2 + a_off, a_ok);
        cp_async16(Bs + 2 * kBM * TL::kLd + row * TL::kLd + col * TL::kChunkElems, x2 + b_off, b_ok);
      }
    }
  };

  const int warp = tid / 32, wm = warp / 2, wn = warp % 2;
  using Frag = typename Wmma<T, kMath == Math::kFma ? Math::kTf32 : kMath>::FragC;
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

  // Pipeline: kStages - 1 steps in flight while one is computed; one barrier per step.
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < n_iter) load_stage(st, st);
    cp_async_commit();
  }
  for (int it = 0; it < n_iter; ++it) {
    ANYRES_CP_ASYNC_WAIT(kStages - 2);  // this thread's copies of step `it` have landed
    __syncthreads();  // everyone's have; and everyone is done with step it-1, whose stage is refilled next
    const int next = it + kStages - 1;
    if (next < n_iter) load_stage(next, next % kStages);
    cp_async_commit();
    const unsigned char* st = smem + (it % kStages) * kStage;
    const T* As = reinterpret_cast<const T*>(st);
    const T* Bs = reinterpret_cast<const T*>(st + TL::kOperandBytes);
    if constexpr (kMath == Math::kFma) {
      fma_tile(As, Bs, tid, facc);
      if constexpr (kDual) fma_tile(As + 2 * kBM * TL::kLd, Bs + 2 * kBM * TL::kLd, tid, facc2);
    } else {
      mma_tile<T, kMath>(As, Bs, wm, wn, acc);
      if constexpr (kDual) mma_tile<T, kMath>(As + 2 * kBM * TL::kLd, Bs + 2 * kBM * TL::kLd, wm, wn, acc2);
    }
  }
  ANYRES_CP_ASYNC_WAIT(0);  // only empty groups remain; nothing may land on the accumulator tile
  __syncthreads();          // the stages are dead; reuse the buffer for the accumulator tile(s)

  float* Cs = reinterpret_cast<float*>(smem);
  float* Cs2 = reinterpret_cast<float*>(smem + TL::kBytesC);  // only used when kDual
  constexpr int kLdC = TL::kLdC;
  if constexpr (kMath == Math::kFma) {
    const int tx = tid % 16, ty = tid / 16;
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        Cs[(ty * 8 + i) * kLdC + tx + 16 * j] = facc[i][j];
        if constexpr (kDual) Cs2[(ty * 8 + i) * kLdC + tx + 16 * j] = facc2[i][j];
      }
  } else {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        float* dst = Cs + (wm * 32 + i * 16) * kLdC + wn * 32 + j * 16;
        nvcuda::wmma::store_matrix_sync(dst, acc[i][j], kLdC, nvcuda::wmma::mem_row_major);
        if constexpr (kDual)
          nvcuda::wmma::store_matrix_sync(Cs2 + (dst - Cs), acc2[i][j], kLdC, nvcuda::wmma::mem_row_major);
      }
  }
  __syncthreads();

  // Epilogue: thread owns column tid % kBN (its output pixel) and rows tid / kBN + 2 j.
  const int nb = tid % kBN;
  const int64_t n = n0 + nb;
  if (n >= n_class) return;
  const int xc = int(n % g.wc);
  const int64_t t = n / g.wc;
  const int yc = int(t % g.hc);
  const int b = int(t / g.hc);
  const int oy_full = s.mode == kTConvS2 ? 2 * yc + g.py : yc;
  const int ox_full = s.mode == kTConvS2 ? 2 * xc + g.px : xc;
  const int64_t plane = int64_t(s.h_out) * s.w_out;
  const int64_t pix = int64_t(oy_full) * s.w_out + ox_full;
  const int64_t total = int64_t(s.batch) * s.m_out * plane;
  T* __restrict__ out = static_cast<T*>(p.out);
  for (int j = 0; j < kBM * kBN / kThreads; ++j) {
    const int mb = tid / kBN + (kThreads / kBN) * j;
    const int gm = m0 + mb;
    if (gm >= s.m_out) break;  // rows increase with j
    const int64_t o = (int64_t(b) * s.m_out + gm) * plane + pix;
    if (p.splits > 1) {
      p.partial[split * total + o] = Cs[mb * kLdC + nb];
      if constexpr (kDual) p.partial[(p.splits + split) * total + o] = Cs2[mb * kLdC + nb];
      continue;
    }
    float v = Cs[mb * kLdC + nb];
    if (p.post != nullptr) v *= p.post[int64_t(b) * s.m_out + gm];
    if constexpr (kDual) v *= rsqrtf(Cs2[mb * kLdC + nb] + p.eps);
    out[o] = from_float<T>(v);
  }
#endif  // ANYRES_IGEMM_DEVICE_CODE (below sm_80: an empty stub, never launched)
}

// ---- staging: NCHW × scale -> channels-last, padded channels ------------------------------------------------
// One CTA transposes 32 channels × 32 pixels of one sample through shared memory (coalesced both ways).
template <typename T, bool kPixelStyle, bool kSquare>
__global__ void __launch_bounds__(kThreads) stage_kernel(const T* __restrict__ src, const float* __restrict__ pre,
                                                        const T* __restrict__ pre_map, T* __restrict__ dst,
                                                        T* __restrict__ dst_sq, int channels, int cp, int64_t hw) {
  ANYRES_DYNAMIC_SMEM(smem);
  float(*tile)[33] = reinterpret_cast<float(*)[33]>(smem);
  float(*tile_sq)[33] = reinterpret_cast<float(*)[33]>(smem + 32 * 33 * sizeof(float));
  const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
  const int64_t b = blockIdx.z;
  const int c0 = int(blockIdx.y) * 32;
  const int64_t p0 = int64_t(blockIdx.x) * 32;
  for (int cl = ty; cl < 32; cl += kThreads / 32) {
    const int c = c0 + cl;
    const int64_t px = p0 + tx;
    float v = 0.f, s2 = 0.f;
    if (c < channels && px < hw) {
      const int64_t off = (b * channels + c) * hw + px;
      const float sc = kPixelStyle ? to_float(pre_map[off]) : pre[b * channels + c];
      v = to_float(src[off]) * sc;
      s2 = sc * sc;
    }
    tile[cl][tx] = v;
    if constexpr (kSquare) tile_sq[cl][tx] = s2;
  }
  __syncthreads();
  for (int pl = ty; pl < 32; pl += kThreads / 32) {
    const int64_t px = p0 + pl;
    const int c = c0 + tx;
    if (px < hw && c < cp) {
      dst[(b * hw + px) * cp + c] = from_float<T>(tile[tx][pl]);
      if constexpr (kSquare) dst_sq[(b * hw + px) * cp + c] = from_float<T>(tile_sq[tx][pl]);
    }
  }
}

// ---- split-K reduction + epilogue ----------------------------------------------------------------------------
template <typename T, bool kDual>
__global__ void __launch_bounds__(kThreads) reduce_kernel(const float* __restrict__ partial, const float* __restrict__ post,
                                                         T* __restrict__ out, int splits, int64_t total, int64_t plane,
                                                         float eps) {
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total; i += int64_t(gridDim.x) * kThreads) {
    float v = 0.f, e = 0.f;
    for (int sp = 0; sp < splits; ++sp) {
      v += partial[sp * total + i];
      if constexpr (kDual) e += partial[(splits + sp) * total + i];
    }
    if (post != nullptr) v *= post[i / plane];  // i / plane = b·M + m
    if constexpr (kDual) v *= rsqrtf(e + eps);
    out[i] = from_float<T>(v);
  }
}

// ---- launches ------------------------------------------------------------------------------------------------

#ifdef ANYRES_FAST_HOST_EMULATION
#define ANYRES_IGEMM_LAUNCH(kernel, grid, smem, stream, ...) \
  (igemm_emulation::launch(grid, kThreads, smem, [&] { kernel(__VA_ARGS__); }), cudaSuccess)
#else
#define ANYRES_IGEMM_LAUNCH(kernel, grid, smem, stream, ...) \
  (kernel<<<grid, kThreads, smem, stream>>>(__VA_ARGS__), cudaGetLastError())
#endif

// Shared memory of one GEMM CTA per configuration (the Python side mirrors this table:
// anyres_fast/ops/_arch.py IGEMM_SMEM_BYTES, checked against it by the emulation tests).
inline int gemm_smem_bytes(DType dtype, bool exact_fp32, bool dual) {
  if (dtype == DType::f32) return dual ? Smem<float, true>::kTotal : Smem<float, false>::kTotal;
  (void)exact_fp32;  // TF32 and FMA share the fp32 tiles
  return dual ? Smem<__half, true>::kTotal : Smem<__half, false>::kTotal;
}

constexpr int kMaxDevices = 64;

// What the launcher needs to know about a device, read once per device and process.
struct DeviceLimits {
  int arch = 0;       // major * 10 + minor
  int max_smem = 0;   // cudaDevAttrMaxSharedMemoryPerBlockOptin
  int sms = 0;
};

inline cudaError_t device_limits(DeviceLimits& out) {
#ifdef ANYRES_FAST_HOST_EMULATION
  out.arch = igemm_emulation::arch;
  out.max_smem = igemm_emulation::max_smem;
  out.sms = igemm_emulation::num_sms;
  return cudaSuccess;
#else
  static std::atomic<int> arch[kMaxDevices], max_smem[kMaxDevices], sms[kMaxDevices];
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  if (device < 0 || device >= kMaxDevices) return cudaErrorInvalidDevice;
  if (arch[device].load(std::memory_order_acquire) == 0) {
    int major = 0, minor = 0, smem = 0, count = 0;
    if ((err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device)) != cudaSuccess ||
        (err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device)) != cudaSuccess ||
        (err = cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device)) != cudaSuccess ||
        (err = cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device)) != cudaSuccess)
      return err;
    max_smem[device].store(smem, std::memory_order_relaxed);
    sms[device].store(count, std::memory_order_relaxed);
    arch[device].store(major * 10 + minor, std::memory_order_release);
  }
  out.arch = arch[device].load(std::memory_order_acquire);
  out.max_smem = max_smem[device].load(std::memory_order_relaxed);
  out.sms = sms[device].load(std::memory_order_relaxed);
  return cudaSuccess;
#endif
}

// cudaFuncSetAttribute(MaxDynamicSharedMemorySize) once per kernel and device, not per launch.
template <typename Kernel>
cudaError_t allow_dynamic_smem(Kernel kernel, int bytes, std::atomic<unsigned long long>& done_devices) {
#ifdef ANYRES_FAST_HOST_EMULATION
  (void)kernel; (void)bytes; (void)done_devices;
  return cudaSuccess;
#else
  if (bytes <= 48 * 1024) return cudaSuccess;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const unsigned long long bit = 1ull << (device & 63);
  if (done_devices.load(std::memory_order_acquire) & bit) return cudaSuccess;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (err == cudaSuccess) done_devices.fetch_or(bit, std::memory_order_acq_rel);
  return err;
#endif
}

template <typename T, bool kPixelStyle, bool kSquare>
cudaError_t launch_stage(const ImplicitGemmShape& s, int cp, const ImplicitGemmOperands& o, cudaStream_t stream) {
  const int64_t hw = int64_t(s.h_in) * s.w_in;
  const int64_t gx = ceil_div64(hw, 32), gy = ceil_div64(cp, 32);
  if (gx > 2147483647LL || gy > 65535 || s.batch > 65535) return cudaErrorInvalidConfiguration;
  const dim3 grid(unsigned(gx), unsigned(gy), unsigned(s.batch));
  constexpr size_t smem = 2 * 32 * 33 * sizeof(float);
  auto kernel = stage_kernel<T, kPixelStyle, kSquare>;
  return ANYRES_IGEMM_LAUNCH(kernel, grid, smem, stream, static_cast<const T*>(o.x), o.pre,
                             static_cast<const T*>(o.pre_map), static_cast<T*>(o.staged),
                             static_cast<T*>(o.staged_sq), s.channels, cp, hw);
}

template <typename T, Math kMath, bool kDual>
cudaError_t launch_gemm(const Problem& p, const Plan& plan, cudaStream_t stream) {
  constexpr int smem = Smem<T, kDual>::kTotal;
  auto kernel = conv_kernel<T, kMath, kDual>;
  static std::atomic<unsigned long long> attribute_set{0};  // one bit per device
  if (cudaError_t err = allow_dynamic_smem(kernel, smem, attribute_set); err != cudaSuccess) return err;
  const int64_t gx = plan.n_tiles * plan.m_tiles;
  if (gx > 2147483647LL) return cudaErrorInvalidConfiguration;
  const dim3 grid(unsigned(gx), 1, unsigned(plan.classes * plan.splits));
  cudaError_t err = ANYRES_IGEMM_LAUNCH(kernel, grid, size_t(smem), stream, p);
  if (err != cudaSuccess || plan.splits == 1) return err;
  const int64_t plane = int64_t(p.s.h_out) * p.s.w_out;
  const int64_t total = int64_t(p.s.batch) * p.s.m_out * plane;
  const int64_t blocks = ceil_div64(total, kThreads) < 65535 ? ceil_div64(total, kThreads) : 65535;
  auto reduce = reduce_kernel<T, kDual>;
  return ANYRES_IGEMM_LAUNCH(reduce, dim3(unsigned(blocks)), size_t(0), stream, p.partial, p.post,
                             static_cast<T*>(p.out), plan.splits, total, plane, p.eps);
}

inline bool shape_ok(const ImplicitGemmShape& s) {
  if (s.batch <= 0 || s.channels <= 0 || s.m_out <= 0 || s.h_out <= 0 || s.w_out <= 0 || s.h_in <= 0 ||
      s.w_in <= 0 || s.kh <= 0 || s.kw <= 0 || s.pad < 0 || s.pad > 65535 || s.mode < kConvS1 || s.mode > kTConvS2)
    return false;
  // 32-bit tap/channel-chunk indices inside the kernel
  return int64_t(padded_channels(s.channels)) * s.kh * s.kw < (int64_t(1) << 31) - 2 * kBK;
}

template <typename T, Math kMath, bool kDual, bool kPixelStyle>
cudaError_t run_typed(const ImplicitGemmShape& s, const ImplicitGemmOperands& o, float eps, cudaStream_t stream) {
  DeviceLimits dev;
  cudaError_t err = device_limits(dev);
  if (err != cudaSuccess) return err;
  // refused by design (the Python side says why first): below sm_80 the kernels are stubs, and a
  // configuration whose tiles exceed the device's shared memory cannot launch
  if (dev.arch < kMinArch || Smem<T, kDual>::kTotal > dev.max_smem) return cudaErrorNotSupported;
  const Plan plan = make_plan(s, kDual, dev.sms);
  if (plan.splits > 1 && (o.workspace == nullptr || o.workspace_floats < plan.workspace_floats))
    return cudaErrorInvalidValue;
  Problem p;
  p.s = s;
  p.cp = padded_channels(s.channels);
  p.input = o.staged;
  p.input_sq = o.staged_sq;
  p.weight = o.weight;
  p.weight_sq = o.weight_sq;
  p.post = o.post;
  p.out = o.out;
  p.partial = o.workspace;
  p.splits = plan.splits;
  p.eps = eps;
  err = launch_stage<T, kPixelStyle, kDual>(s, p.cp, o, stream);
  if (err != cudaSuccess) return err;
  return launch_gemm<T, kMath, kDual>(p, plan, stream);
}

// Stage + GEMM (+ reduce). kDual needs pre_map (the per-pixel style), weight_sq and staged_sq.
template <bool kDual, bool kPixelStyle>
cudaError_t run(const ImplicitGemmShape& s, const ImplicitGemmOperands& o, DType dtype, bool exact_fp32, float eps,
                cudaStream_t stream) {
  static_assert(!kDual || kPixelStyle, "the dual accumulator is the per-pixel style's demodulation");
  if (!shape_ok(s) || o.x == nullptr || o.weight == nullptr || o.out == nullptr || o.staged == nullptr ||
      (kPixelStyle ? o.pre_map == nullptr : o.pre == nullptr) ||
      (kDual && (o.weight_sq == nullptr || o.staged_sq == nullptr)))
    return cudaErrorInvalidValue;
  // cp.async moves 16-byte chunks straight from the GEMM-ready weights and the staged input
  auto misaligned = [](const void* q) { return q != nullptr && reinterpret_cast<uintptr_t>(q) % 16 != 0; };
  if (misaligned(o.weight) || misaligned(o.weight_sq) || misaligned(o.staged) || misaligned(o.staged_sq))
    return cudaErrorMisalignedAddress;
  switch (dtype) {
    case DType::f16: return run_typed<__half, Math::kMma16, kDual, kPixelStyle>(s, o, eps, stream);
    case DType::bf16: return run_typed<__nv_bfloat16, Math::kMma16, kDual, kPixelStyle>(s, o, eps, stream);
    case DType::f32:
      return exact_fp32 ? run_typed<float, Math::kFma, kDual, kPixelStyle>(s, o, eps, stream)
                        : run_typed<float, Math::kTf32, kDual, kPixelStyle>(s, o, eps, stream);
    default: return cudaErrorInvalidValue;
  }
}

// Scratch sizes for the binding (it allocates them with the torch allocator).
inline cudaError_t scratch(const ImplicitGemmShape& s, bool dual, ImplicitGemmScratch& out) {
  if (!shape_ok(s)) return cudaErrorInvalidValue;
  DeviceLimits dev;
  cudaError_t err = device_limits(dev);
  if (err != cudaSuccess) return err;
  out.channels_padded = padded_channels(s.channels);
  out.staged_elements = int64_t(s.batch) * s.h_in * s.w_in * out.channels_padded;
  out.workspace_floats = make_plan(s, dual, dev.sms).workspace_floats;
  return cudaSuccess;
}

}  // namespace igemm
}  // namespace anyres_fast
