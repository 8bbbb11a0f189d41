"""The fused pixel stage as a TensorRT quickly deployable plugin (tensorrt.plugin) with an AOT kernel.

`register()` declares `dmfnet::DmfnetPixelAttentionFuse` (the node `dmfnet-export onnx --trt-plugins` writes):
output shape = x's, FP32 linear I/O, and an ahead-of-time implementation whose PTX comes from
kernels/cross_modal_attention/cma_plugin.cu (entry `dmfnet_pixel_attention_fuse_aot`). The PTX is embedded in
the engine, so running it needs neither Python nor this module (trtexec or a C++ runtime can load it). Full
TensorRT only: TensorRT for RTX has no plugin layers.

The PTX is compiled by a pinned nvcc (the `trt-plugins` extra: nvidia-cuda-nvcc and nvidia-nvvm NVCC_PIN), because
its ISA version follows the compiler: PTX from nvcc 13.5 (ISA 9.5) does not load on a driver older than CUDA 13.5,
so an engine built with whatever nvcc is on PATH may not load where it is deployed. PTX ISA 9.0 loads on every
CUDA 13 driver, which TensorRT 11 (tensorrt-cu13) needs anyway. Another nvcc is refused unless DMFNET_UNPINNED_NVCC=1
is set; either way the engine manifest records the PTX ISA, the PTX target and the nvcc version.

No `from __future__ import annotations` here: tensorrt.plugin validates the decorated functions' annotations
as real types (TensorDesc arguments first, `List[AutoTuneCombination]`, the AOT return tuple), and string
annotations fail its checks; its AOT return annotation is typing's Tuple/Union, so those stay for the decorated
functions (ruff's pyupgrade rules are off for this file; everything else is written the modern way).
"""
# ruff: noqa: UP006, UP007, UP035

import functools
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Tuple, Union

from dmfnet_edge._optional import require
from dmfnet_edge.contract import PLUGIN_ID
from dmfnet_edge.errors import EnvironmentProblem, one_line
from dmfnet_edge.files import package_path

