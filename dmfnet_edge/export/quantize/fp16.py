"""fp16: NVIDIA Model Optimizer AutoCast. Normalisation, reductions, softmax and tanh stay FP32, I/O stays FP32.

The graph written is canonical: AutoCast lists the graph's `value_info` in an order that follows Python's
per-process string hashing (PYTHONHASHSEED), so two conversions of one graph differed in that order alone, and
with it in the graph's SHA-256, which keys engine caches. Sorted by name, one graph converts to the same bytes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge._quiet import third_party_output
from dmfnet_edge.export.quantize.probes import tool_version
from dmfnet_edge.files import atomic_write_bytes

KEEP_FP32_OPS = ["LayerNormalization", "InstanceNormalization", "GroupNormalization", "ReduceMean", "ReduceMax",
                 "GlobalAveragePool", "Softmax", "Tanh", "Sqrt", "Pow", "Div"]


def convert_fp16(src: Path, dst: Path, sample: dict[str, np.ndarray]) -> dict[str, Any]:
    """AutoCast `src` to FP16 into `dst`, checking ranges on the input pair `sample`; returns the recipe record."""
    require("modelopt.onnx.autocast", extra="quantize", purpose="FP16 conversion (AutoCast)")
    from modelopt.onnx.autocast import convert_to_mixed_precision

    with tempfile.TemporaryDirectory() as tmp:
        # a real input pair, so that AutoCast's range check runs with consistent shapes on dynamic graphs
        np.savez(Path(tmp) / "sample.npz", **sample)
        with third_party_output():
            model = convert_to_mixed_precision(str(src), low_precision_type="fp16", keep_io_types=True,
                                               op_types_to_exclude=KEEP_FP32_OPS,
                                               calibration_data=str(Path(tmp) / "sample.npz"))
    canonical_value_info(model)
    atomic_write_bytes(dst, model.SerializeToString())
    return {"tool": "modelopt.onnx.autocast.convert_to_mixed_precision",
            "tool_version": tool_version("nvidia-modelopt"),
            "low_precision": "fp16", "kept_fp32_op_types": KEEP_FP32_OPS, "keep_io_types": True}


def canonical_value_info(model: Any) -> None:
    """Sort the graph's `value_info` (shape and type annotations of intermediate tensors, an unordered set by
    meaning) by tensor name, in place."""
    ordered = [type(v).FromString(v.SerializeToString()) for v in model.graph.value_info]
    ordered.sort(key=lambda v: v.name)
    model.graph.ClearField("value_info")
    model.graph.value_info.extend(ordered)
