// style_fused_conv2d binding: checks tensors, maps dtypes, calls the launcher (csrc/kernels/style_fused_conv2d.cu).
// User-facing validation happens in anyres_fast/ops/style_fused_conv2d_op.py; these checks guard the kernel.
#include "binding_registry.h"
#include "implicit_gemm_binding.h"
#include "kernels/style_fused_conv2d.cuh"

namespace {

void check_cuda(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.is_cuda(), "style_fused_conv2d: ", what, " must be a CUDA tensor");
  TORCH_CHECK(t.is_contiguous(), "style_fused_conv2d: ", what, " must be contiguous");
  TORCH_CHECK(t.dim() == 4, "style_fused_conv2d: ", what, " must have 4 dimensions, got ", t.dim());
  TORCH_CHECK(t.numel() > 0, "style_fused_conv2d: ", what, " is empty");
  for (int64_t s : t.sizes())
    TORCH_CHECK(s <= INT32_MAX, "style_fused_conv2d: ", what, " size ", s, " does not fit the kernel's int32 sizes");
}

// weight_gemm / weight_sq_gemm: W and W² GEMM-ready (O, kh, kw, Ip) (anyres_fast/ops/modulated_conv2d_op.py
// gemm_weight); weight_sq_gemm is read only when exact.
void igemm(const torch::Tensor& x, const torch::Tensor& weight_gemm, const torch::Tensor& weight_sq_gemm,
           const torch::Tensor& style_map, torch::Tensor& out, int64_t mode, int64_t padding, bool exact, double eps,
           bool exact_fp32, int64_t stream) {
  anyres_fast::begin_launch("style_fused_conv2d", {x, weight_gemm, weight_sq_gemm, style_map, out});
  check_cuda(x, "x");
  check_cuda(weight_gemm, "weight_gemm");
  check_cuda(weight_sq_gemm, "weight_sq_gemm");
  check_cuda(style_map, "style_map");
  check_cuda(out, "out");
  anyres_fast::DType dtype;
  switch (x.scalar_type()) {
    case torch::kFloat32: dtype = anyres_fast::DType::f32; break;
    case torch::kFloat16: dtype = anyres_fast::DType::f16; break;
    case torch::kBFloat16: dtype = anyres_fast::DType::bf16; break;
    default: TORCH_CHECK(false, "style_fused_conv2d: x must be float32, float16 or bfloat16, got ", x.scalar_type());
  }
  TORCH_CHECK(weight_gemm.scalar_type() == x.scalar_type() && weight_sq_gemm.scalar_type() == x.scalar_type() &&
                  style_map.scalar_type() == x.scalar_type() && out.scalar_type() == x.scalar_type(),
              "style_fused_conv2d: x, weights, style_map and out must share a dtype");
  TORCH_CHECK(style_map.sizes() == x.sizes(), "style_fused_conv2d: style_map must have the shape of x");
  TORCH_CHECK(weight_gemm.size(3) == anyres_fast::padded_channels((int)x.size(1)),
              "style_fused_conv2d: weight_gemm must be (O, kh, kw, ", anyres_fast::padded_channels((int)x.size(1)),
              ") for ", x.size(1), " input channels, got ", weight_gemm.sizes());
  anyres_fast::check_aligned16(weight_gemm, "style_fused_conv2d", "weight_gemm");
  if (exact) anyres_fast::check_aligned16(weight_sq_gemm, "style_fused_conv2d", "weight_sq_gemm");
  TORCH_CHECK(weight_sq_gemm.sizes() == weight_gemm.sizes(), "style_fused_conv2d: weight_sq_gemm must match weight_gemm");
  TORCH_CHECK(out.size(0) == x.size(0) && out.size(1) == weight_gemm.size(0), "style_fused_conv2d: out must be (B,O,H,W)");
  TORCH_CHECK(mode == 0 || mode == 3, "style_fused_conv2d: mode must be 0 (conv) or 3 (transposed up=2)");
  TORCH_CHECK(padding >= 0 && padding < 65536, "style_fused_conv2d: bad padding ", padding);
  const anyres_fast::ImplicitGemmShape shape = anyres_fast::igemm_shape(x, weight_gemm, out, padding, mode);
  anyres_fast::ImplicitGemmOperands o;
  const auto scratch = anyres_fast::igemm_scratch("style_fused_conv2d_igemm", shape, exact, x, o);
  o.x = x.data_ptr();
  o.pre_map = style_map.data_ptr();
  o.weight = weight_gemm.data_ptr();
  o.weight_sq = exact ? weight_sq_gemm.data_ptr() : nullptr;
  o.out = out.data_ptr();
  int err = anyres_fast::style_fused_conv2d_igemm(shape, o, exact, (float)eps, dtype, exact_fp32,
                                                  reinterpret_cast<cudaStream_t>(static_cast<intptr_t>(stream)));
  anyres_fast::check_launch("style_fused_conv2d_igemm", err);
}

}  // namespace

ANYRES_FAST_BIND(style_fused_conv2d) {
  m.def("style_fused_conv2d_igemm", &igemm, "implicit-GEMM convolution with a per-pixel style (two accumulators)",
        pybind11::arg("x"), pybind11::arg("weight_gemm"), pybind11::arg("weight_sq_gemm"), pybind11::arg("style_map"), pybind11::arg("out"),
        pybind11::arg("mode"), pybind11::arg("padding"), pybind11::arg("exact"), pybind11::arg("eps"),
        pybind11::arg("exact_fp32"), pybind11::arg("stream"));
}
