// Binding of the fused filtered_lrelu kernel: checks tensors, fills FilteredLReluParams, launches.
// Called from anyres_fast/ops/filtered_lrelu_op.py (_launch), which prepares the filters (float32,
// contiguous; *_reverse = read the taps reversed, i.e. convolve), allocates y (and, in write mode, an
// uninitialised sign record: the kernel writes every word of it, row padding included) and sets the
// device guard.
#include "binding_registry.h"
#include "kernels/filtered_lrelu.cuh"

#include <cmath>
#include <cstdint>

namespace {

using anyres_fast::DType;

DType to_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::f32;
    case at::kHalf: return DType::f16;
    case at::kBFloat16: return DType::bf16;
    default:
      TORCH_CHECK(false, "filtered_lrelu: x has dtype ", t.scalar_type(),
                  "; the CUDA kernel takes float32, float16, bfloat16");
  }
  return DType::f32;
}

void check_filter(const at::Tensor& f, const char* name, const at::Tensor& x) {
  TORCH_CHECK(f.is_cuda() && f.device() == x.device(), "filtered_lrelu: ", name, " must be on ", x.device());
  TORCH_CHECK(f.scalar_type() == at::kFloat, "filtered_lrelu: ", name, " must be float32");
  TORCH_CHECK(f.is_contiguous(), "filtered_lrelu: ", name, " must be contiguous");
  TORCH_CHECK(f.dim() == 1 || f.dim() == 2, "filtered_lrelu: ", name, " must be 1-D or 2-D");
  TORCH_CHECK(f.numel() > 0, "filtered_lrelu: ", name, " must not be empty");
  if (f.dim() == 1) {
    TORCH_CHECK(f.size(0) <= anyres_fast::kFilteredLReluMaxTaps1D, "filtered_lrelu: ", name, " has ", f.size(0),
                " taps; the kernel takes at most ", anyres_fast::kFilteredLReluMaxTaps1D);
  } else {
    TORCH_CHECK(f.size(0) <= anyres_fast::kFilteredLReluMaxTaps2D && f.size(1) <= anyres_fast::kFilteredLReluMaxTaps2D,
                "filtered_lrelu: ", name, " is ", f.size(0), "x", f.size(1), "; the kernel takes at most ",
                anyres_fast::kFilteredLReluMaxTaps2D, "x", anyres_fast::kFilteredLReluMaxTaps2D);
  }
}

void set_filter(const at::Tensor& f, const float*& ptr, int& w, int& h, bool& separable) {
  ptr = f.data_ptr<float>();
  separable = f.dim() == 1;
  w = int(f.size(f.dim() - 1));
  h = separable ? w : int(f.size(0));
}

