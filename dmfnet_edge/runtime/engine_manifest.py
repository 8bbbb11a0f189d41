"""Engine manifests and cache keys, without TensorRT.

An engine is only valid for the TensorRT flavour and exact version that built it, and for its targets: a
TensorRT 10/11 engine for the GPU model, compute capability and SM count it was built on, a TensorRT for RTX
engine for the compute capabilities it was compiled for ahead of time. The manifest beside the engine records
them, so the runtime refuses a mismatch before deserialising: "rebuild needed: built for X, this is Y".

An engine cache is keyed by everything that changes the plan TensorRT makes (`PlanSettings`: graph hash,
precision, toolchain flavour and version, targets and GPU, profile, optimisation level, workspace, plugins and
their hashes, timing cache hash and lock, strongly typed, weight stripping). The key, the first 16 hex digits of
the SHA-256 of those settings as JSON, ends the engine's file name and is recorded in its manifest
(`build.cache_key`) with every setting it was made from, so a cache hit is checked setting by setting.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta, Struct

from dmfnet_edge.artifacts import sha256_file
from dmfnet_edge.contract import InputShape, OnnxManifest, QuantizationRecipe, Sha256
from dmfnet_edge.errors import InputError, ModelFileError
from dmfnet_edge.precisions import GraphPrecision
from dmfnet_edge.records import Record

ENGINE_FORMAT = "dmfnet-edge-engine"
ENGINE_MANIFEST_VERSION = 2


class DeviceInfo(Struct, forbid_unknown_fields=True, frozen=True):
    """The GPU a full-TensorRT engine was built on (or the one here)."""

    gpu_name: Annotated[str, Meta(max_length=256)]
    compute_capability: tuple[Annotated[int, Meta(ge=0, le=99)], Annotated[int, Meta(ge=0, le=99)]]
    sm_count: Annotated[int, Meta(ge=1, le=100_000)]
    tensorrt_version: Annotated[str, Meta(max_length=64)]

    def describe(self) -> str:
        major, minor = self.compute_capability
        return f"{self.gpu_name} (cc {major}.{minor}, {self.sm_count} SMs, TensorRT {self.tensorrt_version})"


@dataclass(frozen=True)
class BuildTarget:
    """What an engine is built with and for: flavour + version, compute capabilities, and the GPU (if any)."""

    flavour: str
    version: str
    compute_capabilities: tuple[str, ...]
    device: DeviceInfo | None = None

    def describe(self) -> str:
        where = self.device.describe() if self.device else ", ".join(self.compute_capabilities)
        return f"{where} with {self.flavour} {self.version}"

    def key(self) -> str:
        if self.device is not None:
            major, minor = self.device.compute_capability
            return f"{_slug(self.device.gpu_name)}.cc{major}{minor}.sm{self.device.sm_count}.trt{self.version}"
        return f"{'-'.join(self.compute_capabilities)}.rtx{self.version}"


def sm_name(compute_capability: tuple[int, int]) -> str:
    """(8, 6) -> 'sm86', the spelling of targets in manifests, file names and --compute-capability."""
    return f"sm{compute_capability[0]}{compute_capability[1]}"


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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def profile_key(profile: dict[str, list[int]]) -> str:
    """'1x256x256' for a static profile, 'min-opt-max' (each NxHxW) for a dynamic one."""
    shapes = [profile["min"], profile["opt"], profile["max"]]
    names = ["x".join(str(d) for d in (s[0], s[2], s[3])) for s in shapes]
    return names[0] if len(set(names)) == 1 else "-".join(names)


def engine_file_name(stem: str, target: BuildTarget, recipe: str, profile: str, cache_key: str) -> str:
    """e.g. dmfnet-edge.int8-tensorrt.nvidia-h100-80gb-hbm3.cc90.sm132.trt10.13.0.1x256x256.1a2b3c4d5e6f7a8b.engine:
    readable precision, target and profile, then the cache key (`PlanSettings.key`), which covers them too."""
    return f"{stem}.{recipe}.{target.key()}.{profile}.{cache_key}.engine"


def engine_manifest_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


Shape4 = Annotated[list[Annotated[int, Meta(ge=1, le=1 << 20)]], Meta(min_length=4, max_length=4)]


class ToolchainUsed(Struct, forbid_unknown_fields=True, frozen=True):
    flavour: Literal["tensorrt", "tensorrt-rtx"]
    version: Annotated[str, Meta(min_length=1, max_length=64)]


class ShapeProfile(Struct, forbid_unknown_fields=True, frozen=True):
    """The optimisation profile: (N, 1, H, W) at its minimum, optimum and maximum."""

    min: Shape4
    opt: Shape4
    max: Shape4


CacheKey = Annotated[str, Meta(pattern="^[0-9a-f]{16}$")]


class BuildSettings(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """How the engine was built. The timing cache is read before the build and updated after it (unless locked):
    its hash before keys the plan, its hash after is what the file holds once the build wrote it back. Fields
    that are None were not recorded by the release that built the engine."""

    builder_optimization_level: Annotated[int, Meta(ge=0, le=5)]
    strongly_typed: bool
    profile: ShapeProfile
    workspace_mib: Annotated[int, Meta(ge=1)]
    build_seconds: Annotated[float, Meta(ge=0)]
    strip_weights: bool | None = None  # a weight-stripped, refittable plan (refitted from the ONNX file on load)
    cache_key: CacheKey | None = None
    timing_cache: str | None = None
    timing_cache_locked: bool | None = None
    timing_cache_sha256_before_build: Sha256 | None = None
    timing_cache_sha256_after_build: Sha256 | None = None


class LayerPrecisions(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """What the builder made of the graph: engine layers that compute (by type and by output precision),
    synchronisation pseudo-layers apart, and every convolution's precision. A Q/DQ convolution TensorRT ran
    unfused in FP32 is listed in `int8_fallbacks_fp32` (the build refuses undeclared ones)."""

    layers: Annotated[int, Meta(ge=0)]
    synchronisation_layers: Annotated[int, Meta(ge=0)] | None = None  # None: counted in `layers` (older builds)
    layers_by_type: dict[str, Annotated[int, Meta(ge=0)]] = {}
    layers_by_output: dict[str, Annotated[int, Meta(ge=0)]]
    convolutions: dict[str, Annotated[int, Meta(ge=0)]]
    convolution_precisions: dict[str, str]
    int8_fallbacks_fp32: list[str] = []


class PluginUsed(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """A plugin library loaded for the build (its file, found again by name beside the engine when it is loaded,
    and its hash), or the plugin embedded in the engine: its kernel's PTX (hash, ISA version, target) and the nvcc
    that compiled it (a driver older than that PTX ISA cannot load the engine)."""

    library: str | None = None
    sha256: Sha256 | None = None
    kind: str | None = None
    op: str | None = None
    kernel: str | None = None
    ptx_sha256: Sha256 | None = None
    ptx_isa: Annotated[str, Meta(pattern=r"^[0-9]{1,2}\.[0-9]{1,2}$")] | None = None  # e.g. "9.0" (.version)
    ptx_target: Annotated[str, Meta(pattern=r"^sm_[0-9]{2,3}[a-z]?$")] | None = None  # e.g. "sm_80" (.target)
    nvcc_version: Annotated[str, Meta(pattern=r"^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,4}$")] | None = None
    nvcc_pinned: bool | None = None  # False: compiled by another nvcc than the pinned one (DMFNET_UNPINNED_NVCC=1)


class EngineManifest(Record, kw_only=True):
    """The sidecar `<engine>.json` of every engine: what it was built from (hashes), with what and for which
    GPUs, with which settings, and what the builder made of each layer. Read before the engine is loaded."""

    KIND: ClassVar[str] = "engine manifest"
    ALWAYS: ClassVar[tuple[str, ...]] = ("format", "manifest_version", "device", "plugins")
    FIX: ClassVar[str] = "rebuild the engine with 'dmfnet-export build'"

    format: Literal["dmfnet-edge-engine"] = ENGINE_FORMAT
    manifest_version: Literal[2] = ENGINE_MANIFEST_VERSION
    engine_file: Annotated[str, Meta(min_length=1, max_length=255)]
    engine_sha256: Sha256
    engine_bytes: Annotated[int, Meta(ge=1)]
    onnx_file: str
    onnx_sha256: Sha256
    precision: GraphPrecision
    recipe: QuantizationRecipe | None = None
    model: str | None = None
    weights_sha256: Sha256 | None = None
    inputs: dict[str, InputShape]
    output: str
    toolchain: ToolchainUsed
    compute_capabilities: list[Annotated[str, Meta(pattern="^sm[0-9]{2,3}$")]]
    device: DeviceInfo | None = None
    build: BuildSettings
    layer_precisions: LayerPrecisions
    plugins: list[PluginUsed] = []
    build_seconds_all: list[float] | None = None  # benchmarks/bench_engine_build.py: every rebuild's seconds
    rebuilds_identical: bool | None = None

    @property
    def target(self) -> BuildTarget:
        return BuildTarget(self.toolchain.flavour, self.toolchain.version, tuple(self.compute_capabilities),
                           self.device)

    @property
    def plan_settings(self) -> PlanSettings:
        """The settings the engine was built with, as recorded (compared with a request on a cache hit)."""
        build = self.build
        return PlanSettings(
            onnx_sha256=self.onnx_sha256, precision=self.precision, toolchain=self.toolchain,
            compute_capabilities=tuple(self.compute_capabilities), device=self.device, profile=build.profile,
            builder_optimization_level=build.builder_optimization_level, workspace_mib=build.workspace_mib,
            strongly_typed=build.strongly_typed, strip_weights=build.strip_weights,
            timing_cache_sha256=build.timing_cache_sha256_before_build,
            timing_cache_locked=bool(build.timing_cache_locked), plugins=plugin_keys(self.plugins))


class PlanSettings(Struct, frozen=True, kw_only=True):
    """Everything that changes the plan TensorRT makes from a graph: the engine cache key is its hash. Library
    paths are left out (a plugin is keyed by its hash); `strip_weights` None is an engine built before weight
    stripping was recorded, which no request matches."""

    onnx_sha256: str
    precision: str
    toolchain: ToolchainUsed
    compute_capabilities: tuple[str, ...]
    device: DeviceInfo | None
    profile: ShapeProfile
    builder_optimization_level: int
    workspace_mib: int
    strongly_typed: bool
    strip_weights: bool | None
    timing_cache_sha256: str | None  # the cache's content before the build (None: no timing cache)
    timing_cache_locked: bool
    plugins: tuple[PluginUsed, ...]

    def key(self) -> str:
        return hashlib.sha256(msgspec.json.encode(self)).hexdigest()[:16]

    def differences(self, other: PlanSettings) -> list[str]:
        """Names of the settings that differ from `other`'s."""
        return [f for f in self.__struct_fields__ if getattr(self, f) != getattr(other, f)]


