// Binding of the Lanczos resampling kernels: checks tensors, allocates the weight tables (and, when the
// fused forward cannot run, the float32 intermediate), and runs the passes on the stream Python passes in (see
// anyres_fast/ops/lanczos_resample_op.py for the public op and csrc/kernels/lanczos_resample.cu).
#include "binding_registry.h"
#include "kernels/lanczos_resample.cuh"

namespace {

namespace lz = anyres_fast::lanczos;
constexpr const char* kOp = "lanczos_resample";

int elem_type(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32: return lz::kF32;
    case torch::kFloat16: return lz::kF16;
    case torch::kBFloat16: return lz::kBF16;
    default: TORCH_CHECK(false, kOp, ": CUDA kernels take float32, float16 or bfloat16, got ", t.scalar_type());
  }
  return -1;
}

void check_cuda_tensor(const torch::Tensor& t, const char* name, const torch::Device& device) {
  TORCH_CHECK(t.is_cuda(), kOp, ": ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.device() == device, kOp, ": ", name, " is on ", t.device(), ", expected ", device);
  TORCH_CHECK(t.is_contiguous(), kOp, ": ", name, " must be contiguous");
}

void check_boxes(const torch::Tensor& boxes, int64_t batch, const torch::Device& device) {
  check_cuda_tensor(boxes, "boxes", device);
  TORCH_CHECK(boxes.scalar_type() == torch::kFloat64, kOp, ": boxes must be float64");
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(0) == batch && boxes.size(1) == 4, kOp,
              ": boxes must have shape (", batch, ", 4), got ", boxes.sizes());
}

// Device tables of one axis; the tensors own the memory for the lifetime of this object.
struct Tables {
  torch::Tensor lo, count, weights, inv_begin, inv_end;
  lz::AxisTables view;

  // inverse: also the per-input ranges and output-major weights, for the transposed passes.
  Tables(int64_t batch, int64_t in_size, int64_t out_size, int64_t taps, bool inverse, const torch::Device& device) {
    TORCH_CHECK(in_size >= 1 && out_size >= 1 && in_size < (int64_t{1} << 30) && out_size < (int64_t{1} << 30),
                kOp, ": sizes must be in [1, 2^30), got in ", in_size, ", out ", out_size);
    TORCH_CHECK(taps >= 1 && taps <= in_size, kOp, ": taps must be in [1, ", in_size, "], got ", taps);
    auto i32 = torch::TensorOptions().dtype(torch::kInt32).device(device);
    lo = torch::empty({batch, out_size}, i32);
    count = torch::empty({batch, out_size}, i32);
    weights = torch::empty({batch, out_size, taps}, i32.dtype(torch::kFloat32));
    view.lo = lo.data_ptr<int32_t>();
    view.count = count.data_ptr<int32_t>();
    view.weights = weights.data_ptr<float>();
    if (inverse) {
      inv_begin = torch::empty({batch, in_size}, i32);
      inv_end = torch::empty({batch, in_size}, i32);
      view.inv_begin = inv_begin.data_ptr<int32_t>();
      view.inv_end = inv_end.data_ptr<int32_t>();
    }
    view.in_size = static_cast<int>(in_size);
    view.out_size = static_cast<int>(out_size);
    view.taps = static_cast<int>(taps);
    view.k_major = !inverse;
  }
};

void check_bool_vector(const torch::Tensor& t, const char* name, int64_t batch, int64_t n, const torch::Device& device) {
  check_cuda_tensor(t, name, device);
  TORCH_CHECK(t.scalar_type() == torch::kBool, kOp, ": ", name, " must be bool");
  TORCH_CHECK(t.dim() == 2 && t.size(0) == batch && t.size(1) == n, kOp, ": ", name, " must have shape (",
              batch, ", ", n, "), got ", t.sizes());
}

// y = rows pass (H) of cols pass (W) of x; fills valid_rows (B,H_out) and valid_cols (B,W_out).
void forward(const torch::Tensor& x, const torch::Tensor& boxes, const torch::Tensor& y, const torch::Tensor& valid_rows,
             const torch::Tensor& valid_cols, int64_t a, bool antialias, int64_t taps_y, int64_t taps_x, int64_t stream_ptr) {
  anyres_fast::begin_launch(kOp, {x, boxes, y, valid_rows, valid_cols});
  const auto device = x.device();
  check_cuda_tensor(x, "x", device);
  check_cuda_tensor(y, "y", device);
  TORCH_CHECK(x.dim() == 4 && y.dim() == 4, kOp, ": x and y must be 4-D");
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), kOp, ": y dtype must match x");
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t ho = y.size(2), wo = y.size(3);
  TORCH_CHECK(y.size(0) == b && y.size(1) == c, kOp, ": y must have shape (", b, ", ", c, ", H_out, W_out)");
  TORCH_CHECK(x.numel() > 0 && y.numel() > 0, kOp, ": empty tensors");
  TORCH_CHECK(a >= 1 && a <= 64, kOp, ": a must be in [1, 64], got ", a);
  check_boxes(boxes, b, device);
  check_bool_vector(valid_rows, "valid_rows", b, ho, device);
  check_bool_vector(valid_cols, "valid_cols", b, wo, device);
  const int type = elem_type(x);
  auto stream = reinterpret_cast<cudaStream_t>(stream_ptr);

  Tables rows(b, h, ho, taps_y, false, device), cols(b, w, wo, taps_x, false, device);
  rows.view.valid = reinterpret_cast<uint8_t*>(valid_rows.data_ptr<bool>());
  cols.view.valid = reinterpret_cast<uint8_t*>(valid_cols.data_ptr<bool>());
  const double* box = boxes.data_ptr<double>();
  anyres_fast::check_launch(kOp, lz::compute_tables(box, b, 0, static_cast<int>(a), antialias, cols.view, stream));
  anyres_fast::check_launch(kOp, lz::compute_tables(box, b, 1, static_cast<int>(a), antialias, rows.view, stream));

  // Both passes fused through shared memory when the tile's tables fit (no intermediate in global memory).
  const int fused = lz::resample_fused(type, x.data_ptr(), y.data_ptr(), b, c, h, w, ho, wo, rows.view, cols.view,
                                       48 * 1024, stream);
  if (fused != lz::kNotFused) {
    anyres_fast::check_launch(kOp, fused);
    return;
  }
  auto tmp = torch::empty({b, c, h, wo}, x.options().dtype(torch::kFloat32));
  // Along W: planes (b, c, row), Q = 1.
  anyres_fast::check_launch(kOp, lz::resample_axis(type, x.data_ptr(), lz::kF32, tmp.data_ptr(), b * c * h, c * h,
                                                   1, cols.view, stream));
  // Along H: planes (b, c), Q = W_out.
  anyres_fast::check_launch(kOp, lz::resample_axis(lz::kF32, tmp.data_ptr(), type, y.data_ptr(), b * c, c, wo,
                                                   rows.view, stream));
}

