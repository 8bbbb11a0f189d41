"""A Runner that fuses on a Triton Inference Server (`--server URL`): the same contract as the local runners.

`TritonRunner.fuse(mri, other)` sends the network-range float32 tensors to the server's model over HTTP
(`http://HOST:PORT`, the default scheme) or gRPC (`grpc://HOST:PORT`) and returns its `fused` output. The
server runs the graph on its own backend; against `dmfnet serve` (ONNX Runtime) outputs are bit-identical to
a local ONNX Runtime run of the same graph.

Transient failures are retried with exponential backoff (connection refused or reset, timeouts, HTTP
502/503/504, gRPC UNAVAILABLE/DEADLINE_EXCEEDED, a model still loading after a restart): a server that
restarts mid-run costs a pause, not the run. Anything else (a refused request, a missing model) is an error at once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any
from urllib.parse import urlparse

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.contract import INPUT_NAMES, OUTPUT_NAME
from dmfnet_edge.errors import EnvironmentProblem, InputError
from dmfnet_edge.runtime.base import check_network_inputs

TRANSIENT_HTTP = {502, 503, 504}
TRANSIENT_GRPC = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"}
# a dropped connection, or a restarted server still loading the model
TRANSIENT_TEXT = ("ailed to connect", "onnection refused", "onnection reset", "has no available versions",
                  "is not ready")
# a restarted server that is up but has not loaded its repository yet answers "unknown model"; that is only
# transient for a model this runner has already been served (a wrong model name fails at once)
RESTARTING_TEXT = ("nknown model",)


class ServerUnavailable(EnvironmentProblem):
    """The server did not answer within the retry budget."""


def parse_server(url: str) -> tuple[str, str]:
    """'http://h:p', 'grpc://h:p' or 'h:p' -> (protocol, 'h:p')."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "grpc") or not parsed.hostname or parsed.port is None:
        raise InputError(f"--server {url}: expected http://HOST:PORT or grpc://HOST:PORT")
    if parsed.path not in ("", "/"):
        raise InputError(f"--server {url}: a server address has no path")
    return parsed.scheme, f"{parsed.hostname}:{parsed.port}"


class TritonRunner:
    backend = "triton"

    def __init__(self, url: str, model: str = "dmfnet_edge", retries: int = 6, backoff_s: float = 0.5,
                 timeout_s: float = 120.0) -> None:
        self.protocol, self.address = parse_server(url)
        self.client_module = require(f"tritonclient.{self.protocol}", purpose="--server")
        self.url, self.model = url, model
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self._local = threading.local()  # tritonclient's HTTP client (gevent) must stay on the thread that made it
        self._served = False  # set once the server has answered for this model
        self.metadata = self._call(lambda: self.client.get_model_metadata(model))
        self._served = True
        inputs, outputs = self._names()
        if inputs != set(INPUT_NAMES) or outputs != [OUTPUT_NAME]:
            raise InputError(f"--server {url}: model '{model}' has inputs {sorted(inputs)} and outputs {outputs}, "
                             f"not the contract {list(INPUT_NAMES)} -> {OUTPUT_NAME}")
        self.model_name = model

    @property
    def client(self):
        if getattr(self._local, "client", None) is None:
            self._local.client = self._client()
        return self._local.client

    def _drop_client(self) -> None:
        client, self._local.client = getattr(self._local, "client", None), None
        if client is not None:
            # a client whose connection is gone may fail to close; it is replaced anyway
            with contextlib.suppress(Exception):
                client.close()

    def _client(self):
        if self.protocol == "http":
            return self.client_module.InferenceServerClient(self.address, connection_timeout=self.timeout_s,
                                                            network_timeout=self.timeout_s)
        return self.client_module.InferenceServerClient(self.address)

    def _names(self) -> tuple[set[str], list[str]]:
        meta = self.metadata
        if self.protocol == "http":
            return {i["name"] for i in meta["inputs"]}, [o["name"] for o in meta["outputs"]]
        return {i.name for i in meta.inputs}, [o.name for o in meta.outputs]

    def _transient(self, exc: Exception) -> bool:
        from tritonclient.utils import InferenceServerException

        if isinstance(exc, InferenceServerException):
            status = str(exc.status() or "")
            text = str(exc)
            return status in TRANSIENT_GRPC or status.isdigit() and int(status) in TRANSIENT_HTTP or \
                any(sign in text for sign in TRANSIENT_TEXT) or \
                self._served and any(sign in text for sign in RESTARTING_TEXT)
        return isinstance(exc, (ConnectionError, TimeoutError, OSError))

    def _call(self, fn):
        """fn() with retries on transient failures (the client is rebuilt after a dropped connection)."""
        from tritonclient.utils import InferenceServerException

        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (InferenceServerException, ConnectionError, TimeoutError, OSError) as exc:
                if not self._transient(exc):
                    raise InputError(f"server {self.url}: {_message(exc)}") from None
                if attempt == self.retries:
                    raise ServerUnavailable(f"server {self.url} did not answer after {self.retries + 1} tries "
                                            f"({_message(exc)})") from None
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                self._drop_client()
        raise AssertionError("unreachable")

    def fuse(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray:
        check_network_inputs(mri, other)
        mod = self.client_module

        def infer() -> np.ndarray:
            inputs = []
            for name, value in zip(INPUT_NAMES, (mri, other)):
                tensor = mod.InferInput(name, list(value.shape), "FP32")
                if self.protocol == "http":
                    tensor.set_data_from_numpy(np.ascontiguousarray(value), binary_data=True)
                else:
                    tensor.set_data_from_numpy(np.ascontiguousarray(value))
                inputs.append(tensor)
            output = mod.InferRequestedOutput(OUTPUT_NAME, binary_data=True) if self.protocol == "http" else \
                mod.InferRequestedOutput(OUTPUT_NAME)
            result = self.client.infer(self.model, inputs, outputs=[output])
            return result.as_numpy(OUTPUT_NAME)

        fused = self._call(infer)
        if fused is None or fused.shape != mri.shape or fused.dtype != np.float32:
            raise InputError(f"server {self.url}: model '{self.model}' returned "
                             f"{None if fused is None else (fused.shape, fused.dtype)} for {mri.shape} float32")
        return fused

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "server": self.url, "protocol": self.protocol, "model": self.model,
                "device": "server", "precision": f"as served by {self.url}"}

    def close(self) -> None:
        """Close this thread's connection (each thread that called `fuse` holds its own)."""
        self._drop_client()


def _message(exc: Exception) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    # PyTriton wraps a model error in its traceback: its last line says what went wrong
    return lines[-1].strip() if len(lines) > 1 else text