def plugin_keys(plugins: Sequence[PluginUsed]) -> tuple[PluginUsed, ...]:
    """Plugins as the cache key sees them: everything recorded but where the library was loaded from."""
    return tuple(msgspec.structs.replace(p, library=None) for p in plugins)


def build_engine_manifest(engine_name: str, plan: bytes, onnx: Path, onnx_manifest: OnnxManifest,
                          target: BuildTarget, settings: dict[str, Any], precisions: dict[str, Any],
                          plugins: list[dict[str, str]]) -> EngineManifest:
    """The manifest of an engine still in memory (it is written before the engine: never an engine without one)."""
    return EngineManifest.convert({
        "engine_file": engine_name, "engine_sha256": hashlib.sha256(plan).hexdigest(), "engine_bytes": len(plan),
        "onnx_file": onnx.name, "onnx_sha256": onnx_manifest.onnx_sha256, "precision": onnx_manifest.precision,
        "recipe": msgspec.to_builtins(onnx_manifest.recipe), "model": onnx_manifest.model,
        "weights_sha256": onnx_manifest.weights_sha256, "inputs": onnx_manifest.inputs,
        "output": onnx_manifest.output, "toolchain": {"flavour": target.flavour, "version": target.version},
        "compute_capabilities": list(target.compute_capabilities),
        "device": msgspec.to_builtins(target.device), "build": settings, "layer_precisions": precisions,
        "plugins": plugins}, f"the manifest of {engine_name}")