// x [N,C,H,W] (any strides); b [C] or empty; fu, fd float32 filters; y [N,C,Hy,Wy] contiguous, x's dtype;
// signs uint8 [N,C,Hs,row_bytes] contiguous (write/read) or empty (none).
void filtered_lrelu(const at::Tensor& x, const at::Tensor& b, const at::Tensor& fu, const at::Tensor& fd,
                    bool fu_reverse, bool fd_reverse, const at::Tensor& y, const at::Tensor& signs, int64_t up,
                    int64_t down, int64_t pad_x0, int64_t pad_y0,
                    double gain, double slope, double clamp, int64_t sign_mode, int64_t sign_w,
                    int64_t sign_ofs_x, int64_t sign_ofs_y, int64_t stream) {
  anyres_fast::begin_launch("filtered_lrelu", {x, b, fu, fd, y, signs});
  constexpr int64_t kIntMax = 0x7fffffff;
  TORCH_CHECK(x.dim() == 4, "filtered_lrelu: x must be 4-D [N, C, H, W]");
  TORCH_CHECK(x.numel() > 0, "filtered_lrelu: x must not be empty");
  const DType dtype = to_dtype(x);
  check_filter(fu, "fu", x);
  check_filter(fd, "fd", x);
  TORCH_CHECK(y.is_cuda() && y.device() == x.device() && y.scalar_type() == x.scalar_type() && y.is_contiguous() &&
                  y.dim() == 4 && y.size(0) == x.size(0) && y.size(1) == x.size(1) && y.numel() > 0,
              "filtered_lrelu: y must be a contiguous [N, C, Hy, Wy] tensor like x");
  const bool has_bias = b.numel() > 0;
  if (has_bias) {
    TORCH_CHECK(b.is_cuda() && b.device() == x.device() && b.scalar_type() == x.scalar_type() && b.dim() == 1 &&
                    b.size(0) == x.size(1) && b.is_contiguous(),
                "filtered_lrelu: b must be a contiguous [C] tensor with x's dtype and device");
  }
  TORCH_CHECK(x.size(0) * x.size(1) <= kIntMax && x.size(2) <= kIntMax && x.size(3) <= kIntMax,
              "filtered_lrelu: x is too large");
  TORCH_CHECK(std::isfinite(gain) && std::isfinite(slope) && !std::isnan(clamp) && clamp >= 0,
              "filtered_lrelu: gain and slope must be finite and clamp >= 0 (inf for none)");
  TORCH_CHECK(sign_mode >= 0 && sign_mode <= 2, "filtered_lrelu: bad sign mode ", sign_mode);

  anyres_fast::FilteredLReluParams p;
  p.x = x.data_ptr();
  p.x_stride_n = x.stride(0);
  p.x_stride_c = x.stride(1);
  p.x_stride_h = x.stride(2);
  p.x_stride_w = x.stride(3);
  p.N = int(x.size(0));
  p.C = int(x.size(1));
  p.in_h = int(x.size(2));
  p.in_w = int(x.size(3));
  p.bias = has_bias ? b.data_ptr() : nullptr;
  set_filter(fu, p.fu, p.fu_w, p.fu_h, p.fu_separable);
  set_filter(fd, p.fd, p.fd_w, p.fd_h, p.fd_separable);
  p.fu_reverse = fu_reverse;
  p.fd_reverse = fd_reverse;
  p.y = y.data_ptr();
  TORCH_CHECK(y.size(2) <= kIntMax && y.size(3) <= kIntMax, "filtered_lrelu: y is too large");
  p.out_h = int(y.size(2));
  p.out_w = int(y.size(3));
  // range checks before the int casts, so a huge value cannot wrap into a valid one
  TORCH_CHECK(up >= 1 && up <= kIntMax && down >= 1 && down <= kIntMax, "filtered_lrelu: bad up/down ", up, "/", down);
  p.up = int(up);
  p.down = int(down);
  auto in_half_range = [&](int64_t v) { return v >= -kIntMax / 2 && v <= kIntMax / 2; };
  TORCH_CHECK(in_half_range(pad_x0) && in_half_range(pad_y0), "filtered_lrelu: padding too large");
  p.pad_x0 = int(pad_x0);
  p.pad_y0 = int(pad_y0);
  p.gain = float(gain);
  p.slope = float(slope);
  p.clamp = float(clamp);
  p.sign_mode = int(sign_mode);
  if (sign_mode != anyres_fast::kSignNone) {
    TORCH_CHECK(signs.is_cuda() && signs.device() == x.device() && signs.scalar_type() == at::kByte &&
                    signs.is_contiguous() && signs.dim() == 4 && signs.size(0) == x.size(0) &&
                    signs.size(1) == x.size(1) && signs.numel() > 0,
                "filtered_lrelu: signs must be a contiguous uint8 [N, C, Hs, row_bytes] tensor on x's device");
    TORCH_CHECK(signs.size(2) <= kIntMax && signs.size(3) <= kIntMax / 4 && sign_w > 0 && sign_w <= 4 * signs.size(3),
                "filtered_lrelu: sign record sizes do not match (width ", sign_w, ", ", signs.size(3),
                " bytes per row)");
    // write mode stores 32-bit words: a view at an odd offset would fault (sticky misaligned address)
    TORCH_CHECK(sign_mode != anyres_fast::kSignWrite || reinterpret_cast<uintptr_t>(signs.data_ptr()) % 4 == 0,
                "filtered_lrelu: signs must be 4-byte aligned in write mode (the kernel stores 32-bit words); got a "
                "view at byte offset ", signs.storage_offset(), "; pass a fresh tensor");
    p.signs = signs.data_ptr<uint8_t>();
    p.sign_h = int(signs.size(2));
    p.sign_row_bytes = int(signs.size(3));
    p.sign_w = int(sign_w);
    TORCH_CHECK(in_half_range(sign_ofs_x) && in_half_range(sign_ofs_y), "filtered_lrelu: sign offsets too large");
    p.sign_ofs_x = int(sign_ofs_x);
    p.sign_ofs_y = int(sign_ofs_y);
  }
  const int rc = anyres_fast::filtered_lrelu_launch(p, dtype, reinterpret_cast<cudaStream_t>(stream));
  TORCH_CHECK(rc != anyres_fast::kFilteredLReluBadParams,
              "filtered_lrelu: parameters rejected by the kernel (up/down must be 1, 2 or 4; filter taps within "
              "limits; sign record sizes must match the output)");
  TORCH_CHECK(rc != anyres_fast::kFilteredLReluTooLarge,
              "filtered_lrelu: the configuration needs more shared memory or grid rows than the device offers");
  anyres_fast::check_launch("filtered_lrelu", rc);
}

}  // namespace

ANYRES_FAST_BIND(filtered_lrelu) {
  m.def("filtered_lrelu", &filtered_lrelu,
        "Fused filtered leaky ReLU (forward; backward in sign-read mode). See csrc/kernels/filtered_lrelu.cuh.",
        pybind11::arg("x"), pybind11::arg("b"), pybind11::arg("fu"), pybind11::arg("fd"),
        pybind11::arg("fu_reverse"), pybind11::arg("fd_reverse"), pybind11::arg("y"),
        pybind11::arg("signs"), pybind11::arg("up"), pybind11::arg("down"), pybind11::arg("pad_x0"),
        pybind11::arg("pad_y0"), pybind11::arg("gain"), pybind11::arg("slope"), pybind11::arg("clamp"),
        pybind11::arg("sign_mode"), pybind11::arg("sign_w"), pybind11::arg("sign_ofs_x"),
        pybind11::arg("sign_ofs_y"), pybind11::arg("stream"));
}
