"""The native pixel-stage kernel for PyTorch CUDA tensors, compiled on first use with torch's cpp_extension
(needs nvcc and a CUDA device). Half-precision inputs are computed in FP32 and cast back."""

from __future__ import annotations

import functools

import torch

from dmfnet_edge.files import package_path

KERNELS = package_path("kernels", "cross_modal_attention")  # package data: works from a wheel too


@functools.lru_cache(maxsize=1)
def _module():
    from torch.utils.cpp_extension import load

    return load(name="dmfnet_cma", sources=[str(KERNELS / "torch_binding.cpp"), str(KERNELS / "cma_kernels.cu")],
                extra_include_paths=[str(KERNELS)], extra_cuda_cflags=["-O3", "--use_fast_math"], verbose=False)


def pixel_attention_fuse(x, y, a_s, a_c, weight, bias) -> torch.Tensor:
    dtype = x.dtype
    args = [t.float() for t in (x, y, a_s, a_c, weight, bias)]
    return _module().pixel_attention_fuse(*args).to(dtype)
