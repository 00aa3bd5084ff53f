// Each op's binding file (csrc/bindings/<op>.cpp) registers itself here at load time, so adding an op
// means adding files, not editing a central list.
#pragma once
#include <torch/extension.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace anyres_fast {

using Binder = void (*)(pybind11::module_&);

inline std::vector<std::pair<std::string, Binder>>& binders() {
  static std::vector<std::pair<std::string, Binder>> list;
  return list;
}

struct RegisterBinder {
  RegisterBinder(const char* name, Binder fn) { binders().emplace_back(name, fn); }
};

// Throws a Python RuntimeError naming the op when a launcher reports a CUDA error.
void check_launch(const char* op, int cuda_error_code);

// First call of every binding function, before any launch:
//  - every defined tensor must be a CUDA tensor, all on one device (a kernel gets raw pointers, so a
//    tensor on another GPU would be read through the wrong device's address space);
//  - a CUDA error left pending by earlier work (cudaGetLastError is per host thread and returns the first
//    unchecked error of any earlier runtime call) is taken off the error state here, so that the
//    cudaGetLastError after this op's launches reports this op's own error. A non-sticky one is cleared
//    and reported as a RuntimeWarning naming it as earlier work's; a sticky one (the context is
//    unusable) raises a RuntimeError that says it comes from before this op.
void begin_launch(const char* op, std::initializer_list<std::reference_wrapper<const at::Tensor>> tensors);

}  // namespace anyres_fast

// Usage in csrc/bindings/foo.cpp:  ANYRES_FAST_BIND(foo) { m.def("foo_forward", ...); }
#define ANYRES_FAST_BIND(name)                                                              \
  static void anyres_fast_bind_##name(pybind11::module_& m);                                \
  static ::anyres_fast::RegisterBinder anyres_fast_register_##name(#name, anyres_fast_bind_##name); \
  static void anyres_fast_bind_##name(pybind11::module_& m)
