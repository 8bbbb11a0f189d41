// CUDA kernels of the fused cross-modal attention. One launcher, four small kernels:
//   stats   per pixel: channel mean and max of s = x + y           (N, 2, H, W)
//   gap     per channel: spatial mean of s                         (N, C)
//   mlp     per batch item: A_c = W2 relu(W1 gap + b1) + b2        (N, C)
//   spatial per pixel: A_s = 7x7 reflect conv of the stats          (N, H, W)
//   fuse    per element: grouped 3x3 pixel attention, sigmoid, weighted fusion (never materialises the
//           interleaved 2C tensor, P2 or w, which the PyTorch module writes to memory)
#include "cma_kernels.h"
#include "cma_math.h"

#include <float.h>

namespace dmfnet {
namespace {

constexpr int kThreads = 256;

__global__ void stats_kernel(const float* x, const float* y, float* stats, int c, int hw) {
  const int n = blockIdx.y;
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= hw) return;
  const float* xn = x + (size_t)n * c * hw;
  const float* yn = y + (size_t)n * c * hw;
  float sum = 0.0f, peak = -FLT_MAX;
  for (int k = 0; k < c; ++k) {
    const float s = xn[(size_t)k * hw + p] + yn[(size_t)k * hw + p];
    sum += s;
    peak = fmaxf(peak, s);
  }
  stats[(size_t)n * 2 * hw + p] = sum / c;
  stats[(size_t)n * 2 * hw + hw + p] = peak;
}

__global__ void gap_kernel(const float* x, const float* y, float* gap, int hw) {
  const size_t base = (size_t)blockIdx.x * hw;  // one block per (n, c)
  __shared__ float partial[kThreads];
  float sum = 0.0f;
  for (int p = threadIdx.x; p < hw; p += blockDim.x) sum += x[base + p] + y[base + p];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) gap[blockIdx.x] = partial[0] / hw;
}

__global__ void mlp_kernel(const float* gap, float* a_c, int c, int reduced, CrossModalAttentionWeights wts) {
  extern __shared__ float hidden[];
  const int n = blockIdx.x;
  const float* g = gap + (size_t)n * c;
  for (int r = threadIdx.x; r < reduced; r += blockDim.x) {
    float acc = wts.channel_b1[r];
    for (int k = 0; k < c; ++k) acc += wts.channel_w1[(size_t)r * c + k] * g[k];
    hidden[r] = fmaxf(acc, 0.0f);
  }
  __syncthreads();
  for (int k = threadIdx.x; k < c; k += blockDim.x) {
    float acc = wts.channel_b2[k];
    for (int r = 0; r < reduced; ++r) acc += wts.channel_w2[(size_t)k * reduced + r] * hidden[r];
    a_c[(size_t)n * c + k] = acc;
  }
}

__global__ void spatial_kernel(const float* stats, float* a_s, int h, int w, CrossModalAttentionWeights wts) {
  const int n = blockIdx.y;
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= h * w) return;
  a_s[(size_t)n * h * w + p] =
      spatial_attention_at(stats + (size_t)n * 2 * h * w, h, w, p / w, p % w, wts.spatial_w, wts.spatial_b);
}

__global__ void fuse_kernel(const float* x, const float* y, const float* a_s, const float* a_c, float* out, int c,
                            int h, int w, const float* pixel_w, const float* pixel_b) {
  const int hw = h * w;
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  const size_t per_item = (size_t)c * hw;
  const int n = blockIdx.y;
  if (i >= per_item) return;
  const int ch = (int)(i / hw);
  const int p = (int)(i % hw);
  const size_t item = (size_t)n * per_item;
  out[item + i] = fused_at(x + item, y + item, a_s + (size_t)n * hw, a_c[(size_t)n * c + ch], h, w, ch, p / w,
                           p % w, pixel_w, pixel_b[ch]);
}

}  // namespace

size_t cross_modal_attention_workspace(int n, int c, int h, int w) {
  return sizeof(float) * ((size_t)n * 3 * h * w + (size_t)n * 2 * c);
}

cudaError_t cross_modal_attention(const float* x, const float* y, float* out, int n, int c, int h, int w,
                                  int reduced, const CrossModalAttentionWeights& weights, void* workspace,
                                  cudaStream_t stream) {
  const int hw = h * w;
  float* stats = static_cast<float*>(workspace);
  float* a_s = stats + (size_t)n * 2 * hw;
  float* gap = a_s + (size_t)n * hw;
  float* a_c = gap + (size_t)n * c;
  const dim3 pixels((hw + kThreads - 1) / kThreads, n);
  stats_kernel<<<pixels, kThreads, 0, stream>>>(x, y, stats, c, hw);
  gap_kernel<<<n * c, kThreads, 0, stream>>>(x, y, gap, hw);
  mlp_kernel<<<n, 128, sizeof(float) * reduced, stream>>>(gap, a_c, c, reduced, weights);
  spatial_kernel<<<pixels, kThreads, 0, stream>>>(stats, a_s, h, w, weights);
  return pixel_attention_fuse(x, y, a_s, a_c, weights.pixel_w, weights.pixel_b, out, n, c, h, w, stream);
}

cudaError_t pixel_attention_fuse(const float* x, const float* y, const float* a_s, const float* a_c,
                                 const float* pixel_w, const float* pixel_b, float* out, int n, int c, int h, int w,
                                 cudaStream_t stream) {
  const dim3 elements((unsigned)(((size_t)c * h * w + kThreads - 1) / kThreads), n);
  fuse_kernel<<<elements, kThreads, 0, stream>>>(x, y, a_s, a_c, out, c, h, w, pixel_w, pixel_b);
  return cudaGetLastError();
}

}  // namespace dmfnet
