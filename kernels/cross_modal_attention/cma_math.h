// Per-element math of the cross-modal attention fusion (DM-FNet module M2), shared by the CUDA kernels and
// the CPU reference harness so that both evaluate exactly the same expressions.
//
// Tensors are contiguous NCHW float32. For one batch item n:
//   s = x + y                                  (C, H, W)
//   stats[0] = mean_c s, stats[1] = max_c s    (2, H, W)
//   A_s = conv7x7_reflect(stats) + b_s          (H, W)
//   A_c = W2 relu(W1 gap(s) + b1) + b2          (C)
//   P2 = sigmoid(grouped conv3x3_reflect over interleave(s, A_s + A_c) + b_p)
//   w = s * P2;  F = w x + (1 - w) y + x + y
#pragma once

#if defined(__CUDACC__)
#define DMFNET_HD __host__ __device__ __forceinline__
#else
#define DMFNET_HD inline
#endif

#include <math.h>
#include <stddef.h>

namespace dmfnet {

// PyTorch 'reflect' padding: mirror about the edge pixel without repeating it.
DMFNET_HD int reflect_index(int i, int n) {
  if (n == 1) return 0;
  while (i < 0 || i >= n) {
    if (i < 0) i = -i;
    if (i >= n) i = 2 * n - 2 - i;
  }
  return i;
}

DMFNET_HD float sigmoidf_(float v) { return 1.0f / (1.0f + expf(-v)); }

// Spatial attention at (h, w): 7x7 conv (2 -> 1 channel) over the reflect-padded channel mean/max maps.
DMFNET_HD float spatial_attention_at(const float* stats, int H, int W, int h, int w, const float* weight,
                                     float bias) {
  float acc = bias;
  for (int k = 0; k < 2; ++k) {
    const float* map = stats + (size_t)k * H * W;
    for (int dy = -3; dy <= 3; ++dy) {
      const int hh = reflect_index(h + dy, H);
      for (int dx = -3; dx <= 3; ++dx) {
        const int ww = reflect_index(w + dx, W);
        acc += weight[(k * 7 + (dy + 3)) * 7 + (dx + 3)] * map[(size_t)hh * W + ww];
      }
    }
  }
  return acc;
}

// The fused output F at (c, h, w) of one batch item. pixel_weight is (C, 2, 3, 3): for every channel c the
// grouped conv sees the pair (s_c, P1_c) in that order.
DMFNET_HD float fused_at(const float* x, const float* y, const float* a_s, float a_c, int H, int W, int c, int h,
                         int w, const float* pixel_weight, float pixel_bias) {
  const size_t plane = (size_t)H * W;
  const float* xc = x + c * plane;
  const float* yc = y + c * plane;
  const float* wc = pixel_weight + (size_t)c * 18;
  float acc = pixel_bias;
  for (int dy = -1; dy <= 1; ++dy) {
    const int hh = reflect_index(h + dy, H);
    for (int dx = -1; dx <= 1; ++dx) {
      const int ww = reflect_index(w + dx, W);
      const size_t at = (size_t)hh * W + ww;
      const int tap = (dy + 1) * 3 + (dx + 1);
      acc += wc[tap] * (xc[at] + yc[at]) + wc[9 + tap] * (a_s[at] + a_c);
    }
  }
  const size_t here = (size_t)h * W + w;
  const float xv = xc[here], yv = yc[here];
  const float weight = (xv + yv) * sigmoidf_(acc);
  return weight * xv + (1.0f - weight) * yv + xv + yv;
}

}  // namespace dmfnet
