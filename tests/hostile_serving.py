"""Bad-input cases of the serving surface as a user meets it on the command line: Triton model names
(`dmfnet-export triton --name`, `dmfnet serve --name`, `--server-model`), files that are not what their
manifest says packed as a Triton model, the repository folder, malformed `--server` URLs, and servers that
answer with something other than a KServe v2 answer of the contract (a fake server runs inside the command's
process for those). Hostile requests to a live `dmfnet serve` are tests/serving/test_hostile_requests.py."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from dmfnet_edge.serving.ports import free_ports
from tests.bad_inputs import REPO, Case, _pair

SHIPPED = REPO / "dmfnet_edge" / "weights" / "dmfnet-edge-fp32.onnx"
ENGINE_MANIFEST = REPO / "docs" / "engines" / "dmfnet-edge-fp32.engine.json"


def _graph(folder: Path) -> Path:
    """A copy of the shipped graph and its manifest in the case's folder (so both are hashed as inputs)."""
    for suffix in ("", ".json"):
        shutil.copyfile(f"{SHIPPED}{suffix}", folder / f"{SHIPPED.name}{suffix}")
    return folder / SHIPPED.name


def _triton(folder: Path, name: str) -> list[str]:
    """`triton --name NAME` into folder/out, beside a config.pbtxt of the user's ('..' wrote over it)."""
    (folder / "config.pbtxt").write_text('name: "the user\'s own model"\n')
    return ["triton", "--onnx", str(_graph(folder)), "-o", str(folder / "out"), "--name", name]


def _forged_onnx(folder: Path) -> list[str]:
    """Random bytes beside a manifest written for them (its SHA-256 matches; the manifest is all it had)."""
    graph = folder / "model.onnx"
    graph.write_bytes(np.random.default_rng(0).bytes(4096))
    meta = json.loads(Path(f"{SHIPPED}.json").read_text())
    meta.update(onnx_file=graph.name, onnx_sha256=hashlib.sha256(graph.read_bytes()).hexdigest())
    Path(f"{graph}.json").write_text(json.dumps(meta))
    return ["triton", "--onnx", str(graph), "-o", str(folder / "out")]


def _forged_engine(folder: Path) -> list[str]:
    engine = folder / "model.engine"
    engine.write_bytes(np.random.default_rng(1).bytes(4096))
    meta = json.loads(ENGINE_MANIFEST.read_text())
    meta["toolchain"] = {"flavour": "tensorrt", "version": "11.4.0"}
    meta.update(engine_file=engine.name, engine_bytes=4096,
                engine_sha256=hashlib.sha256(engine.read_bytes()).hexdigest())
    Path(f"{engine}.json").write_text(json.dumps(meta))
    return ["triton", "--engine", str(engine), "-o", str(folder / "out")]


def _linked_out(folder: Path) -> list[str]:
    (folder / "empty").mkdir()
    (folder / "out").mkdir()
    (folder / "out" / "repo").symlink_to(folder / "empty")
    return ["triton", "--onnx", str(_graph(folder)), "-o", str(folder / "out" / "repo")]


def _served(folder: Path, url: str, *extra: str) -> list[str]:
    return [*_pair(folder), "--server", url, *extra]


def _port() -> int:
    return free_ports(1)[0]


# ---- a fake KServe server inside the command's process -------------------------------------------------------
METADATA = {"name": "dmfnet_edge", "versions": ["1"], "platform": "python",
            "inputs": [{"name": n, "datatype": "FP32", "shape": [-1, 1, -1, -1]} for n in ("mri", "other")],
            "outputs": [{"name": "fused", "datatype": "FP32", "shape": [-1, 1, -1, -1]}]}