// dx = transpose of forward applied to grad (B,C,H_out,W_out); dx is (B,C,H,W).
void backward(const torch::Tensor& grad, const torch::Tensor& boxes, const torch::Tensor& dx, int64_t a, bool antialias,
              int64_t taps_y, int64_t taps_x, int64_t stream_ptr) {
  anyres_fast::begin_launch(kOp, {grad, boxes, dx});
  const auto device = grad.device();
  check_cuda_tensor(grad, "grad", device);
  check_cuda_tensor(dx, "dx", device);
  TORCH_CHECK(grad.dim() == 4 && dx.dim() == 4, kOp, ": grad and dx must be 4-D");
  TORCH_CHECK(grad.scalar_type() == dx.scalar_type(), kOp, ": dx dtype must match grad");
  const int64_t b = dx.size(0), c = dx.size(1), h = dx.size(2), w = dx.size(3);
  const int64_t ho = grad.size(2), wo = grad.size(3);
  TORCH_CHECK(grad.size(0) == b && grad.size(1) == c, kOp, ": grad must have shape (", b, ", ", c, ", H_out, W_out)");
  TORCH_CHECK(grad.numel() > 0 && dx.numel() > 0, kOp, ": empty tensors");
  TORCH_CHECK(a >= 1 && a <= 64, kOp, ": a must be in [1, 64], got ", a);
  check_boxes(boxes, b, device);
  const int type = elem_type(grad);
  auto stream = reinterpret_cast<cudaStream_t>(stream_ptr);

  Tables rows(b, h, ho, taps_y, true, device), cols(b, w, wo, taps_x, true, device);
  const double* box = boxes.data_ptr<double>();
  anyres_fast::check_launch(kOp, lz::compute_tables(box, b, 0, static_cast<int>(a), antialias, cols.view, stream));
  anyres_fast::check_launch(kOp, lz::compute_tables(box, b, 1, static_cast<int>(a), antialias, rows.view, stream));
  anyres_fast::check_launch(kOp, lz::compute_inverse_ranges(b, cols.view, stream));
  anyres_fast::check_launch(kOp, lz::compute_inverse_ranges(b, rows.view, stream));

  auto tmp = torch::empty({b, c, h, wo}, grad.options().dtype(torch::kFloat32));
  // Transpose of the H pass: (B,C,H_out,W_out) -> (B,C,H,W_out).
  anyres_fast::check_launch(kOp, lz::resample_axis_transpose(type, grad.data_ptr(), lz::kF32, tmp.data_ptr(), b * c,
                                                             c, wo, rows.view, stream));
  // Transpose of the W pass: (B,C,H,W_out) -> (B,C,H,W).
  anyres_fast::check_launch(kOp, lz::resample_axis_transpose(lz::kF32, tmp.data_ptr(), type, dx.data_ptr(), b * c * h,
                                                             c * h, 1, cols.view, stream));
}

}  // namespace

ANYRES_FAST_BIND(lanczos_resample) {
  m.def("lanczos_resample_forward", &forward, "Lanczos resampling forward (see anyres_fast.ops.lanczos_resample)",
        pybind11::arg("x"), pybind11::arg("boxes"), pybind11::arg("y"), pybind11::arg("valid_rows"),
        pybind11::arg("valid_cols"), pybind11::arg("a"), pybind11::arg("antialias"), pybind11::arg("taps_y"),
        pybind11::arg("taps_x"), pybind11::arg("stream"));
  m.def("lanczos_resample_backward", &backward, "Lanczos resampling backward (transpose of both passes)",
        pybind11::arg("grad"), pybind11::arg("boxes"), pybind11::arg("dx"), pybind11::arg("a"),
        pybind11::arg("antialias"), pybind11::arg("taps_y"), pybind11::arg("taps_x"), pybind11::arg("stream"));
}
