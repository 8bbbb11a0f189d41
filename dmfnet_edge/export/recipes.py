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
      allowed_int8_fallbacks: [fusion/attention.4]   # Q/DQ convolutions (ONNX node or layer group names, or
                                              # a count) TensorRT may run in FP32 besides the kept-FP32 groups
    gate:                              # optional: the accuracy gate's data
      pairs: ../shared/data/harvard/val
      per_modality: 4                         # null: every pair

Relative paths are read from the folder the command runs in (the repository root in the Makefile).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from msgspec import Meta, Struct

from dmfnet_edge.errors import InputError
from dmfnet_edge.precisions import FLAVOURS, METHODS, NUMERICS, Precision, graph_precision
from dmfnet_edge.records import Record

ENGINE_TOOLCHAINS = ("tensorrt", "tensorrt-rtx")
MAX_RECIPE_BYTES = 64 * 1024
INT8_ONLY = ("quantization", "method", "calibration", "keep_fp32", "target_psnr_db", "high_precision")

Text = Annotated[str, Meta(min_length=1, max_length=4096, pattern=r"\S")]
LayerGroup = Annotated[str, Meta(min_length=1, max_length=256)]


class GraphStep(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """The graph of a target: its precision and, for INT8, how it is quantized and calibrated."""

    precision: Literal[NUMERICS]
    quantization: Literal[FLAVOURS] | None = None
    method: Literal[METHODS] | None = None
    calibration: Text | None = None
    keep_fp32: Text | list[LayerGroup] | None = None
    target_psnr_db: Annotated[float, Meta(ge=20, le=99)] | None = None
    high_precision: Literal["fp32", "fp16"] | None = None
    file: Annotated[str, Meta(min_length=1, max_length=255)] | None = None  # a plain file name ending in .onnx

    def __post_init__(self) -> None:
        given = [k for k in INT8_ONLY if getattr(self, k) is not None]
        if self.precision != "int8" and given:
            raise ValueError(f"{given[0]}: only an int8 graph has it")
        if self.precision == "fp32" and self.file is not None:
            raise ValueError("file: an fp32 recipe's graph is the FP32 export itself")
        if self.precision != "fp32" and self.file is None:
            raise ValueError("missing key 'file' (the output graph's name)")
        if self.file is not None and (Path(self.file).name != self.file or not self.file.endswith(".onnx")
                                      or "\\" in self.file or "\x00" in self.file):
            raise ValueError(f"file: a plain file name ending in .onnx, got {self.file!r:.80}")
        if self.precision == "int8":
            for key in ("quantization", "calibration"):
                if getattr(self, key) is None:
                    raise ValueError(f"missing key {key!r} (an int8 graph needs it)")
            methods = self.entry.methods
            if self.method is not None and self.method not in methods:
                raise ValueError(f"method: {self.quantization} INT8 calibrates with {' or '.join(methods)}")
            keep = self.keep_fp32
            if isinstance(keep, str) and keep not in ("auto", "none") and not keep.endswith(".onnx"):
                raise ValueError(f"keep_fp32: auto, none, a list of layer groups or an INT8 graph (.onnx) whose "
                                 f"plan to reuse; got {keep!r:.60}")

    @property
    def entry(self) -> Precision:
        """The graph's entry in the precision registry."""
        return graph_precision(self.precision, self.quantization)

    @property
    def gate(self) -> str:
        """The precision name of the graph (and of its gate in `evaluation.verify.GATES`)."""
        return self.entry.name

    @property
    def calibration_file(self) -> Path | None:
        return Path(self.calibration) if self.calibration is not None else None

    @property
    def int8_method(self) -> str:
        return self.method or "entropy"

    @property
    def keep(self) -> str | list[str]:
        return self.keep_fp32 if self.keep_fp32 is not None else "auto"

    @property
    def psnr_target(self) -> float:
        return self.target_psnr_db if self.target_psnr_db is not None else 46.0

    @property
    def unquantized(self) -> str:
        return self.high_precision or "fp32"

    def inputs(self, calibration_root: Path | None = None) -> dict[str, Path]:
        """Files and folders this step reads besides the FP32 graph: the calibration manifest and the folder of
        the images it names, a graph whose plan it reuses."""
        found: dict[str, Path] = {}
        if self.calibration_file is not None:
            from dmfnet_edge.export.calibration import CalibrationManifest
            from dmfnet_edge.export.calibration import calibration_root as images

            found["calibration"] = self.calibration_file
            meta = CalibrationManifest.read(self.calibration_file)
            found["calibration images"] = images(meta, self.calibration_file, calibration_root)
        if isinstance(self.keep_fp32, str) and self.keep_fp32.endswith(".onnx"):
            found["keep_fp32"] = Path(self.keep_fp32)
        return found


class EngineStep(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """The TensorRT engine of a target: the toolchain, its compute capabilities (TensorRT for RTX), shapes, and
    the INT8 convolutions it may run unfused in FP32 beyond the graph's kept-FP32 layer groups (by name, or a
    count; the build refuses any other fallback)."""

    toolchain: Literal["tensorrt", "tensorrt-rtx"]
    compute_capabilities: Annotated[list[Annotated[str, Meta(max_length=16)]], Meta(min_length=1, max_length=32)] \
        | None = None
    shapes: Text | None = None
    allowed_int8_fallbacks: Annotated[int, Meta(ge=0, le=100_000)] \
        | Annotated[list[LayerGroup], Meta(max_length=10_000)] | None = None

    def __post_init__(self) -> None:
        if self.compute_capabilities is not None and self.toolchain != "tensorrt-rtx":
            raise ValueError(f"compute_capabilities: {self.toolchain} builds for the GPU it runs on; named targets "
                             "are for tensorrt-rtx")

    @property
    def targets(self) -> list[str] | None:
        """The compute capabilities in the one spelling (`sm86`), checked, sorted."""
        from dmfnet_edge.runtime.engine_manifest import parse_targets

        return parse_targets(",".join(self.compute_capabilities)) if self.compute_capabilities else None


class GateData(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """The validation pairs of a target's accuracy gate (its thresholds are the precision's, fixed)."""

    pairs: Text
    per_modality: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None

    @property
    def folder(self) -> Path:
        return Path(self.pairs)


class RecipeFile(Record, kw_only=True):
    """export/NAME.yaml: one deployment target (see the module doc)."""

    KIND: ClassVar[str] = "recipe"
    LIMIT: ClassVar[int] = MAX_RECIPE_BYTES
    DEPTH: ClassVar[int] = 8
    ALWAYS: ClassVar[tuple[str, ...]] = ()
    FIX: ClassVar[str] = "see export/README.md for the schema"

    version: Literal[1] = 1  # optional in the file: the schema version it was written for
    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    description: Text
    graph: GraphStep
    engine: EngineStep | None = None
    gate: GateData | None = None

    def __post_init__(self) -> None:
        if self.engine is not None and self.engine.toolchain not in self.graph.entry.toolchains:
            raise ValueError(f"engine: no {self.engine.toolchain} engine builds from the {self.graph.gate} graph"
                             + (" (graph.quantization tensorrt makes the one TensorRT parses)"
                                if self.graph.precision == "int8" else ""))


@dataclass(frozen=True)
class Recipe:
    """A recipe file as read: its record and where it came from."""

    file: RecipeFile
    source: Path

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def description(self) -> str:
        return self.file.description

    @property
    def graph(self) -> GraphStep:
        return self.file.graph

    @property
    def engine(self) -> EngineStep | None:
        return self.file.engine

    @property
    def gate(self) -> GateData | None:
        return self.file.gate

    def inputs(self, calibration_root: Path | None = None) -> dict[str, Path]:
        """Every file or folder the recipe reads, by what it is: the recipe itself, its calibration manifest and
        any graph whose plan it reuses, and the gate's validation pairs. No output may be or hold one of them."""
        found = {f"recipe {self.name}": self.source}
        found.update({f"{self.name}: {k}": v for k, v in self.graph.inputs(calibration_root).items()})
        if self.gate is not None:
            found[f"{self.name}: gate pairs"] = self.gate.folder
        return found

    def summary(self) -> str:
        """One line: name, graph, engine."""
        engine = "no engine (ONNX Runtime)"
        if self.engine:
            targets = ",".join(self.engine.targets or []) or "the GPU it builds on"
            engine = f"{self.engine.toolchain} engine for {targets}"
        return f"{self.name}: {self.graph.gate} graph, {engine}"


def load_recipe(path: str | Path) -> Recipe:
    """Read and check one recipe file (see the module doc for the schema)."""
    path = Path(path)
    record = RecipeFile.from_yaml(path)
    if record.name != path.stem:
        raise InputError(f"{path}: name {record.name!r} differs from the file name ({path.stem}); keep them equal")
    if record.engine is not None:
        try:
            record.engine.targets  # noqa: B018 (checks the spelling of every compute capability)
        except InputError as exc:
            raise InputError(f"{path}: engine.compute_capabilities: {str(exc).partition(': ')[2]}") from None
    return Recipe(record, path)


def recipes_in(folder: str | Path) -> list[Recipe]:
    """Every recipe in `folder` (its *.yaml files), sorted by name; the first invalid one is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no recipe folder")
    found = [load_recipe(p) for p in sorted(folder.glob("*.yaml"))]
    if not found:
        raise InputError(f"{folder}: holds no recipes (*.yaml)")
    return found
