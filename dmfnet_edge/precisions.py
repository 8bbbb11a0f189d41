"""The precision registry: every numeric recipe a graph can carry, and everything the code branches on for it.

One entry per graph precision (the name manifests, gates, engine checks and reports use). Manifest schemas, the
recipe schema, the quantizer choice, the accuracy gates, the engine-layer check, which TensorRT flavours build
it, whether ONNX Runtime runs it and the command-line choices all derive from this table, so a new precision is
one entry here plus its quantizer module in `export/quantize/` (docs/ARCHITECTURE.md shows the diff).
`tests/test_registries.py` walks it: an entry without its gate, quantizer module, CLI choice or conformance run
fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dmfnet_edge.errors import InputError


@dataclass(frozen=True)
class Gate:
    """Accuracy gate of a graph against the PyTorch FP32 reference (evaluation/verify.py)."""

    max_abs: float | None = None  # network-output error, on the [-1, 1] scale
    min_psnr_db: float | None = None  # of the fused 8-bit luma, pooled per modality
    metric_rel_tol: float | None = None  # relative difference of each gated fusion metric
    gated_metrics: tuple[str, ...] = ("Qabf", "VIF", "SSIM")


@dataclass(frozen=True)
class Precision:
    name: str  # the graph's precision in manifests and gates
    numeric: Literal["fp32", "fp16", "int8"]  # what a recipe's graph.precision says
    flavour: str | None  # int8: whose graph format (a recipe's graph.quantization), else None
    quantizer: str | None  # module of dmfnet_edge.export.quantize that writes it (None: the FP32 export itself)
    methods: tuple[str, ...]  # INT8 calibration methods its quantizer offers
    gate: Gate
    toolchains: tuple[str, ...]  # TensorRT flavours that build an engine of it
    onnxruntime: Literal["native", "simulated", "no"]  # how ONNX Runtime runs it (simulated: Q/DQ in float)
    engine_layers: str | None  # the layer precision an engine of it must show (build/precision.py)
    runtime_choice: str | None  # `--precision` of a shipped model on ONNX Runtime (None: not shipped)


TENSORRT = ("tensorrt", "tensorrt-rtx")

REGISTRY: tuple[Precision, ...] = (
    Precision("fp32", "fp32", None, None, (), Gate(max_abs=1e-4), TENSORRT, "native", None, "fp32"),
    Precision("fp16", "fp16", None, "fp16", (), Gate(min_psnr_db=45.0), TENSORRT, "native", "fp16", None),
    Precision("int8-tensorrt", "int8", "tensorrt", "int8_tensorrt", ("entropy", "max"),
              Gate(min_psnr_db=35.0, metric_rel_tol=0.02), TENSORRT, "simulated", "int8", None),
    Precision("int8-onnxruntime", "int8", "onnxruntime", "int8_onnxruntime", ("entropy", "max", "percentile"),
              Gate(min_psnr_db=35.0, metric_rel_tol=0.02), (), "native", None, "int8"),
)
PRECISIONS: dict[str, Precision] = {p.name: p for p in REGISTRY}
GRAPH_PRECISIONS = tuple(PRECISIONS)  # manifest values, in registry order
NUMERICS = tuple(dict.fromkeys(p.numeric for p in REGISTRY))  # recipe graph.precision values
QUANTIZED_NUMERICS = tuple(dict.fromkeys(p.numeric for p in REGISTRY if p.quantizer))  # quantize --precision
FLAVOURS = tuple(p.flavour for p in REGISTRY if p.flavour)  # recipe graph.quantization, quantize --target
METHODS = tuple(dict.fromkeys(m for p in REGISTRY for m in p.methods))  # recipe graph.method, --method
RUNTIME_CHOICES = {p.runtime_choice: p for p in REGISTRY if p.runtime_choice}  # shipped graphs by --precision
DEFAULT_FLAVOUR = "onnxruntime"  # quantize --precision int8 without --target
GraphPrecision = Literal[GRAPH_PRECISIONS]  # the type of a manifest's precision field


def graph_precision(numeric: str, flavour: str | None = None) -> Precision:
    """The entry of a recipe's (precision, quantization): ('int8', 'tensorrt') -> int8-tensorrt."""
    found = [p for p in REGISTRY if p.numeric == numeric and p.flavour == (flavour if numeric == "int8" else None)]
    if not found:
        raise InputError(f"no graph precision {numeric}{f' for {flavour}' if flavour else ''}; the precisions are "
                         f"{', '.join(GRAPH_PRECISIONS)}")
    return found[0]
