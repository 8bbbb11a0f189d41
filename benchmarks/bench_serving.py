"""Serving overhead and a load test: a real Triton server (`dmfnet serve`) against direct ONNX Runtime calls.

direct: OnnxRuntimeRunner.fuse on one 256x256 pair in this process.
served: the same pair through `dmfnet serve` (tritonserver + PyTriton + the same runner) over HTTP and gRPC.
The three are timed interleaved, call by call, with the same thread count; medians and ratios are printed.
Then a load test: REQUESTS requests from CONCURRENCY client threads; throughput and p50/p99 latency.

    python benchmarks/bench_serving.py [--onnx dmfnet_edge/weights/dmfnet-edge-fp32.onnx] [--repeats 15]
        [--threads 2] [--requests 200] [--concurrency 8]

Needs the serving environment (make serve-env) for the server and the 'serve' extra here for the client.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dmfnet_edge.profiling import cpu_description
from dmfnet_edge.runtime import shipped_onnx
from dmfnet_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner
from dmfnet_edge.runtime.triton_client import TritonRunner
from dmfnet_edge.serving.ports import free_ports

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, default=shipped_onnx("edge", "fp32"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--serve-bin", type=Path, default=REPO / ".venv-serve" / "bin" / "dmfnet")
    args = parser.parse_args()
    ports = free_ports(3)
    log = open(REPO / "out" / "bench_serving_server.log", "w") if (REPO / "out").is_dir() else subprocess.DEVNULL
    server = subprocess.Popen([str(args.serve_bin), "serve", "--onnx", str(args.onnx), "--threads", str(args.threads),
                               "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port",
                               str(ports[2])], stdout=subprocess.PIPE, stderr=log, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        info = None
        for line in server.stdout:
            if line.startswith("ready "):
                info = json.loads(line[len("ready "):])
                break
        if info is None:
            raise SystemExit("the server did not start (see out/bench_serving_server.log)")
        rng = np.random.default_rng(0)
        a, b = (rng.random((1, 1, args.size, args.size), dtype=np.float32) * 2 - 1 for _ in range(2))
        direct = OnnxRuntimeRunner(args.onnx, threads=args.threads)
        http, grpc = TritonRunner(f"http://127.0.0.1:{ports[0]}"), TritonRunner(f"grpc://127.0.0.1:{ports[1]}")
        arms = {"direct ONNX Runtime": direct, "served, HTTP": http, "served, gRPC": grpc}
        reference = direct.fuse(a, b)
        identical = all(np.array_equal(r.fuse(a, b), reference) for r in (http, grpc))
        times: dict[str, list[float]] = {k: [] for k in arms}
        for _ in range(args.repeats):  # interleaved, one call of each arm per round
            for name, runner in arms.items():
                start = time.perf_counter()
                runner.fuse(a, b)
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["direct ONNX Runtime"])
        print(f"{args.onnx.name}, {args.size}x{args.size} pair, {args.threads} threads (client and server alike), "
              f"{cpu_description()}, {args.repeats} calls per arm, interleaved")
        print(f"{'arm':<22} {'median s':>9} {'min s':>8} {'vs direct':>10}")
        for name, values in times.items():
            med = statistics.median(values)
            print(f"{name:<22} {med:>9.3f} {min(values):>8.3f} {med / base:>9.3f}x")
        print(f"served outputs bit-identical to direct: {identical}")
        latencies: list[float] = []
        lock = threading.Lock()

        def call(_: int) -> None:
            start = time.perf_counter()
            http.fuse(a, b)
            with lock:
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(call, range(args.requests)))
        wall = time.perf_counter() - start
        q = statistics.quantiles(latencies, n=100)
        print(f"load test: {args.requests} requests over HTTP at concurrency {args.concurrency}: "
              f"{args.requests / wall:.2f} req/s, p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms "
              f"(direct, one at a time: {1 / base:.2f} req/s)")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
