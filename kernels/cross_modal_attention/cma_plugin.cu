// The TensorRT plugin kernel: the entry TensorRT's quickly deployable plugin launches ahead of time
// (dmfnet_edge/build/qdp_plugin.py compiles this file alone to PTX and embeds it in the engine).
//
// TensorRT passes the input pointers, then the extra int32 arguments, then the output pointer:
//   x, y (N, C, H, W), a_s (N, 1, H, W), a_c (N, C, 1, 1), pixel_w (C, 2, 3, 3), pixel_b (C),
//   c, h, w, per_item = C * H * W, out (N, C, H, W).
// Grid (ceil(per_item / 256), N), block 256: one thread per output element of one batch item.
//
// Only `cma_math.h` is included, so the same body also compiles as host C++ (the test suite's launch
// emulator defines the CUDA built-ins and runs TensorRT's grid on the CPU).
#include "cma_math.h"

extern "C" __global__ void dmfnet_pixel_attention_fuse_aot(const float* x, const float* y, const float* a_s,
                                                           const float* a_c, const float* pixel_w,
                                                           const float* pixel_b, int c, int h, int w, int per_item,
                                                           float* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= per_item) return;
  const int hw = h * w;
  const int ch = i / hw;
  const int p = i % hw;
  const size_t item = (size_t)blockIdx.y * per_item;
  out[item + i] = dmfnet::fused_at(x + item, y + item, a_s + (size_t)blockIdx.y * hw,
                                   a_c[(size_t)blockIdx.y * c + ch], h, w, ch, p / w, p % w, pixel_w, pixel_b[ch]);
}
