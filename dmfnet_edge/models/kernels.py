"""The fused cross-modal attention pixel stage as a PyTorch custom op, `dmfnet::pixel_attention_fuse`.

The op replaces the interleave -> grouped 3x3 conv -> sigmoid -> weighting -> fusion chain of
CrossModalAttention with one kernel (kernels/cross_modal_attention/). Its CPU implementation here is the
PyTorch composition of the same math, so the op runs and exports everywhere; the CUDA implementation is the
native kernel, compiled on first use on a CUDA machine (torch.utils.cpp_extension). For ONNX it exports as one
node `DmfnetPixelAttentionFuse` with `plugin_namespace = "dmfnet"`, the TensorRT plugin contract; that graph is
for TensorRT only (ONNX Runtime has no such op).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from dmfnet_edge.contract import PLUGIN_NAMESPACE, PLUGIN_OP, PLUGIN_VERSION


def attention_maps(module, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A_s (N, 1, H, W) and A_c (N, C, 1, 1) of a CrossModalAttention for s = x + y."""
    spatial_in = torch.cat([s.mean(dim=1, keepdim=True), s.amax(dim=1, keepdim=True)], dim=1)
    return module.spatial(spatial_in), module.channel(s)


def pixel_attention_fuse_reference(x: torch.Tensor, y: torch.Tensor, a_s: torch.Tensor, a_c: torch.Tensor,
                                   weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """F = w x + (1 - w) y + x + y with w = s * sigmoid(grouped_conv3x3_reflect(interleave(s, A_s + A_c)))."""
    n, c, h, w = x.shape
    s = x + y
    p1 = a_s + a_c
    interleaved = torch.stack([s, p1.expand_as(s)], dim=2).reshape(n, 2 * c, h, w)
    padded = F.pad(interleaved, (1, 1, 1, 1), mode="reflect")
    weighted = s * torch.sigmoid(F.conv2d(padded, weight, bias, groups=c))
    return weighted * x + (1 - weighted) * y + x + y


@torch.library.custom_op("dmfnet::pixel_attention_fuse", mutates_args=())
def pixel_attention_fuse(x: torch.Tensor, y: torch.Tensor, a_s: torch.Tensor, a_c: torch.Tensor,
                         weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    if x.is_cuda:
        from dmfnet_edge.models import cuda_extension

        return cuda_extension.pixel_attention_fuse(x, y, a_s, a_c, weight, bias)
    return pixel_attention_fuse_reference(x, y, a_s, a_c, weight, bias)


@pixel_attention_fuse.register_fake
def _(x, y, a_s, a_c, weight, bias):
    return torch.empty_like(x)


def _onnx_symbolic(g, x, y, a_s, a_c, weight, bias):
    out = g.op(f"{PLUGIN_NAMESPACE}::{PLUGIN_OP}", x, y, a_s, a_c, weight, bias,
               plugin_namespace_s=PLUGIN_NAMESPACE, plugin_version_s=PLUGIN_VERSION)
    out.setType(x.type())
    return out


def register_onnx_symbolic(opset: int) -> None:
    """Let the TorchScript-based ONNX exporter emit the plugin node for the custom op."""
    torch.onnx.register_custom_op_symbolic("dmfnet::pixel_attention_fuse", _onnx_symbolic, opset)
