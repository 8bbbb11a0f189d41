"""Build a strongly typed TensorRT engine from a precision-recipe ONNX graph, with either TensorRT flavour.

Precision comes from the graph only (TensorRT 11 and TensorRT for RTX have no FP16/INT8 builder flags; on 10.x
the network is created STRONGLY_TYPED so all behave alike). The optimisation profile is static by default (or
the --shapes range of a dynamic graph), the builder optimisation level is pinned, and on full TensorRT the
timing cache is read from and (unless locked) written back to a file. Flavour differences live in `toolchain`.

The engine is checked in memory before anything is written: every convolution must run in the precision the
graph prescribes, read from the builder's DETAILED layer dump (no GPU needed) or, on full TensorRT, from the
engine inspector. Then the manifest is written, then the engine, both atomically: an engine never lies on disk
without its manifest.
"""

from __future__ import annotations

import ctypes
import io
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmfnet_edge._quiet import THIRD_PARTY, captured
from dmfnet_edge.artifacts import sha256_file
from dmfnet_edge.build.cancel import PendingSignals, progress_monitor, signals_deferred
from dmfnet_edge.build.precision import (
    LayerRecord,
    check_precision,
    expected_convolutions,
    int8_fallbacks,
    precision_summary,
    records_from_inspector,
    records_from_layer_dump,
)
from dmfnet_edge.contract import INPUT_NAMES, OnnxManifest, contract_of
from dmfnet_edge.errors import EnvironmentProblem, InputError, ModelFileError
from dmfnet_edge.files import atomic_write_bytes
from dmfnet_edge.limits import max_pixels
from dmfnet_edge.preprocess.tensor import MIN_NETWORK_SIDE, SIZE_MULTIPLE
from dmfnet_edge.runtime.engine_manifest import (
    BuildTarget,
    EngineManifest,
    build_engine_manifest,
    engine_file_name,
    engine_manifest_path,
    profile_key,
    read_engine_manifest,
)
from dmfnet_edge.runtime.onnx_file import OnnxGraph, open_with_manifest
from dmfnet_edge.runtime.toolchain import Toolchain, load_toolchain, refuse_unbuildable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    toolchain: str = "auto"
    compute_capabilities: list[str] | None = None  # tensorrt-rtx targets (default: the portable RTX set)
    shapes: str | None = None  # 'NxHxW' or 'MIN:OPT:MAX' (each NxHxW); default: the graph's shape or 1x256x256
    opt_level: int = 3
    workspace_mib: int = 2048
    timing_cache: Path | None = None
    lock_timing_cache: bool = False
    plugin_libraries: list[Path] = field(default_factory=list)


