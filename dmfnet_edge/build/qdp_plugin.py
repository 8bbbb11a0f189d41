"""The fused pixel stage as a TensorRT quickly deployable plugin (tensorrt.plugin) with an AOT kernel.

`register()` declares `dmfnet::DmfnetPixelAttentionFuse` (the node `dmfnet-export onnx --trt-plugins` writes):
output shape = x's, FP32 linear I/O, and an ahead-of-time implementation whose PTX comes from
kernels/cross_modal_attention/cma_kernels.cu (entry `dmfnet_pixel_attention_fuse_aot`). The PTX is embedded in
the engine, so running it needs neither Python nor this module (trtexec or a C++ runtime can load it).
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from dmfnet_edge._optional import require
from dmfnet_edge.errors import EnvironmentProblem
from dmfnet_edge.models.kernels import PLUGIN_NAMESPACE, PLUGIN_OP

KERNELS = Path(__file__).resolve().parents[2] / "kernels" / "cross_modal_attention"
KERNEL_NAME = "dmfnet_pixel_attention_fuse_aot"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_OP}"
BLOCK = 256


@functools.lru_cache(maxsize=4)
def compile_ptx(arch: str = "compute_80") -> bytes:
    """PTX of the plugin kernel (nvcc -ptx), cached per process."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise EnvironmentProblem("building the TensorRT plugin kernel needs nvcc (the CUDA toolkit) on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cma.ptx"
        subprocess.run([nvcc, "-ptx", f"-arch={arch}", "-O3", "-I", str(KERNELS), str(KERNELS / "cma_kernels.cu"),
                        "-o", str(out)], check=True, capture_output=True)
        ptx = out.read_bytes()
    if f".entry {KERNEL_NAME}".encode() not in ptx:
        raise RuntimeError(f"{KERNEL_NAME} is missing from the compiled PTX")
    return ptx


def plugin_record() -> dict[str, str]:
    """What an engine manifest records about the embedded plugin."""
    return {"kind": "tensorrt.plugin AOT (PTX embedded in the engine)", "op": PLUGIN_ID, "kernel": KERNEL_NAME,
            "ptx_sha256": hashlib.sha256(compile_ptx()).hexdigest()}


@functools.lru_cache(maxsize=1)
def register() -> None:
    """Declare the plugin to TensorRT (idempotent)."""
    require("tensorrt", extra="trt", purpose="TensorRT plugins")
    import tensorrt.plugin as trtp

    @trtp.register(PLUGIN_ID)
    def _shape(x: trtp.TensorDesc, y: trtp.TensorDesc, a_s: trtp.TensorDesc, a_c: trtp.TensorDesc,
               weight: trtp.TensorDesc, bias: trtp.TensorDesc) -> trtp.TensorDesc:
        return x.like()

    @trtp.autotune(PLUGIN_ID)
    def _formats(x, y, a_s, a_c, weight, bias, outputs) -> list:
        return [trtp.AutoTuneCombination("FP32, FP32, FP32, FP32, FP32, FP32, FP32")]

    @trtp.aot_impl(PLUGIN_ID)
    def _aot(x, y, a_s, a_c, weight, bias, outputs, tactic):
        dims = x.shape_expr  # N, C, H, W
        per_item = dims[1] * dims[2] * dims[3]
        launch = trtp.KernelLaunchParams()
        launch.grid_x = trtp.cdiv(per_item, BLOCK)
        launch.grid_y = dims[0]
        launch.block_x = BLOCK
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in (dims[1], dims[2], dims[3], per_item)])
        return KERNEL_NAME.encode(), compile_ptx(), launch, extra