def read_engine_manifest(engine: Path, verify: bool = True) -> EngineManifest:
    sidecar = engine_manifest_path(engine)
    if not engine.is_file():
        raise ModelFileError(f"{engine}: engine file not found")
    meta = EngineManifest.read(sidecar)
    if verify and sha256_file(engine) != meta.engine_sha256:
        raise ModelFileError(f"{engine}: SHA-256 does not match its manifest; the engine is damaged or was swapped")
    return meta


def built_target(meta: EngineManifest) -> BuildTarget:
    return meta.target


def check_compatible(meta: EngineManifest, flavour: str, version: str, device: DeviceInfo) -> None:
    """Refuse an engine of another TensorRT flavour or version, or built for another GPU, naming both."""
    built = meta.target
    here = f"{device.describe()} ({sm_name(device.compute_capability)}) with {flavour} {version}"
    fits = built.flavour == flavour and built.version == version
    if built.device is not None:
        fits = fits and (built.device.gpu_name, built.device.compute_capability, built.device.sm_count) == (
            device.gpu_name, device.compute_capability, device.sm_count)
    else:
        fits = fits and sm_name(device.compute_capability) in built.compute_capabilities
    if not fits:
        raise ModelFileError(f"rebuild needed: {meta.engine_file} was built for {built.describe()}, this is "
                             f"{here}; run 'dmfnet-export build' for this machine")
