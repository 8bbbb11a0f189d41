"""Deployment targets as recipes: one small YAML file per target in the repository's top-level `export/` folder.

A recipe names everything that decides what a target runs: the graph's precision and INT8 flavour, the
calibration set, which layers stay FP32, the engine flavour and its compute capabilities, and the validation
pairs of its accuracy gate (the gate's thresholds are the fixed ones of `evaluation.verify.GATES` for the
graph's precision; a recipe cannot loosen them). `dmfnet-export recipe export/NAME.yaml` runs one end to end;
`dmfnet-export quantize/build --recipe export/NAME.yaml` take their settings from it.

Schema (checked, with the file and key named in the error, before anything runs; unknown keys are refused):

    name: cpu-int8                     # equals the file stem
    description: one line              # shown by `dmfnet-export recipe --list`
    graph:
      precision: fp32 | fp16 | int8
      quantization: onnxruntime | tensorrt    # int8 only: ONNX Runtime's CPU graph or explicit Q/DQ for TensorRT
      method: entropy | max | percentile      # int8 calibration (default entropy; tensorrt: entropy or max)
      calibration: calibration/NAME.json      # int8: the hashed calibration manifest
      keep_fp32: auto | none | [GROUP, ...] | GRAPH.onnx   # int8 (default auto: the sensitivity search)
      target_psnr_db: 46                      # int8 with keep_fp32 auto
      high_precision: fp32 | fp16             # int8 tensorrt: type of the layers left unquantized
      file: dmfnet-edge-int8.onnx             # output file name (fp16 and int8; fp32 is the export itself)
    engine:                            # optional: a TensorRT engine of the graph
      toolchain: tensorrt | tensorrt-rtx
      compute_capabilities: [sm86, sm89]      # tensorrt-rtx only (tensorrt builds for the GPU it runs on)
      shapes: 1x256x256                       # NxHxW or MIN:OPT:MAX
    gate:                              # optional: the accuracy gate's data
      pairs: ../shared/data/harvard/val
      per_modality: 4                         # null: every pair

Relative paths are read from the folder the command runs in (the repository root in the Makefile).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmfnet_edge._optional import require
from dmfnet_edge.errors import InputError

PRECISIONS = ("fp32", "fp16", "int8")
QUANTIZATIONS = ("onnxruntime", "tensorrt")
METHODS = ("entropy", "max", "percentile")
ENGINE_TOOLCHAINS = ("tensorrt", "tensorrt-rtx")
MAX_RECIPE_BYTES = 64 * 1024


@dataclass(frozen=True)
class GraphStep:
    precision: str
    quantization: str | None = None
    method: str = "entropy"
    calibration: Path | None = None
    keep_fp32: str | list[str] = "auto"
    target_psnr_db: float = 46.0
    high_precision: str = "fp32"
    file: str | None = None

    @property
    def gate(self) -> str:
        """The precision name of the graph (and of its gate in `evaluation.verify.GATES`)."""
        return f"int8-{self.quantization}" if self.precision == "int8" else self.precision


@dataclass(frozen=True)
class EngineStep:
    toolchain: str
    compute_capabilities: list[str] | None = None
    shapes: str | None = None


@dataclass(frozen=True)
class GateData:
    pairs: Path
    per_modality: int | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    graph: GraphStep
    engine: EngineStep | None
    gate: GateData | None
    source: Path

    def summary(self) -> str:
        """One line: name, graph, engine."""
        engine = "no engine (ONNX Runtime)"
        if self.engine:
            targets = ",".join(self.engine.compute_capabilities or []) or "the GPU it builds on"
            engine = f"{self.engine.toolchain} engine for {targets}"
        return f"{self.name}: {self.graph.gate} graph, {engine}"


def _keys(where: str, data: Any, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(data))
    if missing:
        raise InputError(f"{where}: missing key {missing[0]!r}")
    return data


def _choice(where: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InputError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return str(value)


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: expected a non-empty text, got {value!r}")
    return value


def _graph(where: str, data: Any) -> GraphStep:
    data = _keys(where, data, {"precision", "quantization", "method", "calibration", "keep_fp32",
                               "target_psnr_db", "high_precision", "file"}, {"precision"})
    precision = _choice(f"{where}.precision", data["precision"], PRECISIONS)
    int8_only = sorted({"quantization", "method", "calibration", "keep_fp32", "target_psnr_db",
                        "high_precision"} & set(data))
    if precision != "int8" and int8_only:
        raise InputError(f"{where}.{int8_only[0]}: only an int8 graph has it")
    if precision == "fp32" and "file" in data:
        raise InputError(f"{where}.file: an fp32 recipe's graph is the FP32 export itself")
    if precision != "fp32" and "file" not in data:
        raise InputError(f"{where}: missing key 'file' (the output graph's name)")
    step = GraphStep(precision)
    if precision == "int8":
        for key in ("quantization", "calibration"):
            if key not in data:
                raise InputError(f"{where}: missing key {key!r} (an int8 graph needs it)")
        quantization = _choice(f"{where}.quantization", data["quantization"], QUANTIZATIONS)
        method = _choice(f"{where}.method", data.get("method", "entropy"), METHODS)
        if quantization == "tensorrt" and method == "percentile":
            raise InputError(f"{where}.method: tensorrt INT8 calibrates with entropy or max")
        keep = data.get("keep_fp32", "auto")
        if isinstance(keep, list):
            keep = [_text(f"{where}.keep_fp32[]", g) for g in keep]
        else:
            keep = _text(f"{where}.keep_fp32", keep)
            if keep not in ("auto", "none") and not keep.endswith(".onnx"):
                raise InputError(f"{where}.keep_fp32: auto, none, a list of layer groups or an INT8 graph "
                                 f"(.onnx) whose plan to reuse; got {keep!r}")
        psnr = data.get("target_psnr_db", 46.0)
        if isinstance(psnr, bool) or not isinstance(psnr, (int, float)) or not 20 <= psnr <= 99:
            raise InputError(f"{where}.target_psnr_db: a number of dB between 20 and 99, got {psnr!r}")
        step = GraphStep(precision, quantization, method, Path(_text(f"{where}.calibration", data["calibration"])),
                         keep, float(psnr), _choice(f"{where}.high_precision", data.get("high_precision", "fp32"),
                                                    ("fp32", "fp16")))
    if precision != "fp32":
        file = _text(f"{where}.file", data["file"])
        if Path(file).name != file or not file.endswith(".onnx"):
            raise InputError(f"{where}.file: a plain file name ending in .onnx, got {file!r}")
        step = GraphStep(**{**step.__dict__, "file": file})
    return step


def _engine(where: str, data: Any, graph: GraphStep) -> EngineStep:
    data = _keys(where, data, {"toolchain", "compute_capabilities", "shapes"}, {"toolchain"})
    toolchain = _choice(f"{where}.toolchain", data["toolchain"], ENGINE_TOOLCHAINS)
    if graph.gate == "int8-onnxruntime":
        raise InputError(f"{where}: no TensorRT flavour builds the ONNX Runtime INT8 graph (graph.quantization "
                         "tensorrt makes the one TensorRT parses)")
    targets = data.get("compute_capabilities")
    if targets is not None:
        if toolchain != "tensorrt-rtx":
            raise InputError(f"{where}.compute_capabilities: {toolchain} builds for the GPU it runs on; named "
                             "targets are for tensorrt-rtx")
        if not isinstance(targets, list) or not targets:
            raise InputError(f"{where}.compute_capabilities: a non-empty list such as [sm86, sm89]")
        from dmfnet_edge.runtime.toolchain import parse_targets

        targets = parse_targets(",".join(str(t) for t in targets))
    shapes = data.get("shapes")
    return EngineStep(toolchain, targets, None if shapes is None else _text(f"{where}.shapes", shapes))


def _gate(where: str, data: Any) -> GateData:
    data = _keys(where, data, {"pairs", "per_modality"}, {"pairs"})
    per = data.get("per_modality")
    if per is not None and (isinstance(per, bool) or not isinstance(per, int) or per < 1):
        raise InputError(f"{where}.per_modality: a positive number of pairs or null, got {per!r}")
    return GateData(Path(_text(f"{where}.pairs", data["pairs"])), per)


def load_recipe(path: str | Path) -> Recipe:
    """Read and check one recipe file (see the module doc for the schema)."""
    yaml = require("yaml", extra="onnx", purpose="deployment recipes")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such recipe file")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise InputError(f"{path}: {path.stat().st_size:,} bytes is too large for a recipe")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable YAML recipe ({first})") from None
    where = str(path)
    data = _keys(where, data, {"name", "description", "graph", "engine", "gate"}, {"name", "description", "graph"})
    name = _text(f"{where}: name", data["name"])
    if name != path.stem:
        raise InputError(f"{where}: name {name!r} differs from the file name ({path.stem}); keep them equal")
    graph = _graph(f"{where}: graph", data["graph"])
    engine = _engine(f"{where}: engine", data["engine"], graph) if data.get("engine") is not None else None
    gate = _gate(f"{where}: gate", data["gate"]) if data.get("gate") is not None else None
    return Recipe(name, _text(f"{where}: description", data["description"]), graph, engine, gate, path)


def recipes_in(folder: str | Path) -> list[Recipe]:
    """Every recipe in `folder` (its *.yaml files), sorted by name; the first invalid one is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no recipe folder")
    found = [load_recipe(p) for p in sorted(folder.glob("*.yaml"))]
    if not found:
        raise InputError(f"{folder}: holds no recipes (*.yaml)")
    return found
