"""The server's request checks (serving/requests.py) as pure functions, on random declarations, bodies and
messages: every input ends in an accepted request or one RequestRefused line, never another exception, and an
accepted request is within the contract and the bounds. Also the bounded reader of what the client gets back
(runtime/kserve_http.py)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmfnet_edge.preprocess.tensor import padded_size
from dmfnet_edge.runtime.kserve_http import BadAnswer, KServeHttp
from dmfnet_edge.serving.requests import (
    Declared,
    RequestLimits,
    RequestRefused,
    check_declared,
    check_grpc_infer,
    check_http_infer,
)
from tests.conftest import needs

pytestmark = pytest.mark.runtime  # also in the runtime-only tier (torch unimportable)

LIMITS = RequestLimits(max_pixels=1 << 16, max_batch=4)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIDES = st.one_of(st.integers(-3, 300), st.sampled_from([0, 1, 16, 63, 64, 65, 256, 257, 1 << 20, 10**12]))
SHAPES = st.lists(SIDES, min_size=0, max_size=6).map(tuple)
NAMES = st.sampled_from(["mri", "other", "ct", "", "MRI", "fused"])
TYPES = st.sampled_from(["FP32", "FP64", "FP16", "INT8", "BYTES", "fp32", ""])


def _accepted(n: int, h: int, w: int) -> None:
    ph, pw = padded_size(h, w)
    assert 1 <= n <= LIMITS.max_batch and h >= 1 and w >= 1 and ph * pw <= LIMITS.max_pixels


@FAST
@given(st.lists(st.builds(Declared, NAMES, TYPES, SHAPES), max_size=4))
def test_declared_tensors_are_accepted_only_within_the_contract(inputs):
    try:
        n, h, w = check_declared(inputs, LIMITS)
    except RequestRefused as exc:
        assert exc.status in (400, 413) and "\n" not in str(exc)
        return
    assert sorted(t.name for t in inputs) == ["mri", "other"] and {t.datatype for t in inputs} == {"FP32"}
    assert {t.shape for t in inputs} == {(n, 1, h, w)}
    _accepted(n, h, w)


# mostly well formed, so that many examples get past the first checks to the later ones
FINITE = st.sampled_from([0.0, 0.5, -1.0, 0.25, 1.0, -0.75, 3e38, 1e-45])
VALUES = st.one_of(FINITE, FINITE, FINITE, st.sampled_from([np.nan, np.inf, -np.inf]))
GOOD_SHAPES = [[1, 1, 2, 3], [2, 1, 4, 4], [4, 1, 16, 9], [3, 1, 1, 7], [1, 1, 300, 300], [5, 1, 2, 2], [1, 2, 2, 2]]
SHAPE_LISTS = st.one_of(st.sampled_from(GOOD_SHAPES), st.sampled_from(GOOD_SHAPES), SHAPES.map(list))
NAME_LISTS = st.one_of(st.sampled_from([["mri", "other"], ["other", "mri"]]), st.lists(NAMES, max_size=3))
DATATYPES = st.one_of(*[st.just("FP32")] * 4, TYPES)


def _count(shape: list[int]) -> int:
    return int(np.prod(shape)) if shape and all(0 <= d < 1000 for d in shape) else 0


@st.composite
def http_bodies(draw):
    """A KServe v2 body, often well formed, with random shapes, types, sizes and values."""
    shape = draw(SHAPE_LISTS)
    count = _count(shape)
    binary = draw(st.booleans())
    inputs, blobs = [], []
    for name in draw(NAME_LISTS):
        values = np.full(min(count, 1 << 16), draw(VALUES), np.float32)
        tensor = {"name": name, "shape": shape, "datatype": draw(DATATYPES)}
        if binary:
            blob = values.tobytes()[: draw(st.sampled_from([None, None, None, 0, 7, 16]))]
            size = draw(st.sampled_from([len(blob), len(blob), len(blob), 0, 4 * count, -1, "x"]))
            tensor["parameters"] = {"binary_data_size": size}
            blobs.append(blob)
        else:
            tensor["data"] = draw(st.sampled_from([values.tolist()] * 3 + [[], ["a"], [[0.0]], None, 1.0]))
        inputs.append(tensor)
    header = json.dumps({"inputs": inputs}, allow_nan=True).encode()
    body = header + b"".join(blobs) + draw(st.sampled_from([b"", b"", b"\0" * 4]))
    offset = draw(st.sampled_from([0, 0, 0, 1, -len(header)]))
    return body, len(header) + offset if binary else None


@FAST
@given(http_bodies())
def test_http_bodies_end_in_acceptance_or_one_refusal(request):
    body, header_length = request
    try:
        check_http_infer(body, header_length, LIMITS)
    except RequestRefused as exc:
        assert "\n" not in str(exc)


@FAST
@given(st.binary(max_size=512), st.one_of(st.none(), st.integers(-5, 600)))
def test_random_bytes_are_refused_in_one_line(body, header_length):
    with pytest.raises(RequestRefused) as refused:
        check_http_infer(body, header_length, LIMITS)
    assert "\n" not in str(refused.value)


def test_an_accepted_body_is_exactly_the_contract():
    values = np.linspace(-1, 1, 2 * 3 * 5, dtype=np.float32).reshape(2, 1, 3, 5)
    header = json.dumps({"inputs": [
        {"name": n, "shape": [2, 1, 3, 5], "datatype": "FP32", "parameters": {"binary_data_size": values.nbytes}}
        for n in ("other", "mri")], "outputs": [{"name": "fused"}]}).encode()
    check_http_infer(header + values.tobytes() * 2, len(header), LIMITS)
    nan = values.copy()
    nan[1, 0, 2, 4] = np.nan
    with pytest.raises(RequestRefused, match="input 'mri' holds 1 NaN or Inf"):
        check_http_infer(header + values.tobytes() + nan.tobytes(), len(header), LIMITS)
    with pytest.raises(RequestRefused, match="4 bytes after its inputs' data"):
        check_http_infer(header + values.tobytes() * 2 + b"\0" * 4, len(header), LIMITS)


service_pb2 = needs("tritonclient.grpc.service_pb2", "serve")


@st.composite
def grpc_requests(draw):
    request = service_pb2.ModelInferRequest(model_name="dmfnet_edge")
    shape = draw(SHAPE_LISTS)
    count = _count(shape)
    raw = draw(st.booleans())
    for name in draw(NAME_LISTS):
        tensor = request.inputs.add(name=name, datatype=draw(DATATYPES),
                                    shape=[min(max(d, -(2**63)), 2**63 - 1) for d in shape])
        values = np.full(min(count, 1 << 16), draw(VALUES), np.float32)
        if raw:
            request.raw_input_contents.append(values.tobytes()[: draw(st.sampled_from([None, None, 0, 8]))])
        elif draw(st.sampled_from([True] * 7 + [False])):  # hypothesis favours the first entry
            tensor.contents.fp32_contents.extend(values.tolist())
        else:
            tensor.contents.int_contents.extend([1] * min(count, 64))
    if draw(st.integers(0, 3)) == 3:
        request.outputs.add(name=draw(st.sampled_from(["fused", "fused", "fused", "mri"])))
    return request


@FAST
@given(grpc_requests())
def test_grpc_requests_end_in_acceptance_or_one_refusal(request):
    try:
        check_grpc_infer(request, LIMITS)
    except RequestRefused as exc:
        assert "\n" not in str(exc)
        return
    _accepted(request.inputs[0].shape[0], request.inputs[0].shape[2], request.inputs[0].shape[3])


class _Answers(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    headers_to_send: dict[str, str] = {}

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        for key, value in self.headers_to_send.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + bytes(64))


@pytest.mark.parametrize("headers,words", [
    ({"Content-Length": str(1 << 40)}, "1,099,511,627,776 bytes, over"),  # refused before a byte is read
    ({"Content-Length": "66", "Content-Encoding": "gzip"}, "a gzip answer"),  # never inflated
])
def test_the_client_refuses_an_answer_before_reading_it(headers, words):
    handler = type("Answers", (_Answers,), {"headers_to_send": headers})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = KServeHttp("127.0.0.1", server.server_address[1], timeout_s=10)
    try:
        with pytest.raises(BadAnswer, match=words):
            client.metadata("dmfnet_edge")
    finally:
        client.close()
        server.shutdown()
        server.server_close()
