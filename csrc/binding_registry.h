// Each op's binding file (csrc/bindings/<op>.cpp) registers itself here at load time, so adding an op
// means adding files, not editing a central list.
#pragma once
#include <torch/extension.h>

#include <cstdint>
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

}  // namespace anyres_fast

// Usage in csrc/bindings/foo.cpp:  ANYRES_FAST_BIND(foo) { m.def("foo_forward", ...); }
#define ANYRES_FAST_BIND(name)                                                              \
  static void anyres_fast_bind_##name(pybind11::module_& m);                                \
  static ::anyres_fast::RegisterBinder anyres_fast_register_##name(#name, anyres_fast_bind_##name); \
  static void anyres_fast_bind_##name(pybind11::module_& m)
