"""Backends behind one Runner interface; imports without torch (backends load lazily).

Model specs: a shipped name ('edge'), a torch checkpoint (NAME.safetensors/.json) or an exported graph
(FILE.onnx with FILE.onnx.json). `auto` picks TensorRT where it is usable, else ONNX Runtime, else torch.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dmfnet_edge._optional import available
from dmfnet_edge.artifacts import SHIPPED, WEIGHTS_DIR
from dmfnet_edge.errors import InputError, MissingDependency
from dmfnet_edge.precisions import RUNTIME_CHOICES
from dmfnet_edge.runtime.base import Runner

log = logging.getLogger(__name__)
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch", "gpu")
ORT_PRECISIONS = tuple(RUNTIME_CHOICES)  # --precision of a shipped model on ONNX Runtime
# The shipped INT8 graph (mixed precision) passes its accuracy gate but runs at about 0.9x the FP32 graph's speed on
# CPU (docs/DEPLOYMENT.md, section 6), so FP32, the more accurate one, is the default.
DEFAULT_ORT_PRECISION = "fp32"


def shipped_onnx(name: str, precision: str) -> Path:
    """The shipped graph for a shipped model: weights/dmfnet-<name>-<fp32|int8-onnxruntime>.onnx."""
    if precision not in RUNTIME_CHOICES:
        raise InputError(f"--precision {precision}: the shipped ONNX graphs are {', '.join(ORT_PRECISIONS)}")
    return WEIGHTS_DIR / f"dmfnet-{name}-{RUNTIME_CHOICES[precision].name}.onnx"


def pick_backend(requested: str, model: str) -> str:
    """Resolve 'auto': TensorRT (an .engine model) -> ONNX Runtime -> torch."""
    if requested != "auto":
        return requested
    if model.endswith(".engine"):
        return "tensorrt"  # the engine's manifest names the TensorRT flavour it needs; loading says what is missing
    if model.endswith(".onnx"):
        return "onnxruntime"
    if model in SHIPPED and available("onnxruntime") and shipped_onnx(model, "fp32").is_file():
        return "onnxruntime"
    if available("torch"):
        return "torch"
    if model not in SHIPPED:
        from dmfnet_edge.artifacts import resolve_weights

        resolve_weights(model)  # a missing or odd path is said as such first
        raise MissingDependency(f"--model {model}: a PyTorch checkpoint runs on the torch backend; install it with "
                                "pip install 'dmfnet-edge[train]', or fuse with an exported FILE.onnx or a shipped "
                                "name")
    raise InputError("no usable backend: install 'dmfnet-edge[onnx]' (ONNX Runtime) or 'dmfnet-edge[train]' (torch)")


def open_runner(backend: str = "auto", model: str = "edge", device: str = "cpu", threads: int | None = None,
                precision: str | None = None) -> Runner:
    """Create the Runner for `backend`; 'auto' picks and logs its choice. `device`: the torch device, or for the
    GPU backends (tensorrt, gpu) the GPU: cuda:N (cuda and the default cpu mean cuda:0)."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    chosen = pick_backend(backend, model)
    log.info("backend %s -> %s", backend, chosen)
    if chosen == "tensorrt":
        if not model.endswith(".engine"):
            raise InputError(f"--model {model}: the tensorrt backend runs an engine built by 'dmfnet-export build'")
        from dmfnet_edge.runtime.tensorrt_backend import TensorRTRunner
        from dmfnet_edge.runtime.toolchain import cuda_index

        return TensorRTRunner.load(model, device=cuda_index(device))
    if chosen == "onnxruntime":
        from dmfnet_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner

        if model in SHIPPED:
            path = shipped_onnx(model, precision or DEFAULT_ORT_PRECISION)
        elif model.endswith(".onnx"):
            path = Path(model)
        else:
            raise InputError(f"--model {model}: the onnxruntime backend needs an exported FILE.onnx "
                             "(dmfnet-export onnx) or a shipped model name")
        return OnnxRuntimeRunner(path, threads=threads)
    if model.endswith(".onnx"):
        raise InputError(f"--model {model}: an ONNX graph runs on --backend onnxruntime, not {chosen}")
    if chosen == "gpu":
        from dmfnet_edge.runtime.gpu_backend import GpuRunner
        from dmfnet_edge.runtime.toolchain import cuda_index

        return GpuRunner(model, device=f"cuda:{cuda_index(device)}", precision=precision or "fp16")
    if precision not in (None, "fp32"):
        raise InputError(f"--precision {precision}: the torch backend runs fp32 only")
    from dmfnet_edge.runtime.torch_backend import TorchRunner

    return TorchRunner.load(model, device=device, threads=threads)


__all__ = ["BACKENDS", "Runner", "open_runner", "pick_backend", "shipped_onnx"]
