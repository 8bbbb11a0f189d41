"""Inference requests checked against the model contract before anything is allocated or run.

`dmfnet serve` answers requests through a validating front (serving/front_http.py, serving/front_grpc.py) that
calls these checks on every inference request before Triton sees it, because Triton trusts what a request
declares: its HTTP front end allocates the byte size of an input's declared shape to convert the JSON `data`
of that input before it counts the values, so one request declaring a 100000 x 100000 input (40 GB) aborts the
whole server with std::bad_alloc; and PyTriton reports any error raised in the model as HTTP 500 with a
Python traceback, failing every request the dynamic batcher merged with it.

The checks, in order: the declared tensors (names, data type, rank, batch, channel, sides and the pixel budget
of `limits.py`, the same bound the CLI applies to an image), then the declared byte sizes against what the
request holds, then the values (finite float32). The declared shape is only multiplied once each side is
bounded, so no product is ever large. Every refusal is one `RequestRefused` line with an HTTP status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from dmfnet_edge.contract import INPUT_NAMES, OUTPUT_NAME
from dmfnet_edge.errors import InputError, RecordError
from dmfnet_edge.preprocess.tensor import padded_size
from dmfnet_edge.records import parse_json

MAX_SIDE = 1 << 16  # pixels on one side; far above any budget-sized image (65536 x 16 = 2**20)
MAX_HEADER = 1 << 16  # bytes of a request's JSON header when its tensors are sent as binary data
# bytes of an all-JSON request: parsed, each value is a Python object, about 20 times its text (a 4 MiB body of
# '1.25,' peaked at 85 MiB), so 16 requests in flight stay under 1.4 GiB. A 256 x 256 pair written with 9 digits
# a value takes 1.3 MB; larger images go as binary data, 4 bytes a value.
MAX_JSON_BODY = 4 << 20
MAX_JSON_DEPTH = 8  # a request header nests 3 levels; JSON `data` of an (N, 1, H, W) tensor 5
DATATYPE = "FP32"


class RequestRefused(InputError):
    """A request that cannot be served, with the HTTP status that says why (400, 404, 411, 413, 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RequestLimits:
    """What one request may hold: `max_batch` images of at most `max_pixels` network pixels each (padded to the
    graph contract), at most `static_size` (H, W) for a graph of a fixed size."""

    max_pixels: int
    max_batch: int
    static_size: tuple[int, int] | None = None

    @property
    def max_tensor_bytes(self) -> int:
        return self.max_batch * self.max_pixels * 4

    @property
    def max_body(self) -> int:
        """Bytes of the largest valid request with binary data (two tensors and a header); JSON `data` of the
        same values takes about three times that and is refused above this bound too: send binary data."""
        return 2 * self.max_tensor_bytes + MAX_HEADER


@dataclass(frozen=True)
class Declared:
    """One input as a request declares it, before any of its data is looked at."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def check_declared(inputs: list[Declared], limits: RequestLimits) -> tuple[int, int, int]:
    """(N, H, W) of a request whose inputs are `mri` and `other`, FP32 (N, 1, H, W) of one shape within the
    limits; otherwise RequestRefused."""
    names = [t.name for t in inputs]
    if sorted(names) != sorted(INPUT_NAMES):
        raise RequestRefused(f"inputs {_short(names)}: the model takes exactly {' and '.join(INPUT_NAMES)}")
    for tensor in inputs:
        if tensor.datatype != DATATYPE:
            raise RequestRefused(f"input '{tensor.name}' is {_short(tensor.datatype)}; the model takes {DATATYPE}")
    shapes = {t.shape for t in inputs}
    if len(shapes) != 1:
        raise RequestRefused(f"mri and other have shapes {_short([list(t.shape) for t in inputs])}; one image "
                             "pair has one shape")
    return _check_shape(shapes.pop(), limits)


def _check_shape(shape: tuple[int, ...], limits: RequestLimits) -> tuple[int, int, int]:
    if len(shape) != 4 or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise RequestRefused(f"shape {_short(list(shape))}: inputs are (N, 1, H, W)")
    n, c, h, w = shape
    if not 1 <= n <= limits.max_batch:
        raise RequestRefused(f"batch of {n}: this server takes 1 to {limits.max_batch} image pairs a request")
    if c != 1:
        raise RequestRefused(f"{c} channels: inputs are one channel (luma), shape (N, 1, H, W)")
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise RequestRefused(f"a {w}x{h} image: sides are 1 to {MAX_SIDE} pixels")
    ph, pw = padded_size(h, w)
    if ph * pw > limits.max_pixels:
        raise RequestRefused(f"a {w}x{h} image is {ph * pw:,} network pixels, over this server's bound of "
                             f"{limits.max_pixels:,}; downsample it", 413)
    if limits.static_size is not None and (h > limits.static_size[0] or w > limits.static_size[1]):
        raise RequestRefused(f"a {w}x{h} image: this server's graph takes at most "
                             f"{limits.static_size[1]}x{limits.static_size[0]}", 413)
    return n, h, w


def check_values(values: np.ndarray, name: str) -> None:
    """Refuse NaN or Inf: the network would answer NaN for the whole image (or the whole batch)."""
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(values.size - np.count_nonzero(finite))
        raise RequestRefused(f"input '{name}' holds {bad:,} NaN or Inf values; the network takes finite numbers "
                             "(float32 in [-1, 1])")


def check_model(model: str, version: str | None, served: str) -> None:
    """Refuse a request for another model, or a version other than 1 (an empty version is the latest)."""
    if model != served or version not in (None, "", "1"):
        where = model if not version else f"{model} version {version}"
        raise RequestRefused(f"unknown model {_short(where)}; this server serves '{served}' (version 1)", 404)


def check_outputs(names: list[str]) -> None:
    unknown = [n for n in names if n != OUTPUT_NAME]
    if unknown:
        raise RequestRefused(f"outputs {_short(unknown)}: the model's only output is {OUTPUT_NAME}")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- KServe v2 over HTTP ---------------------------------------------------------------------------------------
class _Tensor(msgspec.Struct):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] = {}
    data: Any = None


class _Output(msgspec.Struct):
    name: str
    parameters: dict[str, Any] = {}


class _Header(msgspec.Struct):
    inputs: list[_Tensor]
    outputs: list[_Output] = []


def check_http_infer(body: bytes | bytearray, header_length: int | None, limits: RequestLimits) -> None:
    """Check a KServe v2 HTTP inference body: all JSON, or (with the Inference-Header-Content-Length header)
    a JSON header of `header_length` bytes followed by the inputs' binary data."""
    if header_length is None and len(body) > MAX_JSON_BODY:
        raise RequestRefused(f"a JSON request of {len(body):,} bytes; JSON data is taken up to {MAX_JSON_BODY:,} "
                             "bytes: send larger images as binary data (Inference-Header-Content-Length)", 413)
    if header_length is not None and not 0 < header_length <= min(len(body), MAX_HEADER):
        raise RequestRefused(f"Inference-Header-Content-Length {header_length}: expected 1 to "
                             f"{min(len(body), MAX_HEADER)} (the JSON header's bytes at the start of the body)")
    text = bytes(body if header_length is None else body[:header_length])  # at most MAX_JSON_BODY bytes
    header = _header(text)
    check_outputs([o.name for o in header.outputs])
    n, h, w = check_declared([Declared(t.name, t.datatype, tuple(t.shape)) for t in header.inputs], limits)
    binary = memoryview(body)[len(text):]
    offset = 0
    for tensor in header.inputs:
        values = _http_values(tensor, binary[offset:], n * h * w)
        offset += values.nbytes if _binary_size(tensor) is not None else 0
        check_values(values, tensor.name)
    if offset != len(binary):
        raise RequestRefused(f"the body holds {len(binary) - offset:,} bytes after its inputs' data")


def _header(text: bytes) -> _Header:
    try:
        return msgspec.convert(parse_json(text, "the request", MAX_JSON_DEPTH), _Header, strict=True)
    except RecordError as exc:
        raise RequestRefused(str(exc)) from None
    except msgspec.ValidationError as exc:
        raise RequestRefused(f"the request is not a KServe v2 inference request: {str(exc)[:160]}") from None


def _binary_size(tensor: _Tensor) -> int | None:
    size = tensor.parameters.get("binary_data_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise RequestRefused(f"input '{tensor.name}': binary_data_size {_short(size)} is not a number of bytes")
    return size


def _http_values(tensor: _Tensor, binary: memoryview, count: int) -> np.ndarray:
    size = _binary_size(tensor)
    if size is None:
        return _json_values(tensor, count)
    if tensor.data is not None:
        raise RequestRefused(f"input '{tensor.name}' has both JSON data and binary_data_size")
    if size != 4 * count:
        raise RequestRefused(f"input '{tensor.name}': binary_data_size {size:,}, but its shape holds "
                             f"{4 * count:,} bytes of FP32")
    if size > len(binary):
        raise RequestRefused(f"input '{tensor.name}': {size:,} bytes declared, the body holds {len(binary):,}")
    return np.frombuffer(binary[:size], dtype="<f4")


def _json_values(tensor: _Tensor, count: int) -> np.ndarray:
    """The JSON `data` of an input (flat, or nested as its shape) as float32, counted before it is converted."""
    flat: list[Any] = []
    stack = [tensor.data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            flat.append(item)
        else:
            raise RequestRefused(f"input '{tensor.name}': data must be numbers, got {_short(item, 40)}")
        if len(flat) > count:
            break
    if len(flat) != count:
        raise RequestRefused(f"input '{tensor.name}': its shape holds {count:,} values, its data "
                             f"{'more' if len(flat) > count else len(flat)}")
    with np.errstate(over="ignore"):  # a number beyond float32 becomes Inf, which check_values refuses
        return np.asarray(flat, dtype=np.float32)


# ---- KServe v2 over gRPC ---------------------------------------------------------------------------------------
def check_grpc_infer(request: Any, limits: RequestLimits) -> None:
    """Check a `ModelInferRequest` (tritonclient's service_pb2): its inputs' data in `raw_input_contents` (one
    entry per input, in order) or in each input's `contents.fp32_contents`."""
    check_outputs([o.name for o in request.outputs])
    declared = [Declared(t.name, t.datatype, tuple(int(d) for d in t.shape)) for t in request.inputs]
    n, h, w = check_declared(declared, limits)
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(declared):
        raise RequestRefused(f"{len(raw)} raw_input_contents for {len(declared)} inputs")
    for i, tensor in enumerate(request.inputs):
        if raw:
            if tensor.HasField("contents"):
                raise RequestRefused(f"input '{tensor.name}' has both contents and raw_input_contents")
            if len(raw[i]) != 4 * n * h * w:
                raise RequestRefused(f"input '{tensor.name}': {len(raw[i]):,} bytes of raw contents, but its shape "
                                     f"holds {4 * n * h * w:,} bytes of FP32")
            values = np.frombuffer(raw[i], dtype="<f4")
        else:
            values = _grpc_contents(tensor, n * h * w)
        check_values(values, tensor.name)


def _grpc_contents(tensor: Any, count: int) -> np.ndarray:
    contents = tensor.contents
    others = [field.name for field, _ in contents.ListFields() if field.name != "fp32_contents"]
    if others:
        raise RequestRefused(f"input '{tensor.name}' has {others[0]}; FP32 data goes in fp32_contents")
    if len(contents.fp32_contents) != count:
        raise RequestRefused(f"input '{tensor.name}': its shape holds {count:,} values, fp32_contents "
                             f"{len(contents.fp32_contents):,}")
    return np.asarray(contents.fp32_contents, dtype=np.float32)
