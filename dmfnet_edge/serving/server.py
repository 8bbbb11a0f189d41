"""`dmfnet serve`: a real Triton Inference Server endpoint for CPU machines and tests.

PyTriton starts a genuine `tritonserver` (HTTP, gRPC, Prometheus metrics, dynamic batching) whose Python
backend calls the project's ONNX Runtime runner, so a served request computes exactly what a local
`OnnxRuntimeRunner.fuse` computes. It is the development/CPU server; production servers load the repository
that `dmfnet-export triton` writes (docs/SERVING.md).

What it adds to PyTriton's defaults: loopback addresses unless told otherwise (PyTriton binds 0.0.0.0), a
workspace of its own (not ~/.cache/pytriton), the interpreter's own libpython on the library path (PyTriton's
backend stub otherwise loads the system one and fails), a bound request size (pixels per request, checked
before any work), images of any size padded to the graph contract as the local pipeline pads them, and a clean
stop on SIGTERM or Ctrl-C (the CLI turns SIGTERM into the same interrupt).

PyTriton 0.7 reports an error raised by the model as HTTP 500 / gRPC INTERNAL with a traceback, and fails
every request the dynamic batcher merged into that batch; so the only errors raised here are ones a
well-formed client never meets (an image over the size bound). Wrong data types, ranks and names are refused
by Triton itself, cleanly, before the model runs.
"""

from __future__ import annotations

import logging
import os
import socket
import sysconfig
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge.contract import INPUT_NAMES, OUTPUT_NAME
from dmfnet_edge.errors import InputError
from dmfnet_edge.limits import DEFAULT_MAX_PIXELS
from dmfnet_edge.postprocess.image import crop_to
from dmfnet_edge.preprocess.tensor import pad_to_multiple, padded_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerOptions:
    name: str = "dmfnet_edge"
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 8
    preferred_batches: tuple[int, ...] = (4, 8)
    queue_delay_us: int = 2000
    threads: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS  # network pixels run at once (batch x H x W), as the CLI's budget


def request_error(mri: np.ndarray, other: np.ndarray, max_pixels: int) -> str | None:
    """Why a batched request (N, 1, H, W) x 2 cannot be served; None when it can. Triton itself has already
    refused wrong data types and ranks (400 / INVALID_ARGUMENT)."""
    if mri.dtype != np.float32 or other.dtype != np.float32:
        return f"inputs must be FP32, got {mri.dtype} and {other.dtype}"
    if mri.shape != other.shape or mri.ndim != 4 or mri.shape[1] != 1:
        return f"mri and other must both be (N, 1, H, W) of one shape, got {mri.shape} and {other.shape}"
    h, w = mri.shape[2:]
    if min(h, w) < 1:
        return f"empty images ({h}x{w})"
    ph, pw = padded_size(h, w)
    if ph * pw > max_pixels:
        return f"one {w}x{h} image is {ph * pw} network pixels, over this server's bound of {max_pixels}"
    return None


def make_infer(fuse: Callable[[np.ndarray, np.ndarray], np.ndarray], max_pixels: int) -> Callable[..., dict]:
    """The batched inference callable. Images of any size are mirror-padded to the graph contract (multiples of
    16, at least 64) and cropped back, as the local pipeline does; a batch the dynamic batcher formed is run in
    chunks of at most `max_pixels` network pixels, so memory stays bounded whatever clients send."""
    from pytriton.exceptions import PyTritonBadParameterError

    def infer(mri: np.ndarray, other: np.ndarray) -> dict[str, np.ndarray]:
        problem = request_error(mri, other, max_pixels)
        if problem:
            raise PyTritonBadParameterError(problem)
        n, _, h, w = mri.shape
        a, b = pad_to_multiple(mri), pad_to_multiple(other)
        per = max(1, max_pixels // (a.shape[2] * a.shape[3]))
        fused = np.concatenate([fuse(np.ascontiguousarray(a[i:i + per]), np.ascontiguousarray(b[i:i + per]))
                                for i in range(0, n, per)])
        return {OUTPUT_NAME: np.ascontiguousarray(crop_to(fused, h, w))}

    return infer


def _library_path() -> None:
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        current = os.environ.get("LD_LIBRARY_PATH", "")
        if libdir not in current.split(os.pathsep):
            os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, current) if p)


def check_ports(options: ServerOptions) -> None:
    """Refuse ports that are taken (or repeated) before starting anything: Triton's own failure is a traceback."""
    ports = {"--http-port": options.http_port, "--grpc-port": options.grpc_port,
             "--metrics-port": options.metrics_port}
    if len(set(ports.values())) < len(ports):
        raise InputError(f"the three ports must differ: {ports}")
    for flag, port in ports.items():
        with socket.socket(socket.AF_INET6 if ":" in options.host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no owner
            try:
                probe.bind((options.host, port))
            except OSError as exc:
                raise InputError(f"{flag} {port}: {options.host}:{port} is not free ({exc.strerror}); "
                                 "choose another port") from None


def serve(onnx_path: Path, options: ServerOptions, ready: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Serve the graph until interrupted; `ready(info)` is called once the model answers."""
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from dmfnet_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner

    check_ports(options)
    runner = OnnxRuntimeRunner(onnx_path, threads=options.threads)
    if runner.contract.static_batch is not None or runner.contract.static_size is not None:
        log.warning("%s has a fixed shape %s; the server pads or splits requests to it",
                    onnx_path.name, runner.contract.shape)
    _library_path()
    infer = batch(make_infer(runner.fuse, options.max_pixels))
    spec = [Tensor(name=name, dtype=np.float32, shape=(1, -1, -1)) for name in INPUT_NAMES]
    config = TritonConfig(http_address=options.host, http_port=options.http_port, grpc_address=options.host,
                          grpc_port=options.grpc_port, metrics_address=options.host,
                          metrics_port=options.metrics_port, exit_timeout_secs=5, exit_on_error=True)
    batcher = DynamicBatcher(max_queue_delay_microseconds=options.queue_delay_us,
                             preferred_batch_size=[b for b in options.preferred_batches if b <= options.max_batch])
    with tempfile.TemporaryDirectory(prefix="dmfnet-serve-") as workspace, \
            Triton(config=config, workspace=Path(workspace) / "pytriton") as triton:
        triton.bind(model_name=options.name, infer_func=infer, inputs=spec,
                    outputs=[Tensor(name=OUTPUT_NAME, dtype=np.float32, shape=(1, -1, -1))],
                    config=ModelConfig(max_batch_size=options.max_batch, batcher=batcher), strict=True)
        triton.connect()
        if ready:
            ready({"model": options.name, "http": f"{options.host}:{options.http_port}",
                   "grpc": f"{options.host}:{options.grpc_port}",
                   "metrics": f"http://{options.host}:{options.metrics_port}/metrics",
                   "runner": runner.describe()})
        triton.serve()
