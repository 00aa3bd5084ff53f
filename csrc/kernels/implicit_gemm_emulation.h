// Host emulation of the device features implicit_gemm.cuh uses, for checking it without a GPU.
// Included only by implicit_gemm.cuh compiled with g++ -DANYRES_FAST_HOST_EMULATION
// -DANYRES_FAST_HOST_EMULATION_THREADS (python_tests/test_implicit_gemm_emulated.py); never by nvcc.
//
// On top of the threaded CTA emulation (host_emulation.h: each CTA runs as its real threads taking turns
// at __syncthreads, shared memory NaN-filled):
//  * WMMA at matrix level: every thread's fragment holds the whole 16x16 (or 16x8) tile, so the warp's
//    32 copies agree and the result does not depend on the (undocumented) register layout. The
//    documented rules are checked and a violation is an error: load/store pointers 256-bit (32-byte)
//    aligned, ldm a multiple of 16 bytes (8 elements of 16 bits, 4 of 32 bits). Each load/store/mma is
//    a warp-collective call: all 32 lanes must make the same sequence of calls with the same pointer and
//    ldm, else an error is recorded. Products are summed in float (fp32 accumulation as on the tensor
//    cores; the summation order inside one MMA is unspecified there too).
//  * cp.async (16-byte, with zero fill): the source is read at issue, the bytes land in shared memory
//    only at the issuing thread's cp.async.wait_group that retires its group, the latest moment the
//    hardware allows; copies still pending when a thread ends are an error.
//  * launches: the grid's CTAs run one after another; the dynamic shared memory base is 128-byte
//    aligned, or shifted by `smem_offset` bytes (a test setting that plants a misalignment).
#pragma once

#ifndef ANYRES_FAST_HOST_EMULATION_THREADS
#error "implicit_gemm.cuh emulation needs -DANYRES_FAST_HOST_EMULATION_THREADS (its tiles are warp-level)"
#endif

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels/host_emulation.h"

#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef __grid_constant__
#define __grid_constant__
#endif
#define ANYRES_DYNAMIC_SMEM(name) unsigned char* name = ::anyres_fast::emulation::shared_memory

namespace anyres_fast::igemm_emulation {

namespace emu = ::anyres_fast::emulation;

// settings (a test harness sets them between launches)
inline int smem_offset = 0;      // bytes added to the 128-byte aligned dynamic shared memory base
inline int skip_wait_line = -1;  // mutation check: the cp.async wait on this source line does nothing
inline int num_sms = 132;        // what cudaDevAttrMultiProcessorCount reports (split-K planning)
inline int arch = 90;             // the emulated device's major*10+minor (the launcher refuses < 80)
inline int max_smem = 232448;     // its cudaDevAttrMaxSharedMemoryPerBlockOptin (sm_90)

// findings
inline long wmma_calls = 0, cp_async_copies = 0;
inline long long mma_macs = 0;  // multiply-adds issued to the (emulated) tensor cores, counted once per warp
inline std::vector<int> wait_lines;  // source lines of the cp.async waits that ran

// ---- warp-collective bookkeeping ---------------------------------------------------------------------
struct Collective {
  const char* op;
  const void* ptr;
  unsigned ldm;
};
inline std::map<std::pair<int, long>, Collective> collectives;  // (warp, call number) -> first lane's call
inline std::map<int, std::map<long, int>> calls_per_lane;       // warp -> calls made -> lanes
inline thread_local long collective_seq = 0;

inline void collective(const char* op, const void* ptr, unsigned ldm) {
  const int warp = int(emu::thread_idx.x / 32);
  const auto key = std::make_pair(warp, collective_seq++);
  auto it = collectives.find(key);
  if (it == collectives.end()) {
    collectives.emplace(key, Collective{op, ptr, ldm});
  } else if (std::strcmp(it->second.op, op) != 0 || it->second.ptr != ptr || it->second.ldm != ldm) {
    emu::report(std::string("warp-collective ") + op + ": lanes of warp " + std::to_string(warp) +
                " disagree (operation, pointer or ldm) at call " + std::to_string(key.second));
  }
}

// ---- cp.async ----------------------------------------------------------------------------------------
struct Copy {
  void* dst;
  std::array<unsigned char, 16> bytes;
};
inline thread_local std::vector<Copy> open_group;
inline thread_local std::deque<std::vector<Copy>> committed;

inline void cp_async16(void* smem_dst, const void* global_src, int src_bytes) {
  ++cp_async_copies;
  if (reinterpret_cast<uintptr_t>(smem_dst) % 16 != 0 ||
      (src_bytes > 0 && reinterpret_cast<uintptr_t>(global_src) % 16 != 0))
    emu::report("cp.async: 16-byte copy with an address that is not 16-byte aligned");
  Copy c{smem_dst, {}};
  if (src_bytes > 0) std::memcpy(c.bytes.data(), global_src, size_t(src_bytes));  // rest: zero fill
  open_group.push_back(c);
}
inline void cp_async_commit() {
  committed.push_back(std::move(open_group));
  open_group.clear();
}
inline void cp_async_wait(int pending_allowed, int line) {
  if (std::find(wait_lines.begin(), wait_lines.end(), line) == wait_lines.end()) wait_lines.push_back(line);
  if (line == skip_wait_line) return;
  while (int(committed.size()) > pending_allowed) {
    for (const Copy& c : committed.front()) std::memcpy(c.dst, c.bytes.data(), 16);
    committed.pop_front();
  }
}

// ---- launches ------------------------------------------------------------------------------------------
// Runs every CTA of `grid` with `threads` threads; body() is the kernel call.
template <class Body>
void launch(dim3 grid, int threads, size_t smem_bytes, Body&& body) {
  std::vector<unsigned char> storage(smem_bytes + 256 + size_t(smem_offset));
  const uintptr_t base = (reinterpret_cast<uintptr_t>(storage.data()) + 127) & ~uintptr_t(127);
  emu::shared_memory = reinterpret_cast<unsigned char*>(base) + smem_offset;
  emu::grid_dim = grid;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        emu::block_idx = {x, y, z};
        collectives.clear();
        calls_per_lane.clear();
        emu::run_cta(threads, smem_bytes, [&] {
          collective_seq = 0;
          body();
          bool pending = !open_group.empty();
          for (const auto& g : committed) pending = pending || !g.empty();
          if (pending) emu::report("cp.async copies still pending when a thread ended (no final wait)");
          open_group.clear();
          committed.clear();
          ++calls_per_lane[int(emu::thread_idx.x / 32)][collective_seq];
        });
        for (const auto& [warp, counts] : calls_per_lane)
          if (counts.size() != 1)
            emu::report("lanes of warp " + std::to_string(warp) + " made different numbers of WMMA calls");
      }
}

}  // namespace anyres_fast::igemm_emulation

