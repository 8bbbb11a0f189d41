"""Which precisions an engine actually runs, read from TensorRT's own per-layer description: an engine is called
FP16 or INT8 only if its convolutions are.

Three sources describe the same layers (profiling verbosity DETAILED):
* the engine inspector's JSON, TensorRT 10.x: each tensor has one field 'Format/Datatype' ("Row major linear FP32");
* the engine inspector's JSON, TensorRT 11.x and TensorRT for RTX: 'Datatype' ("Half") and 'Format' apart,
  weights listed as 'Constants' (10.x gives conv weights as 'Weights': {'Type': ...});
* the builder's VERBOSE "Layers:" dump, which needs no GPU: one line per layer, "Name: ..., LayerType: ...,
  Inputs: [ { ..., Datatype: Int8, Format: ... } ], Constants: [...], Outputs: [...], ..., Metadata:
  [ONNX Layer: /downs.0/block1/conv/Conv]...".
Every Conv node of the graph must run as the graph prescribes. A convolution counts as INT8 when its input and
its weights are Int8 (its output is usually Float: the dequantization is fused into it), as FP16 when its input
is Half. Counting by a layer's first output, as one might with the 10.x inspector, misses every INT8 convolution.

TensorRT may run a Q/DQ convolution unfused in FP32 (dequantize, then a float convolution: the same values, only
slower). Such fallbacks pass only where they were declared: in a layer group the graph's quantization plan keeps
in FP32, or named (node or layer group) or counted in the build's `FallbackAllowance`; the rest are refused by
name, so an engine with 88 of its 89 INT8 convolutions in FP32 is never called INT8.

TensorRT for RTX lists synchronisation pseudo-layers between its streams ('signal' and 'wait': no inputs, no
outputs, no kernel) among the layers; they are counted apart from the layers that compute.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from dmfnet_edge.contract import layer_group
from dmfnet_edge.errors import DmfnetError, ModelFileError
from dmfnet_edge.precisions import PRECISIONS
from dmfnet_edge.records import parse_json

_TOKENS = (("int8", "int8"), ("fp8", "fp8"), ("bf16", "bf16"), ("bfloat16", "bf16"), ("fp16", "fp16"),
           ("half", "fp16"), ("int32", "int32"), ("int64", "int64"), ("bool", "bool"), ("fp32", "fp32"),
           ("float", "fp32"))
CONVOLUTION_TYPES = ("correlation", "convolution")  # 'correlation': Myelin/CASK, '...Convolution': 10.x layer types
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
_CONV_NODE = re.compile(r"^Conv(_\d+)?$")
_DATATYPE = re.compile(r"Datatype: ([A-Za-z0-9]+)")
_SECTIONS = ("Inputs: [", "Constants: [", "Outputs: [", "TacticName:")
SYNCHRONISATION_TYPES = ("signal", "wait")  # TensorRT for RTX's cross-stream events, listed as layers


class PrecisionMismatch(DmfnetError):
    exit_code = 1


@dataclass(frozen=True)
class LayerRecord:
    """One engine layer: precisions of its inputs, weights (constants) and outputs, and the ONNX nodes it runs."""

    name: str
    layer_type: str
    inputs: tuple[str, ...]
    weights: tuple[str, ...]
    outputs: tuple[str, ...]
    onnx_nodes: tuple[str, ...]

    @property
    def is_convolution(self) -> bool:
        if any(kind in self.layer_type.lower() for kind in CONVOLUTION_TYPES):
            return True
        return self.layer_type == "runtime_fusion" and "Corr" in self.name  # a convolution fused with its neighbours

    @property
    def conv_nodes(self) -> tuple[str, ...]:
        """The ONNX Conv nodes this layer computes (a convolution layer without metadata: its own name)."""
        nodes = tuple(n for n in self.onnx_nodes if _CONV_NODE.match(n.rsplit("/", 1)[-1]))
        return nodes or ((self.name,) if self.is_convolution else ())

    @property
    def is_synchronisation(self) -> bool:
        return self.layer_type.lower() in SYNCHRONISATION_TYPES

    @property
    def compute_precision(self) -> str:
        if "int8" in self.inputs and "int8" in self.weights:
            return "int8"
        if "fp16" in self.inputs:
            return "fp16"
        return self.inputs[0] if self.inputs else "unknown"


def tensor_precision(fmt: str) -> str:
    text = fmt.lower()
    for token, name in _TOKENS:
        if token in text:
            return name
    return "unknown"


def _json_tensor_type(tensor: Any) -> str:
    if not isinstance(tensor, dict):
        return "unknown"
    return tensor_precision(str(tensor.get("Datatype") or tensor.get("Format/Datatype") or ""))


def records_from_inspector(inspector_json: str | dict[str, Any]) -> list[LayerRecord]:
    """Layers of the engine inspector's JSON (LayerInformationFormat.JSON), 10.x or 11.x schema."""
    info = parse_json(inspector_json.encode(), "the engine inspector's layer information") \
        if isinstance(inspector_json, str) else inspector_json
    if not isinstance(info, dict):
        raise ModelFileError("the engine inspector's layer information is not a JSON object")
    records = []
    for layer in info.get("Layers", []):
        if not isinstance(layer, dict):
            continue  # a layer described without detail (profiling verbosity below DETAILED)
        weights = [_json_tensor_type(c) for c in layer.get("Constants", []) or []]
        if isinstance(layer.get("Weights"), dict):
            weights.append(tensor_precision(str(layer["Weights"].get("Type", ""))))
        records.append(LayerRecord(str(layer.get("Name", "?")), str(layer.get("LayerType", "")),
                                   tuple(_json_tensor_type(t) for t in layer.get("Inputs", []) or []), tuple(weights),
                                   tuple(_json_tensor_type(t) for t in layer.get("Outputs", []) or []),
                                   tuple(_ONNX_LAYER.findall(str(layer.get("Metadata", ""))))))
    return records


