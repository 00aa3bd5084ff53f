// modulated_conv2d binding: checks tensors, maps dtypes, calls the launchers (csrc/kernels/modulated_conv2d.cu).
// User-facing validation happens in anyres_fast/ops/modulated_conv2d_op.py; these checks guard the kernels.
#include "binding_registry.h"
#include "implicit_gemm_binding.h"
#include "kernels/modulated_conv2d.cuh"

namespace {

anyres_fast::DType kernel_dtype(const torch::Tensor& t, const char* what) {
  switch (t.scalar_type()) {
    case torch::kFloat32: return anyres_fast::DType::f32;
    case torch::kFloat16: return anyres_fast::DType::f16;
    case torch::kBFloat16: return anyres_fast::DType::bf16;
    default: TORCH_CHECK(false, "modulated_conv2d: ", what, " must be float32, float16 or bfloat16, got ", t.scalar_type());
  }
}

void check_cuda(const torch::Tensor& t, const char* what, int64_t dim) {
  TORCH_CHECK(t.is_cuda(), "modulated_conv2d: ", what, " must be a CUDA tensor");
  TORCH_CHECK(t.is_contiguous(), "modulated_conv2d: ", what, " must be contiguous");
  TORCH_CHECK(t.dim() == dim, "modulated_conv2d: ", what, " must have ", dim, " dimensions, got ", t.dim());
}

void check_int32(int64_t v, const char* what) {
  TORCH_CHECK(v >= 0 && v <= INT32_MAX, "modulated_conv2d: ", what, " = ", v, " does not fit the kernel's int32 sizes");
}

cudaStream_t as_stream(int64_t s) { return reinterpret_cast<cudaStream_t>(static_cast<intptr_t>(s)); }

// d (B,O) float32 = rsqrt(Σ_i s² Σ_k W² + eps).
void demod(const torch::Tensor& weight, const torch::Tensor& styles, torch::Tensor& d, double eps, int64_t stream) {
  anyres_fast::begin_launch("modulated_conv2d_demod", {weight, styles, d});
  check_cuda(weight, "weight", 4);
  check_cuda(styles, "styles", 2);
  check_cuda(d, "d", 2);
  TORCH_CHECK(styles.scalar_type() == torch::kFloat32 && d.scalar_type() == torch::kFloat32,
              "modulated_conv2d: styles and d must be float32");
  TORCH_CHECK(styles.size(1) == weight.size(1), "modulated_conv2d: styles/weight channel mismatch");
  TORCH_CHECK(d.size(0) == styles.size(0) && d.size(1) == weight.size(0), "modulated_conv2d: d must be (B,O)");
  for (int64_t v : {weight.size(0), weight.size(1), styles.size(0), weight.size(2) * weight.size(3)}) check_int32(v, "size");
  auto energy = torch::empty({weight.size(0), weight.size(1)}, weight.options().dtype(torch::kFloat32));
  int err = anyres_fast::modulated_conv2d_demod(
      weight.data_ptr(), styles.data_ptr<float>(), energy.data_ptr<float>(), d.data_ptr<float>(), (int)styles.size(0),
      (int)weight.size(0), (int)weight.size(1), (int)(weight.size(2) * weight.size(3)), (float)eps,
      kernel_dtype(weight, "weight"), as_stream(stream));
  anyres_fast::check_launch("modulated_conv2d_demod", err);
}

// out = post · conv_mode(input · pre, W) with W GEMM-ready: weight_gemm (M, kh, kw, Cp) (the Python side
// caches it per weight version: anyres_fast/ops/modulated_conv2d_op.py gemm_weight).
void igemm(const torch::Tensor& input, const torch::Tensor& weight_gemm, const torch::Tensor& pre,
           const torch::Tensor& post, torch::Tensor& out, int64_t mode, int64_t padding, bool exact_fp32,
           int64_t stream) {
  anyres_fast::begin_launch("modulated_conv2d_igemm", {input, weight_gemm, pre, post, out});
  check_cuda(input, "input", 4);
  check_cuda(weight_gemm, "weight_gemm", 4);
  check_cuda(pre, "pre", 2);
  check_cuda(post, "post", 2);
  check_cuda(out, "out", 4);
  auto dtype = kernel_dtype(input, "input");
  TORCH_CHECK(weight_gemm.scalar_type() == input.scalar_type() && out.scalar_type() == input.scalar_type(),
              "modulated_conv2d: input, weight and out must share a dtype");
  TORCH_CHECK(pre.scalar_type() == torch::kFloat32 && post.scalar_type() == torch::kFloat32,
              "modulated_conv2d: pre/post scales must be float32");
  const int64_t b = input.size(0), c = input.size(1), m = weight_gemm.size(0);
  for (int64_t v : {b, c, m, input.size(2), input.size(3), out.size(2), out.size(3), weight_gemm.size(1),
                    weight_gemm.size(2), weight_gemm.size(3)})
    check_int32(v, "size");
  anyres_fast::check_aligned16(weight_gemm, "modulated_conv2d", "weight_gemm");
  TORCH_CHECK(weight_gemm.size(3) == anyres_fast::padded_channels((int)c), "modulated_conv2d: weight_gemm must be (M, kh, kw, ",
              anyres_fast::padded_channels((int)c), ") for ", c, " input channels, got ", weight_gemm.sizes());
  TORCH_CHECK(out.size(0) == b && out.size(1) == m, "modulated_conv2d: out must be (B, ", m, ", H, W)");
  TORCH_CHECK(pre.size(0) == b && pre.size(1) == c, "modulated_conv2d: pre must be (B, C)");
  TORCH_CHECK(post.size(0) == b && post.size(1) == m, "modulated_conv2d: post must be (B, M)");
  TORCH_CHECK(mode >= 0 && mode <= 3, "modulated_conv2d: bad geometry mode ", mode);
  TORCH_CHECK(padding >= 0 && padding < 65536, "modulated_conv2d: bad padding ", padding);
  TORCH_CHECK(input.numel() > 0 && out.numel() > 0 && weight_gemm.numel() > 0, "modulated_conv2d: empty tensor");
  const anyres_fast::ImplicitGemmShape shape = anyres_fast::igemm_shape(input, weight_gemm, out, padding, mode);
  anyres_fast::ImplicitGemmOperands o;
  const auto scratch = anyres_fast::igemm_scratch("modulated_conv2d_igemm", shape, false, input, o);
  o.x = input.data_ptr();
  o.pre = pre.data_ptr<float>();
  o.weight = weight_gemm.data_ptr();
  o.post = post.data_ptr<float>();
  o.out = out.data_ptr();
  int err = anyres_fast::modulated_conv2d_igemm(shape, o, dtype, exact_fp32, as_stream(stream));
  anyres_fast::check_launch("modulated_conv2d_igemm", err);
}

}  // namespace

ANYRES_FAST_BIND(modulated_conv2d) {
  m.def("modulated_conv2d_demod", &demod, "d = rsqrt(sum (W s)^2 + eps)", pybind11::arg("weight"),
        pybind11::arg("styles"), pybind11::arg("d"), pybind11::arg("eps"), pybind11::arg("stream"));
  m.def("igemm_smem_bytes", &anyres_fast::implicit_gemm_smem_bytes,
        "shared memory of one implicit-GEMM CTA (dtype code, exact_fp32, dual)", pybind11::arg("dtype"),
        pybind11::arg("exact_fp32"), pybind11::arg("dual"));
  m.def("igemm_min_arch", &anyres_fast::implicit_gemm_min_arch, "lowest arch (major*10+minor) of the GEMM");
  m.def("modulated_conv2d_igemm", &igemm, "implicit-GEMM modulated convolution", pybind11::arg("input"),
        pybind11::arg("weight_gemm"), pybind11::arg("pre"), pybind11::arg("post"), pybind11::arg("out"),
        pybind11::arg("mode"), pybind11::arg("padding"), pybind11::arg("exact_fp32"), pybind11::arg("stream"));
}
