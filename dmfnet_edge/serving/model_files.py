"""What a file to be packed for Triton really is, read from its own bytes with bounded memory.

A manifest says what a graph or engine is, and its SHA-256 ties it to the bytes beside it; but a manifest can
be written for any bytes, and Triton would only find out when it loads the repository on a production server.
So before a file is packed its bytes are checked too:

* ONNX: the protobuf wire format of a ModelProto is walked without loading it (large fields, the weights and
  nodes, are skipped by seeking; only the graph's input and output descriptions, a few hundred bytes, are
  read), and the graph must have the contract's inputs `mri`, `other` and output `fused`, float32 of rank 4.
* TensorRT engine: a full-TensorRT plan starts with the tag `ftrt`; a TensorRT for RTX engine with `vtrt`.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BufferedIOBase, BytesIO
from pathlib import Path

from dmfnet_edge.contract import INPUT_NAMES, OUTPUT_NAME
from dmfnet_edge.errors import EnvironmentProblem, InputError

ENGINE_TAGS = {b"ftrt": "tensorrt", b"vtrt": "tensorrt-rtx"}
ONNX_FLOAT = 1  # TensorProto.FLOAT
MAX_VALUE_INFO = 1 << 16  # bytes of one input/output description; the exporter writes under 200
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
MODEL_GRAPH, MODEL_IR_VERSION = 7, 1
GRAPH_INPUT, GRAPH_OUTPUT = 11, 12


class NotOnnx(ValueError):
    """The bytes are not a ModelProto of the contract (the message says where they stop being one)."""


def _varint(stream: BufferedIOBase) -> int | None:
    """The next base-128 varint, None at a clean end of the stream."""
    value = shift = 0
    while True:
        byte = stream.read(1)
        if not byte:
            if shift:
                raise NotOnnx("the file ends inside a number")
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise NotOnnx("a number longer than 10 bytes")


def _fields(stream: BufferedIOBase, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, wire type, value) of each field up to offset `end`; for a length-delimited field the
    value is its length and the stream is left at its first byte (the caller reads it or it is skipped)."""
    while stream.tell() < end:
        tag = _varint(stream)
        if tag is None:
            raise NotOnnx("the file ends inside a message")
        number, wire = tag >> 3, tag & 7
        if number == 0 or wire not in (VARINT, FIXED64, LENGTH, FIXED32):
            raise NotOnnx(f"field {number} of wire type {wire} at byte {stream.tell()}")
        value = _varint(stream) if wire in (VARINT, LENGTH) else 0
        if value is None:
            raise NotOnnx("the file ends inside a field")
        start = stream.tell()
        stop = start + {VARINT: 0, FIXED64: 8, LENGTH: value, FIXED32: 4}[wire]
        if stop > end:
            raise NotOnnx(f"field {number} at byte {start} runs past the end of its message")
        yield number, wire, value
        stream.seek(stop)


def _message(data: bytes) -> dict[int, list[int | bytes]]:
    """A small message's fields: varints as ints, length-delimited fields as bytes."""
    stream = BytesIO(data)
    fields: dict[int, list[int | bytes]] = {}
    for number, wire, value in _fields(stream, len(data)):
        fields.setdefault(number, []).append(stream.read(value) if wire == LENGTH else value)
    return fields


def _one(fields: dict[int, list[int | bytes]], number: int, what: str) -> bytes:
    values = fields.get(number, [])
    if len(values) != 1 or not isinstance(values[0], bytes):
        raise NotOnnx(f"{what} is missing or repeated")
    return values[0]


def _tensor(value_info: bytes) -> tuple[str, int, int]:
    """(name, element type, rank) of a ValueInfoProto."""
    fields = _message(value_info)
    name = _one(fields, 1, "a value's name").decode("utf-8", "replace")
    tensor = _message(_one(_message(_one(fields, 2, f"the type of '{name}'")), 1, f"'{name}' as a tensor"))
    elem = tensor.get(1, [0])[0]
    shape = _message(tensor[2][0]) if isinstance(tensor.get(2, [None])[0], bytes) else {}
    return name, elem if isinstance(elem, int) else 0, len(shape.get(1, []))


def graph_io(stream: BufferedIOBase, size: int) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """The inputs and outputs (name, element type, rank) of the ModelProto in `stream` of `size` bytes."""
    graph: tuple[int, int] | None = None
    ir_version = None
    for number, wire, value in _fields(stream, size):
        if number == MODEL_IR_VERSION and wire == VARINT:
            ir_version = value
        elif number == MODEL_GRAPH and wire == LENGTH:
            if graph is not None:
                raise NotOnnx("two graphs")
            graph = (stream.tell(), value)
    if ir_version is None or graph is None:
        raise NotOnnx("no IR version" if ir_version is None else "no graph")
    ios: dict[int, list[tuple[str, int, int]]] = {GRAPH_INPUT: [], GRAPH_OUTPUT: []}
    stream.seek(graph[0])
    for number, wire, value in _fields(stream, graph[0] + graph[1]):
        if number in ios and wire == LENGTH:
            if value > MAX_VALUE_INFO:
                raise NotOnnx(f"a graph {'input' if number == GRAPH_INPUT else 'output'} of {value:,} bytes")
            ios[number].append(_tensor(stream.read(value)))
    return ios[GRAPH_INPUT], ios[GRAPH_OUTPUT]


def check_onnx_file(path: Path) -> None:
    """Refuse a file that is not an ONNX graph of the contract (read with bounded memory, never loaded)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(0)
            inputs, outputs = graph_io(handle, size)
    except OSError as exc:
        raise EnvironmentProblem(f"{path}: cannot be read ({exc.strerror})") from None
    except NotOnnx as exc:
        raise InputError(f"{path}: not an ONNX graph ({exc}); give a graph written by 'dmfnet-export onnx' or "
                         "'dmfnet-export quantize'") from None
    wanted = [(name, ONNX_FLOAT, 4) for name in INPUT_NAMES], [(OUTPUT_NAME, ONNX_FLOAT, 4)]
    if (sorted(inputs), outputs) != wanted:
        described = ", ".join(f"{n} (type {t}, rank {r})" for n, t, r in [*inputs, *outputs])[:160]
        raise InputError(f"{path}: an ONNX graph, but not of the contract (inputs mri and other, output fused, "
                         f"float32 of rank 4): it has {described or 'no inputs or outputs'}; export it with "
                         "'dmfnet-export onnx'")


def check_engine_file(path: Path) -> None:
    """Refuse a file that is not a full-TensorRT engine (Triton's tensorrt backend loads no other)."""
    try:
        with open(path, "rb") as handle:
            tag = handle.read(4)
    except OSError as exc:
        raise EnvironmentProblem(f"{path}: cannot be read ({exc.strerror})") from None
    flavour = ENGINE_TAGS.get(tag)
    if flavour == "tensorrt":
        return
    if flavour == "tensorrt-rtx":
        raise InputError(f"{path}: a TensorRT for RTX engine; Triton's tensorrt backend runs full-TensorRT engines "
                         "only (build one on the serving GPU with 'dmfnet-export build --toolchain tensorrt')")
    raise InputError(f"{path}: not a TensorRT engine (it starts with {tag!r}, a TensorRT plan with b'ftrt'); give "
                     "an engine written by 'dmfnet-export build'")
