"""The HTTP transport of `--server http://HOST:PORT`: a small KServe v2 client whose answers are bounded.

tritonclient's HTTP client reads any answer whole (and inflates a gzip body whole), then parses it with a JSON
parser of no depth limit; a server that answers with gigabytes or with HTML takes the client down with it. This
client speaks only the two calls a runner needs, model metadata and inference with binary tensors, and
checks every answer before it is used: its size against a bound given up front (before a byte of the body is
read), no compression, a JSON header through the bounded parser (records.parse_json) and of the protocol's
structure, and the binary output's declared size against its declared shape.
"""

from __future__ import annotations

import http.client
import json
import math
from typing import Any

import msgspec
import numpy as np

from dmfnet_edge.errors import RecordError, one_line
from dmfnet_edge.records import parse_json

MAX_METADATA = 1 << 20  # bytes of a metadata or error answer
MAX_HEADER = 1 << 16  # bytes of an inference answer's JSON header


class ServerRefused(Exception):
    """The server answered with an error status; `status` is the HTTP status, the message its error text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BadAnswer(Exception):
    """The answer is not KServe v2 (not JSON, another structure, sizes that disagree, too large)."""


class _TensorMeta(msgspec.Struct):
    name: str
    datatype: str = ""
    shape: list[int] = []


class ModelMetadata(msgspec.Struct):
    inputs: list[_TensorMeta]
    outputs: list[_TensorMeta]
    name: str = ""


class _Output(msgspec.Struct):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] = {}


class _InferAnswer(msgspec.Struct):
    outputs: list[_Output]


class KServeHttp:
    """One keep-alive connection to `host:port` (one per thread: http.client connections are not shared)."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.connection = http.client.HTTPConnection(host, port, timeout=timeout_s)

    def close(self) -> None:
        self.connection.close()

    def metadata(self, model: str) -> ModelMetadata:
        body = self._exchange("GET", f"/v2/models/{model}", None, {}, MAX_METADATA)[1]
        return _decode(body, ModelMetadata, "model metadata")

    def infer(self, model: str, inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
        """The output tensor `output` for float32 `inputs`, sent and received as binary data."""
        header = json.dumps({
            "inputs": [{"name": name, "shape": list(value.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": value.nbytes}} for name, value in inputs.items()],
            "outputs": [{"name": output, "parameters": {"binary_data": True}}]}).encode()
        body = header + b"".join(np.ascontiguousarray(v, dtype="<f4").tobytes() for v in inputs.values())
        largest = max(v.nbytes for v in inputs.values())
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
        answer, data = self._exchange("POST", f"/v2/models/{model}/infer", body, headers, largest + MAX_HEADER)
        return _output(answer, data, output)

    def _exchange(self, method: str, path: str, body: bytes | None, headers: dict[str, str], limit: int
                  ) -> tuple[http.client.HTTPResponse, bytes]:
        self.connection.request(method, path, body=body, headers=headers)
        answer = self.connection.getresponse()
        if answer.status != 200:
            data = _read(answer, MAX_METADATA, allow_longer=True)
            raise ServerRefused(answer.status, _error_text(data, answer.status))
        if (answer.getheader("Content-Encoding") or "identity").lower() != "identity":
            self.connection.close()
            raise BadAnswer(f"a {one_line(answer.getheader('Content-Encoding'), 20)} answer (none was asked for)")
        return answer, _read(answer, limit)


def _read(answer: http.client.HTTPResponse, limit: int, allow_longer: bool = False) -> bytes:
    """At most `limit` bytes of the body: a longer one is refused from its Content-Length, before it is read
    (an error answer is cut instead)."""
    length = answer.getheader("Content-Length")
    if not allow_longer and length is not None and length.strip().isdigit() and int(length) > limit:
        answer.close()
        raise BadAnswer(f"an answer of {int(length):,} bytes, over the {limit:,} this request can take")
    data = answer.read(limit + 1)
    if len(data) > limit:
        answer.close()
        if not allow_longer:
            raise BadAnswer(f"an answer over the {limit:,} bytes this request can take")
        data = data[:limit]
    return data


def _decode(data: bytes, kind: type, what: str) -> Any:
    try:
        return msgspec.convert(parse_json(data, "the server's answer"), kind, strict=True)
    except RecordError as exc:
        raise BadAnswer(f"{what} that is not JSON ({one_line(str(exc), 120)})") from None
    except msgspec.ValidationError as exc:
        raise BadAnswer(f"{what} of another structure than KServe v2's ({one_line(str(exc), 120)})") from None


def _error_text(data: bytes, status: int) -> str:
    try:
        text = parse_json(data, "the server's answer").get("error")
    except (RecordError, AttributeError):
        text = None
    if not isinstance(text, str):
        text = data[:200].decode("utf-8", "replace") or http.client.responses.get(status, "error")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return one_line(f"[{status}] {lines[-1] if lines else ''}")


def _output(answer: http.client.HTTPResponse, data: bytes, name: str) -> np.ndarray:
    text = answer.getheader("Inference-Header-Content-Length")
    if text is None or not text.strip().isdigit() or not 0 < int(text) <= min(len(data), MAX_HEADER):
        raise BadAnswer(f"an inference answer without a valid binary header length ({one_line(str(text), 20)})")
    split = int(text)
    result = _decode(data[:split], _InferAnswer, "an inference answer")
    offset = split
    for tensor in result.outputs:
        size = tensor.parameters.get("binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadAnswer(f"output '{one_line(tensor.name, 40)}' without binary data")
        if tensor.name == name:
            return _tensor(tensor, data[offset:offset + size], size)
        offset += size
    raise BadAnswer(f"an inference answer without the output '{name}'")


def _tensor(tensor: _Output, data: bytes, size: int) -> np.ndarray:
    if tensor.datatype != "FP32" or any(d < 0 for d in tensor.shape) or len(tensor.shape) > 8:
        raise BadAnswer(f"output '{tensor.name}' of type {one_line(tensor.datatype, 20)} and shape "
                        f"{tensor.shape[:8]}; expected FP32 (N, 1, H, W)")
    if size != 4 * math.prod(tensor.shape) or len(data) != size:
        raise BadAnswer(f"output '{tensor.name}': shape {tensor.shape} needs {4 * math.prod(tensor.shape):,} bytes, "
                        f"the answer declares {size:,} and holds {len(data):,}")
    return np.frombuffer(data, dtype="<f4").reshape(tensor.shape)
