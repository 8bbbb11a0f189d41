"""The fused pixel stage as a TensorRT quickly deployable plugin (tensorrt.plugin) with an AOT kernel.

`register()` declares `dmfnet::DmfnetPixelAttentionFuse` (the node `dmfnet-export onnx --trt-plugins` writes):
output shape = x's, FP32 linear I/O, and an ahead-of-time implementation whose PTX comes from
kernels/cross_modal_attention/cma_kernels.cu (entry `dmfnet_pixel_attention_fuse_aot`). The PTX is embedded in
the engine, so running it needs neither Python nor this module (trtexec or a C++ runtime can load it). Full
TensorRT only: TensorRT for RTX has no plugin layers.

No `from __future__ import annotations` here: tensorrt.plugin validates the decorated functions' annotations
as real types (TensorDesc arguments first, `List[AutoTuneCombination]`, the AOT return tuple), and string
annotations fail its checks.
"""

import functools
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

from dmfnet_edge._optional import require
from dmfnet_edge.contract import PLUGIN_ID
from dmfnet_edge.errors import EnvironmentProblem
from dmfnet_edge.files import package_path

KERNELS = package_path("kernels", "cross_modal_attention")  # package data: works from a wheel too
KERNEL_NAME = "dmfnet_pixel_attention_fuse_aot"
BLOCK = 256
IO_FORMATS = "FP32, FP32, FP32, FP32, FP32, FP32, FP32"  # six inputs and the output, linear FP32


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


def plugin_record() -> Dict[str, str]:
    """What an engine manifest records about the embedded plugin."""
    return {"kind": "tensorrt.plugin AOT (PTX embedded in the engine)", "op": PLUGIN_ID, "kernel": KERNEL_NAME,
            "ptx_sha256": hashlib.sha256(compile_ptx()).hexdigest()}


def plugin_functions(trtp: Any) -> Tuple[Any, Any, Any]:
    """The shape, format and AOT functions, annotated with `trtp`'s own types (as its validators require)."""
    desc = trtp.TensorDesc

    def shape(x: desc, y: desc, a_s: desc, a_c: desc, weight: desc, bias: desc) -> desc:
        return x.like()

    def formats(x: desc, y: desc, a_s: desc, a_c: desc, weight: desc, bias: desc,
                outputs: Tuple[desc]) -> List[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination(IO_FORMATS)]

    def aot(x: desc, y: desc, a_s: desc, a_c: desc, weight: desc, bias: desc, outputs: Tuple[desc],
            tactic: int) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]:
        dims = x.shape_expr  # N, C, H, W
        per_item = dims[1] * dims[2] * dims[3]
        launch = trtp.KernelLaunchParams()
        launch.grid_x = trtp.cdiv(per_item, BLOCK)
        launch.grid_y = dims[0]
        launch.block_x = BLOCK
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in (dims[1], dims[2], dims[3], per_item)])
        return KERNEL_NAME.encode(), compile_ptx(), launch, extra

    return shape, formats, aot


@functools.lru_cache(maxsize=1)
def register() -> None:
    """Declare the plugin to TensorRT (idempotent)."""
    require("tensorrt", extra="trt", purpose="TensorRT plugins")
    import tensorrt.plugin as trtp

    shape, formats, aot = plugin_functions(trtp)
    trtp.register(PLUGIN_ID)(shape)
    trtp.autotune(PLUGIN_ID)(formats)
    trtp.aot_impl(PLUGIN_ID)(aot)
