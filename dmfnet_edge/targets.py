"""Run a deployment recipe (`export/NAME.yaml`, schema in `export/recipes.py`) end to end.

1. Graph: an fp32 recipe's graph is the FP32 export itself; fp16 and int8 recipes write their graph (with its
   manifest) from it, with the recipe's calibration set and FP32 plan.
2. Engine (where the recipe has one): built when its toolchain can build here. TensorRT for RTX builds ahead of
   time on any machine; full TensorRT builds on the GPU it targets, so on a machine without one (or without
   TensorRT) the step is skipped and the exact command to run on the target is returned instead.
3. Gate (where the recipe or the caller names validation pairs): the graph against the PyTorch reference on
   ONNX Runtime (an int8-tensorrt graph with simulated Q/DQ, the arithmetic of a TensorRT INT8 engine), with the
   fixed thresholds of `evaluation.verify.GATES` for its precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmfnet_edge.contract import OnnxManifest, read_manifest
from dmfnet_edge.errors import InputError
from dmfnet_edge.export.recipes import EngineStep, Recipe
from dmfnet_edge.runtime.engine_manifest import EngineManifest


@dataclass
class RecipeResult:
    recipe: Recipe
    graph: Path
    graph_manifest: OnnxManifest
    engine: EngineManifest | None = None  # the engine manifest, when one was built
    engine_skipped: str | None = None  # why no engine was built here, and how to build it on the target
    gate: dict[str, Any] | None = None  # the verify report
    gate_files: tuple[Path, Path] | None = None


def make_graph(recipe: Recipe, fp32: Path, out: Path) -> tuple[Path, OnnxManifest]:
    """The recipe's graph from the FP32 graph `fp32`: `fp32` itself, or a new graph in `out`."""
    from dmfnet_edge.export.quantize import quantize_step

    step = recipe.graph
    parent = read_manifest(fp32)
    if parent.precision != "fp32":
        raise InputError(f"{fp32}: a recipe starts from the FP32 graph; this one is {parent.precision}")
    if step.precision == "fp32":
        return fp32, parent
    assert step.file is not None  # checked by the schema
    destination = out / step.file
    manifest = quantize_step(step, fp32, destination)
    return destination, manifest


def build_command(recipe: Recipe, graph: Path, engines: Path) -> str:
    """The `dmfnet-export build` line that builds the recipe's engine (on the target, for full TensorRT)."""
    return f"dmfnet-export build --recipe {recipe.source} --onnx {graph} --out {engines}"


def engine_unbuildable(step: EngineStep) -> str | None:
    """Why the engine cannot be built on this machine (None when it can)."""
    from dmfnet_edge._optional import available
    from dmfnet_edge.runtime.toolchain import FLAVOURS

    flavour = FLAVOURS[step.toolchain]
    if not available(flavour.module):
        return f"{step.toolchain} is not installed here (pip install 'dmfnet-edge[{flavour.extra}]')"
    if not flavour.ahead_of_time:
        try:
            from dmfnet_edge.runtime.toolchain import cudart

            err, count = cudart().cudaGetDeviceCount()
        except Exception:  # no CUDA runtime at all: the same answer as no device
            err, count = 1, 0
        if int(err) != 0 or count < 1:
            return f"{step.toolchain} builds on the GPU it targets and this machine has none"
    return None


def make_engine(recipe: Recipe, graph: Path, engines: Path) -> EngineManifest:
    from dmfnet_edge.engines.trt_builder import build_engine

    assert recipe.engine is not None
    return build_engine(graph, engines, engine_options(recipe.engine))


def engine_options(step: EngineStep | None, *, toolchain: str | None = None, compute_capability: str | None = None,
                   shapes: str | None = None, allow_int8_fallbacks: str | None = None, **settings: Any) -> Any:
    """The BuildOptions of a recipe's engine step (or none), the options given on a command line over it: the one
    merge `dmfnet-export build --recipe` and the recipe runner share. `settings`: the other BuildOptions fields."""
    from dmfnet_edge.engines.trt_builder import BuildOptions
    from dmfnet_edge.runtime.engine_manifest import parse_targets

    targets = parse_targets(compute_capability)
    allowance = fallback_allowance(allow_int8_fallbacks, "--allow-int8-fallbacks")
    if step is not None:
        toolchain, targets, shapes = toolchain or step.toolchain, targets or step.targets, shapes or step.shapes
        if allow_int8_fallbacks is None:
            allowance = fallback_allowance(step.allowed_int8_fallbacks, "the recipe's allowed_int8_fallbacks")
    given = {k: v for k, v in settings.items() if v is not None}
    return BuildOptions(toolchain or "auto", targets, shapes, allowed_int8_fallbacks=allowance, **given)


def fallback_allowance(spec: str | int | list[str] | None, where: str) -> Any:
    """--allow-int8-fallbacks 'fusion/attention.4,/ups.3/conv/Conv,2' or a recipe's list or count, as a
    build.precision.FallbackAllowance."""
    from dmfnet_edge.engines.precision import FallbackAllowance

    if spec is None:
        return FallbackAllowance()
    if isinstance(spec, int):
        return FallbackAllowance(count=spec)
    items = [t.strip() for t in (spec.split(",") if isinstance(spec, str) else spec) if t.strip()]
    counts = [int(t) for t in items if t.isdigit()]
    if len(counts) > 1 or not items:
        raise InputError(f"{where} {spec}: give ONNX node names or layer groups, and at most one count")
    return FallbackAllowance(names=tuple(t for t in items if not t.isdigit()), count=sum(counts))
