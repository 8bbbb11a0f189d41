"""The backend registry: every Runner the toolkit can open, what model kinds it accepts, how it opens, the
precisions it runs, where it runs and how its network splits into stages. `--backend` choices, `auto`'s choice,
`--precision` checks, the profiler's stage split and the runner conformance tests (tests/runtime/test_conformance.py)
all derive from this table: a new backend is one entry here plus its Runner module."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dmfnet_edge._optional import available
from dmfnet_edge.artifacts import WEIGHTS_DIR
from dmfnet_edge.config import ModelKind, ModelSpec
from dmfnet_edge.errors import InputError, MissingDependency
from dmfnet_edge.precisions import RUNTIME_CHOICES
from dmfnet_edge.runtime.base import Runner

log = logging.getLogger(__name__)
# The shipped INT8 graph (mixed precision) passes its accuracy gate but runs at about 0.9x the FP32 graph's speed on
# CPU (docs/DEPLOYMENT.md, section 6), so FP32, the more accurate one, is the default.
DEFAULT_ORT_PRECISION = "fp32"


@dataclass(frozen=True)
class OpenRequest:
    """What a command asked for: the model, the device, threads and precision (None: the backend's default)."""

    spec: ModelSpec
    device: str = "cpu"
    threads: int | None = None
    precision: str | None = None
    server_model: str = "dmfnet_edge"


@dataclass(frozen=True)
class Backend:
    name: str
    accepts: tuple[ModelKind, ...]  # the model kinds it runs
    precisions: tuple[str, ...]  # `--precision` values it runs (the first is its default; none: fixed by the model)
    device: Literal["cpu", "cuda", "any", "remote"]  # where the network runs
    stage_split: Literal["torch", "onnxruntime"] | None  # how the profiler tells stage 1 from stage 2
    module: str  # the package it needs
    extra: str  # ... from this extra
    opener: Callable[[OpenRequest], Runner]
    choosable: bool = True  # a `--backend` choice (the Triton client is chosen by --server instead)

    def installed(self) -> bool:
        return available(self.module)


def shipped_onnx(name: str, precision: str) -> Path:
    """The shipped graph for a shipped model: weights/dmfnet-<name>-<fp32|int8-onnxruntime>.onnx."""
    if precision not in RUNTIME_CHOICES:
        raise InputError(f"--precision {precision}: the shipped ONNX graphs are {', '.join(RUNTIME_CHOICES)}")
    return WEIGHTS_DIR / f"dmfnet-{name}-{RUNTIME_CHOICES[precision].name}.onnx"


def _open_onnxruntime(request: OpenRequest) -> Runner:
    from dmfnet_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner

    spec = request.spec
    path = shipped_onnx(spec.text, request.precision or DEFAULT_ORT_PRECISION) if spec.kind == "shipped" \
        else Path(spec.text)
    return OnnxRuntimeRunner(path, threads=request.threads)


def _open_torch(request: OpenRequest) -> Runner:
    from dmfnet_edge.runtime.torch_backend import TorchRunner

    return TorchRunner.load(request.spec.text, device=request.device, threads=request.threads)


def _open_gpu(request: OpenRequest) -> Runner:
    from dmfnet_edge.runtime.gpu_backend import GpuRunner
    from dmfnet_edge.runtime.toolchain import cuda_index

    return GpuRunner(request.spec.text, device=f"cuda:{cuda_index(request.device)}",
                     precision=request.precision or "fp16")


def _open_tensorrt(request: OpenRequest) -> Runner:
    from dmfnet_edge.runtime.tensorrt_backend import TensorRTRunner
    from dmfnet_edge.runtime.toolchain import cuda_index

    return TensorRTRunner.load(request.spec.text, device=cuda_index(request.device))


def _open_triton(request: OpenRequest) -> Runner:
    from dmfnet_edge.runtime.triton_client import TritonRunner

    return TritonRunner(request.spec.text, request.server_model)


# In `auto`'s order of preference for a model kind both accept.
REGISTRY: tuple[Backend, ...] = (
    Backend("tensorrt", ("engine",), (), "cuda", None, "cuda", "trt", _open_tensorrt),
    Backend("onnxruntime", ("shipped", "onnx"), tuple(RUNTIME_CHOICES), "cpu", "onnxruntime", "onnxruntime", "onnx",
            _open_onnxruntime),
    Backend("torch", ("shipped", "weights", "preset"), ("fp32",), "any", "torch", "torch", "train", _open_torch),
    Backend("gpu", ("shipped", "weights", "preset"), ("fp16", "bf16", "fp32"), "cuda", "torch", "torch", "train",
            _open_gpu),
    Backend("triton", ("server",), (), "remote", None, "tritonclient", "serve", _open_triton, choosable=False),
)
BACKENDS: dict[str, Backend] = {b.name: b for b in REGISTRY}
BACKEND_CHOICES = ("auto", *(b.name for b in REGISTRY if b.choosable))
PRECISION_CHOICES = tuple(dict.fromkeys(p for b in REGISTRY for p in b.precisions))


def pick_backend(requested: str, spec: ModelSpec) -> Backend:
    """The backend to open `spec` with: the requested one, or for `auto` the first installed one that accepts its
    kind (an engine: TensorRT; a graph or the shipped model: ONNX Runtime; weights: torch)."""
    if requested != "auto":
        if requested not in BACKENDS or not BACKENDS[requested].choosable:
            raise InputError(f"unknown backend '{requested}'; choose one of {', '.join(BACKEND_CHOICES)}")
        return BACKENDS[requested]
    if spec.kind in ("engine", "server"):  # loading says what is missing (the engine's manifest names its flavour)
        return next(b for b in REGISTRY if spec.kind in b.accepts)
    for backend in REGISTRY:
        if spec.kind in backend.accepts and backend.device != "cuda" and backend.installed() and _has_model(
                backend, spec):
            return backend
    if spec.kind == "weights":
        from dmfnet_edge.artifacts import resolve_weights

        resolve_weights(spec.text)  # a missing or odd path is said as such first
        raise MissingDependency(f"--model {spec.text}: a PyTorch checkpoint runs on the torch backend; install it "
                                "with pip install 'dmfnet-edge[train]', or fuse with an exported FILE.onnx or a "
                                "shipped name")
    raise InputError("no usable backend: install 'dmfnet-edge[onnx]' (ONNX Runtime) or 'dmfnet-edge[train]' (torch)")


def _has_model(backend: Backend, spec: ModelSpec) -> bool:
    """Whether the backend has what it runs for `spec` (the shipped model's graph is shipped with the package)."""
    return spec.kind != "shipped" or backend.name != "onnxruntime" or shipped_onnx(spec.text, "fp32").is_file()


def _accepts_words(backend: Backend) -> str:
    words = {"shipped": "a shipped model name", "weights": "saved weights (NAME.safetensors + NAME.json)",
             "preset": "a preset", "onnx": "an exported FILE.onnx", "engine": "an engine built by 'dmfnet-export "
             "build'", "server": "a server URL"}
    return " or ".join(words[k] for k in backend.accepts)


def open_runner(backend: str = "auto", model: str | ModelSpec = "edge", device: str = "cpu",
                threads: int | None = None, precision: str | None = None, server: str | None = None,
                server_model: str = "dmfnet_edge") -> Runner:
    """Create the Runner for `backend` and `model` (parsed once into a ModelSpec); 'auto' picks and logs its
    choice. `device`: the torch device, or for the GPU backends (tensorrt, gpu) the GPU: cuda:N (cuda and the
    default cpu mean cuda:0). `server`: fuse on a Triton server instead (`--server`)."""
    spec = model if isinstance(model, ModelSpec) else ModelSpec.parse(model, server)
    chosen = pick_backend("auto" if spec.kind == "server" else backend, spec)
    log.info("backend %s -> %s", backend, chosen.name)
    if spec.kind not in chosen.accepts:
        raise InputError(f"--model {spec.text}: the {chosen.name} backend runs {_accepts_words(chosen)}")
    if precision is not None and precision not in chosen.precisions:
        runs = ", ".join(chosen.precisions) or "the precision its model was built with (no --precision)"
        raise InputError(f"--precision {precision}: the {chosen.name} backend runs {runs}")
    return chosen.opener(OpenRequest(spec, device, threads, precision, server_model))
