"""The registries are the vocabulary: every precision entry has its gate, its quantizer, its command-line choices
and its schema values, and nothing else in the package spells a precision name of its own."""

from __future__ import annotations

import argparse
import ast
import typing
from pathlib import Path

import pytest

from dmfnet_edge.contract import OnnxManifest
from dmfnet_edge.evaluation.verify import GATES
from dmfnet_edge.export.quantize import QUANTIZERS
from dmfnet_edge.export.recipes import GraphStep
from dmfnet_edge.precisions import FLAVOURS, GRAPH_PRECISIONS, METHODS, PRECISIONS, REGISTRY, graph_precision

pytestmark = pytest.mark.runtime  # also in the runtime-only tier (torch unimportable)

REPO = Path(__file__).resolve().parents[1]


def _choices(tool: str, command: str, option: str) -> tuple[str, ...]:
    from dmfnet_edge.cli.main import build_parser

    parser = build_parser(tool, command=command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return tuple(next(a for a in sub._actions if option in a.option_strings).choices)


@pytest.mark.parametrize("entry", REGISTRY, ids=[p.name for p in REGISTRY])
def test_every_precision_is_complete(entry):
    assert GATES[entry.name] is entry.gate
    assert graph_precision(entry.numeric, entry.flavour) is entry
    if entry.quantizer is not None:
        assert entry.quantizer in QUANTIZERS
        assert entry.numeric in _choices("dmfnet-export", "quantize", "--precision")
        assert (REPO / "dmfnet_edge" / "export" / "quantize" / f"{entry.quantizer}.py").is_file()
    else:
        assert entry.name == "fp32"  # only the export itself has no quantizer
    if entry.flavour is not None:
        assert entry.flavour in _choices("dmfnet-export", "quantize", "--target")
        assert set(entry.methods) <= set(_choices("dmfnet-export", "quantize", "--method"))
    for toolchain in entry.toolchains:
        assert toolchain in ("tensorrt", "tensorrt-rtx")


def test_the_schemas_take_their_values_from_the_registry():
    fields = {f.name: f for f in __import__("msgspec").structs.fields(OnnxManifest)}
    assert typing.get_args(fields["precision"].type) == GRAPH_PRECISIONS
    step = {f.name: f for f in __import__("msgspec").structs.fields(GraphStep)}
    assert set(typing.get_args(typing.get_args(step["quantization"].type)[0])) == set(FLAVOURS)
    assert set(typing.get_args(typing.get_args(step["method"].type)[0])) == set(METHODS)
    assert set(QUANTIZERS) == {p.quantizer for p in REGISTRY if p.quantizer}


SPELLED_ELSEWHERE_OK = {"dmfnet_edge/precisions.py", "dmfnet_edge/runtime/onnx_file.py"}  # the registry; the
# graph inspector that names what a graph's operators show (it returns registry names, checked against them)


def test_no_module_spells_a_graph_precision_name_of_its_own():
    """'int8-tensorrt' and 'int8-onnxruntime' as literals outside the registry mean a branch on a bare string."""
    offenders = []
    names = {n for n in PRECISIONS if "-" in n}
    for path in (REPO / "dmfnet_edge").rglob("*.py"):
        rel = str(path.relative_to(REPO))
        if rel in SPELLED_ELSEWHERE_OK:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                offenders.append(f"{rel}:{node.lineno} {node.value!r}")
    assert offenders == [], offenders
