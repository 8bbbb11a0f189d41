"""int8-onnxruntime: ONNX Runtime's static quantizer, the INT8 graph for the CPU.

QOperator, per-channel 7-bit weights, entropy, minmax or percentile calibration. The weights use 7 of their 8
bits because x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake, AMD before Zen 4) multiply uint8
activations by int8 weights with VPMADDUBSW, which saturates the sum of each pair of products at 16 bits: with
full-range weights the same graph gives a different, worse result there (measured on the edge model: 34.5 dB
instead of 46 dB against FP32). With |w| <= 64 a pair sum stays below 2 * 255 * 64 = 32640 < 32767, so every CPU
computes the same integers. Convolutions with fewer than 4 input channels per group stay FP32
(`thin_convolutions`).
"""

from __future__ import annotations

import itertools
import multiprocessing
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge._quiet import third_party_output
from dmfnet_edge.export.quantize.mixed_precision import (
    KEEP_FP32_AUTO,
    TARGET_PROBE_PSNR_DB,
    given_plan,
    layer_groups,
    plan_mixed_precision,
)
from dmfnet_edge.export.quantize.probes import output_psnr, probe_batches, session_outputs, tool_version
from dmfnet_edge.files import atomic_write_bytes

METHODS = {"entropy": "Entropy", "max": "MinMax", "percentile": "Percentile"}
CALIBRATION_STRIDE = 2  # pairs whose activations are held at once before they are folded into the statistics
THIN_CONV_CHANNELS = 4  # fewer input channels per group: INT8 slower than FP32 on ONNX Runtime's CPU kernels
SATURATION_SAFE_WEIGHT = 64  # largest |int8 weight| whose uint8 x int8 pair sums fit VPMADDUBSW's int16


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


def thin_convolutions(model: Any) -> list[str]:
    """Conv nodes with fewer than THIN_CONV_CHANNELS input channels per group.

    ONNX Runtime's CPU INT8 convolution runs these slower than FP32. Measured per node on the edge model (2 cores,
    AVX2): the grouped pixel-attention convolutions (2 inputs per group) took 1.1-22.2 ms in INT8 against 0.2-2.1
    ms in FP32 (10x), the first convolution on the 1-channel image 10.6 ms against 4.8 ms, while ordinary
    convolutions ran 1.7-2.2x faster in INT8. The ONNX Runtime recipe leaves them in FP32; they are a negligible
    share of the arithmetic.
    """
    weights = {t.name: t for t in model.graph.initializer}
    return [node.name for node in model.graph.node if node.op_type == "Conv" and node.input[1] in weights
            and weights[node.input[1]].dims[1] < THIN_CONV_CHANNELS]


def largest_int8_weight(model: Any) -> int:
    """Largest |value| of the int8 weights of a QOperator graph's QLinearConv/QLinearMatMul nodes (0: none)."""
    from onnx import numpy_helper

    weights = {t.name: t for t in model.graph.initializer}
    largest = 0
    for node in model.graph.node:  # input 3 of both ops is the weight
        tensor = weights.get(node.input[3]) if node.op_type in ("QLinearConv", "QLinearMatMul") else None
        if tensor is not None and tensor.data_type == tensor.INT8:
            largest = max(largest, int(np.abs(numpy_helper.to_array(tensor).astype(np.int16)).max()))
    return largest


def quantize_int8_onnxruntime(src: Path, dst: Path | None, batches: list[dict[str, np.ndarray]], method: str,
                              keep_fp32: str | list[str], target_db: float = TARGET_PROBE_PSNR_DB) -> dict[str, Any]:
    """ONNX Runtime static INT8 of `src` into `dst` with the mixed-precision plan `keep_fp32` (auto, none or
    group names); with `dst` None only the plan is made (for the TensorRT flavour). Returns the recipe record."""
    if "modelopt.onnx.quantization.ort_patching" in sys.modules:
        # Model Optimizer patches onnxruntime.quantization's calibrators for the whole process once it is imported
        # (after an int8-tensorrt recipe); ONNX Runtime's own quantizer then runs in a fresh, unpatched process.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(_quantize_here, (src, dst, batches, method, keep_fp32, target_db))
    return _quantize_here(src, dst, batches, method, keep_fp32, target_db)


def _quantize_here(src: Path, dst: Path | None, batches: list[dict[str, np.ndarray]], method: str,
                   keep_fp32: str | list[str], target_db: float) -> dict[str, Any]:
    require("onnxruntime", purpose="INT8 quantization for ONNX Runtime")
    onnx = require("onnx", purpose="INT8 quantization")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    stride = CALIBRATION_STRIDE if len(batches) % CALIBRATION_STRIDE == 0 else 1
    with tempfile.TemporaryDirectory() as tmp:
        prepared, cache = Path(tmp) / "prepared.onnx", Path(tmp) / "calibration-cache.json"
        with third_party_output():
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        prepared_model = onnx.load(str(prepared))
        thin = thin_convolutions(prepared_model)
        groups = layer_groups(prepared_model, frozenset(thin))
        given = None if keep_fp32 == KEEP_FP32_AUTO else given_plan(groups, keep_fp32)  # bad names fail early
        counter = itertools.count()

        def quantize(names: list[str] | None, exclude: list[str] | None = None) -> Path:
            out = Path(tmp) / f"q{next(counter)}.onnx"
            # the first call calibrates and writes the cache; every later one reuses those ranges
            with third_party_output():
                quantize_static(str(prepared), str(out), None if cache.is_file() else _Reader(batches),
                                quant_format=QuantFormat.QOperator, per_channel=True, reduce_range=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=getattr(CalibrationMethod, METHODS[method]),
                                nodes_to_quantize=names, nodes_to_exclude=[*thin, *(exclude or [])],
                                calibration_cache_path=str(cache),
                                # collect in strides: the calibrators otherwise keep every intermediate tensor
                                # of every calibration pair (hundreds of MB per pair) at once
                                extra_options={"CalibTensorRangeSymmetric": False, "CalibStridedMinMax": stride})
            return out

        probes = probe_batches(batches)
        reference = session_outputs(src, probes)

        def measure(path: Path) -> float:
            value = output_psnr(session_outputs(path, probes), reference)
            path.unlink()
            return value

        full = quantize(None)  # calibrates
        all_int8_db = output_psnr(session_outputs(full, probes), reference)
        if given is None:
            plan = plan_mixed_precision(groups, quantize, measure, target_db)
            plan["excluded_nodes"] = [n for g in plan["kept_fp32"] for n in groups[g]]
        else:
            plan = given
        plan["all_int8_probe_psnr_db"] = round(all_int8_db, 2)
        plan["probes"] = len(probes)
        if dst is not None:
            final = quantize(None, plan["excluded_nodes"]) if plan["kept_fp32"] else full
            plan["probe_psnr_db"] = round(output_psnr(session_outputs(final, probes), reference), 2)
            largest = largest_int8_weight(onnx.load(str(final)))
            if largest > SATURATION_SAFE_WEIGHT:
                raise RuntimeError(f"quantized weights reach {largest}; the recipe promises "
                                   f"<= {SATURATION_SAFE_WEIGHT}")
            atomic_write_bytes(dst, final.read_bytes())
    recipe = {"tool": "onnxruntime.quantization.quantize_static", "tool_version": tool_version("onnxruntime"),
              "format": "QOperator", "per_channel": True, "activations": "uint8 asymmetric",
              "weights": f"int8 symmetric per-channel, 7-bit range (|w| <= {SATURATION_SAFE_WEIGHT})",
              "method": method, "fp32_thin_convolutions": thin}
    return {**recipe, "mixed_precision": plan}
