// Runs the TensorRT plugin kernel (kernels/cross_modal_attention/cma_plugin.cu) on the CPU with the launch TensorRT
// would make: every block of the grid, every thread of a block, the kernel's arguments in TensorRT's order (input
// pointers, extra int32 arguments, output pointer). Built with AddressSanitizer by tests/build/test_tensorrt_api.py:
// each buffer is allocated at exactly its tensor's size, so a grid or an argument that makes the kernel read or
// write outside a tensor stops the run with a report instead of passing silently.
//
//   aot_launch_emulator GX GY GZ BX BY BZ SHARED EXTRAS(comma-separated) IN0 ... IN5 OUT OUT_ELEMENTS
// INi are raw float32 files (read at their own size); OUT is written, its elements first set to NaN so that an
// element no thread wrote stays visible.
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
static dim3 blockIdx, threadIdx, blockDim;  // the CUDA built-ins the kernel reads

#define __global__
#include "cma_plugin.cu"

namespace {

std::vector<float>* read_floats(const char* path) {
  FILE* f = std::fopen(path, "rb");
  if (f == nullptr) return nullptr;
  std::fseek(f, 0, SEEK_END);
  const long bytes = std::ftell(f);
  std::fseek(f, 0, SEEK_SET);
  auto* data = new std::vector<float>(static_cast<size_t>(bytes) / sizeof(float));
  const size_t got = std::fread(data->data(), sizeof(float), data->size(), f);
  std::fclose(f);
  if (got != data->size()) return nullptr;
  data->shrink_to_fit();  // capacity == size: AddressSanitizer sees the tensor's exact bounds
  return data;
}

std::vector<int> parse_extras(const char* text) {
  std::vector<int> values;
  std::string item;
  for (const char* c = text;; ++c) {
    if (*c == ',' || *c == '\0') {
      if (!item.empty()) values.push_back(std::atoi(item.c_str()));
      item.clear();
      if (*c == '\0') break;
    } else {
      item += *c;
    }
  }
  return values;
}

}  // namespace

int main(int argc, char** argv) {
  constexpr int kInputs = 6, kExtras = 4;
  if (argc != 9 + kInputs + 2) {
    std::fprintf(stderr, "usage: GX GY GZ BX BY BZ SHARED EXTRAS IN0..IN5 OUT OUT_ELEMENTS\n");
    return 2;
  }
  const unsigned grid[3] = {(unsigned)std::atoi(argv[1]), (unsigned)std::atoi(argv[2]), (unsigned)std::atoi(argv[3])};
  blockDim = {(unsigned)std::atoi(argv[4]), (unsigned)std::atoi(argv[5]), (unsigned)std::atoi(argv[6])};
  const std::vector<int> extras = parse_extras(argv[8]);
  if (extras.size() != kExtras) {
    std::fprintf(stderr, "the kernel takes %d int32 arguments, the launch passes %zu\n", kExtras, extras.size());
    return 3;
  }
  std::vector<float>* in[kInputs];
  for (int i = 0; i < kInputs; ++i) {
    in[i] = read_floats(argv[9 + i]);
    if (in[i] == nullptr) return 4;
  }
  auto* out = new std::vector<float>(static_cast<size_t>(std::atol(argv[16])), NAN);
  out->shrink_to_fit();
  for (blockIdx.z = 0; blockIdx.z < grid[2]; ++blockIdx.z)
    for (blockIdx.y = 0; blockIdx.y < grid[1]; ++blockIdx.y)
      for (blockIdx.x = 0; blockIdx.x < grid[0]; ++blockIdx.x)
        for (threadIdx.z = 0; threadIdx.z < blockDim.z; ++threadIdx.z)
          for (threadIdx.y = 0; threadIdx.y < blockDim.y; ++threadIdx.y)
            for (threadIdx.x = 0; threadIdx.x < blockDim.x; ++threadIdx.x)
              dmfnet_pixel_attention_fuse_aot(in[0]->data(), in[1]->data(), in[2]->data(), in[3]->data(),
                                              in[4]->data(), in[5]->data(), extras[0], extras[1], extras[2],
                                              extras[3], out->data());
  FILE* f = std::fopen(argv[15], "wb");
  if (f == nullptr || std::fwrite(out->data(), sizeof(float), out->size(), f) != out->size()) return 5;
  std::fclose(f);
  for (auto* v : in) delete v;
  delete out;
  return 0;
}
