"""The engine cache of an --out folder: an engine is reused only when it was built with every setting that
changes the plan equal to the request's.

The request's `PlanSettings` (runtime/engine_manifest.py) hash to the cache key that ends the engine's file name;
the manifest beside a cached engine records the key and each setting, and a hit compares them one by one (a key
collision or a hand-edited manifest rebuilds, naming what differs). A hit is also held to this build's precision
check, since the allowed INT8 fallbacks do not change the plan and so are not part of the key.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from dmfnet_edge.contract import OnnxManifest
from dmfnet_edge.errors import InputError
from dmfnet_edge.records import read_bounded
from dmfnet_edge.runtime.engine_manifest import (
    DeviceInfo,
    EngineManifest,
    PlanSettings,
    PluginUsed,
    ShapeProfile,
    ToolchainUsed,
    engine_manifest_path,
    plugin_keys,
    read_engine_manifest,
)

log = logging.getLogger(__name__)

MAX_TIMING_CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class BuiltEngine:
    """The outcome of a build request: the engine's manifest and path, and whether it came from the cache."""

    manifest: EngineManifest
    path: Path
    reused: bool


def read_timing_cache(path: Path | None, locked: bool) -> bytes:
    """The timing cache file's bytes (empty when there is none yet), bounded and from a regular file only."""
    if path is None or not path.exists():
        if locked:
            raise InputError(f"--lock-timing-cache: {path} is missing; build once without the lock first")
        return b""
    data = read_bounded(path, MAX_TIMING_CACHE_BYTES, "timing cache")
    if locked and not data:
        raise InputError(f"--lock-timing-cache: {path} is empty; build once without the lock first")
    return data


@dataclass(frozen=True)
class PlanRequest:
    """What the caller asks for, in the terms of the cache key."""

    onnx: OnnxManifest
    toolchain: ToolchainUsed
    targets: tuple[str, ...]
    device: DeviceInfo | None  # full TensorRT: the GPU it builds on (and for)
    profile: dict[str, list[int]]
    opt_level: int
    workspace_mib: int
    strip_weights: bool
    timing_cache: bytes | None  # None: the flavour has no timing cache
    timing_cache_locked: bool
    plugins: tuple[PluginUsed, ...]

    @property
    def settings(self) -> PlanSettings:
        cache = None if not self.timing_cache else hashlib.sha256(self.timing_cache).hexdigest()
        return PlanSettings(
            onnx_sha256=self.onnx.onnx_sha256, precision=self.onnx.precision, toolchain=self.toolchain,
            compute_capabilities=self.targets, device=self.device, profile=ShapeProfile(**self.profile),
            builder_optimization_level=self.opt_level, workspace_mib=self.workspace_mib, strongly_typed=True,
            strip_weights=self.strip_weights, timing_cache_sha256=cache,
            timing_cache_locked=self.timing_cache_locked, plugins=plugin_keys(self.plugins))


def cached(engine: Path, wanted: PlanSettings) -> EngineManifest | None:
    """The manifest of the engine cached at `engine` when it was built with `wanted` settings, else None (nothing
    there, an engine without its manifest, or other settings: each is rebuilt). A cached engine whose bytes do
    not match its manifest is refused, not replaced: someone changed it."""
    if not (engine.is_file() and engine_manifest_path(engine).is_file()):
        return None
    meta = read_engine_manifest(engine)
    if meta.build.cache_key != wanted.key():
        log.info("engine cache: %s was made under key %s, not %s; rebuilding", engine.name, meta.build.cache_key,
                 wanted.key())
        return None
    differences = meta.plan_settings.differences(wanted)
    if differences:
        log.info("engine cache: %s was built with other %s; rebuilding", engine.name, ", ".join(differences))
        return None
    log.info("engine cache hit: %s", engine.name)
    return meta
