"""A real Triton Inference Server (`dmfnet serve`, PyTriton's tritonserver) started by the tests, on loopback:
bit-identical round trips over HTTP and gRPC, dynamic batching under concurrent clients, bad requests refused
while it keeps serving, a restart the client rides out, a short load test, a clean stop on SIGTERM, and a
Triton that dies under it turned into one error line with nothing left in /tmp.

The server (conftest.py) runs from its own environment (`make serve-env`: PyTriton pins numpy<2); CI has it,
elsewhere these tests are skipped when it is missing."""

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from dmfnet_edge.serving.ports import free_ports
from dmfnet_edge.serving.processes import command_line, descendants, triton_model_folders
from tests.conftest import needs
from tests.serving.live_server import SERVE_BIN, Server

REPO = Path(__file__).resolve().parents[2]
tritonclient = needs("tritonclient.http", "serve")


def _pairs(rng, n, side=64):
    return [((rng.random((1, 1, side, side), dtype=np.float32) * 2 - 1),
             (rng.random((1, 1, side, side), dtype=np.float32) * 2 - 1)) for _ in range(n)]


def test_round_trips_are_bit_identical_to_local_onnxruntime(server, graph):
    from dmfnet_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner
    from dmfnet_edge.runtime.triton_client import TritonRunner

    local = OnnxRuntimeRunner(graph, threads=1)
    rng = np.random.default_rng(0)
    for url in (server.http, server.grpc):
        remote = TritonRunner(url)
        for side in (64, 96):
            (a, b), = _pairs(rng, 1, side)
            assert np.array_equal(remote.fuse(a, b), local.fuse(a, b)), (url, side)
        a = np.concatenate([p[0] for p in _pairs(rng, 3)])
        b = np.concatenate([p[1] for p in _pairs(rng, 3)])
        assert np.array_equal(remote.fuse(a, b), local.fuse(a, b))  # a batch of 3 in one request
        remote.close()
    assert server.info["runner"]["onnx"] == graph.name


def test_the_fuse_commands_run_against_the_server(server, tmp_path):
    from dmfnet_edge.cli.main import main

    samples = REPO / "dmfnet_edge" / "samples"
    # the tiny graph serves random weights: what matters is that served and local pixels are the same bytes
    assert main(["fuse-dir", "--pairs", str(samples), "--out", str(tmp_path / "served"), "--server", server.http]) == 0
    pngs = sorted((tmp_path / "served").glob("MRI-*/*.png"))
    assert len(pngs) == 3
    code = main(["fuse-dir", "--pairs", str(samples), "--out", str(tmp_path / "x"), "--server", server.http,
                 "--model", "paper"])
    assert code == 2


def _counts(server) -> tuple[float, float]:
    """(inferences, executions) of the model from the Prometheus endpoint (PyTriton restricts the statistics
    API to its own access token)."""
    import re
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{server.ports[2]}/metrics", timeout=10).read().decode()

    def value(metric):
        return float(re.search(rf'^{metric}{{model="dmfnet_edge",version="1"}} (\S+)$', text, re.M).group(1))

    return value("nv_inference_count"), value("nv_inference_exec_count")


def test_dynamic_batching_merges_concurrent_requests(server):
    from dmfnet_edge.runtime.triton_client import TritonRunner

    before = _counts(server)
    pairs = _pairs(np.random.default_rng(1), 16)
    runners = [TritonRunner(server.http) for _ in range(8)]

    def call(i):
        return runners[i % 8].fuse(*pairs[i])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(16)))
    assert all(r.shape == (1, 1, 64, 64) for r in results)
    after = _counts(server)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == 16 and executions < inferences, (inferences, executions)  # some requests shared a run


def test_bad_requests_are_refused_and_the_server_keeps_serving(server):
    from tritonclient.utils import InferenceServerException

    client = tritonclient.InferenceServerClient(server.http[len("http://"):])

    def request(dtype, shape, names=("mri", "other")):
        inputs = []
        for name in names:
            tensor = tritonclient.InferInput(name, list(shape), dtype)
            tensor.set_data_from_numpy(np.zeros(shape, np.float64 if dtype == "FP64" else np.float32))
            inputs.append(tensor)
        return client.infer("dmfnet_edge", inputs)

    with pytest.raises(InferenceServerException, match="'FP64'; the model takes FP32") as wrong_type:
        request("FP64", (1, 1, 64, 64))
    assert wrong_type.value.status() == "400"
    with pytest.raises(InferenceServerException, match=r"inputs \['mri', 'ct'\]: the model takes exactly"):
        request("FP32", (1, 1, 64, 64), ("mri", "ct"))
    with pytest.raises(InferenceServerException, match="this server takes at most") as too_large:
        request("FP32", (1, 1, 4096, 4096))  # 16.8 M pixels against the 1 M bound: refused from its size
    assert too_large.value.status() == "413"
    with pytest.raises(InferenceServerException):
        client.infer("no_such_model", [])
    ok = request("FP32", (2, 1, 80, 72))  # any size: padded to the contract and cropped back, as locally
    assert ok.as_numpy("fused").shape == (2, 1, 80, 72)
    assert client.is_server_live() and client.is_model_ready("dmfnet_edge")


