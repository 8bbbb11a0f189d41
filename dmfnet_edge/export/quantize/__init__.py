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

from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.contract import IOContract, OnnxManifest, manifest_path, read_manifest
from dmfnet_edge.errors import InputError
from dmfnet_edge.export.calibration import calibration_inputs
from dmfnet_edge.export.onnx_export import build_manifest, op_inventory
from dmfnet_edge.export.quantize import int8_onnxruntime, int8_tensorrt
from dmfnet_edge.export.quantize.fp16 import convert_fp16
from dmfnet_edge.export.quantize.mixed_precision import KEEP_FP32_AUTO, TARGET_PROBE_PSNR_DB, resolve_keep_fp32
from dmfnet_edge.export.recipes import GraphStep
from dmfnet_edge.files import publish_staged, stage_file, staging_path


def _synthetic_pair(contract: IOContract) -> dict[str, np.ndarray]:
    h, w = contract.static_size or (256, 256)
    n = contract.static_batch or 1
    ramp = np.linspace(-1, 1, h * w, dtype=np.float32).reshape(1, 1, h, w)
    return {"mri": np.repeat(ramp, n, axis=0), "other": np.repeat(-ramp, n, axis=0)}


def recipe_name(precision: str, target: str) -> str:
    if precision == "fp16":
        return "fp16"
    if precision == "int8":
        return f"int8-{target}"
    raise InputError(f"--precision {precision}: choose fp16 or int8")


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
    name = recipe_name(precision, target)
    work = staging_path(dst)
    try:
        manifest = _quantize(onnx, parent, src, work, dst.name, name, precision, target, method, batches,
                             calibration, high_precision, keep_fp32, target_db)
        publish_staged([(work, dst), (stage_file(manifest_path(dst), manifest.encode()), manifest_path(dst))])
    finally:
        work.unlink(missing_ok=True)
    return manifest


def _quantize(onnx: Any, parent: OnnxManifest, src: Path, work: Path, name_on_disk: str, name: str, precision: str,
              target: str, method: str, batches: list[dict[str, np.ndarray]] | None,
              calibration: dict[str, Any] | None, high_precision: str, keep_fp32: str | list[str],
              target_db: float) -> OnnxManifest:
    """The recipe written to the staging file `work`, and the manifest the graph will have as `name_on_disk`."""
    dst = work
    if precision == "int8":
        flavour = int8_onnxruntime if target == "onnxruntime" else int8_tensorrt
        if method not in flavour.METHODS:
            raise InputError(f"--method {method}: {target} supports {', '.join(flavour.METHODS)}")
        if not batches:
            raise InputError("INT8 needs a calibration set: pass --calibration calibration/<set>.json")
        if not 20 <= target_db <= 99:
            raise InputError(f"--target-psnr {target_db:g}: choose a value between 20 and 99 dB")
        recipe = (int8_onnxruntime.quantize_int8_onnxruntime(src, dst, batches, method, keep_fp32, target_db)
                  if target == "onnxruntime" else
                  int8_tensorrt.quantize_int8_tensorrt(src, dst, batches, method, high_precision, keep_fp32,
                                                       target_db))
    else:
        recipe = convert_fp16(src, dst, batches[0] if batches else _synthetic_pair(parent.contract))
    info = {"model": parent.model, "model_config": parent.model_config, "weights_sha256": parent.weights_sha256,
            "opset": parent.opset, "recipe": recipe, "calibration": calibration,
            "parent_onnx_sha256": parent.onnx_sha256, "ops": op_inventory(onnx.load(str(dst)))}
    return build_manifest(dst, parent.contract, name, {k: v for k, v in info.items() if v is not None},
                          name_on_disk)


def quantize_step(step: GraphStep, src: Path, dst: Path, calibration_root: Path | None = None) -> OnnxManifest:
    """Write the graph a recipe's graph step describes (fp16 or int8) from the FP32 graph `src` to `dst`: what
    `dmfnet-export quantize` and the recipe runner both do. `calibration_root` relocates the calibration images."""
    if step.precision == "fp32":
        raise InputError("an fp32 recipe has nothing to quantize (its graph is the FP32 export)")
    batches, calibration = (None, None)
    if step.calibration_file is not None:
        batches, calibration = calibration_inputs(step.calibration_file, calibration_root)
    return quantize_onnx(src, dst, step.precision, step.quantization or "onnxruntime", step.int8_method, batches,
                         calibration, step.unquantized, resolve_keep_fp32(step.keep), step.psnr_target)
