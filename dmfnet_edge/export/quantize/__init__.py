"""Precision recipes written into the ONNX graph (how TensorRT 11, and strongly typed TensorRT 10, build).

One module per recipe, plus the search they share:
* `fp16`: NVIDIA Model Optimizer AutoCast.
* `int8_tensorrt`: Model Optimizer explicit Q/DQ, for TensorRT engines.
* `int8_onnxruntime`: ONNX Runtime's static quantizer, the INT8 graph for the CPU.
* `mixed_precision`: which layer groups an INT8 graph keeps in FP32 (both INT8 flavours), and its picture.
* `probes`: the calibration pairs every recipe measures its result on, against the FP32 graph.
Both INT8 flavours calibrate on the same manifest of real slices (see `export/calibration.py`). `quantize_onnx`
chooses the recipe, checks its options and writes the graph's manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.artifacts import sha256_file
from dmfnet_edge.contract import IOContract, OnnxManifest, manifest_path, read_manifest
from dmfnet_edge.errors import InputError
from dmfnet_edge.export.calibration import calibration_inputs
from dmfnet_edge.export.onnx_export import build_manifest, op_inventory
from dmfnet_edge.export.quantize import int8_onnxruntime, int8_tensorrt
from dmfnet_edge.export.quantize.fp16 import convert_fp16
from dmfnet_edge.export.quantize.mixed_precision import KEEP_FP32_AUTO, TARGET_PROBE_PSNR_DB, resolve_keep_fp32
from dmfnet_edge.export.recipes import GraphStep
from dmfnet_edge.files import publish_staged, stage_file, staging_path
from dmfnet_edge.precisions import DEFAULT_FLAVOUR, QUANTIZED_NUMERICS, Precision, graph_precision


def _synthetic_pair(contract: IOContract) -> dict[str, np.ndarray]:
    h, w = contract.static_size or (256, 256)
    n = contract.static_batch or 1
    ramp = np.linspace(-1, 1, h * w, dtype=np.float32).reshape(1, 1, h, w)
    return {"mri": np.repeat(ramp, n, axis=0), "other": np.repeat(-ramp, n, axis=0)}


@dataclass(frozen=True)
class QuantizeJob:
    """What a quantizer needs besides its source and destination."""

    batches: list[dict[str, np.ndarray]] | None  # calibration inputs
    sample: dict[str, np.ndarray]  # one real (or synthetic) input pair
    method: str
    high_precision: str
    keep_fp32: str | list[str]
    target_db: float


# The quantizer module of every precision registry entry that has one (precisions.Precision.quantizer).
QUANTIZERS: dict[str, Callable[[Path, Path, QuantizeJob], dict[str, Any]]] = {
    "fp16": lambda src, dst, job: convert_fp16(src, dst, job.sample),
    "int8_onnxruntime": lambda src, dst, job: int8_onnxruntime.quantize_int8_onnxruntime(
        src, dst, job.batches, job.method, job.keep_fp32, job.target_db),
    "int8_tensorrt": lambda src, dst, job: int8_tensorrt.quantize_int8_tensorrt(
        src, dst, job.batches, job.method, job.high_precision, job.keep_fp32, job.target_db),
}


def recipe_precision(precision: str, target: str) -> Precision:
    """The registry entry quantize writes for `--precision` / `--target`."""
    if precision not in QUANTIZED_NUMERICS:
        raise InputError(f"--precision {precision}: choose {' or '.join(QUANTIZED_NUMERICS)}")
    return graph_precision(precision, target)


def refuse_plugin_graph(src: Path, parent: OnnxManifest) -> None:
    """The recipes run the graph (Model Optimizer's AutoCast and calibration, ONNX Runtime probes), which no ONNX
    runtime can do with TensorRT plugin nodes (AutoCast died with a NameError inside Model Optimizer)."""
    if parent.plugins:
        raise InputError(f"{src}: has {len(parent.plugins)} TensorRT plugin nodes (exported with --trt-plugins), "
                         "which the precision recipes cannot run; quantize the export made without --trt-plugins "
                         "(a plugin graph builds FP32 engines)")


def quantize_onnx(src: Path, dst: Path, precision: str, target: str, method: str = "entropy",
                  batches: list[dict[str, np.ndarray]] | None = None, calibration: dict[str, Any] | None = None,
                  high_precision: str = "fp32", keep_fp32: str | list[str] = KEEP_FP32_AUTO,
                  target_db: float = TARGET_PROBE_PSNR_DB) -> OnnxManifest:
    """Write the `precision`/`target` recipe of the FP32 graph `src` to `dst` with its manifest."""
    onnx = require("onnx", purpose="quantization")
    parent = read_manifest(src)
    if parent.precision != "fp32":
        raise InputError(f"{src}: is already {parent.precision}; quantize the fp32 export")
    refuse_plugin_graph(src, parent)
    entry = recipe_precision(precision, target)
    if entry.numeric == "int8":
        if method not in entry.methods:
            raise InputError(f"--method {method}: {target} supports {', '.join(entry.methods)}")
        if not batches:
            raise InputError("INT8 needs a calibration set: pass --calibration calibration/<set>.json")
        if not 20 <= target_db <= 99:
            raise InputError(f"--target-psnr {target_db:g}: choose a value between 20 and 99 dB")
    job = QuantizeJob(batches, batches[0] if batches else _synthetic_pair(parent.contract), method, high_precision,
                      keep_fp32, target_db)
    work, sidecar = staging_path(dst), manifest_path(dst)
    try:
        manifest = _quantize(onnx, parent, src, work, dst.name, entry, job, calibration)
        publish_staged([(work, dst), (stage_file(sidecar, manifest.encode()), sidecar)])  # the manifest last
    finally:
        work.unlink(missing_ok=True)
    return manifest


def _quantize(onnx: Any, parent: OnnxManifest, src: Path, work: Path, name_on_disk: str, entry: Precision,
              job: QuantizeJob, calibration: dict[str, Any] | None) -> OnnxManifest:
    """The recipe written to the staging file `work`, and the manifest the graph will have as `name_on_disk`."""
    assert entry.quantizer is not None  # recipe_precision returns quantized entries only
    recipe = QUANTIZERS[entry.quantizer](src, work, job)
    info = {"model": parent.model, "model_config": parent.model_config, "weights_sha256": parent.weights_sha256,
            "opset": parent.opset, "recipe": recipe, "calibration": calibration,
            "parent_onnx_sha256": parent.onnx_sha256, "ops": op_inventory(onnx.load(str(work)))}
    return build_manifest(name_on_disk, sha256_file(work), parent.contract, entry.name,
                          {k: v for k, v in info.items() if v is not None})


def quantize_step(step: GraphStep, src: Path, dst: Path, calibration_root: Path | None = None) -> OnnxManifest:
    """Write the graph a recipe's graph step describes (fp16 or int8) from the FP32 graph `src` to `dst`: what
    `dmfnet-export quantize` and the recipe runner both do. `calibration_root` relocates the calibration images."""
    if step.precision == "fp32":
        raise InputError("an fp32 recipe has nothing to quantize (its graph is the FP32 export)")
    batches, calibration = (None, None)
    if step.calibration_file is not None:
        batches, calibration = calibration_inputs(step.calibration_file, calibration_root)
    return quantize_onnx(src, dst, step.precision, step.quantization or DEFAULT_FLAVOUR, step.int8_method, batches,
                         calibration, step.unquantized, resolve_keep_fp32(step.keep), step.psnr_target)
