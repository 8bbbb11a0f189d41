// PyTorch binding of the pixel-stage kernel (dmfnet::pixel_attention_fuse on CUDA tensors). The tensors must lie
// on one device; the kernel is launched on that device and its current stream (a device guard: the caller's
// current device may be another one).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include "cma_kernels.h"

torch::Tensor pixel_attention_fuse(torch::Tensor x, torch::Tensor y, torch::Tensor a_s, torch::Tensor a_c,
                                   torch::Tensor weight, torch::Tensor bias) {
  for (const auto& t : {x, y, a_s, a_c, weight, bias}) {
    TORCH_CHECK(t.is_cuda() && t.scalar_type() == torch::kFloat32, "expected float32 CUDA tensors");
    TORCH_CHECK(t.device() == x.device(), "all tensors must be on one device, got ", t.device(), " and ",
                x.device());
  }
  const c10::cuda::CUDAGuard device_guard(x.device());
  TORCH_CHECK(x.dim() == 4 && x.sizes() == y.sizes(), "x and y must be (N, C, H, W) of one shape");
  const auto n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  TORCH_CHECK(a_s.numel() == n * h * w && a_c.numel() == n * c, "attention maps have the wrong size");
  TORCH_CHECK(weight.numel() == c * 18 && bias.numel() == c, "pixel conv weights must be (C, 2, 3, 3) and (C)");
  auto xc = x.contiguous(), yc = y.contiguous(), sc = a_s.contiguous(), cc = a_c.contiguous();
  auto wc = weight.contiguous(), bc = bias.contiguous();
  auto out = torch::empty_like(xc);
  const auto err = dmfnet::pixel_attention_fuse(xc.data_ptr<float>(), yc.data_ptr<float>(), sc.data_ptr<float>(),
                                                cc.data_ptr<float>(), wc.data_ptr<float>(), bc.data_ptr<float>(),
                                                out.data_ptr<float>(), n, c, h, w,
                                                at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "pixel_attention_fuse launch failed: ", cudaGetErrorString(err));
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("pixel_attention_fuse", &pixel_attention_fuse); }
