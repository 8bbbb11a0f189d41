"""The one way a command opens an ONNX graph file: bounded, parsed once, its external data kept to its folder.

An .onnx file is untrusted bytes until it passed `open_graph`:
* it is a regular file (a FIFO or a device is refused before a byte is read) whose size, with the external data
  it declares, is at most `MAX_GRAPH_BYTES` (protobuf's own limit for one graph);
* it parses as an ONNX model with nodes, declares a default-domain opset in `OPSETS` (what the exporter writes
  and TensorRT 10/11 and ONNX Runtime read), and passes the ONNX checker;
* every tensor it keeps outside (external data) names a regular file inside the graph's own folder: no
  absolute path, no '..', no link leading out, and the declared offset and length lie inside that file.
`OnnxGraph.check_manifest` then holds the graph to what its manifest says: input and output names, shapes and
precision (an fp32 graph labelled int8 is refused here, not found out by an engine check after the build).

Every refusal is one `ModelFileError` naming the file, what was expected and what to do. Builders use the
checked bytes (`data`) and model; third-party tools that only take a path get it after it passed here.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmfnet_edge._optional import require
from dmfnet_edge.contract import INPUT_NAMES, OPSET, OUTPUT_NAME, read_manifest
from dmfnet_edge.errors import ModelFileError, one_line
from dmfnet_edge.records import read_bounded

MAX_GRAPH_BYTES = 2 << 30  # the graph file and all its external data together
OPSETS = range(17, 22)  # default-domain opsets: LayerNormalization needs 17; TensorRT 10/11 parse up to 21
REEXPORT = "re-export it with 'dmfnet-export onnx'"

_ORT_INT8_OPS = frozenset({"QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger"})
_FLOAT16 = 10  # onnx.TensorProto.FLOAT16
_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL


@dataclass(frozen=True)
class OnnxGraph:
    """A checked graph: its file's bytes (read once), the parsed model (external tensors not loaded) and the
    external data files it reads, all inside its folder."""

    path: Path
    data: bytes
    model: Any  # onnx.ModelProto
    external: tuple[Path, ...]

    @property
    def opset(self) -> int:
        return next(o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx"))

    @property
    def real_path(self) -> Path:
        """Where the graph really is (links resolved): its external data is looked up beside this."""
        return Path(os.path.realpath(self.path))

    def inputs(self) -> dict[str, list[int | str]]:
        """Graph inputs (initializers listed as inputs left out) -> dims: an int, or a name for a free one."""
        weights = {t.name for t in self.model.graph.initializer}
        return {i.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                         for d in i.type.tensor_type.shape.dim]
                for i in self.model.graph.input if i.name not in weights}

    def outputs(self) -> list[str]:
        return [o.name for o in self.model.graph.output]

    def precision(self) -> str:
        """The precision recipe the graph's content shows (not what its manifest says): int8-onnxruntime
        (QLinear/integer ops), int8-tensorrt (explicit Q/DQ), fp16 (float16 weights), else fp32."""
        ops = {n.op_type for n in _nodes(self.model.graph)}
        if ops & _ORT_INT8_OPS:
            return "int8-onnxruntime"
        if {"QuantizeLinear", "DequantizeLinear"} <= ops:
            return "int8-tensorrt"
        if any(t.data_type == _FLOAT16 for t in _tensors(self.model.graph)):
            return "fp16"
        return "fp32"

    def check_manifest(self, inputs: dict[str, list[int | str]], output: str, precision: str) -> None:
        """Refuse a graph whose manifest (`inputs`, `output`, `precision`, as recorded) describes another graph."""
        sidecar = f"{self.path.name}.json"
        found = self.inputs()
        if tuple(found) != INPUT_NAMES or self.outputs() != [OUTPUT_NAME]:
            raise ModelFileError(f"{self.path}: the graph's inputs {_quote(list(found))} and outputs "
                                 f"{_quote(self.outputs())} are not the contract's {list(INPUT_NAMES)} -> "
                                 f"['{OUTPUT_NAME}']; {REEXPORT}")
        for name, dims in found.items():
            if not _same_shape(dims, inputs.get(name, [])):
                raise ModelFileError(f"{self.path}: input '{name}' is {_quote(dims)} in the graph but "
                                     f"{_quote(inputs.get(name))} in {sidecar}; the manifest belongs to another "
                                     f"graph: {REEXPORT}")
        actual = self.precision()
        if actual != precision:
            raise ModelFileError(f"{self.path}: {sidecar} says {precision}, but the graph is {actual} (by its "
                                 "operators and weight types); the manifest is mislabelled: export or quantize the "
                                 "graph again with 'dmfnet-export' to get a matching one")


def _same_shape(graph_dims: list[int | str], manifest_dims: list[int | str]) -> bool:
    """Fixed sizes must agree; a named (free) dimension matches any name."""
    if len(graph_dims) != len(manifest_dims):
        return False
    return all(isinstance(a, str) == isinstance(b, str) and (isinstance(a, str) or a == b)
               for a, b in zip(graph_dims, manifest_dims))


def _quote(value: object, limit: int = 80) -> str:
    return one_line(repr(value), limit)


def _graphs(graph: Any) -> Iterator[Any]:
    """`graph` and every subgraph of its nodes (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for sub in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                yield from _graphs(sub)


def _nodes(graph: Any) -> Iterator[Any]:
    for g in _graphs(graph):
        yield from g.node


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor a graph holds: initializers (dense and sparse) and node attributes, subgraphs included."""
    for g in _graphs(graph):
        yield from g.initializer
        for sparse in g.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in g.node:
            for attribute in node.attribute:
                yield from ([attribute.t] if attribute.HasField("t") else [])
                yield from attribute.tensors


def open_with_manifest(path: Path) -> tuple[OnnxGraph, Any]:
    """The graph at `path` and its manifest (`contract.read_manifest`: format, structure, SHA-256), each checked
    against the other."""
    manifest = read_manifest(path)
    graph = open_graph(path)
    graph.check_manifest(manifest.inputs, manifest.output, manifest.precision)
    return graph, manifest


def open_graph(path: Path) -> OnnxGraph:
    """Read, parse and check the ONNX graph at `path` (see the module's docstring)."""
    onnx = require("onnx", extra="onnx", purpose="reading ONNX graphs")
    data = read_bounded(path, MAX_GRAPH_BYTES, "graph")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and its relatives: the bytes are not a model
        raise ModelFileError(f"{path}: not an ONNX graph (it does not parse: {one_line(str(exc), 120)}); "
                             f"{REEXPORT}") from None
    if not model.graph.node:
        raise ModelFileError(f"{path}: not an ONNX graph (no nodes); {REEXPORT}")
    _check_opset(path, model)
    external = _check_external_data(path, model, len(data))
    try:
        # with external data the checker needs the real path: it looks the files up beside it (checked above)
        onnx.checker.check_model(os.path.realpath(path) if external else model)
    except Exception as exc:  # onnx.checker.ValidationError, and the checker's other refusals
        raise ModelFileError(f"{path}: not a valid ONNX graph ({one_line(str(exc), 200)}); {REEXPORT}") from None
    return OnnxGraph(path, data, model, external)


def _check_opset(path: Path, model: Any) -> None:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise ModelFileError(f"{path}: declares no ONNX opset; {REEXPORT}")
    if versions[0] not in OPSETS:
        raise ModelFileError(f"{path}: declares ONNX opset {versions[0]}; the toolchains here read opsets "
                             f"{OPSETS.start} to {OPSETS.stop - 1}: re-export it with 'dmfnet-export onnx --opset "
                             f"{OPSET}'")


def _check_external_data(path: Path, model: Any, graph_bytes: int) -> tuple[Path, ...]:
    """Every external tensor's file checked (inside the folder, regular, long enough); returns the files."""
    folder = Path(os.path.realpath(path)).parent
    files, total = set(), graph_bytes
    for tensor in _tensors(model.graph):
        if tensor.data_location != _EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        file, offset, length = _external_file(path, folder, tensor.name, entries)
        total += length
        if total > MAX_GRAPH_BYTES:
            raise ModelFileError(f"{path}: declares more than {MAX_GRAPH_BYTES:,} bytes of graph and external "
                                 f"data (at tensor {_quote(tensor.name)}); a graph may hold at most that")
        files.add(file)
    return tuple(sorted(files))


def _external_file(path: Path, folder: Path, tensor: str, entries: dict[str, str]) -> tuple[Path, int, int]:
    """The checked (file, offset, length) of one external tensor."""
    location = entries.get("location", "")
    where = f"{path}: tensor {_quote(tensor)} keeps its data in {_quote(location)}"
    parts = Path(location).parts
    if not location or "\0" in location or Path(location).is_absolute() or ".." in parts:
        raise ModelFileError(f"{where}; external data must be a file named relative to the graph's folder, "
                             f"without '..': {REEXPORT}")
    file = Path(os.path.realpath(folder / location))
    if not file.is_relative_to(folder):
        raise ModelFileError(f"{where}, which leads outside the graph's folder ({folder}); external data must "
                             f"lie beside the graph: {REEXPORT}")
    try:
        info = os.stat(file)
    except OSError as exc:
        raise ModelFileError(f"{where}, which cannot be opened ({exc.strerror}); copy the graph with its data "
                             "files") from None
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError(f"{where}, which is not a regular file (a folder, pipe, device or socket)")
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else info.st_size - offset
    except ValueError:
        raise ModelFileError(f"{where} with an offset or length that is not a number; {REEXPORT}") from None
    if offset < 0 or length < 0 or offset + length > info.st_size:
        raise ModelFileError(f"{where} at bytes {offset:,}..{offset + length:,}, but the file has "
                             f"{info.st_size:,}; the graph and its data files do not belong together")
    return file, offset, length