def _fused(shape: list[int], fill: float) -> tuple[bytes, dict[str, str]]:
    data = np.full(shape, fill, np.float32).tobytes()
    header = json.dumps({"model_name": "dmfnet_edge", "outputs": [
        {"name": "fused", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": len(data)}}]})
    return header.encode() + data, {"Inference-Header-Content-Length": str(len(header))}


ANSWERS = {  # behaviour -> (metadata answer, inference answer for the request's shape)
    "non-JSON": (lambda: (b"<html>it works</html>", {}), None),
    "another structure": (lambda: (b'{"inputs": 5, "outputs": "fused"}', {}), None),
    "wrong shape": (None, lambda shape: _fused([1, 1, 2, 2], 0.0)),
    "NaN": (None, lambda shape: _fused(shape, np.nan)),
    "out of range": (None, lambda shape: _fused(shape, 7.5)),
}


def _handler(behaviour: str) -> type[BaseHTTPRequestHandler]:
    meta, infer = ANSWERS[behaviour]

    class Fake(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self._send(*(meta() if meta else (json.dumps(METADATA).encode(), {})))

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            header = json.loads(body[: int(self.headers["Inference-Header-Content-Length"])])
            self._send(*(infer(header["inputs"][0]["shape"]) if infer else meta()))

        def _send(self, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(200)
            for key, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

    return Fake


@contextlib.contextmanager
def _fake_server(behaviour: str) -> Iterator[None]:
    """Serve `behaviour` on the port of the case's --server (read from its argv.json in the child process)."""
    argv = json.loads((Path(sys.argv[2]) / "argv.json").read_text())
    port = int(argv[argv.index("--server") + 1].rpartition(":")[2])
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(behaviour))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def _fake(behaviour: str):
    return lambda: _fake_server(behaviour)


def _local(folder: Path) -> str:
    return f"http://127.0.0.1:{_port()}"


CASES: list[Case] = [
    Case("triton --name .. (wrote over a config.pbtxt beside the repository)", lambda d, m: _triton(d, ".."), 2,
         "a Triton model name", tool="dmfnet-export"),
    Case("triton --name . (a model folder that is the repository)", lambda d, m: _triton(d, "."), 2,
         "a Triton model name", tool="dmfnet-export"),
    Case("triton --name repository.json (the repository's own record)",
         lambda d, m: _triton(d, "repository.json"), 2, "a Triton model name", tool="dmfnet-export"),
    Case("triton --name ending in a newline", lambda d, m: _triton(d, "dmfnet\n"), 2, "a Triton model name",
         tool="dmfnet-export"),
    Case("triton of random bytes under a manifest written for them", lambda d, m: _forged_onnx(d), 2,
         "not an ONNX graph", tool="dmfnet-export"),
    Case("triton of random bytes as an engine under a manifest written for them", lambda d, m: _forged_engine(d), 2,
         "not a TensorRT engine", tool="dmfnet-export"),
    Case("triton -o a symbolic link to an empty folder", lambda d, m: _linked_out(d), 2, "is a symbolic link",
         tool="dmfnet-export"),
    Case("serve --name ..", lambda d, m: ["serve", "--name", ".."], 2, "a Triton model name", model=False),
    Case("--server with a port out of range", lambda d, m: _served(d, "http://127.0.0.1:99999"), 2,
         "is not a number from 1 to 65535", model=False),
    Case("--server with an unclosed IPv6 bracket", lambda d, m: _served(d, "http://[::1:8000"), 2,
         "in brackets", model=False),
    Case("--server with a user name and password", lambda d, m: _served(d, f"http://u:pw@127.0.0.1:{_port()}"), 2,
         "user names and passwords", model=False),
    Case("--server with a space", lambda d, m: _served(d, f"http://127.0.0.1 :{_port()}"), 2,
         "spaces, control or non-ASCII", model=False),
    Case("--server with a non-ASCII host", lambda d, m: _served(d, f"http://hôte:{_port()}"), 2,
         "spaces, control or non-ASCII", model=False),
    Case("--server-model with a path in it", lambda d, m: _served(d, _local(d), "--server-model", "../x"), 2,
         "a Triton model name", model=False),
    Case("--server answering 200 with a non-JSON body", lambda d, m: _served(d, _local(d)), 3, "not JSON",
         _fake("non-JSON"), model=False),
    Case("--server answering metadata of another structure", lambda d, m: _served(d, _local(d)), 3,
         "another structure than KServe v2's", _fake("another structure"), model=False),
    Case("--server answering an output of the wrong shape", lambda d, m: _served(d, _local(d)), 3,
         "(1, 1, 2, 2) for (1, 1, 64, 64) float32", _fake("wrong shape"), model=False),
    Case("--server answering NaN", lambda d, m: _served(d, _local(d)), 3, "NaN or Inf values", _fake("NaN"),
         model=False),
    Case("--server answering values outside [-1, 1]", lambda d, m: _served(d, _local(d)), 3,
         "outside the contract's [-1, 1]", _fake("out of range"), model=False),
]
