// Multi-thread host emulation of a CTA, for checking a kernel's barriers on a machine without a GPU.
// Included only by a kernel file compiled with g++ -DANYRES_FAST_HOST_EMULATION_THREADS (python_tests);
// never by nvcc, the extension build or CMake (they compile .cu/.cpp files only).
//
// run_cta() runs one CTA as blockDim.x real threads that take turns: in each round every live thread
// runs alone, in thread order (or reversed), until its next __syncthreads or its end; the next round
// starts when all have arrived. Shared memory starts as NaN (0xff bytes), so a missing barrier makes a
// thread read a value no thread has written yet (NaN) or a stale one, and running both orders makes a
// write-write conflict between threads show up as a difference. Barrier misuse (threads that wait at
// different __syncthreads, or some returning while others wait) is recorded, not fatal, so a test can
// report it.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <semaphore>
#include <set>
#include <string>
#include <thread>
#include <vector>

// Its own namespace, aliased as anyres_fast::emulation for the launch code: the single-thread emulation
// defines inline variables of the same names (thread_idx is not thread_local there), and g++ binds
// same-named inline variables process-wide, so the two test libraries could not be loaded together.
namespace anyres_fast::emulation_threads {

inline thread_local uint3 thread_idx;
inline uint3 block_idx;
inline dim3 block_dim, grid_dim;
inline unsigned char* shared_memory = nullptr;

// settings (a test harness sets them between launches)
inline bool reverse_order = false;
inline int skip_barrier_line = -1;  // mutation check: the __syncthreads on this source line does nothing

// findings
inline std::set<int> barrier_lines;  // source lines of the barriers that all threads passed together
inline unsigned max_block_threads = 0;
inline long error_count = 0;
inline long misaligned_stores = 0;  // filtered_lrelu's sign words stored off 4-byte alignment
inline std::string first_error;

// Access trace (benchmarks/access_counts.py): while trace_on, each ANYRES_TRACE_ACCESS site appends
// one record per thread and execution; a thread's n-th record of a site and its warp neighbours' n-th
// records form one warp-wide memory instruction. Threads run one at a time, so no lock is needed.
struct Access {
  unsigned block, thread;  // block: the CTA's linear index
  int site, seq;
  uintptr_t address;
  int bytes;
};
inline bool trace_on = false;
inline std::vector<Access> trace;
inline thread_local int trace_seq[16];  // per site: records of this thread so far (a fresh thread per CTA)

inline void trace_access(int site, const void* address, int bytes) {
  if (!trace_on) return;
  trace.push_back({block_idx.x + grid_dim.x * (block_idx.y + grid_dim.y * block_idx.z), thread_idx.x, site, trace_seq[site]++, reinterpret_cast<uintptr_t>(address), bytes});
}

inline void report(const std::string& message) {
  if (error_count++ == 0) first_error = message;
}

namespace detail {
struct Cta {
  std::vector<std::unique_ptr<std::binary_semaphore>> turn;  // per thread: run now
  std::binary_semaphore yielded{0};                          // the running thread reached a barrier or its end
  std::vector<int> waiting_line;                             // per thread: barrier line, or 0 when it returned
};
inline Cta* current = nullptr;
}  // namespace detail

inline void sync(int line) {
  if (line == skip_barrier_line) return;
  detail::Cta* cta = detail::current;
  if (!cta) {  // the launch code called the kernel without run_cta: nothing to hand the turn to
    std::fprintf(stderr, "host emulation: __syncthreads (line %d) outside run_cta\n", line);
    std::abort();
  }
  const unsigned t = thread_idx.x;
  cta->waiting_line[t] = line;
  cta->yielded.release();
  cta->turn[t]->acquire();
}

template <class Body>
void run_cta(int threads, size_t smem_bytes, Body&& body) {
  std::memset(shared_memory, 0xff, smem_bytes);
  block_dim = dim3(unsigned(threads), 1, 1);
  max_block_threads = std::max(max_block_threads, unsigned(threads));
  detail::Cta cta;
  cta.waiting_line.assign(threads, 0);
  for (int i = 0; i < threads; ++i) cta.turn.emplace_back(std::make_unique<std::binary_semaphore>(0));
  detail::current = &cta;
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i)
    pool.emplace_back([&cta, &body, i] {
      thread_idx = {unsigned(i), 0, 0};
      cta.turn[i]->acquire();
      body();
      cta.waiting_line[i] = 0;
      cta.yielded.release();
    });
  std::vector<int> live(threads);
  std::iota(live.begin(), live.end(), 0);
  if (reverse_order) std::reverse(live.begin(), live.end());
  while (!live.empty()) {
    for (int t : live) {
      cta.turn[t]->release();
      cta.yielded.acquire();
    }
    std::vector<int> waiting;
    for (int t : live)
      if (cta.waiting_line[t] != 0) waiting.push_back(t);
    if (!waiting.empty()) {
      const int line = cta.waiting_line[waiting.front()];
      if (waiting.size() != live.size())
        report("threads returned while others wait at the __syncthreads on line " + std::to_string(line));
      for (int t : waiting)
        if (cta.waiting_line[t] != line)
          report("threads wait at different __syncthreads (lines " + std::to_string(line) + " and " +
                 std::to_string(cta.waiting_line[t]) + ")");
      barrier_lines.insert(line);
    }
    live = std::move(waiting);
  }
  for (auto& th : pool) th.join();
  detail::current = nullptr;
}

}  // namespace anyres_fast::emulation_threads

namespace anyres_fast {
namespace emulation = emulation_threads;
}

#define threadIdx ::anyres_fast::emulation::thread_idx
#define blockIdx ::anyres_fast::emulation::block_idx
#define blockDim ::anyres_fast::emulation::block_dim
#define gridDim ::anyres_fast::emulation::grid_dim
#define __syncthreads() ::anyres_fast::emulation::sync(__LINE__)
#undef ANYRES_TRACE_ACCESS  // common.cuh's no-op, when it came first
#define ANYRES_TRACE_ACCESS(site, address, bytes) ::anyres_fast::emulation::trace_access(site, address, bytes)
