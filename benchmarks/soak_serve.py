"""A bounded hostile-request soak of `dmfnet serve`: a real server on loopback, thousands of mixed requests.

The server (from the serving environment, .venv-serve) serves a graph (default: the tiny dynamic graph, exported
here). CONCURRENCY client threads send REQUESTS requests drawn from a fixed mix: valid 64x64 and 80x72 pairs over
HTTP and gRPC (their outputs compared bit for bit with a local ONNX Runtime run of the same graph) between
hostile ones (declared shapes of 100000 x 100000, wrong data types, NaN and Inf, truncated bodies, bodies that
are not JSON or JSON of another structure, wrong input and model names, oversized and compressed bodies, gRPC
messages over the size bound). Every request must be answered: hostile ones with 4xx (HTTP) or an error status
(gRPC), valid ones with 200 and the right output. A sampler reads the resident memory of the whole server tree
(dmfnet serve, tritonserver, the Python backend stub and its helpers) once a second.

    python benchmarks/soak_serve.py [--requests 3000] [--concurrency 8] [--onnx GRAPH]

Exit status 0 when every request got its expected answer, the server is still serving at the end and stops
with exit 0, and the tree's RSS grew by less than 5 % from the end of warm-up (a tenth of the run) to the end;
the printed summary goes to docs/RELIABILITY.md ("Serving").
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dmfnet_edge.postprocess.image import crop_to
from dmfnet_edge.preprocess.tensor import pad_to_multiple
from dmfnet_edge.profiling import cpu_description
from dmfnet_edge.serving.ports import free_ports
from dmfnet_edge.serving.processes import command_line, descendants, rss_bytes

REPO = Path(__file__).resolve().parents[1]
MODEL = "dmfnet_edge"
INFER = f"/v2/models/{MODEL}/infer"


def _binary(shape, values=None, datatype="FP32", size=None, names=("mri", "other")):
    data = [np.zeros(shape, np.float32).tobytes() if values is None else v.tobytes() for v in (values or (None,))]
    data = (data * 2)[:2]
    header = json.dumps({"inputs": [
        {"name": n, "shape": list(shape), "datatype": datatype,
         "parameters": {"binary_data_size": len(d) if size is None else size}} for n, d in zip(names, data)],
        "outputs": [{"name": "fused", "parameters": {"binary_data": True}}]}).encode()
    return header + b"".join(data), {"Inference-Header-Content-Length": str(len(header))}


def _json_body(shape, data):
    return json.dumps({"inputs": [{"name": n, "shape": shape, "datatype": "FP32", "data": data}
                                  for n in ("mri", "other")]}).encode(), {}


def _nan(shape):
    values = np.zeros(shape, np.float32)
    values.flat[values.size // 2] = np.nan
    return values


# kind -> (protocol, request builder); the protocol's expected answer is decided by the kind's name
HOSTILE_HTTP = {
    "JSON declared 100000x100000": lambda: _json_body([1, 1, 100000, 100000], [0, 0, 0, 0]),
    "binary declared 100000x100000": lambda: _binary([1, 1, 100000, 100000], [np.zeros(4, np.float32)]),
    "declared 4096x4096 over the budget": lambda: _binary([1, 1, 4096, 4096], [np.zeros(4, np.float32)]),
    "FP64": lambda: _binary([1, 1, 64, 64], datatype="FP64"),
    "NaN": lambda: _binary([1, 1, 64, 64], [_nan([1, 1, 64, 64])]),
    "Inf as a JSON number beyond float32": lambda: _json_body([1, 1, 2, 2], [0, 1e39, 0, 0]),
    "not JSON": lambda: (os.urandom(512), {}),
    "JSON of another structure": lambda: (b'{"inputs": {"mri": 1}}', {}),
    "deep JSON": lambda: (b"[" * 5000 + b"]" * 5000, {}),
    "wrong input names": lambda: _binary([1, 1, 64, 64], names=("mri", "ct")),
    "batch over --max-batch": lambda: _binary([9, 1, 64, 64]),
    "binary size disagrees": lambda: _binary([1, 1, 64, 64], size=100),
    "header length past the body": lambda: (b"{}", {"Inference-Header-Content-Length": "4096"}),
    "gzip body": lambda: (b"\x1f\x8b" + os.urandom(64), {"Content-Encoding": "gzip"}),
    "Content-Length of 1 TB (not sent)": lambda: (b"{}", {"Content-Length": str(1 << 40)}),
}
VALID_SHAPES = ([1, 1, 64, 64], [2, 1, 80, 72])


class Soak:
    def __init__(self, args: argparse.Namespace, graph: Path, ports: list[int]) -> None:
        from dmfnet_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner

        self.args, self.ports = args, ports
        rng = np.random.default_rng(0)
        local = OnnxRuntimeRunner(graph, threads=1)
        self.valid = []
        for shape in VALID_SHAPES:  # the server pads any size to the contract and crops back: so does this
            a, b = (rng.random(shape, dtype=np.float32) * 2 - 1 for _ in range(2))
            fused = local.fuse(pad_to_multiple(a), pad_to_multiple(b))
            self.valid.append((a, b, np.ascontiguousarray(crop_to(fused, *shape[2:]))))
        self.results: collections.Counter = collections.Counter()
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def kinds(self) -> list[str]:
        hostile = [f"http: {k}" for k in HOSTILE_HTTP] + ["http: truncated body", "http: unknown model",
                                                          "http: chunked body", "grpc: declared 100000x100000",
                                                          "grpc: NaN", "grpc: not a ModelInferRequest"]
        # a valid request after each hostile one (HTTP and gRPC in turn), and one 80 MB gRPC message per 250
        cycle = [k for j, bad in enumerate(hostile) for k in (bad, ("valid http", "valid grpc")[j % 2])]
        return [("grpc: 80 MB message" if i % 250 == 249 else cycle[i % len(cycle)])
                for i in range(self.args.requests)]

    def one(self, i: int, kind: str) -> None:
        try:
            ok, detail = self.send(i, kind)
        except Exception as exc:  # noqa: BLE001 (a soak records every way a request can fail)
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        with self.lock:
            self.results[(kind, ok)] += 1
            if not ok and len(self.failures) < 20:
                self.failures.append(f"{kind}: {detail}"[:300])

    def send(self, i: int, kind: str) -> tuple[bool, str]:
        if kind.startswith("grpc") or kind == "valid grpc":
            return self.grpc(i, kind)
        if kind == "valid http":
            a, b, expected = self.valid[i % len(self.valid)]
            body, headers = _binary(a.shape, [a, b])
            status, data, answer = self.post(body, headers)
            if status != 200:
                return False, f"{status} {data[:200]!r}"
            split = int(answer.getheader("Inference-Header-Content-Length"))
            fused = np.frombuffer(data[split:], "<f4").reshape(expected.shape)
            return bool(np.array_equal(fused, expected)), "output differs from local ONNX Runtime"
        if kind == "http: truncated body":
            return self.truncated()
        if kind == "http: chunked body":
            return self.chunked()
        body, headers = HOSTILE_HTTP[kind[len("http: "):]]() if kind != "http: unknown model" else (b"{}", {})
        path = INFER if kind != "http: unknown model" else "/v2/models/nope/infer"
        status, data, _ = self.post(body, headers, path)
        one_line = data.count(b"\n") == 0 and b"Traceback" not in data
        return 400 <= status < 500 and one_line, f"{status} {data[:200]!r}"

    def post(self, body: bytes, headers: dict[str, str], path: str = INFER):
        connection = http.client.HTTPConnection("127.0.0.1", self.ports[0], timeout=120)
        try:
            connection.request("POST", path, body=body, headers=headers)
            answer = connection.getresponse()
            return answer.status, answer.read(), answer
        finally:
            connection.close()

    def truncated(self) -> tuple[bool, str]:
        body, headers = _binary([1, 1, 64, 64])
        head = (f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nInference-Header-Content-"
                f"Length: {headers['Inference-Header-Content-Length']}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", self.ports[0]), timeout=120) as sock:
            sock.sendall(head + body[: len(body) // 2])
            sock.shutdown(socket.SHUT_WR)
            answer = sock.makefile("rb").read()
        return answer.startswith(b"HTTP/1.1 400"), answer[:200].decode("latin-1")

    def chunked(self) -> tuple[bool, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.ports[0], timeout=120)
        try:
            connection.putrequest("POST", INFER)
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            connection.send(b"2\r\n{}\r\n0\r\n\r\n")
            answer = connection.getresponse()
            return answer.status == 411, f"{answer.status} {answer.read()[:200]!r}"
        finally:
            connection.close()

    def grpc(self, i: int, kind: str) -> tuple[bool, str]:
        import grpc
        from tritonclient.grpc import service_pb2

        channel = grpc.insecure_channel(f"127.0.0.1:{self.ports[1]}", options=[
            ("grpc.max_send_message_length", 128 << 20), ("grpc.max_receive_message_length", 128 << 20)])
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        request = service_pb2.ModelInferRequest(model_name=MODEL)
        a, b, expected = self.valid[i % len(self.valid)]
        shape = [1, 1, 100000, 100000] if "100000" in kind else list(a.shape)
        for name in ("mri", "other"):
            request.inputs.add(name=name, datatype="FP32", shape=shape)
        raw = {"grpc: NaN": [_nan(a.shape).tobytes()] * 2, "grpc: declared 100000x100000": [b"\0" * 16] * 2}
        request.raw_input_contents.extend(raw.get(kind, [a.tobytes(), b.tobytes()]))
        message = {"grpc: not a ModelInferRequest": os.urandom(256) + b"\xff",
                   "grpc: 80 MB message": bytes(80 << 20)}.get(kind, request.SerializeToString())
        try:
            data = infer(message, timeout=120)
        except grpc.RpcError as exc:
            return kind != "valid grpc" and "\n" not in (exc.details() or ""), f"{exc.code()} {exc.details()}"
        finally:
            channel.close()
        if kind != "valid grpc":
            return False, "answered OK"
        answer = service_pb2.ModelInferResponse.FromString(data)
        fused = np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(expected.shape)
        return bool(np.array_equal(fused, expected)), "output differs from local ONNX Runtime"


def _sample(pid: int, samples: list[tuple[float, int, dict[str, int]]], stop: threading.Event) -> None:
    start = time.monotonic()
    while not stop.is_set():
        tree = {p: rss_bytes(p) for p in [pid, *descendants(pid)]}
        names = {}
        for p, rss in tree.items():
            argv = command_line(p)
            name = Path(argv[0]).name if argv else str(p)
            names[name] = names.get(name, 0) + rss
        samples.append((time.monotonic() - start, sum(tree.values()), names))
        stop.wait(1.0)


def _graph(args: argparse.Namespace, folder: Path) -> Path:
    if args.onnx:
        return args.onnx
    from dmfnet_edge.cli.main import export_main

    assert export_main(["onnx", "--model", "tiny", "-o", str(folder), "--dynamic", "--name", "tiny-dyn"]) == 0
    return folder / "tiny-dyn.onnx"


def _start(args: argparse.Namespace, graph: Path, ports: list[int], log) -> tuple[subprocess.Popen, dict]:
    server = subprocess.Popen(
        [str(args.serve_bin), "serve", "--onnx", str(graph), "--threads", "1", "--http-port", str(ports[0]),
         "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])],
        stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in server.stdout:
        if line.startswith("ready "):
            return server, json.loads(line[len("ready "):])
    raise SystemExit(f"the server did not start (see {log.name})")


def _report(args, soak: Soak, samples, seconds: float, alive: bool, code: int) -> bool:
    sent = sum(soak.results.values())
    good = sum(n for (kind, ok), n in soak.results.items() if ok)
    print(f"command: python benchmarks/soak_serve.py --requests {args.requests} --concurrency {args.concurrency}")
    print(f"machine: {cpu_description()}, {os.cpu_count()} cores, no GPU; {seconds:.0f} s")
    print(f"requests: {sent}, answered as expected: {good}; server alive at the end: {alive}; exit on SIGTERM: "
          f"{code}")
    per_kind = collections.defaultdict(lambda: [0, 0])
    for (kind, ok), n in soak.results.items():
        per_kind[kind][0] += n
        per_kind[kind][1] += n if ok else 0
    for kind, (n, ok) in sorted(per_kind.items()):
        print(f"  {kind:<44} {n:>5} sent {ok:>5} as expected")
    for failure in soak.failures:
        print(f"  FAILED {failure}")
    warm_rss = 0
    if samples:
        rss = [s[1] for s in samples]
        warm = rss[len(rss) // 10:] or rss
        warm_rss = warm[0]
        quarter = len(warm) // 4 or 1
        first, last = statistics.median(warm[:quarter]), statistics.median(warm[-quarter:])
        print(f"RSS of the server tree, {len(rss)} samples (1 s): start {rss[0] / 2**20:.0f} MiB, after warm-up "
              f"{warm[0] / 2**20:.0f} MiB, max {max(rss) / 2**20:.0f} MiB, end {rss[-1] / 2**20:.0f} MiB; "
              f"medians of the first and last quarter after warm-up {first / 2**20:.0f} and {last / 2**20:.0f} MiB")
        marks = [samples[min(len(samples) - 1, round(k * (len(samples) - 1) / 10))] for k in range(11)]
        print("  every tenth of the run: " + ", ".join(f"{t:.0f} s {v / 2**20:.0f}" for t, v, _ in marks) + " MiB")
        print("  by process at the end: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in
                                                       sorted(samples[-1][2].items(), key=lambda kv: -kv[1])))
    growth = (samples[-1][1] / warm_rss - 1) if samples else 0.0
    print(f"RSS growth from the end of warm-up (a tenth of the run) to the end: {growth:+.1%} (passes under 5 %)")
    return good == sent and alive and code == 0 and growth < 0.05


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--onnx", type=Path, help="graph to serve (default: the tiny dynamic graph, exported here)")
    parser.add_argument("--serve-bin", type=Path, default=REPO / ".venv-serve" / "bin" / "dmfnet")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        graph, ports = _graph(args, Path(folder)), free_ports(3)
        log = open(Path(folder) / "server.log", "w")  # noqa: SIM115
        server, _ = _start(args, graph, ports, log)
        try:
            soak = Soak(args, graph, ports)
            samples: list = []
            stop = threading.Event()
            sampler = threading.Thread(target=_sample, args=(server.pid, samples, stop), daemon=True)
            sampler.start()
            start = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(soak.one, range(args.requests), soak.kinds()))
            seconds = time.perf_counter() - start
            stop.set()
            sampler.join()
            alive = server.poll() is None and soak.send(0, "valid http")[0]
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=120)
            log.close()
        passed = _report(args, soak, samples, seconds, alive, code)
        if not passed:
            print((Path(folder) / "server.log").read_text()[-3000:], file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
