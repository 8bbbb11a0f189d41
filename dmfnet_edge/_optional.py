"""Lazy imports of optional packages with an actionable error.

The runtime must import without torch, and heavy or optional libraries (torch, onnxruntime, pydicom, nibabel,
tensorrt, cuda-python) are only needed by some commands. `require("pydicom", extra="medical")` returns the
module or raises `MissingDependency` naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from dmfnet_edge.errors import MissingDependency

# module name -> (pip extra, pip distribution name)
_EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("train", "torch==2.13.0"),
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnx", "onnxruntime"),
    "onnxslim": ("onnx", "onnxslim"),
    "yaml": ("onnx", "pyyaml"),
    "pydicom": ("medical", "pydicom"),
    "nibabel": ("medical", "nibabel"),
    "matplotlib": ("dev", "matplotlib"),
    "safetensors": ("train", "safetensors"),
    "tensorrt": ("trt", "tensorrt-cu13"),
    "tensorrt_rtx": ("trt-rtx", "tensorrt-rtx-cu13"),
    "cuda": ("trt", "cuda-python"),
    "tritonclient": ("serve", "tritonclient[grpc,http]"),
    "pytriton": ("serve-server", "nvidia-pytriton"),
}


def missing_package_message(module: str, purpose: str = "this command", extra: str | None = None,
                            detail: str = "") -> str:
    """'PURPOSE needs the package X; install it with: pip install ...' for an importable module name."""
    top = module.split(".")[0]
    default_extra, dist = _EXTRAS.get(top, (None, top))
    extra = extra or default_extra
    hint = f"pip install 'dmfnet-edge[{extra}]'" if extra else f"pip install {dist}"
    return f"{purpose} needs the package '{top}'{f' ({detail})' if detail else ''}; install it with: {hint}"


def require(module: str, *, extra: str | None = None, purpose: str = "this command") -> ModuleType:
    """Import `module` or raise MissingDependency with the install command that fixes it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(missing_package_message(module, purpose, extra, str(exc))) from None


def available(module: str) -> bool:
    """True when `module` can be imported (without raising on absence)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
