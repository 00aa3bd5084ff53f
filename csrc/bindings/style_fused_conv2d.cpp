// style_fused_conv2d binding: checks tensors, maps dtypes, calls the launcher (csrc/kernels/style_fused_conv2d.cu).
// User-facing validation happens in anyres_fast/ops/style_fused_conv2d.py; these checks guard the kernel.
#include "binding_registry.h"
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

void igemm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& style_map, torch::Tensor& out,
           int64_t mode, int64_t padding, bool exact, double eps, bool exact_fp32, int64_t stream) {
  anyres_fast::begin_launch("style_fused_conv2d", {x, weight, style_map, out});
  check_cuda(x, "x");
  check_cuda(weight, "weight");
  check_cuda(style_map, "style_map");
  check_cuda(out, "out");
  anyres_fast::DType dtype;
  switch (x.scalar_type()) {
    case torch::kFloat32: dtype = anyres_fast::DType::f32; break;
    case torch::kFloat16: dtype = anyres_fast::DType::f16; break;
    case torch::kBFloat16: dtype = anyres_fast::DType::bf16; break;
    default: TORCH_CHECK(false, "style_fused_conv2d: x must be float32, float16 or bfloat16, got ", x.scalar_type());
  }
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && style_map.scalar_type() == x.scalar_type() &&
                  out.scalar_type() == x.scalar_type(),
              "style_fused_conv2d: x, weight, style_map and out must share a dtype");
  TORCH_CHECK(style_map.sizes() == x.sizes(), "style_fused_conv2d: style_map must have the shape of x");
  TORCH_CHECK(weight.size(1) == x.size(1), "style_fused_conv2d: weight/x channel mismatch");
  TORCH_CHECK(out.size(0) == x.size(0) && out.size(1) == weight.size(0), "style_fused_conv2d: out must be (B,O,H,W)");
  TORCH_CHECK(mode == 0 || mode == 3, "style_fused_conv2d: mode must be 0 (conv) or 3 (transposed up=2)");
  TORCH_CHECK(padding >= 0 && padding < 65536, "style_fused_conv2d: bad padding ", padding);
  auto weight_gemm = weight.permute({0, 2, 3, 1}).contiguous();  // GEMM-ready (O, kh, kw, I)
  int err = anyres_fast::style_fused_conv2d_igemm(
      x.data_ptr(), weight_gemm.data_ptr(), style_map.data_ptr(), out.data_ptr(), (int)x.size(0), (int)x.size(1),
      (int)x.size(2), (int)x.size(3), (int)weight.size(0), (int)out.size(2), (int)out.size(3), (int)weight.size(2),
      (int)weight.size(3), (int)padding, (int)mode, exact, (float)eps, dtype, exact_fp32,
      reinterpret_cast<cudaStream_t>(static_cast<intptr_t>(stream)));
  anyres_fast::check_launch("style_fused_conv2d_igemm", err);
}

}  // namespace

ANYRES_FAST_BIND(style_fused_conv2d) {
  m.def("style_fused_conv2d_igemm", &igemm, "implicit-GEMM convolution with a per-pixel style (two accumulators)",
        pybind11::arg("x"), pybind11::arg("weight"), pybind11::arg("style_map"), pybind11::arg("out"),
        pybind11::arg("mode"), pybind11::arg("padding"), pybind11::arg("exact"), pybind11::arg("eps"),
        pybind11::arg("exact_fp32"), pybind11::arg("stream"));
}
