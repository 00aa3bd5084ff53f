// Self-test of the fused filtered_lrelu kernel against a direct CPU loop: forward output (NaN-poisoned
// before the launch, so unwritten elements fail) and the sign record.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "kernels/filtered_lrelu.cuh"
#include "selftest.h"

namespace {

struct Lcg {  // deterministic inputs without <random> differences across platforms
  uint32_t s = 12345;
  float next() {
    s = s * 1664525u + 1013904223u;
    return float(s >> 8) / float(1 << 24) * 2.f - 1.f;
  }
};

// Direct CPU evaluation of the kernel's definition (filters in correlation order, 2-D row-major).
void cpu_forward(const std::vector<float>& x, int C, int H, int W, const std::vector<float>& bias,
                 const std::vector<float>& fu2, int fuw, int fuh, const std::vector<float>& fd2, int fdw, int fdh,
                 int up, int down, int px0, int py0, int outh, int outw, float gain, float slope, float clamp,
                 std::vector<float>& y, std::vector<uint8_t>& codes, int sh, int sw) {
  const int bufh = (outh - 1) * down + fdh, bufw = (outw - 1) * down + fdw;
  std::vector<float> a(size_t(bufh) * bufw);
  for (int c = 0; c < C; ++c) {
    for (int i = 0; i < bufh; ++i)
      for (int j = 0; j < bufw; ++j) {
        double acc = 0;
        for (int ky = 0; ky < fuh; ++ky)
          for (int kx = 0; kx < fuw; ++kx) {
            int my = i + ky - py0, mx = j + kx - px0;
            if (my < 0 || mx < 0 || my % up || mx % up) continue;
            int iy = my / up, ix = mx / up;
            if (iy >= H || ix >= W) continue;
            acc += double(x[(size_t(c) * H + iy) * W + ix] + bias[c]) * fu2[ky * fuw + kx];
          }
        float v = float(acc) * float(up * up);
        float av = (v > 0.f ? v : v * slope) * gain;
        uint8_t code = v > 0.f ? 0 : 1;
        if (std::fabs(av) > clamp) {
          av = std::copysign(clamp, av);
          code = 2;
        }
        a[size_t(i) * bufw + j] = av;
        if (i < sh && j < sw) codes[(size_t(c) * sh + i) * sw + j] = code;
      }
    for (int oi = 0; oi < outh; ++oi)
      for (int oj = 0; oj < outw; ++oj) {
        double acc = 0;
        for (int ky = 0; ky < fdh; ++ky)
          for (int kx = 0; kx < fdw; ++kx)
            acc += double(a[size_t(oi * down + ky) * bufw + oj * down + kx]) * fd2[ky * fdw + kx];
        y[(size_t(c) * outh + oi) * outw + oj] = float(acc);
      }
  }
}

#define CHECK_CUDA(call)                                                               \
  do {                                                                                 \
    cudaError_t e_ = (call);                                                           \
    if (e_ != cudaSuccess) {                                                           \
      std::printf("filtered_lrelu selftest: %s: %s\n", #call, cudaGetErrorString(e_)); \
      return 1;                                                                        \
    }                                                                                  \
  } while (0)

}  // namespace

int selftest_filtered_lrelu() {
  const int N = 1, C = 3, H = 21, W = 19, up = 2, down = 2, taps = 12, px0 = 9, px1 = 8, py0 = 9, py1 = 8;
  const float gain = 1.41421356f, slope = 0.2f, clamp = 1.5f;
  const int bufw = W * up + px0 + px1 - (taps - 1), bufh = H * up + py0 + py1 - (taps - 1);
  const int outw = (bufw - taps) / down + 1, outh = (bufh - taps) / down + 1;
  const int sw = (outw - 1) * down + taps, sh = (outh - 1) * down + taps, row_bytes = (sw + 15) / 16 * 4;

  Lcg rng;
  std::vector<float> x(size_t(N) * C * H * W), bias(C), f(taps);
  for (auto& v : x) v = rng.next();
  for (auto& v : bias) v = 0.3f * rng.next();
  for (auto& v : f) v = 0.3f * rng.next() + 0.1f;
  std::vector<float> f2(size_t(taps) * taps);
  for (int i = 0; i < taps; ++i)
    for (int j = 0; j < taps; ++j) f2[i * taps + j] = f[i] * f[j];

  std::vector<float> y_ref(size_t(C) * outh * outw), y(y_ref.size());
  std::vector<uint8_t> codes(size_t(C) * sh * sw);
  cpu_forward(x, C, H, W, bias, f2, taps, taps, f2, taps, taps, up, down, px0, py0, outh, outw, gain, slope, clamp,
              y_ref, codes, sh, sw);

  float *dx = nullptr, *db = nullptr, *df = nullptr, *dy = nullptr;
  uint8_t* ds = nullptr;
  const size_t sign_bytes = size_t(C) * sh * row_bytes;
  CHECK_CUDA(cudaMalloc(&dx, x.size() * 4));
  CHECK_CUDA(cudaMalloc(&db, bias.size() * 4));
  CHECK_CUDA(cudaMalloc(&df, f.size() * 4));
  CHECK_CUDA(cudaMalloc(&dy, y.size() * 4));
  CHECK_CUDA(cudaMalloc(&ds, sign_bytes));
  CHECK_CUDA(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(db, bias.data(), bias.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(df, f.data(), f.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemset(ds, 0, sign_bytes));
  CHECK_CUDA(cudaMemset(dy, 0xff, y.size() * 4));  // NaN poison: every output must be written

  anyres_fast::FilteredLReluParams p;
  p.x = dx;
  p.x_stride_w = 1;
  p.x_stride_h = W;
  p.x_stride_c = int64_t(H) * W;
  p.x_stride_n = int64_t(C) * H * W;
  p.N = N; p.C = C; p.in_h = H; p.in_w = W;
  p.bias = db;
  p.fu = df; p.fu_w = p.fu_h = taps; p.fu_separable = true;
  p.fd = df; p.fd_w = p.fd_h = taps; p.fd_separable = true;
  p.y = dy; p.out_h = outh; p.out_w = outw;
  p.up = up; p.down = down; p.pad_x0 = px0; p.pad_y0 = py0;
  p.gain = gain; p.slope = slope; p.clamp = clamp;
  p.sign_mode = anyres_fast::kSignWrite;
  p.signs = ds; p.sign_h = sh; p.sign_w = sw; p.sign_row_bytes = row_bytes;
  (void)px1; (void)py1;
  int rc = anyres_fast::filtered_lrelu_launch(p, anyres_fast::DType::f32, nullptr);
  if (rc != 0) {
    std::printf("filtered_lrelu selftest: launch returned %d\n", rc);
    return 1;
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<uint8_t> signs(sign_bytes);
  CHECK_CUDA(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(signs.data(), ds, sign_bytes, cudaMemcpyDeviceToHost));
  cudaFree(dx); cudaFree(db); cudaFree(df); cudaFree(dy); cudaFree(ds);

  double num = 0, den = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) {
      std::printf("filtered_lrelu selftest: output %zu not written / not finite\n", i);
      return 1;
    }
    num += double(y[i] - y_ref[i]) * (y[i] - y_ref[i]);
    den += double(y_ref[i]) * y_ref[i];
  }
  const double rel = std::sqrt(num / den);
  int code_mismatch = 0;
  for (int c = 0; c < C; ++c)
    for (int i = 0; i < sh; ++i)
      for (int j = 0; j < sw; ++j) {
        int got = (signs[(size_t(c) * sh + i) * row_bytes + j / 4] >> (2 * (j % 4))) & 3;
        code_mismatch += got != codes[(size_t(c) * sh + i) * sw + j];
      }
  std::printf("filtered_lrelu selftest: rel err %.3e, sign mismatches %d of %d\n", rel, code_mismatch, C * sh * sw);
  // a code may legitimately differ where v is within rounding of 0 or of the clamp level
  return (rel <= 1e-5 && code_mismatch <= C * sh * sw / 1000) ? 0 : 1;
}

ANYRES_FAST_SELFTEST(filtered_lrelu) { return selftest_filtered_lrelu(); }
