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