def _parse_shape(text: str) -> list[int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise InputError(f"--shapes {text}: write each shape as NxHxW, e.g. 1x256x256")
    n, h, w = (int(p) for p in parts)
    if n < 1 or any(s % SIZE_MULTIPLE or s < MIN_NETWORK_SIDE for s in (h, w)):
        raise InputError(f"--shapes {text}: N >= 1, H and W multiples of {SIZE_MULTIPLE} and >= {MIN_NETWORK_SIDE}")
    return [n, 1, h, w]


def shape_profile(manifest: OnnxManifest, shapes: str | None) -> dict[str, list[int]]:
    """min/opt/max input shapes: a static graph's own shape, else --shapes, else 1x256x256."""
    contract = contract_of(manifest)
    if contract.static_batch and contract.static_size:
        static = [contract.static_batch, 1, *contract.static_size]
        if shapes is not None and [_parse_shape(s) for s in shapes.split(":")] not in ([static], [static] * 3):
            raise InputError(f"--shapes {shapes}: the graph is static ({static}); export with --dynamic for others")
        return {"min": static, "opt": static, "max": static}
    given = [_parse_shape(s) for s in (shapes or "1x256x256").split(":")]
    if len(given) not in (1, 3):
        raise InputError(f"--shapes {shapes}: give one shape or MIN:OPT:MAX")
    low, opt, high = given * 3 if len(given) == 1 else given
    if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
        raise InputError(f"--shapes {shapes}: every dimension must grow from MIN to OPT to MAX")
    return {"min": low, "opt": opt, "max": high}


def check_pixel_budget(shapes: dict[str, list[int]], given: str | None) -> None:
    """The largest call the engine takes must fit the pixel budget (limits.py) before TensorRT plans memory for
    it: a static profile's whole batch (every call holds it), one image of a dynamic profile's MAX (the runtime
    cuts batches to the budget)."""
    n, _, h, w = shapes["max"]
    static = shapes["min"] == shapes["max"]
    pixels, budget = (n if static else 1) * h * w, max_pixels()
    if pixels > budget:
        what = f"--shapes {given}" if given else f"the graph's static input {n}x{h}x{w}"
        raise InputError(f"{what}: {pixels:,} pixels per {'call' if static else 'image'} exceed the pixel budget of "
                         f"{budget:,}; export or build for a smaller size, or raise DMFNET_MAX_PIXELS")


def refuse_non_folder(option: str, folder: Path) -> None:
    """An output folder must be a folder or nothing yet, checked before the work: a file there, or a symbolic
    link that leads nowhere (dangling or looping), is an existing output, never replaced."""
    if os.path.lexists(folder) and not folder.is_dir():
        kind = "a symbolic link that leads nowhere (dangling or looping)" if folder.is_symlink() else "not a folder"
        raise InputError(f"{option} {folder}: is {kind}; give an output folder (new or existing)")


def _capturing_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps the log (for the layer dump and error messages) and forwards it to logging."""

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[Any, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            self.messages.append((severity, msg))
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                log.info("TensorRT: %s", msg)  # also in the one-line error the failure raises
            elif severity == trt.ILogger.Severity.WARNING:  # shown when the command succeeds (cli/main.py)
                log.warning("TensorRT: %s", msg, extra=THIRD_PARTY)
            elif severity == trt.ILogger.Severity.INFO:
                log.debug("TensorRT: %s", msg)

        def text(self) -> str:
            return "\n".join(m for _, m in self.messages)

        def errors(self) -> str:
            bad = (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR, None)
            return "; ".join(m for s, m in self.messages if s in bad)[-600:]

    return CapturingLogger()


def _network(tc: Toolchain, builder: Any, logger: Any, graph: OnnxGraph) -> tuple[Any, Any]:
    network = builder.create_network(tc.network_flags())
    parser = tc.trt.OnnxParser(network, logger)
    # the checked bytes, and the real path that the checked external data files lie beside
    if not parser.parse(graph.data, str(graph.real_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFileError(f"{graph.path}: {tc.describe()} cannot parse the graph: {errors}")
    return network, parser


def _timing_cache(tc: Toolchain, config: Any, options: BuildOptions) -> Any:
    if not tc.flavour.timing_cache:
        return None
    path = options.timing_cache
    data = path.read_bytes() if path is not None and path.is_file() else b""
    if options.lock_timing_cache and not data:
        raise InputError(f"--lock-timing-cache: {path} is missing or empty; build once without the lock first")
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)
    if options.lock_timing_cache and hasattr(tc.trt.BuilderFlag, "ERROR_ON_TIMING_CACHE_MISS"):
        config.set_flag(tc.trt.BuilderFlag.ERROR_ON_TIMING_CACHE_MISS)
    return cache


def _build_plan(tc: Toolchain, graph: OnnxGraph, profile_shapes: dict[str, list[int]], targets: list[str],
                options: BuildOptions) -> tuple[bytes, Any, Any, float]:
    with signals_deferred() as pending:  # TensorRT swallows what a signal handler raises inside its callbacks
        plan, logger, cache, seconds = _build_plan_deferred(tc, graph, profile_shapes, targets, options, pending)
    if plan is None:  # cancelled, and the signal's handler did not stop the command
        raise EnvironmentProblem(f"{graph.path}: the build was cancelled by a signal; nothing was written")
    return plan, logger, cache, seconds


def _build_plan_deferred(tc: Toolchain, graph: OnnxGraph, profile_shapes: dict[str, list[int]], targets: list[str],
                         options: BuildOptions, pending: PendingSignals) -> tuple[bytes | None, Any, Any, float]:
    trt = tc.trt
    logger = _capturing_logger(trt)
    builder = trt.Builder(logger)
    network, _parser = _network(tc, builder, logger, graph)
    config = builder.create_builder_config()
    monitor = progress_monitor(trt, pending)
    if monitor is not None:
        config.progress_monitor = monitor  # cancels the build once SIGTERM or Ctrl-C came
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    config.builder_optimization_level = options.opt_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    tc.set_targets(config, targets)
    profile = builder.create_optimization_profile()
    for name in INPUT_NAMES:
        profile.set_shape(name, profile_shapes["min"], profile_shapes["opt"], profile_shapes["max"])
    config.add_optimization_profile(profile)
    cache = _timing_cache(tc, config, options)
    start = time.perf_counter()
    native = io.StringIO()  # some failures are printed by native code straight to fd 2, outside the logger
    with captured(native, fds=(2,)):
        plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    printed = native.getvalue().strip()
    if printed:  # kept for the one-line error, so the CLI still prints one line
        logger.messages.append((None, printed))
        log.info("TensorRT (stderr): %s", printed)
    if plan is None and pending:
        return None, logger, cache, seconds  # cancelled: the signal is raised once the native call is left
    if plan is None:
        errors = logger.errors() or "no log"
        raise ModelFileError(f"{graph.path}: {tc.describe()} failed to build an engine: {errors}"
                             f"{_failure_hint(errors, profile_shapes, options)}")
    return bytes(plan), logger, cache, seconds


def _failure_hint(errors: str, shapes: dict[str, list[int]], options: BuildOptions) -> str:
    """The fixes for the build failures seen with this model."""
    if "OutOfMemory" in errors:
        return (f"; the largest profile shape {shapes['max']} needs more than --workspace-mib {options.workspace_mib}: "
                "raise it or lower the MAX shape")
    return ""


def _layer_records(tc: Toolchain, plan: bytes, logger: Any) -> list[LayerRecord]:
    """Per-layer precisions: from the engine inspector where the engine can be loaded here (full TensorRT builds
    on a GPU), else from the builder's layer dump."""
    if tc.flavour.ahead_of_time:
        return records_from_layer_dump(logger.text())
    engine = tc.trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise ModelFileError(f"{tc.describe()} cannot deserialise the engine it just built: {logger.errors()}")
    inspector = engine.create_engine_inspector()
    return records_from_inspector(inspector.get_engine_information(tc.trt.LayerInformationFormat.JSON))


def _plugins(tc: Toolchain, manifest: OnnxManifest, libraries: list[Path]) -> list[dict[str, str]]:
    if libraries and not tc.flavour.plugins:
        raise InputError(f"--plugin-lib: {tc.describe()} has no plugin layers")
    for library in libraries:
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    records = [{"library": str(p), "sha256": sha256_file(p)} for p in libraries]
    if manifest.plugins:
        from dmfnet_edge.build import qdp_plugin

        qdp_plugin.register()
        records.append(qdp_plugin.plugin_record())
    return records


def _write(engine_path: Path, plan: bytes, engine_manifest: EngineManifest) -> None:
    """Manifest first, then the engine: a crash in between leaves a manifest without an engine, which readers
    reject as 'engine file not found', never an engine without its manifest."""
    sidecar = engine_manifest_path(engine_path)
    engine_manifest.write(sidecar)
    try:
        atomic_write_bytes(engine_path, plan)
    except BaseException:
        sidecar.unlink(missing_ok=True)
        raise


def build_engine(onnx_path: Path, out_dir: Path, options: BuildOptions | None = None) -> EngineManifest:
    """Build (or reuse from `out_dir`) the engine for `onnx_path`; returns its manifest."""
    options = options or BuildOptions()
    graph, manifest = open_with_manifest(onnx_path)
    refuse_unbuildable(onnx_path.name, manifest)
    refuse_non_folder("--out", out_dir)
    tc = load_toolchain(options.toolchain)
    tc.check_graph(onnx_path.name, manifest)
    tc.check_timing_cache(options.timing_cache, options.lock_timing_cache)
    targets, device = tc.targets(options.compute_capabilities)
    target = BuildTarget(tc.name, tc.version, tuple(targets), device)
    shapes = shape_profile(manifest, options.shapes)
    tc.check_profile(shapes, options.shapes)
    check_pixel_budget(shapes, options.shapes)
    engine_path = out_dir / engine_file_name(onnx_path.stem, target, manifest.onnx_sha256, manifest.precision,
                                             profile_key(shapes))
    if engine_path.is_file() and engine_manifest_path(engine_path).is_file():
        log.info("engine cache hit: %s", engine_path.name)
        return read_engine_manifest(engine_path)
    plugins = _plugins(tc, manifest, options.plugin_libraries)
    expected = expected_convolutions(graph.model.graph)
    plan, logger, cache, seconds = _build_plan(tc, graph, shapes, targets, options)
    summary = precision_summary(_layer_records(tc, plan, logger))
    check_precision(manifest.precision, summary, expected)
    summary["int8_fallbacks_fp32"] = int8_fallbacks(summary, expected)
    settings = {"builder_optimization_level": options.opt_level, "strongly_typed": True, "profile": shapes,
                "workspace_mib": options.workspace_mib, "build_seconds": round(seconds, 2)}
    if tc.flavour.timing_cache:
        path = options.timing_cache
        settings.update({"timing_cache": str(path) if path else None, "timing_cache_locked": options.lock_timing_cache,
                         "timing_cache_sha256": sha256_file(path) if path and path.is_file() else None})
    engine_manifest = build_engine_manifest(engine_path.name, plan, onnx_path, manifest, target, settings, summary,
                                            plugins)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(engine_path, plan, engine_manifest)
    if cache is not None and options.timing_cache is not None and not options.lock_timing_cache:
        atomic_write_bytes(options.timing_cache, bytes(cache.serialize()))
    return engine_manifest
