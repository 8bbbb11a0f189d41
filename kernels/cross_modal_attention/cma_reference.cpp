// CPU reference of the fused cross-modal attention built from the same cma_math.h expressions as the CUDA
// kernels. Exposed with a C ABI so that the test suite can compare it with the PyTorch module (ctypes).
#include <algorithm>
#include <cfloat>
#include <cstddef>
#include <vector>

#include "cma_math.h"

extern "C" int dmfnet_cma_reference(const float* x, const float* y, float* out, int n, int c, int h, int w,
                                    int reduced, const float* w1, const float* b1, const float* w2,
                                    const float* b2, const float* spatial_w, float spatial_b,
                                    const float* pixel_w, const float* pixel_b) {
  if (n < 1 || c < 1 || h < 1 || w < 1 || reduced < 1) return 1;
  const size_t hw = (size_t)h * w;
  std::vector<float> stats(2 * hw), a_s(hw), gap(c), hidden(reduced), a_c(c);
  for (int b = 0; b < n; ++b) {
    const float* xb = x + (size_t)b * c * hw;
    const float* yb = y + (size_t)b * c * hw;
    for (size_t p = 0; p < hw; ++p) {
      float sum = 0.0f, peak = -FLT_MAX;
      for (int k = 0; k < c; ++k) {
        const float s = xb[k * hw + p] + yb[k * hw + p];
        sum += s;
        peak = std::max(peak, s);
      }
      stats[p] = sum / c;
      stats[hw + p] = peak;
    }
    for (int k = 0; k < c; ++k) {
      double sum = 0.0;
      for (size_t p = 0; p < hw; ++p) sum += xb[k * hw + p] + yb[k * hw + p];
      gap[k] = (float)(sum / hw);
    }
    for (int r = 0; r < reduced; ++r) {
      float acc = b1[r];
      for (int k = 0; k < c; ++k) acc += w1[(size_t)r * c + k] * gap[k];
      hidden[r] = std::max(acc, 0.0f);
    }
    for (int k = 0; k < c; ++k) {
      float acc = b2[k];
      for (int r = 0; r < reduced; ++r) acc += w2[(size_t)k * reduced + r] * hidden[r];
      a_c[k] = acc;
    }
    for (int i = 0; i < h; ++i)
      for (int j = 0; j < w; ++j)
        a_s[(size_t)i * w + j] = dmfnet::spatial_attention_at(stats.data(), h, w, i, j, spatial_w, spatial_b);
    float* ob = out + (size_t)b * c * hw;
    for (int k = 0; k < c; ++k)
      for (int i = 0; i < h; ++i)
        for (int j = 0; j < w; ++j)
          ob[k * hw + (size_t)i * w + j] =
              dmfnet::fused_at(xb, yb, a_s.data(), a_c[k], h, w, k, i, j, pixel_w, pixel_b[k]);
  }
  return 0;
}

extern "C" int dmfnet_pixel_attention_fuse_reference(const float* x, const float* y, const float* a_s,
                                                     const float* a_c, const float* pixel_w, const float* pixel_b,
                                                     float* out, int n, int c, int h, int w) {
  if (n < 1 || c < 1 || h < 1 || w < 1) return 1;
  const size_t hw = (size_t)h * w;
  for (int b = 0; b < n; ++b)
    for (int k = 0; k < c; ++k)
      for (int i = 0; i < h; ++i)
        for (int j = 0; j < w; ++j)
          out[((size_t)b * c + k) * hw + (size_t)i * w + j] =
              dmfnet::fused_at(x + (size_t)b * c * hw, y + (size_t)b * c * hw, a_s + (size_t)b * hw,
                               a_c[(size_t)b * c + k], h, w, k, i, j, pixel_w, pixel_b[k]);
  return 0;
}
