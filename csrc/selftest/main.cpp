// Runs every registered kernel self-test; exit code = number of failures (0 = all passed).
#include <cuda_runtime_api.h>

#include "selftest.h"

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: the self-tests need a GPU\n");
    return 77;  // ctest's conventional "skipped"
  }
  int failed = 0;
  for (auto& [name, fn] : anyres_fast::selftest::registry()) {
    int rc = fn();
    std::printf("%-32s %s\n", name.c_str(), rc == 0 ? "PASS" : "FAIL");
    failed += rc != 0;
  }
  std::printf("%zu passed, %d failed\n", anyres_fast::selftest::registry().size() - failed, failed);
  return failed;
}
