"""int8-tensorrt: NVIDIA Model Optimizer's explicit Q/DQ (entropy or max calibration), for TensorRT engines.

The graph runs on ONNX Runtime for accuracy checks only (slower there than FP32). Its weights keep their full
8-bit range: TensorRT's INT8 kernels accumulate in int32 on every GPU.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge._quiet import third_party_output
from dmfnet_edge.export.quantize.int8_onnxruntime import quantize_int8_onnxruntime
from dmfnet_edge.export.quantize.mixed_precision import KEEP_FP32_AUTO, given_plan, layer_groups
from dmfnet_edge.export.quantize.probes import output_psnr, probe_batches, session_outputs, tool_version
from dmfnet_edge.files import atomic_write_bytes

METHODS = {"entropy": "entropy", "max": "max"}


def quantize_int8_tensorrt(src: Path, dst: Path, batches: list[dict[str, np.ndarray]], method: str,
                           high_precision: str, keep_fp32: str | list[str], target_db: float) -> dict[str, Any]:
    """Model Optimizer INT8 Q/DQ of `src` into `dst`; returns the recipe record."""
    require("modelopt.onnx.quantization", extra="quantize", purpose="INT8 Q/DQ for TensorRT")
    if keep_fp32 == KEEP_FP32_AUTO:
        # the layer groups to keep come from the same search on ONNX Runtime's quantizer (same calibration set;
        # Model Optimizer's Q/DQ placement differs, which the accuracy gate then checks on the result)
        plan = quantize_int8_onnxruntime(src, None, batches, method, keep_fp32, target_db)["mixed_precision"]
        plan["planned_on"] = "onnxruntime.quantization (QOperator), the same calibration set"
    else:
        require("onnxruntime", purpose="INT8 layer groups")
        plan = given_plan(layer_groups(require("onnx", purpose="INT8").load(str(src))), keep_fp32)
    from modelopt.onnx.quantization import quantize

    data = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    exclude = [f"^{re.escape(name)}$" for name in plan["excluded_nodes"]] or None
    with tempfile.TemporaryDirectory() as tmp:
        out, private = Path(tmp) / "q.onnx", Path(tmp) / "src.onnx"
        # Model Optimizer runs onnx.shape_inference.infer_shapes_path on its input in place: it would rewrite the
        # user's (or the shipped) graph, non-atomically, under concurrent readers; it gets a private copy
        shutil.copyfile(src, private)
        with third_party_output():
            quantize(str(private), quantize_mode="int8", calibration_data=data,
                     calibration_method=METHODS[method], calibration_eps=["cpu"],
                     high_precision_dtype=high_precision, output_path=str(out), nodes_to_exclude=exclude,
                     log_level="WARNING")
        probes = probe_batches(batches)
        plan["probe_psnr_db"] = round(output_psnr(session_outputs(out, probes, simulate_qdq=True),
                                                  session_outputs(src, probes)), 2)
        atomic_write_bytes(dst, out.read_bytes())
    return {"tool": "modelopt.onnx.quantization.quantize", "tool_version": tool_version("nvidia-modelopt"),
            "format": "QDQ (explicit, TensorRT)", "method": method, "high_precision_dtype": high_precision,
            "mixed_precision": plan}