def _dump_line(line: str) -> LayerRecord | None:
    name = re.match(r"Name: (.*?), LayerType: ([^,]*),", line)
    starts = [line.find(s) for s in _SECTIONS]
    if name is None or min(starts) < 0:
        return None
    inputs, constants, outputs = (line[starts[i]:starts[i + 1]] for i in range(3))
    types = [tuple(tensor_precision(t) for t in _DATATYPE.findall(part)) for part in (inputs, constants, outputs)]
    return LayerRecord(name.group(1), name.group(2).strip(), *types, tuple(_ONNX_LAYER.findall(line[starts[3]:])))


def records_from_layer_dump(log_text: str) -> list[LayerRecord]:
    """Layers of the builder's VERBOSE 'Layers:' dump (printed when profiling verbosity is DETAILED)."""
    start = log_text.find("Layers:\n")
    if start < 0:
        return []
    records = []
    for line in log_text[start + len("Layers:\n"):].splitlines():
        if not line.strip():
            break  # the dump ends with a blank line (then 'I/O Tensors:')
        record = _dump_line(line.strip())
        if record is not None:
            records.append(record)
    return records


def precision_summary(records: list[LayerRecord]) -> dict[str, Any]:
    """Layers that compute (by output precision and by type) and synchronisation pseudo-layers apart,
    convolutions by compute precision, and each ONNX convolution's precision."""
    convolutions: dict[str, str] = {}
    layers = [r for r in records if not r.is_synchronisation]
    for record in layers:
        for node in record.conv_nodes:
            # a convolution layer decides; a 1x1 convolution on a pooled vector may run inside a generated kernel
            if record.is_convolution or node not in convolutions:
                convolutions[node] = record.compute_precision
    outputs = Counter(r.outputs[0] for r in layers if r.outputs)
    return {"layers": len(layers), "synchronisation_layers": len(records) - len(layers),
            "layers_by_type": dict(sorted(Counter(r.layer_type for r in layers).items())),
            "layers_by_output": dict(sorted(outputs.items())),
            "convolutions": dict(sorted(Counter(convolutions.values()).items())),
            "convolution_precisions": dict(sorted(convolutions.items()))}


def expected_convolutions(graph: Any) -> dict[str, str]:
    """What each Conv node of a precision-recipe ONNX graph must run in: int8 when both its data and its weights
    come out of DequantizeLinear (explicit Q/DQ), fp16 when its weights are float16 (AutoCast), else fp32."""
    producer = {out: node for node in graph.node for out in node.output}
    initializers = {i.name: i.data_type for i in graph.initializer}
    float16 = 10  # onnx.TensorProto.FLOAT16
    expected = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        data, weight = (producer.get(name) for name in node.input[:2])
        if all(p is not None and p.op_type == "DequantizeLinear" for p in (data, weight)):
            expected[node.name] = "int8"
        else:
            expected[node.name] = "fp16" if initializers.get(node.input[1]) == float16 else "fp32"
    return expected


