"""The commands of both tools, in one registry: one module per command (or per pair of close commands), each
with `configure(parser)`, `run(args) -> exit code` and a `COMMANDS` list of `Command`s. A tool is a name, a
description and its command modules; `cli.main` builds either tool's parser from here, so both share one
argument style, one error contract and one --help layout. A new command: a module here, a line below, and its
--help examples in `cli/examples.py`.
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


class Tool(NamedTuple):
    description: str
    modules: tuple[str, ...]  # modules of dmfnet_edge.cli, in --help order


TOOLS: dict[str, Tool] = {
    "dmfnet": Tool("DM-FNet multimodal medical image fusion: fuse MRI with CT, PET or SPECT, evaluate, train.",
                   ("fuse_cmd", "volume_cmd", "eval_cmd", "baseline_cmd", "compare_cmd", "train_cmd", "info_cmd",
                    "serve_cmd")),
    "dmfnet-export": Tool("DM-FNet deployment: ONNX export, precision recipes, accuracy gates, TensorRT engines, "
                          "latency profiles.",
                          ("onnx_cmd", "calibrate_cmd", "quantize_cmd", "verify_cmd", "recipe_cmd", "build_cmd",
                           "profile_cmd", "triton_cmd")),
}


def commands(tool: str) -> list[Command]:
    """The tool's commands, its modules imported on demand (their own imports stay lazy)."""
    found: list[Command] = []
    for module in TOOLS[tool].modules:
        found += [Command(*c) for c in importlib.import_module(f"dmfnet_edge.cli.{module}").COMMANDS]
    return found
