"""`dmfnet serve`: a real Triton Inference Server endpoint for CPU machines and tests.

PyTriton starts a genuine `tritonserver` (HTTP, gRPC, Prometheus metrics, dynamic batching) whose Python
backend calls the project's ONNX Runtime runner, so a served request computes exactly what a local
`OnnxRuntimeRunner.fuse` computes. It is the development/CPU server; production servers load the repository
that `dmfnet-export triton` writes (docs/SERVING.md).

Clients never talk to Triton directly: Triton's HTTP and gRPC endpoints listen on loopback ports of their own,
and a validating front (serving/front_http.py, serving/front_grpc.py) answers on the user's ports. It checks
every inference request against the model contract and the pixel budget before Triton allocates anything for
it (serving/requests.py: one request declaring a 100000 x 100000 input used to abort tritonserver), refuses
bad ones with one line and a 4xx status, and passes the rest on. Metrics are Triton's own endpoint.

What else it adds to PyTriton's defaults: loopback addresses unless told otherwise (PyTriton binds 0.0.0.0), a
workspace of its own (not ~/.cache/pytriton), the interpreter's own libpython on the library path (PyTriton's
backend stub otherwise loads the system one and fails), images of any size padded to the graph contract as the
local pipeline pads them, a clean stop on SIGTERM or Ctrl-C (the CLI turns SIGTERM into the same interrupt),
and, should Triton die anyway, an error (exit 3) with what it left in /tmp removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge.contract import INPUT_NAMES, OUTPUT_NAME
from dmfnet_edge.errors import EnvironmentProblem, InputError
from dmfnet_edge.limits import DEFAULT_MAX_PIXELS
from dmfnet_edge.postprocess.image import crop_to
from dmfnet_edge.preprocess.tensor import pad_to_multiple, padded_size
from dmfnet_edge.runtime.triton_client import check_model_name
from dmfnet_edge.serving.ports import free_ports
from dmfnet_edge.serving.processes import triton_model_folders
from dmfnet_edge.serving.requests import RequestLimits

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


class ServerDied(EnvironmentProblem):
    """tritonserver (or the model's backend process) ended while serving."""


def request_error(mri: np.ndarray, other: np.ndarray, max_pixels: int) -> str | None:
    """Why a batched request (N, 1, H, W) x 2 cannot be served; None when it can. The front has refused every
    such request already; this second line holds for a batch that reached Triton's loopback ports directly."""
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


def _quiet_resource_tracker() -> None:
    """When Triton dies, PyTriton never releases its shared-memory blocks; multiprocessing's resource tracker
    (a child process that inherits these warning filters) unlinks them when this process ends, which is its job,
    but also prints a warning per block after the command's error line."""
    quiet = "ignore::UserWarning:multiprocessing.resource_tracker"
    current = os.environ.get("PYTHONWARNINGS", "")
    if quiet not in current.split(","):
        os.environ["PYTHONWARNINGS"] = ",".join(p for p in (current, quiet) if p)


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
    """Serve the graph until interrupted; `ready(info)` is called once the model answers. Raises ServerDied
    when Triton ends by itself."""
    from pytriton.triton import Triton

    from dmfnet_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner

    check_model_name(options.name)
    check_ports(options)
    runner = OnnxRuntimeRunner(onnx_path, threads=options.threads)
    if runner.contract.static_batch is not None or runner.contract.static_size is not None:
        log.warning("%s has a fixed shape %s; the server pads or splits requests to it",
                    onnx_path.name, runner.contract.shape)
    _library_path()
    _quiet_resource_tracker()
    limits = RequestLimits(options.max_pixels, options.max_batch, runner.contract.static_size)
    backend_http, backend_grpc = free_ports(2)
    leftovers: list[Path] = []
    try:
        with tempfile.TemporaryDirectory(prefix="dmfnet-serve-") as workspace, \
                _fronts(options, limits, backend_http, backend_grpc) as start_fronts, \
                Triton(config=_triton_config(options, backend_http, backend_grpc),
                       workspace=Path(workspace) / "pytriton") as triton:
            _bind(triton, runner, options)
            triton.connect()
            leftovers = triton_model_folders(os.getpid())
            start_fronts()
            if ready:
                ready({"model": options.name, "http": f"{options.host}:{options.http_port}",
                       "grpc": f"{options.host}:{options.grpc_port}",
                       "metrics": f"http://{options.host}:{options.metrics_port}/metrics",
                       "runner": runner.describe()})
            _wait(triton)
    finally:
        for folder in leftovers:  # gone after a clean stop; still there when Triton died
            shutil.rmtree(folder, ignore_errors=True)


def _triton_config(options: ServerOptions, backend_http: int, backend_grpc: int) -> Any:
    from pytriton.triton import TritonConfig

    return TritonConfig(http_address="127.0.0.1", http_port=backend_http, grpc_address="127.0.0.1",
                        grpc_port=backend_grpc, metrics_address=options.host, metrics_port=options.metrics_port,
                        exit_timeout_secs=5, exit_on_error=True)


def _bind(triton: Any, runner: Any, options: ServerOptions) -> None:
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    infer = batch(make_infer(runner.fuse, options.max_pixels))
    spec = [Tensor(name=name, dtype=np.float32, shape=(1, -1, -1)) for name in INPUT_NAMES]
    batcher = DynamicBatcher(max_queue_delay_microseconds=options.queue_delay_us,
                             preferred_batch_size=[b for b in options.preferred_batches if b <= options.max_batch])
    triton.bind(model_name=options.name, infer_func=infer, inputs=spec,
                outputs=[Tensor(name=OUTPUT_NAME, dtype=np.float32, shape=(1, -1, -1))],
                config=ModelConfig(max_batch_size=options.max_batch, batcher=batcher), strict=True)


@contextlib.contextmanager
def _fronts(options: ServerOptions, limits: RequestLimits, backend_http: int, backend_grpc: int
            ) -> Iterator[Callable[[], None]]:
    """The validating fronts, bound on the user's ports now (a taken port fails before Triton starts); the
    block calls the yielded function to start answering once Triton is ready."""
    from dmfnet_edge.serving.front_grpc import GrpcFront
    from dmfnet_edge.serving.front_http import HttpFront

    try:
        http = HttpFront(options.host, options.http_port, backend_http, options.name, limits)
    except OSError as exc:
        raise InputError(f"--http-port {options.http_port}: {options.host}:{options.http_port} cannot be bound "
                         f"({exc.strerror}); choose another port") from None
    try:
        grpc = GrpcFront(options.host, options.grpc_port, backend_grpc, options.name, limits)
    except BaseException:
        http.close()
        raise

    def start() -> None:
        http.serve_in_thread()
        grpc.start()

    try:
        yield start
    finally:
        grpc.close()
        http.close()


def _wait(triton: Any) -> None:
    """Until Ctrl-C or SIGTERM (a clean stop: returns) or until Triton ends by itself (ServerDied)."""
    try:
        while triton.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        return
    raise ServerDied("the Triton server ended while serving (its last log lines above say why); nothing is left "
                     "of this server: start 'dmfnet serve' again")
