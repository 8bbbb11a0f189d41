"""fp16: NVIDIA Model Optimizer AutoCast. Normalisation, reductions, softmax and tanh stay FP32, I/O stays FP32."""

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
    atomic_write_bytes(dst, model.SerializeToString())
    return {"tool": "modelopt.onnx.autocast.convert_to_mixed_precision",
            "tool_version": tool_version("nvidia-modelopt"),
            "low_precision": "fp16", "kept_fp32_op_types": KEEP_FP32_OPS, "keep_io_types": True}
