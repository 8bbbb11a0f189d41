"""Hostile requests against a live `dmfnet serve` (the folder's one server, conftest.py): each is answered 4xx
(or a gRPC error status) with one line and no traceback, before Triton allocates anything for it, and the
server keeps answering valid requests between them.

Before the validating front, the first request here (JSON data declared as 100000 x 100000) aborted
tritonserver with std::bad_alloc and `dmfnet serve` printed "stopped" and exited 0; NaN images were answered
with NaN; malformed requests got HTTP 500 with a Python traceback."""

import http.client
import json
import socket

import numpy as np
import pytest

from tests.conftest import needs

grpc = needs("grpc", "serve")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402

SHAPE = [1, 1, 64, 64]


def _post(server, body: bytes, headers: dict[str, str], path: str = "/v2/models/dmfnet_edge/infer"
          ) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", server.ports[0], timeout=60)
    try:
        connection.request("POST", path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


def _binary(shape, values: np.ndarray | None = None, datatype: str = "FP32", size: int | None = None):
    data = (np.zeros(shape, np.float32) if values is None else values).tobytes()
    header = json.dumps({"inputs": [
        {"name": n, "shape": shape, "datatype": datatype,
         "parameters": {"binary_data_size": len(data) if size is None else size}} for n in ("mri", "other")
    ]}).encode()
    return header + data + data, {"Inference-Header-Content-Length": str(len(header))}


def _json(shape, data) -> bytes:
    return json.dumps({"inputs": [{"name": n, "shape": shape, "datatype": "FP32", "data": data}
                                  for n in ("mri", "other")]}).encode()


def _refused(answer: tuple[int, str], status: int, words: str) -> None:
    code, body = answer
    assert code == status, body
    assert body.count("\n") == 0 and "Traceback" not in body
    assert words in json.loads(body)["error"], body


def _still_serving(server) -> None:
    body, headers = _binary(SHAPE)
    code, text = _post(server, body, headers)
    assert code == 200, text


def _nan_image() -> np.ndarray:
    values = np.zeros(SHAPE, np.float32)
    values[0, 0, 5, 7] = np.nan
    return values


HTTP_CASES = [
    ("JSON data declared 100000x100000 (aborted tritonserver)",
     lambda: (_json([1, 1, 100000, 100000], [0, 0, 0, 0]), {}), 400, "sides are 1 to 65536"),
    ("binary data declared 30000x30000", lambda: _binary([1, 1, 30000, 30000], np.zeros(4, np.float32)), 413,
     "over this server's bound"),
    ("a batch over --max-batch", lambda: _binary([9, 1, 64, 64]), 400, "1 to 8 image pairs"),
    ("NaN in binary data", lambda: _binary(SHAPE, _nan_image()), 400, "1 NaN or Inf values"),
    ("a number beyond float32 in JSON data", lambda: (_json([1, 1, 2, 2], [0, 1e39, 0, 0]), {}), 400,
     "NaN or Inf"),
    ("strings as JSON data", lambda: (_json([1, 1, 2, 2], ["0", "1", "2", "3"]), {}), 400, "must be numbers"),
    ("FP64 declared", lambda: _binary(SHAPE, datatype="FP64"), 400, "the model takes FP32"),
    ("binary size that disagrees with the shape", lambda: _binary(SHAPE, size=16), 400, "binary_data_size 16"),
    ("not JSON", lambda: (b"\x89PNG\r\n\x1a\n" + bytes(64), {}), 400, "not valid JSON"),
    ("JSON of another structure", lambda: (b'{"inputs": 5}', {}), 400, "not a KServe v2 inference request"),
    ("deeply nested JSON", lambda: (b"[" * 10_000 + b"]" * 10_000, {}), 400, "nested"),
    ("a header length past the body", lambda: (b"{}", {"Inference-Header-Content-Length": "999"}), 400,
     "Inference-Header-Content-Length 999"),
    ("an unknown input name", lambda: (json.dumps({"inputs": [
        {"name": n, "shape": [1, 1, 2, 2], "datatype": "FP32", "data": [0] * 4} for n in ("mri", "ct")]}).encode(),
        {}), 400, "the model takes exactly mri and other"),
    ("a gzip body", lambda: (b"\x1f\x8b" + bytes(30), {"Content-Encoding": "gzip"}), 415, "uncompressed"),
    ("a Content-Length of a terabyte", lambda: (b"{}", {"Content-Length": str(1 << 40)}), 413,
     "this server takes at most"),
]


@pytest.mark.parametrize("build,status,words", [c[1:] for c in HTTP_CASES], ids=[c[0] for c in HTTP_CASES])
def test_hostile_http_request_is_refused_and_the_server_keeps_serving(server, build, status, words):
    body, headers = build()
    _refused(_post(server, body, headers), status, words)
    _still_serving(server)


def test_unknown_model_chunked_body_and_other_endpoints(server):
    _refused(_post(server, b"{}", {}, "/v2/models/other/infer"), 404, "unknown model 'other'")
    _refused(_post(server, b"{}", {}, "/v2/repository/index"), 403, "takes inference requests")
    connection = http.client.HTTPConnection("127.0.0.1", server.ports[0], timeout=60)
    connection.putrequest("POST", "/v2/models/dmfnet_edge/infer")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    connection.send(b"2\r\n{}\r\n0\r\n\r\n")
    answer = connection.getresponse()
    assert answer.status == 411 and "Content-Length" in json.loads(answer.read())["error"]
    connection.close()
    _still_serving(server)


def test_a_truncated_body_is_refused(server):
    body, headers = _binary(SHAPE)
    head = (f"POST /v2/models/dmfnet_edge/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"Inference-Header-Content-Length: {headers['Inference-Header-Content-Length']}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.ports[0]), timeout=60) as sock:
        sock.sendall(head + body[: len(body) // 3])
        sock.shutdown(socket.SHUT_WR)  # the client is gone half-way
        answer = sock.makefile("rb").read().decode()
    assert answer.startswith("HTTP/1.1 400") and "the body ended after" in answer and "Traceback" not in answer
    _still_serving(server)


@pytest.mark.parametrize("raw,words", [
    (b"GET /v2/\x01x HTTP/1.1\r\nHost: x\r\n\r\n", b"a path with control or non-ASCII characters"),
    (b"POST /v2/models/dmfnet_edge/infer HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\n{}",
     b"more than one Content-Length"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), b"Bad request syntax"),  # TLS to the HTTP port
], ids=["control character in the path", "two Content-Lengths", "a TLS handshake"])
def test_malformed_http_is_refused_in_one_line(server, raw, words):
    with socket.create_connection(("127.0.0.1", server.ports[0]), timeout=60) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        answer = sock.makefile("rb").read()
    body = answer.partition(b"\r\n\r\n")[2] or answer  # HTTP/0.9 answers (to no request line) have no head
    assert words in body and body.count(b"\n") == 0 and b"Traceback" not in body
    _still_serving(server)


def _grpc_request(shape, raw: list[bytes] | None = None, fp32: list[float] | None = None):
    request = service_pb2.ModelInferRequest(model_name="dmfnet_edge")
    for name in ("mri", "other"):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=shape)
        if fp32 is not None:
            tensor.contents.fp32_contents.extend(fp32)
    request.raw_input_contents.extend(raw or [])
    return request