def test_metrics_and_config_endpoints(server):
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{server.ports[2]}/metrics", timeout=10).read().decode()
    assert 'nv_inference_request_success{model="dmfnet_edge",version="1"}' in text
    client = tritonclient.InferenceServerClient(server.http[len("http://"):])
    config = client.get_model_config("dmfnet_edge")
    assert config["max_batch_size"] == 8 and config["dynamic_batching"]["preferred_batch_size"] == [4, 8]


def test_a_short_load_test(server):
    """200 requests at concurrency 8 on the tiny model: every one answered; figures printed for the record."""
    from dmfnet_edge.runtime.triton_client import TritonRunner

    pairs = _pairs(np.random.default_rng(2), 8)
    runners = [TritonRunner(server.http) for _ in range(8)]
    latencies: list[float] = []
    lock = threading.Lock()

    def call(i):
        start = time.perf_counter()
        out = runners[i % 8].fuse(*pairs[i % 8])
        with lock:
            latencies.append(time.perf_counter() - start)
        return out.shape

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        shapes = list(pool.map(call, range(200)))
    wall = time.perf_counter() - start
    assert shapes == [(1, 1, 64, 64)] * 200
    q = statistics.quantiles(latencies, n=100)
    print(f"load test: 200 requests, concurrency 8, tiny 64x64: {200 / wall:.1f} req/s, p50 {q[49] * 1000:.1f} ms, "
          f"p99 {q[98] * 1000:.1f} ms", file=sys.stderr)


@pytest.mark.slow  # over 5 s: in make test and CI, out of the edit loop (make test-fast)
def test_a_restart_mid_run_is_ridden_out_by_the_client(serving_env, graph):
    from dmfnet_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner
    from dmfnet_edge.runtime.triton_client import TritonRunner

    srv = Server(graph, free_ports(3))
    srv.start()
    client = TritonRunner(srv.http, retries=8, backoff_s=0.5)
    (a, b), = _pairs(np.random.default_rng(3), 1)
    first = client.fuse(a, b)
    assert srv.stop() == 0  # SIGTERM: a clean stop
    result: dict = {}
    waiting = threading.Thread(target=lambda: result.update(second=client.fuse(a, b)))
    waiting.start()  # refused connections are retried with backoff until the new server answers
    time.sleep(1.0)
    srv.start()  # from this thread: the server is tied to it (it dies with the test process)
    waiting.join(timeout=120)
    second = result["second"]
    assert np.array_equal(first, second) and np.array_equal(second, OnnxRuntimeRunner(graph, threads=1).fuse(a, b))
    _triton_dies_under_the_server(srv)


def _triton_dies_under_the_server(srv: Server) -> None:
    """tritonserver aborting (as a std::bad_alloc did) ends `dmfnet serve` with exit 3 and one error line, and
    the folder Triton copied the model to is removed with the server's workspace."""
    folders = triton_model_folders(srv.proc.pid)
    assert folders and all(f.is_dir() for f in folders)
    triton = next(p for p in descendants(srv.proc.pid) if _name(p) == "tritonserver")
    argv = command_line(triton)
    workspace = Path(argv[argv.index("--model-repository") + 1]).parents[1]  # /tmp/dmfnet-serve-XXXX
    assert workspace.name.startswith("dmfnet-serve-") and workspace.is_dir()
    os.kill(triton, signal.SIGABRT)
    assert srv.proc.wait(timeout=60) == 3
    srv.log.close()
    log = srv.log_path.read_text()
    assert "Traceback" not in log
    assert log.splitlines()[-1].startswith("dmfnet: error: the Triton server ended while serving")
    assert not workspace.exists() and not any(f.exists() for f in folders)


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_a_taken_port_is_one_line_error(server, graph):
    out = subprocess.run([str(SERVE_BIN), "serve", "--onnx", str(graph), "--http-port", str(server.ports[0])],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"dmfnet: error: --http-port {server.ports[0]}: 127.0.0.1:{server.ports[0]} is not free (Address already "
        "in use); choose another port"]
