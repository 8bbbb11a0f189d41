"""Build a strongly typed TensorRT engine from a precision-recipe ONNX graph, with either TensorRT flavour.

Precision comes from the graph only (TensorRT 11 and TensorRT for RTX have no FP16/INT8 builder flags; on 10.x
the network is created STRONGLY_TYPED so all behave alike). The optimisation profile is static by default (or
the --shapes range of a dynamic graph), the builder optimisation level is pinned, and on full TensorRT the
timing cache is read from and (unless locked) written back to a file. Flavour differences live in `toolchain`.

The engine is checked in memory before anything is written: every convolution must run in the precision the
graph prescribes, read from the builder's DETAILED layer dump (no GPU needed) or, on full TensorRT, from the
engine inspector; a Q/DQ convolution may run in FP32 only where the graph's plan or the caller declares it. Then
the manifest is written, then the engine, both atomically: an engine never lies on disk without its manifest.

An engine already in --out is reused only when every setting that changes the plan matches (build/engine_cache.py).
`--strip-weights` makes a weight-stripped, refittable plan (its weights are refitted from the same ONNX file on
load); both flavours compile one only with a GPU visible, which is checked before anything else.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from dmfnet_edge._quiet import THIRD_PARTY, captured
from dmfnet_edge.artifacts import sha256_file
from dmfnet_edge.contract import INPUT_NAMES, OnnxManifest, contract_of
from dmfnet_edge.engines.build_targets import (
    build_targets,
    check_graph,
    check_profile,
    check_timing_cache,
    network_flags,
    refuse_unbuildable,
    set_targets,
)
from dmfnet_edge.engines.cancel import PendingSignals, progress_monitor, signals_deferred
from dmfnet_edge.engines.engine_cache import BuiltEngine, PlanRequest, cached, read_timing_cache
from dmfnet_edge.engines.precision import (
    FallbackAllowance,
    LayerRecord,
    check_precision,
    expected_convolutions,
    int8_fallbacks,
    precision_summary,
    records_from_inspector,
    records_from_layer_dump,
)
from dmfnet_edge.errors import DmfnetError, EnvironmentProblem, InputError, ModelFileError, one_line
from dmfnet_edge.files import atomic_write_bytes
from dmfnet_edge.limits import max_pixels
from dmfnet_edge.preprocess.tensor import MIN_NETWORK_SIDE, SIZE_MULTIPLE
from dmfnet_edge.runtime.engine_manifest import (
    BuildTarget,
    EngineManifest,
    PluginUsed,
    ToolchainUsed,
    build_engine_manifest,
    engine_file_name,
    engine_manifest_path,
    profile_key,
)
from dmfnet_edge.runtime.onnx_file import OnnxGraph, open_with_manifest
from dmfnet_edge.runtime.toolchain import Toolchain, cudart, load_toolchain

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
    strip_weights: bool = False  # a weight-stripped, refittable plan (needs a GPU to build)
    allowed_int8_fallbacks: FallbackAllowance = FallbackAllowance()  # beyond the graph's kept-FP32 groups


# Weight stripping as each flavour documents it: TensorRT for RTX's weightless engines refit with REFIT; full
# TensorRT keeps REFIT_IDENTICAL (the weights refitted are the build's own, and plain REFIT may drop a GEMM bias)
STRIP_FLAGS = {"tensorrt-rtx": ("STRIP_PLAN", "REFIT"), "tensorrt": ("STRIP_PLAN", "REFIT_IDENTICAL")}


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
    network = builder.create_network(network_flags(tc))
    parser = tc.trt.OnnxParser(network, logger)
    # the checked bytes, and the real path that the checked external data files lie beside
    if not parser.parse(graph.data, str(graph.real_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFileError(f"{graph.path}: {tc.describe()} cannot parse the graph: {errors}")
    return network, parser


def _timing_cache(tc: Toolchain, config: Any, request: PlanRequest) -> Any:
    if request.timing_cache is None:
        return None
    cache = config.create_timing_cache(request.timing_cache)
    config.set_timing_cache(cache, False)
    if request.timing_cache_locked and hasattr(tc.trt.BuilderFlag, "ERROR_ON_TIMING_CACHE_MISS"):
        config.set_flag(tc.trt.BuilderFlag.ERROR_ON_TIMING_CACHE_MISS)
    return cache


def configure_builder(tc: Toolchain, builder: Any, config: Any, request: PlanRequest) -> Any:
    """Every setting of the request on the builder config (the cache key covers each); returns the timing cache."""
    trt = tc.trt
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, request.workspace_mib << 20)
    config.builder_optimization_level = request.opt_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    set_targets(tc, config, list(request.targets))
    if request.strip_weights:
        for flag in STRIP_FLAGS[tc.name]:
            config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for name in INPUT_NAMES:
        profile.set_shape(name, request.profile["min"], request.profile["opt"], request.profile["max"])
    config.add_optimization_profile(profile)
    return _timing_cache(tc, config, request)


def _build_plan(tc: Toolchain, graph: OnnxGraph, request: PlanRequest) -> tuple[bytes, Any, Any, float]:
    with signals_deferred() as pending:  # TensorRT swallows what a signal handler raises inside its callbacks
        plan, logger, cache, seconds = _build_plan_deferred(tc, graph, request, pending)
    if plan is None:  # cancelled, and the signal's handler did not stop the command
        raise EnvironmentProblem(f"{graph.path}: the build was cancelled by a signal; nothing was written")
    return plan, logger, cache, seconds


def _build_plan_deferred(tc: Toolchain, graph: OnnxGraph, request: PlanRequest,
                         pending: PendingSignals) -> tuple[bytes | None, Any, Any, float]:
    trt = tc.trt
    logger = _capturing_logger(trt)
    builder = trt.Builder(logger)
    network, _parser = _network(tc, builder, logger, graph)
    config = builder.create_builder_config()
    monitor = progress_monitor(trt, pending)
    if monitor is not None:
        config.progress_monitor = monitor  # cancels the build once SIGTERM or Ctrl-C came
    cache = configure_builder(tc, builder, config, request)
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
                             f"{_failure_hint(errors, request)}")
    return bytes(plan), logger, cache, seconds


def _failure_hint(errors: str, request: PlanRequest) -> str:
    """The fixes for the build failures seen with this model."""
    if "OutOfMemory" in errors:
        return (f"; the largest profile shape {request.profile['max']} needs more than --workspace-mib "
                f"{request.workspace_mib}: raise it or lower the MAX shape")
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


def plugin_records(tc: Toolchain, manifest: OnnxManifest, libraries: list[Path]) -> tuple[PluginUsed, ...]:
    """The plugins of the build as the manifest and the cache key record them: each library's hash, and the
    plugin whose kernel the engine embeds (a graph with plugin nodes). Nothing is loaded yet."""
    if libraries and not tc.flavour.plugins:
        raise InputError(f"--plugin-lib: {tc.describe()} has no plugin layers")
    for library in libraries:
        if not library.is_file():  # hashed below: a FIFO would block, /dev/zero never end
            raise InputError(f"--plugin-lib {library}: not a regular file; give the plugin library "
                             "(libdmfnet_trt_plugins.so) built from kernels/")
    # by file name: the runtime finds a library by name (DMFNET_PLUGIN_PATH, beside the engine) and checks its hash
    records: list[dict[str, str]] = [{"library": p.name, "sha256": sha256_file(p)} for p in libraries]
    if manifest.plugins and not libraries:  # the op comes from one place: a given library, else the embedded kernel
        from dmfnet_edge.engines import qdp_plugin

        records.append(qdp_plugin.plugin_record())
    return tuple(PluginUsed(**r) for r in records)


def _load_plugins(manifest: OnnxManifest, libraries: list[Path]) -> None:
    for library in libraries:
        try:
            ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise InputError(f"--plugin-lib {library}: cannot be loaded ({one_line(str(exc), 160)}); give a plugin "
                             "library built for this TensorRT and CUDA") from None
    if manifest.plugins and not libraries:  # a given library registers the op itself; registering it twice fails
        from dmfnet_edge.engines import qdp_plugin

        qdp_plugin.register()


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


def gpu_visible() -> tuple[bool, str]:
    """Whether the CUDA driver shows this process a GPU, and what it said (cuda-python comes with both TensorRT
    extras)."""
    try:
        err, count = cudart().cudaGetDeviceCount()
    except (DmfnetError, ImportError, OSError, RuntimeError) as exc:
        return False, one_line(str(exc), 120)
    if int(err) != 0:
        return False, f"cudaGetDeviceCount: {getattr(err, 'name', int(err))}"
    return count > 0, f"{count} CUDA device(s)"


def check_strip_weights(tc: Toolchain, options: BuildOptions) -> None:
    """A weight-stripped, refittable plan is compiled with a GPU: without one, TensorRT for RTX's code generator
    fails inside the build (MyelinCheckException: CHECK(status == CUDA_SUCCESS)). Asked before anything runs."""
    if not options.strip_weights:
        return
    visible, said = gpu_visible()
    if not visible:
        raise EnvironmentProblem(f"--strip-weights: no GPU is visible here ({said}); {tc.describe()} compiles a "
                                 "weight-stripped, refittable engine only on a machine with an NVIDIA GPU and its "
                                 "driver (without one its code generator fails); build there, or drop --strip-weights")


def fallback_allowance(manifest: OnnxManifest, options: BuildOptions) -> FallbackAllowance:
    """The INT8 fallbacks declared for this build: the layer groups the graph's quantization plan keeps in FP32,
    and what the caller allows besides."""
    plan = manifest.recipe.mixed_precision if manifest.recipe is not None else None
    groups = tuple(plan.kept_fp32) if plan is not None else ()
    given = options.allowed_int8_fallbacks
    return FallbackAllowance(groups + given.groups, given.names, given.count)


def _request(onnx_path: Path, out_dir: Path, options: BuildOptions) -> tuple[Toolchain, OnnxGraph, PlanRequest]:
    """Everything checked that can be before the build (inputs, toolchain, targets, profile, budget, GPU for
    --strip-weights, timing cache, plugins), as a request."""
    graph, manifest = open_with_manifest(onnx_path)
    refuse_unbuildable(onnx_path.name, manifest)
    refuse_non_folder("--out", out_dir)
    tc = load_toolchain(options.toolchain)
    check_graph(tc, onnx_path.name, manifest)
    check_timing_cache(tc, options.timing_cache, options.lock_timing_cache)
    check_strip_weights(tc, options)
    targets, device = build_targets(tc, options.compute_capabilities)
    shapes = shape_profile(manifest, options.shapes)
    check_profile(tc, shapes, options.shapes)
    check_pixel_budget(shapes, options.shapes)
    timing = read_timing_cache(options.timing_cache, options.lock_timing_cache) if tc.flavour.timing_cache else None
    request = PlanRequest(manifest, ToolchainUsed(tc.name, tc.version), tuple(targets), device, shapes,
                          options.opt_level, options.workspace_mib, options.strip_weights, timing,
                          options.lock_timing_cache, plugin_records(tc, manifest, options.plugin_libraries))
    return tc, graph, request


def build_or_reuse(onnx_path: Path, out_dir: Path, options: BuildOptions | None = None) -> BuiltEngine:
    """Build the engine for `onnx_path` into `out_dir`, or reuse the one there built with the same settings."""
    options = options or BuildOptions()
    tc, graph, request = _request(onnx_path, out_dir, options)
    manifest, settings = request.onnx, request.settings
    target = BuildTarget(tc.name, tc.version, request.targets, request.device)
    engine_path = out_dir / engine_file_name(onnx_path.stem, target, manifest.precision, profile_key(request.profile),
                                             settings.key())
    expected = expected_convolutions(graph.model.graph)
    allowance = fallback_allowance(manifest, options)
    hit = cached(engine_path, settings)
    if hit is not None:
        layers = hit.layer_precisions
        check_precision(manifest.precision, {"convolution_precisions": layers.convolution_precisions,
                                             "convolutions": layers.convolutions}, expected, allowance)
        return BuiltEngine(hit, engine_path, reused=True)
    _load_plugins(manifest, options.plugin_libraries)
    plan, logger, cache, seconds = _build_plan(tc, graph, request)
    summary = precision_summary(_layer_records(tc, plan, logger))
    check_precision(manifest.precision, summary, expected, allowance)
    summary["int8_fallbacks_fp32"] = int8_fallbacks(summary, expected)
    written = cache is not None and options.timing_cache is not None and not request.timing_cache_locked
    cache_after = bytes(cache.serialize()) if written else None  # the file's content once written back
    engine_manifest = build_engine_manifest(engine_path.name, plan, onnx_path, manifest, target,
                                            _settings(request, options, seconds, cache_after), summary,
                                            [msgspec.to_builtins(p) for p in request.plugins])
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(engine_path, plan, engine_manifest)
    if cache_after is not None and options.timing_cache is not None:
        atomic_write_bytes(options.timing_cache, cache_after)
    return BuiltEngine(engine_manifest, engine_path, reused=False)


def _settings(request: PlanRequest, options: BuildOptions, seconds: float, cache_after: bytes | None
              ) -> dict[str, Any]:
    """The manifest's build settings: every plan setting, the cache key, and the timing cache before and after."""
    settings: dict[str, Any] = {
        "builder_optimization_level": request.opt_level, "strongly_typed": True, "profile": request.profile,
        "workspace_mib": request.workspace_mib, "build_seconds": round(seconds, 2),
        "strip_weights": request.strip_weights, "cache_key": request.settings.key()}
    if request.timing_cache is not None and options.timing_cache is not None:
        before = request.settings.timing_cache_sha256
        settings.update({"timing_cache": str(options.timing_cache),
                         "timing_cache_locked": request.timing_cache_locked,
                         "timing_cache_sha256_before_build": before,
                         "timing_cache_sha256_after_build": hashlib.sha256(cache_after).hexdigest()
                         if cache_after is not None else before})
    return settings


def build_engine(onnx_path: Path, out_dir: Path, options: BuildOptions | None = None) -> EngineManifest:
    """Build (or reuse from `out_dir`) the engine for `onnx_path`; returns its manifest."""
    return build_or_reuse(onnx_path, out_dir, options).manifest