def test_hostile_grpc_requests_are_refused_and_the_server_keeps_serving(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.ports[1]}")
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    nan = _nan_image().tobytes()
    cases = [
        (_grpc_request([1, 1, 100000, 100000], [b"\0" * 16] * 2), grpc.StatusCode.INVALID_ARGUMENT, "sides are"),
        (_grpc_request(SHAPE, [nan, nan]), grpc.StatusCode.INVALID_ARGUMENT, "NaN or Inf"),
        (_grpc_request([1, 1, 2, 2], fp32=[0.0, float("inf"), 0.0, 0.0]), grpc.StatusCode.INVALID_ARGUMENT,
         "NaN or Inf"),
        (_grpc_request(SHAPE, [b"\0" * 12] * 2), grpc.StatusCode.INVALID_ARGUMENT, "12 bytes of raw contents"),
    ]
    for request, code, words in cases:
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request, timeout=60)
        assert refused.value.code() == code and words in refused.value.details()
        assert "\n" not in refused.value.details()
    garbage = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.RpcError) as refused:
        garbage(b"\xff" * 64, timeout=60)
    assert "not a ModelInferRequest" in refused.value.details()
    oversized = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.RpcError) as refused:
        oversized(bytes(80 << 20), timeout=60)  # over the message bound: refused from its length
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as refused:
        stub.SystemSharedMemoryStatus(service_pb2.SystemSharedMemoryStatusRequest(), timeout=60)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    zeros = np.zeros(SHAPE, np.float32).tobytes()
    answer = stub.ModelInfer(_grpc_request(SHAPE, [zeros, zeros]), timeout=60)
    assert list(answer.outputs[0].shape) == SHAPE
    channel.close()
    _still_serving(server)
