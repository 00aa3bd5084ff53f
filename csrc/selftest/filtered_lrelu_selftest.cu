// Self-test of the fused filtered_lrelu kernel against a direct CPU loop: forward output (NaN-poisoned
// before the launch, so unwritten elements fail) and the sign record. The cases span several tiles in x
// and y and several (n, c) planes (tile seams, sign-record ownership), separable and 2-D filters, reversed
// taps, and one configuration above 48 KB of dynamic shared memory (the opt-in attribute path).
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

struct Case {
  const char* name;
  int N, C, H, W, up, down;
  int fu_w, fu_h;
  bool fu_sep, fu_rev;
  int fd_w, fd_h;
  bool fd_sep, fd_rev;
  int px0, px1, py0, py1;
  float clamp;
};

// A filter as the kernel gets it (1-D taps when separable, else row-major [h][w]) and as the CPU loop
// uses it: 2-D row-major in correlation order (outer product when separable; reversed when `rev`).
struct Filter {
  std::vector<float> taps, dense;
};

Filter make_filter(Lcg& rng, int w, int h, bool sep, bool rev) {
  Filter f;
  f.taps.resize(sep ? w : size_t(w) * h);
  for (auto& v : f.taps) v = 0.3f * rng.next() + 0.1f;
  std::vector<float> t = f.taps;
  if (rev) t.assign(f.taps.rbegin(), f.taps.rend());
  f.dense.resize(size_t(w) * h);
  for (int i = 0; i < h; ++i)
    for (int j = 0; j < w; ++j) f.dense[size_t(i) * w + j] = sep ? t[i] * t[j] : t[size_t(i) * w + j];
  return f;
}

