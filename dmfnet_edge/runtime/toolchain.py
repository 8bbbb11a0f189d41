"""The two TensorRT flavours behind one builder, and everything in which they differ.

* `tensorrt` (TensorRT 10.x/11.x, module `tensorrt`): Jetson, data-centre and workstation GPUs. It builds for
  the GPU it runs on (one is needed), supports plugins and a persistent timing cache.
* `tensorrt-rtx` (TensorRT for RTX, module `tensorrt_rtx`): Ampere and newer RTX/workstation GPUs. It builds
  ahead of time for named compute capabilities on any machine, GPU or not; it has no plugin layers, no Hopper
  (sm90) target, and its timing cache is deprecated and has no effect.

Module name, plugin support, targets, timing cache, network flags and where the per-layer precisions come from
are decided here; the builder and the runtime ask a `Toolchain` instead of testing versions themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dmfnet_edge._optional import available, require
from dmfnet_edge.errors import EnvironmentProblem, InputError, MissingDependency, ModelFileError
from dmfnet_edge.runtime.engine_manifest import DeviceInfo

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Flavour:
    name: str
    module: str
    extra: str
    plugins: bool
    timing_cache: bool
    ahead_of_time: bool  # builds for named compute capabilities without a GPU


FLAVOURS = {
    "tensorrt": Flavour("tensorrt", "tensorrt", "trt", plugins=True, timing_cache=True, ahead_of_time=False),
    "tensorrt-rtx": Flavour("tensorrt-rtx", "tensorrt_rtx", "trt-rtx", plugins=False, timing_cache=False,
                            ahead_of_time=True),
}
TOOLCHAIN_CHOICES = ("auto", *FLAVOURS)


def cudart() -> Any:
    """cuda-python's runtime module (new and old import paths)."""
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        runtime = require("cuda.cudart", extra="trt", purpose="TensorRT engines on a GPU")
    return runtime


def cuda_index(device: str) -> int:
    """The device number of a --device choice for the GPU backends: 'cuda:N' -> N; 'cuda' (and the default 'cpu',
    which names no GPU) -> 0."""
    prefix, _, number = device.partition(":")
    if prefix not in ("cpu", "cuda") or (number and not number.isdigit()) or (prefix == "cpu" and number):
        raise InputError(f"--device {device}: use cuda or cuda:N")
    return int(number or 0)


def device_count(rt: Any | None = None) -> int:
    """CUDA devices this process sees (0 where there is no driver or no GPU)."""
    err, count = (rt or cudart()).cudaGetDeviceCount()
    return int(count) if int(err) == 0 else 0


def check_device(device: int, rt: Any | None = None, count: int | None = None) -> None:
    """Refuse a device number this machine does not have, naming the ones it has (`count`: as another library
    counts them, e.g. torch; else cuda-python's count)."""
    count = device_count(rt) if count is None else count
    if count == 0:
        raise EnvironmentProblem(f"--device cuda:{device}: no CUDA device is visible here (no GPU, or no driver); "
                                 "run on a GPU machine, or use --backend onnxruntime")
    if device >= count:
        have = f"cuda:0 to cuda:{count - 1}" if count > 1 else "cuda:0 only"
        raise EnvironmentProblem(f"--device cuda:{device}: this machine has {have}; choose one of those")


@contextmanager
def use_device(device: int, rt: Any | None = None) -> Iterator[None]:
    """Make `device` the calling thread's current CUDA device for the block, and restore the previous one (the
    CUDA runtime's current device is per thread: every entry point of a runner on cuda:N goes through this)."""
    rt = rt or cudart()
    err, before = rt.cudaGetDevice()
    before = int(before) if int(err) == 0 else device
    if before != device:
        _check_cuda(rt.cudaSetDevice(device), f"cudaSetDevice({device})")
    try:
        yield
    finally:
        if before != device:
            rt.cudaSetDevice(before)


def _check_cuda(result: Any, call: str) -> None:
    err = result[0] if isinstance(result, tuple) else result
    if int(err) != 0:
        raise EnvironmentProblem(f"{call} failed with CUDA error {int(err)}")


def current_device(trt_version: str, device: int = 0) -> DeviceInfo:
    """The GPU this process sees as `device` (cuda-python), with the TensorRT version."""
    err, prop = cudart().cudaGetDeviceProperties(device)
    if int(err) != 0:
        raise EnvironmentProblem(f"no usable CUDA device {device} (cudaGetDeviceProperties error {int(err)})")
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return DeviceInfo(name.rstrip("\x00"), (int(prop.major), int(prop.minor)), int(prop.multiProcessorCount),
                      trt_version)


class Toolchain:
    """One importable TensorRT flavour: its module, version and capabilities."""

    def __init__(self, flavour: Flavour, trt: Any) -> None:
        self.flavour, self.trt = flavour, trt
        self.version = str(trt.__version__)

    @property
    def name(self) -> str:
        return self.flavour.name

    def describe(self) -> str:
        return f"{self.name} {self.version}"

    def check_engine(self, runtime: Any, plan: bytes, name: str) -> None:
        """Refuse an engine this GPU, driver or version cannot run, before deserialising it, where the flavour can
        tell (TensorRT for RTX's `get_engine_validity`; TensorRT 10/11 rely on the manifest check alone)."""
        if not hasattr(runtime, "get_engine_validity"):
            return
        validity, flags = runtime.get_engine_validity(plan)
        members = self.trt.EngineInvalidityDiagnostics.__members__.items()
        reasons = [n.lower() for n, m in members if int(flags) & int(m)]
        if validity == self.trt.EngineValidity.INVALID:
            raise ModelFileError(f"rebuild needed: {self.describe()} cannot run {name} on this machine "
                                 f"({', '.join(reasons) or 'no reason given'})")
        if validity != self.trt.EngineValidity.VALID:
            log.warning("%s: %s runs it, but not at its best here (%s)", name, self.describe(), ", ".join(reasons))

def load_toolchain(choice: str = "auto") -> Toolchain:
    """The requested flavour, or with 'auto' the first importable one (full TensorRT first), saying which."""
    if choice not in TOOLCHAIN_CHOICES:
        raise InputError(f"--toolchain {choice}: choose one of {', '.join(TOOLCHAIN_CHOICES)}")
    if choice == "auto":
        found = next((f for f in FLAVOURS.values() if available(f.module)), None)
        if found is None:
            raise MissingDependency("TensorRT engines need TensorRT: pip install 'dmfnet-edge[trt]' (TensorRT 10/11: "
                                    "Jetson, data-centre, workstation GPUs) or 'dmfnet-edge[trt-rtx]' (TensorRT for "
                                    "RTX: RTX GPUs, builds without a GPU)")
        choice = found.name
    flavour = FLAVOURS[choice]
    toolchain = Toolchain(flavour, require(flavour.module, extra=flavour.extra, purpose=f"--toolchain {choice}"))
    log.info("TensorRT toolchain: %s", toolchain.describe())
    return toolchain
