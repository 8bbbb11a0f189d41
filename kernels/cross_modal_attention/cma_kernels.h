// Launcher of the fused cross-modal attention (see cma_math.h for the math). No TensorRT, no PyTorch.
#pragma once

#include <cuda_runtime.h>

namespace dmfnet {

struct CrossModalAttentionWeights {
  const float* channel_w1;  // (R, C)   1x1 conv C -> R (R = C / reduction)
  const float* channel_b1;  // (R)
  const float* channel_w2;  // (C, R)   1x1 conv R -> C
  const float* channel_b2;  // (C)
  const float* spatial_w;   // (2, 7, 7)
  float spatial_b;
  const float* pixel_w;     // (C, 2, 3, 3) grouped conv, groups = C
  const float* pixel_b;     // (C)
};

// Workspace bytes needed for a (N, C, H, W) problem: stats (N, 2, H, W), A_s (N, H, W), gap (N, C), A_c (N, C).
size_t cross_modal_attention_workspace(int n, int c, int h, int w);

// out = F(x, y) for contiguous NCHW float32 tensors on the device. Returns cudaSuccess or the launch error.
cudaError_t cross_modal_attention(const float* x, const float* y, float* out, int n, int c, int h, int w,
                                  int reduced, const CrossModalAttentionWeights& weights, void* workspace,
                                  cudaStream_t stream);

// The pixel stage alone (the TensorRT plugin and the PyTorch custom op): given A_s (N, 1, H, W) and A_c (N, C),
// out = F(x, y) through the grouped 3x3 pixel attention, the sigmoid and the weighted fusion in one kernel.
cudaError_t pixel_attention_fuse(const float* x, const float* y, const float* a_s, const float* a_c,
                                 const float* pixel_w, const float* pixel_b, float* out, int n, int c, int h, int w,
                                 cudaStream_t stream);

}  // namespace dmfnet
