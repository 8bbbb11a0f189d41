"""Build a strongly typed TensorRT engine from a precision-recipe ONNX graph (TensorRT 10.x and 11.x).

Precision comes from the graph only (TensorRT 11 has no FP16/INT8 builder flags; on 10.x the network is
created STRONGLY_TYPED so both behave alike). The optimisation profile is static by default, the builder
optimisation level is pinned, and the timing cache is read from and (unless locked) written back to a file;
a locked cache adds ERROR_ON_TIMING_CACHE_MISS where the TensorRT version has it, for reproducible rebuilds.
After building, the engine inspector's per-layer precisions must contain what the recipe promises.

Written against the documented TensorRT Python API; TensorRT is not installable in this project's CI, so
this module is exercised there only through its TensorRT-free parts (manifests, keys, precision parsing).
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

from dmfnet_edge._optional import require
from dmfnet_edge.artifacts import sha256_file, write_json_atomic
from dmfnet_edge.build.engine_manifest import (DeviceInfo, build_engine_manifest, engine_file_name,
                                               engine_manifest_path)
from dmfnet_edge.build.precision import check_precision, layer_precisions
from dmfnet_edge.errors import EnvironmentProblem, InputError, ModelFileError
from dmfnet_edge.export.contract import INPUT_NAMES, contract_of, read_manifest
from dmfnet_edge.io.images import atomic_write_bytes

log = logging.getLogger(__name__)


def current_device(trt_version: str, device: int = 0) -> DeviceInfo:
    """The GPU this process sees (cuda-python), with the TensorRT version."""
    cudart = _cudart()
    err, prop = cudart.cudaGetDeviceProperties(device)
    if int(err) != 0:
        raise EnvironmentProblem(f"no usable CUDA device {device} (cudaGetDeviceProperties error {int(err)})")
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return DeviceInfo(name.rstrip("\x00"), (int(prop.major), int(prop.minor)), int(prop.multiProcessorCount),
                      trt_version)


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        cudart = require("cuda.cudart", extra="trt", purpose="TensorRT engines")
    return cudart


def _network(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> tuple[Any, Any]:
    major = int(trt.__version__.split(".")[0])
    flags = 0
    if major < 11:  # 11.x networks are always strongly typed
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFileError(f"{onnx_path}: TensorRT cannot parse the graph: {errors}")
    return network, parser


def _timing_cache(config: Any, path: Path | None, locked: bool, trt: Any) -> Any:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    if locked and not data:
        raise InputError(f"--lock-timing-cache: {path} is missing or empty; build once without the lock first")
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)
    if locked and hasattr(trt.BuilderFlag, "ERROR_ON_TIMING_CACHE_MISS"):
        config.set_flag(trt.BuilderFlag.ERROR_ON_TIMING_CACHE_MISS)
    return cache


def _profile(builder: Any, config: Any, manifest: dict[str, Any], shape: tuple[int, int, int] | None) -> list[int]:
    contract = contract_of(manifest)
    n = contract.static_batch or (shape[0] if shape else 1)
    h, w = contract.static_size or ((shape[1], shape[2]) if shape else (256, 256))
    dims = [n, 1, h, w]
    profile = builder.create_optimization_profile()
    for name in INPUT_NAMES:
        profile.set_shape(name, dims, dims, dims)  # static: min = opt = max
    config.add_optimization_profile(profile)
    return dims


def build_engine(onnx_path: Path, out_dir: Path, opt_level: int = 3, timing_cache: Path | None = None,
                 lock_timing_cache: bool = False, workspace_mib: int = 2048,
                 shape: tuple[int, int, int] | None = None, plugin_libraries: list[Path] | None = None
                 ) -> dict[str, Any]:
    """Build (or reuse from `out_dir`) the engine for `onnx_path` on this GPU; returns its manifest."""
    trt = require("tensorrt", extra="trt", purpose="'dmfnet-export build'")
    manifest = read_manifest(onnx_path)
    for library in plugin_libraries or []:
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    embedded = []
    if manifest.get("tensorrt_plugins"):
        from dmfnet_edge.build import qdp_plugin

        qdp_plugin.register()
        embedded = [qdp_plugin.plugin_record()]
    device = current_device(trt.__version__)
    engine_path = out_dir / engine_file_name(onnx_path.stem, device, manifest["onnx_sha256"], manifest["precision"])
    if engine_path.is_file() and engine_manifest_path(engine_path).is_file():
        log.info("engine cache hit: %s", engine_path.name)
        from dmfnet_edge.build.engine_manifest import read_engine_manifest

        return read_engine_manifest(engine_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _network(trt, builder, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    config.builder_optimization_level = opt_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    dims = _profile(builder, config, manifest, shape)
    cache = _timing_cache(config, timing_cache, lock_timing_cache, trt)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelFileError(f"{onnx_path}: TensorRT failed to build an engine (see the log above)")
    atomic_write_bytes(engine_path, bytes(plan))
    if timing_cache is not None and not lock_timing_cache:
        atomic_write_bytes(timing_cache, bytes(cache.serialize()))
    counts = _inspect(trt, logger, bytes(plan))
    check_precision(manifest["precision"], counts)
    settings = {"builder_optimization_level": opt_level, "strongly_typed": True, "profile": {"static": dims},
                "workspace_mib": workspace_mib, "timing_cache": str(timing_cache) if timing_cache else None,
                "timing_cache_sha256": sha256_file(timing_cache) if timing_cache and timing_cache.is_file() else None,
                "timing_cache_locked": lock_timing_cache}
    plugins = [{"library": str(p), "sha256": sha256_file(p)} for p in plugin_libraries or []] + embedded
    engine_manifest = build_engine_manifest(engine_path, onnx_path, manifest, device, settings, counts, plugins)
    write_json_atomic(engine_manifest_path(engine_path), engine_manifest)
    return engine_manifest


def _inspect(trt: Any, logger: Any, plan: bytes) -> dict[str, int]:
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    inspector = engine.create_engine_inspector()
    return layer_precisions(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
