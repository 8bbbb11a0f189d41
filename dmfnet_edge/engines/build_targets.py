"""What building an engine needs to know of a TensorRT flavour, beside the builder: which compute capabilities it
can target (and which it is asked for), its network flags, and the graphs, profiles and timing-cache settings it
refuses before it tries. The runtime keeps what loading needs (runtime/toolchain.py: the flavours, the engine
check, the CUDA helpers)."""

from __future__ import annotations

from typing import Any

from dmfnet_edge._optional import available, require
from dmfnet_edge.contract import OnnxManifest
from dmfnet_edge.errors import EnvironmentProblem, InputError
from dmfnet_edge.precisions import PRECISIONS, REGISTRY
from dmfnet_edge.runtime.engine_manifest import DeviceInfo, sm_name
from dmfnet_edge.runtime.toolchain import FLAVOURS, Toolchain, current_device

RTX_TARGETS = ("sm75", "sm80", "sm86", "sm89", "sm120", "sm121")  # TensorRT for RTX 1.7's ComputeCapability
RTX_PORTABLE_TARGETS = ("sm80", "sm86", "sm89", "sm120")  # Ampere, Ada and Blackwell RTX / workstation GPUs


def network_flags(tc: Toolchain) -> int:
    major = int(tc.version.split(".")[0])
    if tc.flavour.name == "tensorrt" and major < 11:  # 11.x and RTX networks are always strongly typed
        return 1 << int(tc.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def build_targets(tc: Toolchain, requested: list[str] | None) -> tuple[list[str], DeviceInfo | None]:
    """The compute capabilities to build for, and the GPU they come from (None for ahead-of-time builds)."""
    if not tc.flavour.ahead_of_time:
        if requested:
            raise InputError(f"--compute-capability: {tc.describe()} builds for the GPU it runs on; named "
                             "targets need --toolchain tensorrt-rtx")
        try:
            device = current_device(tc.version)
        except EnvironmentProblem as exc:
            raise EnvironmentProblem(f"{exc}; {tc.describe()} builds on the GPU it targets: run the build "
                                     "there, or build for RTX GPUs without one: --toolchain tensorrt-rtx") from None
        return [sm_name(device.compute_capability)], device
    targets = requested or list(RTX_PORTABLE_TARGETS)
    refuse_unknown_targets(targets, rtx_targets(tc.trt), "--compute-capability", tc.describe())
    return targets, None


def set_targets(tc: Toolchain, config: Any, targets: list[str]) -> None:
    if not tc.flavour.ahead_of_time:
        return
    config.num_compute_capabilities = len(targets)
    for i, target in enumerate(targets):
        config.set_compute_capability(getattr(tc.trt.ComputeCapability, target.upper()), i)


def check_graph(tc: Toolchain, onnx_name: str, manifest: OnnxManifest) -> None:
    """Refuse graphs this flavour cannot build, naming the one to build instead."""
    refuse_unbuildable(onnx_name, manifest, tc.name)
    if manifest.plugins and not tc.flavour.plugins:
        raise InputError(f"{onnx_name} has TensorRT plugin nodes, and {tc.describe()} has no plugin layers; "
                         "build it with --toolchain tensorrt, or build the graph exported without --trt-plugins")


def check_profile(tc: Toolchain, shapes: dict[str, list[int]], given: str | None) -> None:
    """Refuse profiles this flavour is known to fail on, before it tries (and may crash)."""
    if tc.flavour.ahead_of_time and tc.version.startswith("1.7.") and shapes["min"][2] != shapes["max"][2]:
        raise InputError(f"--shapes {given}: {tc.describe()} cannot compile this graph for a range of heights "
                         "(Myelin std::bad_alloc in every try, once a crash): vary batch and width only, or "
                         "build one engine per height")


def check_timing_cache(tc: Toolchain, timing_cache: object, locked: bool) -> None:
    if (timing_cache is not None or locked) and not tc.flavour.timing_cache:
        raise InputError(f"--timing-cache/--lock-timing-cache: the timing cache is deprecated in "
                         f"{tc.describe()} and has no effect; its builds are reproducible without one")


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
