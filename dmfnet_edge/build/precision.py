"""Which precisions an engine actually runs, read from the TensorRT engine inspector (JSON, detailed
verbosity): an engine is called FP16 or INT8 only if its layers are."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from dmfnet_edge.errors import DmfnetError

_TOKENS = (("int8", "int8"), ("fp8", "fp8"), ("bf16", "bf16"), ("bfloat16", "bf16"), ("fp16", "fp16"),
           ("half", "fp16"), ("int32", "int32"), ("int64", "int64"), ("bool", "bool"), ("fp32", "fp32"),
           ("float", "fp32"))
REQUIRED = {"fp16": ("fp16",), "int8-tensorrt": ("int8",), "int8-onnxruntime": ("int8",), "fp32": ()}


class PrecisionMismatch(DmfnetError):
    exit_code = 1


def tensor_precision(fmt: str) -> str:
    text = fmt.lower()
    for token, name in _TOKENS:
        if token in text:
            return name
    return "unknown"


def layer_precisions(inspector_json: str | dict[str, Any]) -> dict[str, int]:
    """Count layers by the precision of their first output ('Format/Datatype' of detailed inspector output)."""
    info = json.loads(inspector_json) if isinstance(inspector_json, str) else inspector_json
    counts: Counter = Counter()
    for layer in info.get("Layers", []):
        if not isinstance(layer, dict) or not layer.get("Outputs"):
            continue
        counts[tensor_precision(str(layer["Outputs"][0].get("Format/Datatype", "")))] += 1
    return dict(counts)


def check_precision(recipe: str, counts: dict[str, int]) -> None:
    """Refuse to label an engine with a precision none of its layers runs in."""
    for needed in REQUIRED.get(recipe, ()):
        if counts.get(needed, 0) == 0:
            raise PrecisionMismatch(f"the engine was asked to be {recipe} but no layer runs in {needed} "
                                    f"(layers by precision: {counts}); TensorRT 11 takes precision only from the "
                                    "ONNX graph: build from a 'dmfnet-export quantize' output")
