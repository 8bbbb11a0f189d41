"""Precision recipes written into the ONNX graph (how TensorRT 11, and strongly typed TensorRT 10, build).

* fp16: NVIDIA Model Optimizer AutoCast; normalisation, reductions, softmax and tanh stay FP32, I/O stays FP32.
* int8-tensorrt: Model Optimizer explicit Q/DQ (entropy or max calibration), for TensorRT engines. Runs on
  ONNX Runtime for accuracy checks only (it is slower there than FP32).
* int8-onnxruntime: ONNX Runtime's static quantizer (QOperator, per-channel weights, entropy/minmax/percentile
  calibration), the fast graph for the CPU default.
Both INT8 flavours calibrate on the same manifest of real slices (see calibration.py).
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.artifacts import write_json_atomic
from dmfnet_edge.errors import InputError
from dmfnet_edge.export.contract import IOContract, contract_of, manifest_path, read_manifest
from dmfnet_edge.export.onnx_export import build_manifest, op_inventory
from dmfnet_edge.io.images import atomic_write_bytes

log = logging.getLogger(__name__)
FP16_KEEP_FP32 = ["InstanceNormalization", "GroupNormalization", "ReduceMean", "ReduceMax", "GlobalAveragePool",
                  "Softmax", "Tanh", "Sqrt", "Pow", "Div"]
ORT_METHODS = {"entropy": "Entropy", "max": "MinMax", "percentile": "Percentile"}
MODELOPT_METHODS = {"entropy": "entropy", "max": "max"}


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


class _Reader:
    """onnxruntime.quantization CalibrationDataReader over a list of input dicts, readable in strides."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self._batches = batches
        self.set_range(0, len(batches))

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._items = iter(self._batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


CALIBRATION_STRIDE = 2  # pairs whose activations are held at once before they are folded into the statistics


def _ort_int8(src: Path, dst: Path, batches: list[dict[str, np.ndarray]], method: str) -> dict[str, Any]:
    if "modelopt.onnx.quantization.ort_patching" in sys.modules:
        # Model Optimizer patches onnxruntime.quantization's calibrators for the whole process once it is imported
        # (after an int8-tensorrt recipe); ONNX Runtime's own quantizer then runs in a fresh, unpatched process.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(_ort_int8_here, (src, dst, batches, method))
    return _ort_int8_here(src, dst, batches, method)


def _ort_int8_here(src: Path, dst: Path, batches: list[dict[str, np.ndarray]], method: str) -> dict[str, Any]:
    require("onnxruntime", purpose="INT8 quantization for ONNX Runtime")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    stride = CALIBRATION_STRIDE if len(batches) % CALIBRATION_STRIDE == 0 else 1
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(Path(tmp) / "q.onnx"), _Reader(batches), quant_format=QuantFormat.QOperator,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, ORT_METHODS[method]),
                        extra_options={"CalibTensorRangeSymmetric": False,
                                       # collect in strides: the calibrators otherwise keep every intermediate
                                       # tensor of every calibration pair (hundreds of MB per pair) at once
                                       "CalibStridedMinMax": stride})
        atomic_write_bytes(dst, (Path(tmp) / "q.onnx").read_bytes())
    return {"tool": "onnxruntime.quantization.quantize_static", "tool_version": _version("onnxruntime"),
            "format": "QOperator", "per_channel": True, "activations": "uint8 asymmetric",
            "weights": "int8 symmetric per-channel", "method": method}


def _modelopt_int8(src: Path, dst: Path, batches: list[dict[str, np.ndarray]], method: str,
                   high_precision: str) -> dict[str, Any]:
    require("modelopt.onnx.quantization", extra="quantize", purpose="INT8 Q/DQ for TensorRT")
    from modelopt.onnx.quantization import quantize

    data = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "q.onnx"
        quantize(str(src), quantize_mode="int8", calibration_data=data, calibration_method=MODELOPT_METHODS[method],
                 calibration_eps=["cpu"], high_precision_dtype=high_precision, output_path=str(out),
                 log_level="WARNING")
        atomic_write_bytes(dst, out.read_bytes())
    return {"tool": "modelopt.onnx.quantization.quantize", "tool_version": _version("nvidia-modelopt"),
            "format": "QDQ (explicit, TensorRT)", "method": method, "high_precision_dtype": high_precision}


def _autocast_fp16(src: Path, dst: Path, sample: dict[str, np.ndarray]) -> dict[str, Any]:
    require("modelopt.onnx.autocast", extra="quantize", purpose="FP16 conversion (AutoCast)")
    from modelopt.onnx.autocast import convert_to_mixed_precision

    with tempfile.TemporaryDirectory() as tmp:
        # a real input pair, so that AutoCast's range check runs with consistent shapes on dynamic graphs
        np.savez(Path(tmp) / "sample.npz", **sample)
        model = convert_to_mixed_precision(str(src), low_precision_type="fp16", op_types_to_exclude=FP16_KEEP_FP32,
                                           keep_io_types=True, calibration_data=str(Path(tmp) / "sample.npz"))
    atomic_write_bytes(dst, model.SerializeToString())
    return {"tool": "modelopt.onnx.autocast.convert_to_mixed_precision", "tool_version": _version("nvidia-modelopt"),
            "low_precision": "fp16", "kept_fp32_op_types": FP16_KEEP_FP32, "keep_io_types": True}


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


def quantize_onnx(src: Path, dst: Path, precision: str, target: str, method: str = "entropy",
                  batches: list[dict[str, np.ndarray]] | None = None, calibration: dict[str, Any] | None = None,
                  high_precision: str = "fp32") -> dict[str, Any]:
    """Write the `precision`/`target` recipe of the FP32 graph `src` to `dst` with its manifest."""
    onnx = require("onnx", purpose="quantization")
    parent = read_manifest(src)
    if parent["precision"] != "fp32":
        raise InputError(f"{src}: is already {parent['precision']}; quantize the fp32 export")
    name = recipe_name(precision, target)
    if precision == "int8":
        valid = ORT_METHODS if target == "onnxruntime" else MODELOPT_METHODS
        if method not in valid:
            raise InputError(f"--method {method}: {target} supports {', '.join(valid)}")
        if not batches:
            raise InputError("INT8 needs a calibration set: pass --calibration calibration/<set>.json")
        recipe = (_ort_int8(src, dst, batches, method) if target == "onnxruntime"
                  else _modelopt_int8(src, dst, batches, method, high_precision))
    else:
        recipe = _autocast_fp16(src, dst, batches[0] if batches else _synthetic_pair(contract_of(parent)))
    contract: IOContract = contract_of(parent)
    info = {k: parent[k] for k in ("model", "model_config", "weights_sha256", "opset") if k in parent}
    info.update({"recipe": recipe, "calibration": calibration, "parent_onnx_sha256": parent["onnx_sha256"],
                 "ops": op_inventory(onnx.load(str(dst)))})
    manifest = build_manifest(dst, contract, name, info)
    write_json_atomic(manifest_path(dst), manifest)
    return manifest
