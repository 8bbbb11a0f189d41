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
from dmfnet_edge.contract import OnnxManifest
from dmfnet_edge.errors import EnvironmentProblem, InputError, MissingDependency, ModelFileError
from dmfnet_edge.precisions import PRECISIONS, REGISTRY
from dmfnet_edge.runtime.engine_manifest import DeviceInfo, sm_name

log = logging.getLogger(__name__)

RTX_TARGETS = ("sm75", "sm80", "sm86", "sm89", "sm120", "sm121")  # TensorRT for RTX 1.7's ComputeCapability
RTX_PORTABLE_TARGETS = ("sm80", "sm86", "sm89", "sm120")  # Ampere, Ada and Blackwell RTX / workstation GPUs


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


def parse_targets(text: str | None) -> list[str] | None:
    """--compute-capability 'sm80,sm86' (or '8.6', '86') -> ['sm80', 'sm86'], sorted, without repeats."""
    if text is None:
        return None
    targets = set()
    for item in (t.strip().lower() for t in text.split(",") if t.strip()):
        digits = item.removeprefix("sm").replace(".", "")
        if not digits.isdigit():
            raise InputError(f"--compute-capability {text}: '{item}' is not a compute capability such as sm86")
        targets.add(f"sm{digits}")
    if not targets:
        raise InputError("--compute-capability: name at least one target, e.g. sm86")
    return sorted(targets, key=lambda t: int(t[2:]))


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

    def network_flags(self) -> int:
        major = int(self.version.split(".")[0])
        if self.flavour.name == "tensorrt" and major < 11:  # 11.x and RTX networks are always strongly typed
            return 1 << int(self.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        return 0

    def targets(self, requested: list[str] | None) -> tuple[list[str], DeviceInfo | None]:
        """The compute capabilities to build for, and the GPU they come from (None for ahead-of-time builds)."""
        if not self.flavour.ahead_of_time:
            if requested:
                raise InputError(f"--compute-capability: {self.describe()} builds for the GPU it runs on; named "
                                 "targets need --toolchain tensorrt-rtx")
            try:
                device = current_device(self.version)
            except EnvironmentProblem as exc:
                raise EnvironmentProblem(f"{exc}; {self.describe()} builds on the GPU it targets: run the build "
                                         "there, or build for RTX GPUs without one: --toolchain tensorrt-rtx") from None
            return [sm_name(device.compute_capability)], device
        targets = requested or list(RTX_PORTABLE_TARGETS)
        refuse_unknown_targets(targets, rtx_targets(self.trt), "--compute-capability", self.describe())
        return targets, None

    def set_targets(self, config: Any, targets: list[str]) -> None:
        if not self.flavour.ahead_of_time:
            return
        config.num_compute_capabilities = len(targets)
        for i, target in enumerate(targets):
            config.set_compute_capability(getattr(self.trt.ComputeCapability, target.upper()), i)

    def check_graph(self, onnx_name: str, manifest: OnnxManifest) -> None:
        """Refuse graphs this flavour cannot build, naming the one to build instead."""
        refuse_unbuildable(onnx_name, manifest, self.name)
        if manifest.plugins and not self.flavour.plugins:
            raise InputError(f"{onnx_name} has TensorRT plugin nodes, and {self.describe()} has no plugin layers; "
                             "build it with --toolchain tensorrt, or build the graph exported without --trt-plugins")

    def check_profile(self, shapes: dict[str, list[int]], given: str | None) -> None:
        """Refuse profiles this flavour is known to fail on, before it tries (and may crash)."""
        if self.flavour.ahead_of_time and self.version.startswith("1.7.") and shapes["min"][2] != shapes["max"][2]:
            raise InputError(f"--shapes {given}: {self.describe()} cannot compile this graph for a range of heights "
                             "(Myelin std::bad_alloc in every try, once a crash): vary batch and width only, or "
                             "build one engine per height")

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

    def check_timing_cache(self, timing_cache: object, locked: bool) -> None:
        if (timing_cache is not None or locked) and not self.flavour.timing_cache:
            raise InputError(f"--timing-cache/--lock-timing-cache: the timing cache is deprecated in "
                             f"{self.describe()} and has no effect; its builds are reproducible without one")


def rtx_targets(trt: Any | None = None) -> tuple[str, ...]:
    """The compute capabilities TensorRT for RTX can target: its `ComputeCapability` enum (the module `trt`, else
    the installed one), or RTX_TARGETS where it is not installed."""
    if trt is None and available(FLAVOURS["tensorrt-rtx"].module):
        trt = require(FLAVOURS["tensorrt-rtx"].module, extra="trt-rtx", purpose="compute capabilities")
    names = getattr(getattr(trt, "ComputeCapability", None), "__members__", None)
    return tuple(n.lower() for n in names if n.startswith("SM")) if names else RTX_TARGETS


def refuse_unknown_targets(targets: list[str], known: tuple[str, ...], where: str, toolchain: str) -> None:
    unknown = [t for t in targets if t not in known]
    if unknown:
        hopper = " (TensorRT for RTX has no Hopper target: use --toolchain tensorrt)" if "sm90" in unknown else ""
        raise InputError(f"{where} {','.join(unknown)}: {toolchain} targets {', '.join(known)}{hopper}")


def check_named_targets(toolchain: str, targets: list[str] | None, where: str) -> None:
    """Refuse named compute capabilities (a recipe's, before anything is made or listed) that `toolchain` cannot
    target: full TensorRT builds for the GPU it runs on; TensorRT for RTX knows a fixed set."""
    if not targets:
        return
    if not FLAVOURS[toolchain].ahead_of_time:
        raise InputError(f"{where}: {toolchain} builds for the GPU it runs on; named targets are for tensorrt-rtx")
    refuse_unknown_targets(targets, rtx_targets(), where, toolchain)


def refuse_unbuildable(onnx_name: str, manifest: OnnxManifest, flavour: str | None = None) -> None:
    """Refuse a graph no TensorRT flavour (or not `flavour`) builds (the precision registry's `toolchains`), naming
    the graph to build instead."""
    entry = PRECISIONS[manifest.precision]
    if not entry.toolchains:
        fix = next(p for p in REGISTRY if p.numeric == entry.numeric and p.toolchains)
        raise InputError(f"{onnx_name} is the {entry.name} graph (QLinear ops, non-zero zero points), which TensorRT "
                         f"cannot parse; build the {fix.name} one: 'dmfnet-export quantize --precision "
                         f"{fix.numeric} --target {fix.flavour}'")
    if flavour is not None and flavour not in entry.toolchains:
        raise InputError(f"{onnx_name} is an {entry.name} graph, which {flavour} does not build")


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
