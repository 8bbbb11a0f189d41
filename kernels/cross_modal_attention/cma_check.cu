// The CUDA kernels on a GPU against the CPU reference (cma_reference.cpp, the same per-element math), for
// benchmarks/gpu_check.py, which runs it plain and under compute-sanitizer memcheck:
//   pixel_stage    pixel_attention_fuse (the launcher the PyTorch op and the IPluginV3 glue call)
//   plugin_entry   dmfnet_pixel_attention_fuse_aot launched as TensorRT launches the AOT plugin: grid
//                  (ceil(C*H*W / 256), N), block 256, arguments x y a_s a_c weight bias, c h w per_item, out
//   whole_module   cross_modal_attention (stats, GAP, channel MLP, spatial conv, pixel stage)
// Prints one JSON object: the largest absolute error of each over several shapes (square, wide, tiny planes where
// reflect padding wraps, a batch of 3). Exit 0 when every launch succeeded, 1 on a CUDA error.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cma_kernels.h"
#include "cma_plugin.cu"

extern "C" int dmfnet_cma_reference(const float* x, const float* y, float* out, int n, int c, int h, int w,
                                    int reduced, const float* w1, const float* b1, const float* w2,
                                    const float* b2, const float* spatial_w, float spatial_b,
                                    const float* pixel_w, const float* pixel_b);
extern "C" int dmfnet_pixel_attention_fuse_reference(const float* x, const float* y, const float* a_s,
                                                     const float* a_c, const float* pixel_w, const float* pixel_b,
                                                     float* out, int n, int c, int h, int w);

namespace {

#define CHECK(call)                                                                      \
  do {                                                                                   \
    const cudaError_t err_ = (call);                                                     \
    if (err_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

struct Random {
  unsigned state;
  float next(float scale) {  // uniform in [-scale, scale)
    state = state * 1664525u + 1013904223u;
    return scale * (2.0f * (state >> 8) / 16777216.0f - 1.0f);
  }
  std::vector<float> vec(size_t n, float scale) {
    std::vector<float> v(n);
    for (auto& e : v) e = next(scale);
    return v;
  }
};

struct Device {  // a device copy of a host vector, freed with it
  float* ptr = nullptr;
  size_t n = 0;
  explicit Device(const std::vector<float>& host) : n(host.size()) {
    CHECK(cudaMalloc(&ptr, n * sizeof(float)));
    CHECK(cudaMemcpy(ptr, host.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  }
  explicit Device(size_t count) : n(count) { CHECK(cudaMalloc(&ptr, n * sizeof(float))); }
  ~Device() { cudaFree(ptr); }
  std::vector<float> host() const {
    std::vector<float> v(n);
    CHECK(cudaMemcpy(v.data(), ptr, n * sizeof(float), cudaMemcpyDeviceToHost));
    return v;
  }
};

float max_error(const std::vector<float>& a, const std::vector<float>& b) {
  float worst = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) worst = std::fmax(worst, std::fabs(a[i] - b[i]));
  return std::isfinite(worst) ? worst : INFINITY;
}

std::string json_number(float v) {  // "Infinity" for an error that is not finite (Python's json reads it)
  if (!std::isfinite(v)) return "Infinity";
  char text[32];
  std::snprintf(text, sizeof(text), "%.3g", v);
  return text;
}

struct Errors {
  float pixel_stage = 0, plugin_entry = 0, whole_module = 0;
};

void check_shape(int n, int c, int h, int w, Random& rnd, Errors& errors) {
  const int reduced = c / 4 > 0 ? c / 4 : 1;
  const size_t size = (size_t)n * c * h * w;
  auto x = rnd.vec(size, 1), y = rnd.vec(size, 1), a_s = rnd.vec((size_t)n * h * w, 1);
  auto a_c = rnd.vec((size_t)n * c, 1), pw = rnd.vec((size_t)c * 18, 0.3f), pb = rnd.vec(c, 0.3f);
  auto w1 = rnd.vec((size_t)reduced * c, 0.3f), b1 = rnd.vec(reduced, 0.3f), w2 = rnd.vec((size_t)c * reduced, 0.3f);
  auto b2 = rnd.vec(c, 0.3f), sw = rnd.vec(98, 0.3f);
  const float sb = rnd.next(0.3f);

  std::vector<float> expected(size);
  dmfnet_pixel_attention_fuse_reference(x.data(), y.data(), a_s.data(), a_c.data(), pw.data(), pb.data(),
                                        expected.data(), n, c, h, w);
  Device dx(x), dy(y), ds(a_s), dc(a_c), dpw(pw), dpb(pb), out(size);
  CHECK(dmfnet::pixel_attention_fuse(dx.ptr, dy.ptr, ds.ptr, dc.ptr, dpw.ptr, dpb.ptr, out.ptr, n, c, h, w, 0));
  CHECK(cudaDeviceSynchronize());
  errors.pixel_stage = std::fmax(errors.pixel_stage, max_error(out.host(), expected));

  const int per_item = c * h * w;
  Device aot(size);
  dmfnet_pixel_attention_fuse_aot<<<dim3((per_item + 255) / 256, n), 256>>>(dx.ptr, dy.ptr, ds.ptr, dc.ptr, dpw.ptr,
                                                                          dpb.ptr, c, h, w, per_item, aot.ptr);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  errors.plugin_entry = std::fmax(errors.plugin_entry, max_error(aot.host(), expected));

  dmfnet_cma_reference(x.data(), y.data(), expected.data(), n, c, h, w, reduced, w1.data(), b1.data(), w2.data(),
                       b2.data(), sw.data(), sb, pw.data(), pb.data());
  Device dw1(w1), db1(b1), dw2(w2), db2(b2), dsw(sw), workspace(dmfnet::cross_modal_attention_workspace(n, c, h, w) /
                                                                   sizeof(float));
  const dmfnet::CrossModalAttentionWeights weights{dw1.ptr, db1.ptr, dw2.ptr, db2.ptr, dsw.ptr, sb, dpw.ptr, dpb.ptr};
  Device whole(size);
  CHECK(dmfnet::cross_modal_attention(dx.ptr, dy.ptr, whole.ptr, n, c, h, w, reduced, weights, workspace.ptr, 0));
  CHECK(cudaDeviceSynchronize());
  errors.whole_module = std::fmax(errors.whole_module, max_error(whole.host(), expected));
}

}  // namespace

int main() {
  Random rnd{12345u};
  Errors errors;
  const int shapes[][4] = {{1, 16, 64, 64}, {3, 8, 24, 40}, {2, 32, 5, 9}, {1, 256, 16, 16}, {1, 4, 1, 7}};
  for (const auto& s : shapes) check_shape(s[0], s[1], s[2], s[3], rnd, errors);
  std::printf("{\"pixel_stage\": %s, \"plugin_entry\": %s, \"whole_module\": %s, \"shapes\": %zu}\n",
              json_number(errors.pixel_stage).c_str(), json_number(errors.plugin_entry).c_str(),
              json_number(errors.whole_module).c_str(), sizeof(shapes) / sizeof(shapes[0]));
  return 0;
}
