// The extension module: collects the per-op bindings registered by csrc/bindings/*.cpp.
// Kernels (csrc/kernels) never see torch; bindings check tensors and pass raw pointers + the stream.
#include "binding_registry.h"

#include <cuda_runtime_api.h>

namespace anyres_fast {

void check_launch(const char* op, int cuda_error_code) {
  if (cuda_error_code != 0) {
    auto err = static_cast<cudaError_t>(cuda_error_code);
    throw std::runtime_error(std::string(op) + ": CUDA error " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
  }
}

void begin_launch(const char* op, std::initializer_list<std::reference_wrapper<const at::Tensor>> tensors) {
  const at::Tensor* first = nullptr;
  for (const at::Tensor& t : tensors) {
    if (!t.defined()) continue;
    TORCH_CHECK(t.is_cuda(), op, ": every tensor must be a CUDA tensor, got one on ", t.device());
    if (first == nullptr) first = &t;
    TORCH_CHECK(t.device() == first->device(), op, ": all tensors must be on one device, got ", first->device(),
                " and ", t.device());
  }
  const cudaError_t pending = cudaGetLastError();  // consumes a non-sticky error
  if (pending == cudaSuccess) return;
  const std::string what = std::string(cudaGetErrorName(pending)) + ": " + cudaGetErrorString(pending);
  if (cudaPeekAtLastError() != cudaSuccess)  // still set: sticky, every later launch fails too
    throw std::runtime_error(std::string(op) + ": not launched: a CUDA error from earlier work (before this op) "
                             "has left the context unusable: " + what);
  const std::string message = std::string(op) + ": a CUDA error from earlier work (before this op) was pending "
                              "and has been cleared; it was not caused by this op: " + what;
  if (PyErr_WarnEx(PyExc_RuntimeWarning, message.c_str(), 1) != 0) throw pybind11::error_already_set();
}

}  // namespace anyres_fast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "anyres_fast CUDA kernels";
  std::vector<std::string> names;
  for (auto& [name, bind] : anyres_fast::binders()) {
    bind(m);
    names.push_back(name);
  }
  m.attr("bound_ops") = names;
  m.def("cuda_runtime_version", [] {
    int v = 0;
    cudaRuntimeGetVersion(&v);
    return v;
  });
}