// Direct CPU evaluation of the kernel's definition (see filtered_lrelu.cuh), all planes.
void cpu_forward(const std::vector<float>& x, int planes, int C, int H, int W, const std::vector<float>& bias,
                 const std::vector<float>& fu2, int fuw, int fuh, const std::vector<float>& fd2, int fdw, int fdh,
                 int up, int down, int px0, int py0, int outh, int outw, float gain, float slope, float clamp,
                 std::vector<float>& y, std::vector<uint8_t>& codes, int sh, int sw) {
  const int bufh = (outh - 1) * down + fdh, bufw = (outw - 1) * down + fdw;
  std::vector<float> a(size_t(bufh) * bufw);
  for (int pl = 0; pl < planes; ++pl) {
    const int c = pl % C;
    for (int i = 0; i < bufh; ++i)
      for (int j = 0; j < bufw; ++j) {
        double acc = 0;
        for (int ky = 0; ky < fuh; ++ky)
          for (int kx = 0; kx < fuw; ++kx) {
            int my = i + ky - py0, mx = j + kx - px0;
            if (my < 0 || mx < 0 || my % up || mx % up) continue;
            int iy = my / up, ix = mx / up;
            if (iy >= H || ix >= W) continue;
            acc += double(x[(size_t(pl) * H + iy) * W + ix] + bias[c]) * fu2[size_t(ky) * fuw + kx];
          }
        float v = float(acc) * float(up * up);
        float av = (v > 0.f ? v : v * slope) * gain;
        uint8_t code = v > 0.f ? 0 : 1;
        if (std::fabs(av) > clamp) {
          av = std::copysign(clamp, av);
          code = 2;
        }
        a[size_t(i) * bufw + j] = av;
        if (i < sh && j < sw) codes[(size_t(pl) * sh + i) * sw + j] = code;
      }
    for (int oi = 0; oi < outh; ++oi)
      for (int oj = 0; oj < outw; ++oj) {
        double acc = 0;
        for (int ky = 0; ky < fdh; ++ky)
          for (int kx = 0; kx < fdw; ++kx)
            acc += double(a[size_t(oi * down + ky) * bufw + oj * down + kx]) * fd2[size_t(ky) * fdw + kx];
        y[(size_t(pl) * outh + oi) * outw + oj] = float(acc);
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

int run_case(const Case& k) {
  const float gain = 1.41421356f, slope = 0.2f;
  const int bufw = k.W * k.up + k.px0 + k.px1 - (k.fu_w - 1), bufh = k.H * k.up + k.py0 + k.py1 - (k.fu_h - 1);
  const int outw = (bufw - k.fd_w) / k.down + 1, outh = (bufh - k.fd_h) / k.down + 1;
  const int sw = (outw - 1) * k.down + k.fd_w, sh = (outh - 1) * k.down + k.fd_h, row_bytes = (sw + 15) / 16 * 4;
  const int planes = k.N * k.C;

  Lcg rng;
  std::vector<float> x(size_t(planes) * k.H * k.W), bias(k.C);
  for (auto& v : x) v = rng.next();
  for (auto& v : bias) v = 0.3f * rng.next();
  const Filter fu = make_filter(rng, k.fu_w, k.fu_h, k.fu_sep, k.fu_rev);
  const Filter fd = make_filter(rng, k.fd_w, k.fd_h, k.fd_sep, k.fd_rev);

  std::vector<float> y_ref(size_t(planes) * outh * outw), y(y_ref.size());
  std::vector<uint8_t> codes(size_t(planes) * sh * sw);
  cpu_forward(x, planes, k.C, k.H, k.W, bias, fu.dense, k.fu_w, k.fu_h, fd.dense, k.fd_w, k.fd_h, k.up, k.down,
              k.px0, k.py0, outh, outw, gain, slope, k.clamp, y_ref, codes, sh, sw);

  float *dx = nullptr, *db = nullptr, *dfu = nullptr, *dfd = nullptr, *dy = nullptr;
  uint8_t* ds = nullptr;
  const size_t sign_bytes = size_t(planes) * sh * row_bytes;
  CHECK_CUDA(cudaMalloc(&dx, x.size() * 4));
  CHECK_CUDA(cudaMalloc(&db, bias.size() * 4));
  CHECK_CUDA(cudaMalloc(&dfu, fu.taps.size() * 4));
  CHECK_CUDA(cudaMalloc(&dfd, fd.taps.size() * 4));
  CHECK_CUDA(cudaMalloc(&dy, y.size() * 4));
  CHECK_CUDA(cudaMalloc(&ds, sign_bytes));
  CHECK_CUDA(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(db, bias.data(), bias.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dfu, fu.taps.data(), fu.taps.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dfd, fd.taps.data(), fd.taps.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemset(ds, 0xff, sign_bytes));  // garbage: the kernel must write every word of the record
  CHECK_CUDA(cudaMemset(dy, 0xff, y.size() * 4));  // NaN poison: every output must be written

  anyres_fast::FilteredLReluParams p;
  p.x = dx;
  p.x_stride_w = 1;
  p.x_stride_h = k.W;
  p.x_stride_c = int64_t(k.H) * k.W;
  p.x_stride_n = int64_t(k.C) * k.H * k.W;
  p.N = k.N; p.C = k.C; p.in_h = k.H; p.in_w = k.W;
  p.bias = db;
  p.fu = dfu; p.fu_w = k.fu_w; p.fu_h = k.fu_h; p.fu_separable = k.fu_sep; p.fu_reverse = k.fu_rev;
  p.fd = dfd; p.fd_w = k.fd_w; p.fd_h = k.fd_h; p.fd_separable = k.fd_sep; p.fd_reverse = k.fd_rev;
  p.y = dy; p.out_h = outh; p.out_w = outw;
  p.up = k.up; p.down = k.down; p.pad_x0 = k.px0; p.pad_y0 = k.py0;
  p.gain = gain; p.slope = slope; p.clamp = k.clamp;
  p.sign_mode = anyres_fast::kSignWrite;
  p.signs = ds; p.sign_h = sh; p.sign_w = sw; p.sign_row_bytes = row_bytes;
  const anyres_fast::FilteredLReluTile tile = anyres_fast::filtered_lrelu_tile(p, k.down == 4 ? 16 : 32,
                                                                                k.down == 4 ? 16 : 32);
  int rc = anyres_fast::filtered_lrelu_launch(p, anyres_fast::DType::f32, nullptr);
  if (rc != 0) {
    std::printf("filtered_lrelu selftest [%s]: launch returned %d\n", k.name, rc);
    return 1;
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<uint8_t> signs(sign_bytes);
  CHECK_CUDA(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(signs.data(), ds, sign_bytes, cudaMemcpyDeviceToHost));
  cudaFree(dx); cudaFree(db); cudaFree(dfu); cudaFree(dfd); cudaFree(dy); cudaFree(ds);

  double num = 0, den = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) {
      std::printf("filtered_lrelu selftest [%s]: output %zu not written / not finite\n", k.name, i);
      return 1;
    }
    num += double(y[i] - y_ref[i]) * (y[i] - y_ref[i]);
    den += double(y_ref[i]) * y_ref[i];
  }
  const double rel = std::sqrt(num / den);
  int code_mismatch = 0, padding_nonzero = 0;
  for (int pl = 0; pl < planes; ++pl)
    for (int i = 0; i < sh; ++i) {
      const uint8_t* row = &signs[(size_t(pl) * sh + i) * row_bytes];
      for (int j = 0; j < sw; ++j) code_mismatch += ((row[j / 4] >> (2 * (j % 4))) & 3) != codes[(size_t(pl) * sh + i) * sw + j];
      for (int j = sw; j < row_bytes * 4; ++j) padding_nonzero += ((row[j / 4] >> (2 * (j % 4))) & 3) != 0;
    }
  const int total = planes * sh * sw;
  std::printf("filtered_lrelu selftest [%s]: %dx%d out, grid ~%dx%dx%d, smem %zu B, rel err %.3e, sign mismatches "
              "%d of %d, nonzero padding codes %d\n",
              k.name, outh, outw, (outw + tile.tile_w - 1) / tile.tile_w, (outh + tile.tile_h - 1) / tile.tile_h, planes,
              tile.smem_bytes, rel, code_mismatch, total, padding_nonzero);
  // a code may legitimately differ where v is within rounding of 0 or of the clamp level
  return (rel <= 1e-5 && code_mismatch <= total / 1000 && padding_nonzero == 0) ? 0 : 1;
}

int selftest_filtered_lrelu() {
  const float inf = INFINITY;
  const Case cases[] = {
      // StyleGAN3-T-like up2/down2, 12 taps; 2x2 tiles of 32, 6 planes
      {"sep up2 down2", 2, 3, 45, 41, 2, 2, 12, 12, true, true, 12, 12, true, true, 9, 8, 9, 8, 1.5f},
      // down 4 with a 16-tap fd: 50 KB of dynamic shared memory in write mode (> 48 KB opt-in); 3x2 tiles
      {"sep up2 down4 >48KB", 1, 2, 40, 70, 2, 4, 12, 12, true, false, 16, 16, true, false, 8, 8, 8, 8, inf},
      // full 2-D filters, non-square fd, reversed taps, asymmetric padding; 2x3 tiles
      {"2-D up4 down1", 1, 2, 20, 15, 4, 1, 8, 6, false, true, 5, 3, false, false, 1, 2, 3, 0, 0.9f},
  };
  int failed = 0;
  for (const Case& k : cases) failed += run_case(k);
  return failed;
}

}  // namespace

ANYRES_FAST_SELFTEST(filtered_lrelu) { return selftest_filtered_lrelu(); }
