// What the two implicit-GEMM bindings (modulated_conv2d, style_fused_conv2d) share: the GEMM shape of a
// call and its scratch buffers (docs/implicit_gemm.md).
#pragma once
#include <string>

#include "binding_registry.h"
#include "kernels/implicit_gemm_api.h"

namespace anyres_fast {

// The kernel copies the GEMM-ready weights with 16-byte cp.async: a contiguous view with a storage offset
// would fault with a sticky misaligned-address error, so it is refused here (the Python side passes
// aligned copies: anyres_fast/ops/_dispatch.py aligned).
inline void check_aligned16(const torch::Tensor& t, const char* op, const char* what) {
  TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, op, ": ", what,
              " must be 16-byte aligned (the kernel copies 16-byte chunks with cp.async); got a view at byte offset ",
              t.storage_offset() * t.element_size(), "; pass a fresh (or .clone()d) tensor");
}

// x (B, C, H_in, W_in), weight_gemm (M, kh, kw, Cp), out (B, M, H_out, W_out).
inline ImplicitGemmShape igemm_shape(const torch::Tensor& x, const torch::Tensor& weight_gemm,
                                     const torch::Tensor& out, int64_t padding, int64_t mode) {
  ImplicitGemmShape shape;
  shape.batch = (int)x.size(0);
  shape.channels = (int)x.size(1);
  shape.h_in = (int)x.size(2);
  shape.w_in = (int)x.size(3);
  shape.m_out = (int)weight_gemm.size(0);
  shape.h_out = (int)out.size(2);
  shape.w_out = (int)out.size(3);
  shape.kh = (int)weight_gemm.size(1);
  shape.kw = (int)weight_gemm.size(2);
  shape.pad = (int)padding;
  shape.mode = (int)mode;
  return shape;
}

// The scratch tensors of one launch; the caller keeps them alive until the launch is queued.
struct IgemmScratchTensors {
  torch::Tensor staged, staged_sq, workspace;
};

// Plans the scratch (staged x·scale, staged scale² when dual, split-K workspace), allocates it from the
// torch allocator on the current (Python-set) device and stream, and points the operands at it.
inline IgemmScratchTensors igemm_scratch(const char* op, const ImplicitGemmShape& shape, bool dual,
                                         const torch::Tensor& like, ImplicitGemmOperands& o) {
  ImplicitGemmScratch scratch;
  check_launch((std::string(op) + " (plan)").c_str(), implicit_gemm_scratch(shape, dual, &scratch));
  IgemmScratchTensors t;
  t.staged = torch::empty({scratch.staged_elements}, like.options());
  if (dual) t.staged_sq = torch::empty({scratch.staged_elements}, like.options());
  if (scratch.workspace_floats > 0)
    t.workspace = torch::empty({scratch.workspace_floats}, like.options().dtype(torch::kFloat32));
  o.staged = t.staged.data_ptr();
  o.staged_sq = dual ? t.staged_sq.data_ptr() : nullptr;
  o.workspace = scratch.workspace_floats > 0 ? t.workspace.data_ptr<float>() : nullptr;
  o.workspace_floats = scratch.workspace_floats;
  return t;
}

}  // namespace anyres_fast
