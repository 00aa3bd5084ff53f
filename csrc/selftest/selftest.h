// Tiny registry for the C++ self-tests: each csrc/selftest/<op>_selftest.cu registers a function that
// runs its kernel on a GPU against a plain CPU loop and returns 0 on success.
#pragma once
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace anyres_fast::selftest {

using TestFn = int (*)();

inline std::vector<std::pair<std::string, TestFn>>& registry() {
  static std::vector<std::pair<std::string, TestFn>> tests;
  return tests;
}

struct Register {
  Register(const char* name, TestFn fn) { registry().emplace_back(name, fn); }
};

}  // namespace anyres_fast::selftest

#define ANYRES_FAST_SELFTEST(name)                                                        \
  static int anyres_fast_selftest_##name();                                               \
  static ::anyres_fast::selftest::Register anyres_fast_selftest_reg_##name(#name,         \
                                                                 anyres_fast_selftest_##name); \
  static int anyres_fast_selftest_##name()
