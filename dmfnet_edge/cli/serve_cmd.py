"""`dmfnet serve`: a Triton Inference Server endpoint (PyTriton) for the ONNX Runtime runner, on loopback by default."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

from dmfnet_edge.cli.types import POSITIVE, THREADS, int_range
from dmfnet_edge.errors import MissingDependency
from dmfnet_edge.limits import DEFAULT_MAX_PIXELS

PORT = int_range(1, 65535)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", type=Path, help="the graph to serve (default: the shipped dmfnet-edge-fp32.onnx)")
    p.add_argument("--name", default="dmfnet_edge", help="the model's name on the server")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind HTTP, gRPC and metrics to (0.0.0.0 exposes the server to the network)")
    p.add_argument("--http-port", type=PORT, default=8000, help="HTTP/REST port (KServe v2 protocol)")
    p.add_argument("--grpc-port", type=PORT, default=8001, help="gRPC port")
    p.add_argument("--metrics-port", type=PORT, default=8002, help="Prometheus metrics port")
    p.add_argument("--max-batch", type=int_range(1, 256), default=8, help="largest batch the dynamic batcher forms")
    p.add_argument("--preferred-batch", type=int_range(1, 256), nargs="+", default=[4, 8],
                   help="batch sizes the dynamic batcher waits to form")
    p.add_argument("--queue-delay-us", type=int_range(0, 10_000_000), default=2000,
                   help="how long a request may wait to be batched")
    p.add_argument("--threads", type=THREADS, help="ONNX Runtime intra-op threads")
    p.add_argument("--max-pixels", type=POSITIVE, default=DEFAULT_MAX_PIXELS,
                   help="network pixels run at once (batch x H x W, padded): batches run in chunks of this, one "
                        "image over it is refused (default: the CLI's pixel budget, 2**20 pixels, under 11 GiB peak)")


def run(args: argparse.Namespace) -> int:
    from dmfnet_edge.runtime.triton_client import check_model_name

    check_model_name(args.name)  # before anything else: the name becomes a folder of the server's workspace
    if importlib.util.find_spec("pytriton") is None:
        raise MissingDependency("dmfnet serve needs PyTriton, which pins numpy<2: install it in an environment of "
                                "its own with 'make serve-env' (or: python -m venv .venv-serve && .venv-serve/bin/pip "
                                "install -e '.[onnx,serve-server]'), then run .venv-serve/bin/dmfnet serve")
    from dmfnet_edge.runtime import shipped_onnx
    from dmfnet_edge.serving.server import ServerOptions, serve

    options = ServerOptions(name=args.name, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                            metrics_port=args.metrics_port, max_batch=args.max_batch,
                            preferred_batches=tuple(args.preferred_batch), queue_delay_us=args.queue_delay_us,
                            threads=args.threads, max_pixels=args.max_pixels)

    # Our lines alone go to standard output: the server's own processes (tritonserver, its Python backend) inherit
    # file descriptor 1 and would interleave their bytes with ours, so fd 1 becomes standard error for them.
    sys.stdout.flush()
    ours = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def ready(info: dict) -> None:
        ours.write(f"serving {info['model']} ({info['runner']['onnx']}, {info['runner']['precision']}): "
                   f"http {info['http']}, grpc {info['grpc']}, metrics {info['metrics']}; Ctrl-C or SIGTERM stops\n")
        ours.write("ready " + json.dumps(info, sort_keys=True) + "\n")
        ours.flush()

    try:
        serve(args.onnx or shipped_onnx("edge", "fp32"), options, ready)
        ours.write("stopped\n")
    finally:
        ours.close()
    return 0


COMMANDS = {"serve": (configure, run)}
