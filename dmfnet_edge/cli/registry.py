"""The commands of both tools, in one registry. A tool is a description and its commands; a command is a name,
its one-line help and the module of `dmfnet_edge.cli` that implements it, with `COMMANDS = {name: (configure,
run)}`: `configure(parser)` adds its options, `run(args)` returns the exit code. `cli.main` builds either tool's
parser from here, so both share one argument style, one error contract and one --help layout.

Modules are imported only for the command being run: `--help` and every other command keep working when one
command's module cannot be imported (a missing optional package, or a bug), as Polygraphy's `MissingTool` does.
A new command: a module, one `Entry` below, and its --help examples in `cli/examples.py`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import NamedTuple


class Command(NamedTuple):
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class Entry(NamedTuple):
    name: str
    module: str  # of dmfnet_edge.cli
    help: str


class Tool(NamedTuple):
    description: str
    entries: tuple[Entry, ...]  # in --help order


TOOLS: dict[str, Tool] = {
    "dmfnet": Tool("DM-FNet multimodal medical image fusion: fuse MRI with CT, PET or SPECT, evaluate, train.", (
        Entry("fuse", "fuse_cmd", "fuse one MRI image with its CT/PET/SPECT partner"),
        Entry("fuse-dir", "fuse_cmd", "fuse every pair of a dataset folder"),
        Entry("fuse-volume", "volume_cmd", "fuse co-registered MRI and CT/PET/SPECT volumes (DICOM series or NIfTI)"),
        Entry("eval", "eval_cmd", "fusion metrics of fused images against their sources"),
        Entry("baseline", "baseline_cmd", "fuse pairs with a classic baseline (average, max, laplacian)"),
        Entry("compare", "compare_cmd", "the model against the classic baselines: images, tables, figure"),
        Entry("train", "train_cmd", "train stage 1 (diffusion UNet) or stage 2 (fusion network)"),
        Entry("info", "info_cmd", "describe a model: parameters, FLOPs, weights and config"),
        Entry("serve", "serve_cmd", "serve the model from a Triton Inference Server endpoint (PyTriton, CPU)"),
    )),
    "dmfnet-export": Tool("DM-FNet deployment: ONNX export, precision recipes, accuracy gates, TensorRT engines, "
                          "latency profiles.", (
        Entry("onnx", "onnx_cmd", "export a model to one ONNX graph (fp32) with its manifest"),
        Entry("calibrate", "calibrate_cmd", "select a hashed INT8 calibration set from a training split"),
        Entry("quantize", "quantize_cmd", "write an fp16 or int8 precision recipe into the ONNX graph"),
        Entry("verify", "verify_cmd", "accuracy gates of exported graphs against the PyTorch reference"),
        Entry("recipe", "recipe_cmd", "make a deployment target from its recipe (export/NAME.yaml): graph, engine, "
                                      "gate"),
        Entry("build", "build_cmd", "build a TensorRT engine (strongly typed, static profile, cached, checked)"),
        Entry("inspect", "inspect_cmd", "what a TensorRT engine is, from its manifest, checked against the engine"),
        Entry("profile", "profile_cmd", "latency percentiles, stage breakdown and a budget gate for any backend"),
        Entry("triton", "triton_cmd", "a Triton Inference Server model repository for a graph or engine"),
    )),
}


def check_registry() -> None:
    """Every command name once per tool (a repeated name would silently shadow the first)."""
    for tool, spec in TOOLS.items():
        names = [e.name for e in spec.entries]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"{tool}: command names registered twice: {repeated}")


check_registry()


def missing_command(entry: Entry, exc: BaseException) -> Command:
    """A stand-in for a command whose module cannot be imported: listed in --help as usual, and running it
    raises the import's own error (a missing optional package becomes the install hint; anything else is a bug
    and keeps its traceback)."""
    def run(args: argparse.Namespace) -> int:
        raise exc

    return Command(entry.name, entry.help, lambda parser: None, run)


def load(entry: Entry) -> Command:
    """The entry's command, importing its module now."""
    try:
        module = importlib.import_module(f"dmfnet_edge.cli.{entry.module}")
        configure, run = module.COMMANDS[entry.name]
    except Exception as exc:  # noqa: BLE001 (isolated: only this command fails, when it is run)
        return missing_command(entry, exc)
    return Command(entry.name, entry.help, configure, run)


def commands(tool: str) -> list[Command]:
    """Every command of the tool, each module imported (for docs and tests; the CLI imports only the one run)."""
    return [load(entry) for entry in TOOLS[tool].entries]