KERNELS = package_path("kernels", "cross_modal_attention")  # package data: works from a wheel too
KERNEL_SOURCE = "cma_plugin.cu"
KERNEL_NAME = "dmfnet_pixel_attention_fuse_aot"
BLOCK = 256
INPUTS = ("x", "y", "a_s", "a_c", "weight", "bias")
IO_FORMATS = ", ".join(["FP32"] * (len(INPUTS) + 1))  # the inputs and the one output, linear FP32
PTX_ARCH = "compute_80"  # Ampere and newer (Jetson Orin, Ada, Hopper, Blackwell): the driver compiles it on load
NVCC_PIN = "13.0.88"  # nvidia-cuda-nvcc and nvidia-nvvm of the trt-plugins extra (pyproject.toml)
PTX_ISA_PIN = "9.0"  # what NVCC_PIN writes
PINNED_WHEELS = ("nvidia-cuda-nvcc", "nvidia-nvvm")  # nvcc drives, cicc (nvvm) writes the PTX
UNPINNED = "DMFNET_UNPINNED_NVCC"  # "1": compile with the nvcc on PATH
ENTRY = re.compile(r"\.entry\s+([A-Za-z_$][\w$]*)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class Nvcc:
    path: Path
    version: str  # e.g. "13.0.88"
    pinned: bool


def _wheel_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def pinned_nvcc() -> Path | None:
    """The nvcc of the pinned wheels, if they are installed at NVCC_PIN (both of them: cicc writes the PTX)."""
    if any(_wheel_version(name) != NVCC_PIN for name in PINNED_WHEELS):
        return None
    nvcc = Path(str(importlib.metadata.distribution(PINNED_WHEELS[0]).locate_file("nvidia/cu13/bin/nvcc")))
    return nvcc if nvcc.is_file() else None


@functools.lru_cache(maxsize=8)
def nvcc_version(nvcc: Path) -> str:
    """'13.0.88' from `nvcc --version` ('Cuda compilation tools, release 13.0, V13.0.88')."""
    try:
        text = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise EnvironmentProblem(f"{nvcc} cannot be run ({one_line(str(exc), 120)}); reinstall the CUDA "
                                 "compiler: pip install 'dmfnet-edge[trt-plugins]'") from None
    found = re.search(r"\bV(\d+\.\d+\.\d+)", text)
    if found is None:
        raise EnvironmentProblem(f"{nvcc} --version does not name a version; reinstall the CUDA compiler: "
                                 "pip install 'dmfnet-edge[trt-plugins]'")
    return found.group(1)


def find_nvcc() -> Nvcc:
    """The pinned nvcc, or with DMFNET_UNPINNED_NVCC=1 the one on PATH; otherwise a one-line refusal."""
    pinned = pinned_nvcc()
    if pinned is not None:
        return Nvcc(pinned, nvcc_version(pinned), True)
    on_path = shutil.which("nvcc")
    installed = ", ".join(f"{n} {_wheel_version(n)}" for n in PINNED_WHEELS if _wheel_version(n)) or "none"
    if os.environ.get(UNPINNED) == "1":
        if on_path is None:
            raise EnvironmentProblem(f"{UNPINNED}=1 asks for the nvcc on PATH, and there is none; install the "
                                     "pinned one instead: pip install 'dmfnet-edge[trt-plugins]'")
        return Nvcc(Path(on_path), nvcc_version(Path(on_path)), False)
    here = f"nvcc {nvcc_version(Path(on_path))} on PATH" if on_path else "no nvcc on PATH"
    raise EnvironmentProblem(
        f"the plugin kernel's PTX is compiled by the pinned nvcc {NVCC_PIN} (PTX ISA {PTX_ISA_PIN}, loads on every "
        f"CUDA 13 driver); found {here}, pinned wheels: {installed}; pip install 'dmfnet-edge[trt-plugins]', or set "
        f"{UNPINNED}=1 to embed PTX from the nvcc on PATH (the engine then needs a driver of that CUDA version)")


def ptx_entries(ptx: bytes) -> dict[str, list[str]]:
    """Every kernel entry of a PTX module with its parameters' types, e.g. {'k': ['u64', 'u32']}."""
    entries = {}
    for name, params in ENTRY.findall(ptx.decode("ascii", "replace")):
        entries[name] = [p.split()[1].lstrip(".") for p in params.split(",") if p.strip()]
    return entries


def ptx_header(ptx: bytes) -> tuple[str, str]:
    """(ISA version, target) from the PTX module's `.version 9.0` and `.target sm_80` directives."""
    text = ptx.decode("ascii", "replace")
    isa = re.search(r"^\s*\.version\s+(\d+\.\d+)", text, re.M)
    target = re.search(r"^\s*\.target\s+(\w+)", text, re.M)
    if isa is None or target is None:
        raise EnvironmentProblem("the compiled plugin kernel is not a PTX module (no .version/.target); reinstall "
                                 "the CUDA compiler: pip install 'dmfnet-edge[trt-plugins]'")
    return isa.group(1), target.group(1)


@functools.lru_cache(maxsize=4)
def _compile(nvcc: Path, arch: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cma_plugin.ptx"
        command = [str(nvcc), "-ptx", f"-arch={arch}", "-O3", "-I", str(KERNELS), str(KERNELS / KERNEL_SOURCE),
                   "-o", str(out)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise EnvironmentProblem(f"{nvcc} could not compile the plugin kernel ({one_line(done.stderr, 200)}); "
                                     "reinstall the CUDA compiler: pip install 'dmfnet-edge[trt-plugins]'")
        ptx = out.read_bytes()
    if KERNEL_NAME not in ptx_entries(ptx):  # the exact entry TensorRT will look up, not a longer name
        raise RuntimeError(f"{KERNEL_NAME} is not an entry of the compiled PTX: {sorted(ptx_entries(ptx))}")
    return ptx


def compile_ptx(arch: str = PTX_ARCH) -> bytes:
    """PTX of the plugin kernel (nvcc -ptx), cached per process and compiler."""
    return _compile(find_nvcc().path, arch)


def plugin_record() -> dict[str, str | bool]:
    """What an engine manifest records about the embedded plugin (engine_manifest.PluginUsed)."""
    nvcc = find_nvcc()
    ptx = _compile(nvcc.path, PTX_ARCH)
    isa, target = ptx_header(ptx)
    return {"kind": "tensorrt.plugin AOT (PTX embedded in the engine)", "op": PLUGIN_ID, "kernel": KERNEL_NAME,
            "ptx_sha256": hashlib.sha256(ptx).hexdigest(), "ptx_isa": isa, "ptx_target": target,
            "nvcc_version": nvcc.version, "nvcc_pinned": nvcc.pinned}


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
        # the kernel's int parameters c, h, w, per_item, between the input and the output pointers
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