def _fail(recipe: str, what: str, summary: dict[str, Any]) -> None:
    raise PrecisionMismatch(f"the engine was asked to be {recipe} but {what} (convolutions by precision: "
                            f"{summary['convolutions']}); TensorRT takes precision only from the ONNX graph: build "
                            "from a 'dmfnet-export quantize' output of that precision")




@dataclass(frozen=True)
class FallbackAllowance:
    """Which Q/DQ convolutions may run unfused in FP32: those of the layer groups the graph's quantization plan
    keeps in FP32 (`groups`), those named by ONNX node or layer group (`names`), and up to `count` more."""

    groups: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    count: int = 0

    def declares(self, node: str) -> bool:
        return layer_group(node) in self.groups or node in self.names or layer_group(node) in self.names

    def describe(self) -> str:
        parts = [f"layer groups kept FP32 {', '.join(self.groups)}"] if self.groups else []
        parts += [f"named {', '.join(self.names)}"] if self.names else []
        parts += [f"{self.count} more"] if self.count else []
        return "; ".join(parts) or "none"


def int8_fallbacks(summary: dict[str, Any], expected: dict[str, str]) -> list[str]:
    """Q/DQ convolutions TensorRT ran unfused in FP32 (dequantize, then a float convolution: the same values, only
    slower). TensorRT may do so where INT8 does not pay, e.g. a 1x1 convolution on a pooled 1x1 vector."""
    found = summary["convolution_precisions"]
    return sorted(n for n, p in expected.items() if p == "int8" and found.get(n) == "fp32")


def _check_fallbacks(recipe: str, summary: dict[str, Any], expected: dict[str, str],
                     allowance: FallbackAllowance) -> None:
    fallbacks = int8_fallbacks(summary, expected)
    undeclared = [n for n in fallbacks if not allowance.declares(n)]
    if len(undeclared) <= allowance.count:
        return
    int8 = sum(p == "int8" for p in expected.values())
    raise PrecisionMismatch(
        f"the engine was asked to be {recipe} but TensorRT runs {len(fallbacks)} of its {int8} INT8 (Q/DQ) "
        f"convolutions unfused in FP32, {len(undeclared)} of them undeclared (declared: {allowance.describe()}); "
        "where FP32 is acceptable, declare them (--allow-int8-fallbacks NAME|GROUP|COUNT, or allowed_int8_fallbacks "
        "in the recipe's engine step), else keep their layer groups FP32 when quantizing; undeclared (names last, "
        f"as a long list may be cut): {', '.join(undeclared)}")


def check_precision(recipe: str, summary: dict[str, Any], expected: dict[str, str],
                    allowance: FallbackAllowance | None = None) -> None:
    """Refuse an engine whose convolutions do not run as its graph prescribes (`expected_convolutions`): every
    Conv node of the graph must be found in the engine's layer information with exactly that precision, a Q/DQ
    convolution may run unfused in FP32 only where `allowance` declares it (see `int8_fallbacks`), and an fp16 or
    int8 recipe must have at least one convolution in that precision."""
    found: dict[str, str] = summary["convolution_precisions"]
    missing = sorted(set(expected) - set(found))
    if missing:
        _fail(recipe, f"{len(missing)} of the graph's {len(expected)} convolutions are not in the engine's layer "
                      f"information (e.g. {missing[0]}; was profiling verbosity DETAILED?)", summary)
    fallbacks = set(int8_fallbacks(summary, expected))
    off = sorted(n for n, p in expected.items() if found[n] != p and n not in fallbacks)
    if off:
        _fail(recipe, f"{len(off)} convolutions do not run as the graph says (e.g. {off[0]}: {found[off[0]]} instead "
                      f"of {expected[off[0]]})", summary)
    promised = PRECISIONS[recipe].engine_layers if recipe in PRECISIONS else None
    if promised and promised not in found.values():
        _fail(recipe, f"no convolution runs in {promised}", summary)
    _check_fallbacks(recipe, summary, expected, allowance or FallbackAllowance())