// ---- WMMA at matrix level --------------------------------------------------------------------------------
namespace nvcuda::wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <class T> struct storage { using type = T; };
template <> struct storage<precision::tf32> { using type = float; };
inline float to_f(float v) { return v; }
inline float to_f(__half v) { return __half2float(v); }
inline float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class Use, int M, int N, int K> struct shape;
template <int M, int N, int K> struct shape<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K> struct shape<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K> struct shape<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

inline void check_pointer(const char* op, const void* p, unsigned ldm, size_t elem_bytes) {
  namespace emu = ::anyres_fast::emulation;
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    emu::report(std::string(op) + ": pointer not 256-bit (32-byte) aligned");
  if ((size_t(ldm) * elem_bytes) % 16 != 0)
    emu::report(std::string(op) + ": ldm " + std::to_string(ldm) + " is not a multiple of 16 bytes (" +
                std::to_string(16 / elem_bytes) + " elements)");
  ::anyres_fast::igemm_emulation::collective(op, p, ldm);
  ++::anyres_fast::igemm_emulation::wmma_calls;
}
}  // namespace detail

// The whole tile, row-major, in every thread: x[r * cols + c].
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  using element_type = typename detail::storage<T>::type;
  static constexpr int rows = detail::shape<Use, M, N, K>::rows, cols = detail::shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  element_type x[num_elements];
};

template <class Use, int M, int N, int K, class T, class Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f,
                      const typename fragment<Use, M, N, K, T, Layout>::element_type* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, Layout>;
  detail::check_pointer("load_matrix_sync", p, ldm, sizeof(typename F::element_type));
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      f.x[r * F::cols + c] = std::is_same_v<Layout, row_major> ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r];
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  using F = fragment<accumulator, M, N, K, float>;
  detail::check_pointer("store_matrix_sync", p, ldm, sizeof(float));
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      (layout == mem_row_major ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r]) = f.x[r * F::cols + c];
}

template <class Use, int M, int N, int K, class T, class Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float v) {
  for (auto& e : f.x) e = v;
}

template <int M, int N, int K, class T, class LA, class LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  ::anyres_fast::igemm_emulation::collective("mma_sync", nullptr, 0);
  if (::anyres_fast::emulation::thread_idx.x % 32 == 0) ::anyres_fast::igemm_emulation::mma_macs += M * N * K;
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = c.x[i * N + j];
      for (int k = 0; k < K; ++k) acc += detail::to_f(a.x[i * K + k]) * detail::to_f(b.x[k * N + j]);
      out[i * N + j] = acc;
    }
  std::memcpy(d.x, out, sizeof(out));
}

// cvt.rna.tf32.f32: round to 10 mantissa bits, ties away from zero; the low 13 bits become zero.
inline float __float_to_tf32(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  std::memcpy(&v, &u, 4);
  return v;
}

}  // namespace nvcuda::wmma

#ifndef rsqrtf
#define rsqrtf(v) (1.0f / std::sqrt(float(v)))
#endif
