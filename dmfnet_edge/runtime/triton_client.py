"""A Runner that fuses on a Triton Inference Server (`--server URL`): the same contract as the local runners.

`TritonRunner.fuse(mri, other)` sends the network-range float32 tensors to the server's model over HTTP
(`http://HOST:PORT`, the default scheme; runtime/kserve_http.py, answers bounded before they are read) or gRPC
(`grpc://HOST:PORT`, tritonclient with the channel's message size capped) and returns its `fused` output. The
server runs the graph on its own backend; against `dmfnet serve` (ONNX Runtime) outputs are bit-identical to
a local ONNX Runtime run of the same graph.

What comes back is checked before anything uses it: an answer that is not KServe v2 (not JSON, another
structure, sizes that disagree) or an output that breaks the contract (another shape or type, NaN, Inf, values
outside [-1, 1]) is one error line (exit 3), never an image.

Transient failures are retried with exponential backoff (connection refused or reset, timeouts, HTTP
502/503/504, gRPC UNAVAILABLE/DEADLINE_EXCEEDED, a model still loading after a restart): a server that
restarts mid-run costs a pause, not the run. Anything else (a refused request, a missing model) is an error at once.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import re
import threading
import time
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.contract import INPUT_NAMES, OUTPUT_NAME
from dmfnet_edge.errors import EnvironmentProblem, InputError, one_line
from dmfnet_edge.limits import max_pixels
from dmfnet_edge.runtime.base import Closing, check_network_inputs
from dmfnet_edge.runtime.kserve_http import BadAnswer, KServeHttp, ServerRefused

TRANSIENT_HTTP = {502, 503, 504}
TRANSIENT_GRPC = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"}
# a dropped connection, or a restarted server still loading the model
TRANSIENT_TEXT = ("ailed to connect", "onnection refused", "onnection reset", "has no available versions",
                  "is not ready")
# a restarted server that is up but has not loaded its repository yet answers "unknown model"; that is only
# transient for a model this runner has already been served (a wrong model name fails at once)
RESTARTING_TEXT = ("nknown model",)

# Triton's and PyTriton's model-name characters; the first may not be '.' ('.', '..' and hidden folders) or '-'
# (an option to a shell tool). A name is a folder of a repository and a segment of every endpoint's URL.
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
REPOSITORY_RECORD = "repository.json"  # beside the model folders of a repository
SCHEMES = ("http", "grpc")
HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
SERVER_URL = re.compile(r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://)?(?P<host>\[[^\]/]*\]|[^:/\[\]]*)"
                        r"(?::(?P<port>[^/?#]*))?(?P<rest>.*)", re.DOTALL)


def check_model_name(name: str, option: str = "--name") -> str:
    """`name` if it is a safe Triton model name: one path component of 1 to 64 characters of Triton's set, not
    '.', '..' or the repository record's name; otherwise one InputError line. Every command that names a model
    on a server checks it here (`dmfnet-export triton --name`, `dmfnet serve --name`, `--server-model`)."""
    if not MODEL_NAME.fullmatch(name) or name.casefold() == REPOSITORY_RECORD:
        raise InputError(f"{option} {name!r:.80}: a Triton model name is 1 to 64 letters, digits, '_', '.' or '-', "
                         f"starting with a letter, digit or '_' (not '.', '..' or '{REPOSITORY_RECORD}'); "
                         "e.g. dmfnet_edge")
    return name


class ServerUnavailable(EnvironmentProblem):
    """The server did not answer within the retry budget."""


class ServerAnswerError(EnvironmentProblem):
    """The server answered with something that is not a KServe v2 answer of the model contract."""


def parse_server(url: str) -> tuple[str, str]:
    """'http://h:p', 'grpc://h:p' or 'h:p' -> (protocol, 'h:p'), an IPv6 host in brackets ('[::1]:p')."""
    def bad(why: str) -> InputError:
        return InputError(f"--server {url!r:.100}: {why}; expected http://HOST:PORT or grpc://HOST:PORT")

    if not url.isascii() or not url.isprintable() or " " in url:
        raise bad("spaces, control or non-ASCII characters (write an international host name in its xn-- form)")
    parts = SERVER_URL.fullmatch(url)
    if "[" in url and not parts["host"].startswith("["):
        raise bad("an IPv6 host is written in brackets, both of them: [ADDRESS]")
    scheme = (parts["scheme"] or "http").lower()
    if scheme not in SCHEMES:
        raise bad(f"the scheme {scheme}:// is not served (TLS included)")
    if "@" in url:
        raise bad("user names and passwords are not sent to servers")
    if parts["rest"] not in ("", "/"):
        raise bad("a server address has no path, query or fragment")
    host = _host(parts["host"], bad)
    port = parts["port"] or ""
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise bad(f"the port {port!r:.20} is not a number from 1 to 65535" if port else "the port is missing")
    return scheme, f"{host}:{int(port)}"


def _host(text: str, bad: Any) -> str:
    if text.startswith("["):
        try:
            ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            raise bad(f"{text!r:.60} is not an IPv6 address") from None
        return text
    labels = text.rstrip(".").split(".")
    if not text or len(text) > 253 or not all(HOST_LABEL.fullmatch(label) for label in labels):
        raise bad(f"the host {text!r:.60} is not a host name or an IPv4 address" if text else "the host is empty")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            raise bad(f"the host {text!r:.60} is not an IPv4 address") from None
    return text


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class TritonRunner(Closing):
    backend = "triton"

    def __init__(self, url: str, model: str = "dmfnet_edge", retries: int = 6, backoff_s: float = 0.5,
                 timeout_s: float = 120.0) -> None:
        self.protocol, self.address = parse_server(url)
        self.url, self.model = url, check_model_name(model, "--server-model")
        self.client_module = require("tritonclient.grpc", purpose="--server grpc://") if self.protocol == "grpc" \
            else None
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self._local = threading.local()  # one connection per thread (neither transport shares one safely)
        self._served = False  # set once the server has answered for this model
        inputs, outputs = self._call(self._names)
        self._served = True
        if inputs != set(INPUT_NAMES) or outputs != [OUTPUT_NAME]:
            raise InputError(f"--server {url}: model '{model}' has inputs {sorted(inputs)[:4]} and outputs "
                             f"{outputs[:4]}, not the contract {list(INPUT_NAMES)} -> {OUTPUT_NAME}")
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
            return KServeHttp(*_split(self.address), timeout_s=self.timeout_s)
        # an answer carries one output as large as the largest input a call may send (the pixel budget)
        limit = 8 * max_pixels() + (1 << 20)
        return self.client_module.InferenceServerClient(self.address, channel_args=[
            ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", 2 * limit)])

    def _names(self) -> tuple[set[str], list[str]]:
        if self.protocol == "http":
            meta = self.client.metadata(self.model)
        else:
            meta = self.client.get_model_metadata(self.model)
        return {str(i.name) for i in meta.inputs}, [str(o.name) for o in meta.outputs]

    def _transient(self, exc: Exception) -> bool:
        from_server = isinstance(exc, ServerRefused) or type(exc).__name__ == "InferenceServerException"
        if from_server:
            status = str(exc.status if isinstance(exc, ServerRefused) else exc.status() or "")
            text = str(exc)
            return status in TRANSIENT_GRPC or status.isdigit() and int(status) in TRANSIENT_HTTP or \
                any(sign in text for sign in TRANSIENT_TEXT) or \
                self._served and any(sign in text for sign in RESTARTING_TEXT)
        return isinstance(exc, (ConnectionError, TimeoutError, OSError, http.client.IncompleteRead))

    def _call(self, fn):
        """fn() with retries on transient failures (the client is rebuilt after a dropped connection)."""
        failures = self._failures()
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except BadAnswer as exc:
                self._drop_client()
                raise ServerAnswerError(f"server {self.url} answered with {exc}; is it a Triton server of the "
                                        "dmfnet contract?") from None
            except failures as exc:
                if not self._transient(exc):
                    self._drop_client()
                    if isinstance(exc, http.client.HTTPException):  # not HTTP at all (a status line of garbage)
                        raise ServerAnswerError(f"server {self.url} did not answer in HTTP ({_message(exc)})"
                                                ) from None
                    raise InputError(f"server {self.url}: {_message(exc)}") from None
                if attempt == self.retries:
                    raise ServerUnavailable(f"server {self.url} did not answer after {self.retries + 1} tries "
                                            f"({_message(exc)})") from None
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                self._drop_client()
        raise AssertionError("unreachable")

    def _failures(self) -> tuple[type[BaseException], ...]:
        kinds: tuple[type[BaseException], ...] = (ServerRefused, ConnectionError, TimeoutError, OSError,
                                                  http.client.HTTPException)
        if self.protocol == "grpc":
            from tritonclient.utils import InferenceServerException

            kinds += (InferenceServerException,)
        return kinds

    def fuse(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray:
        check_network_inputs(mri, other)
        fused = self._call(lambda: self._infer(mri, other))
        return check_served_output(fused, mri.shape, self.url, self.model)

    def _infer(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray | None:
        if self.protocol == "http":
            return self.client.infer(self.model, dict(zip(INPUT_NAMES, (mri, other))), OUTPUT_NAME)
        mod = self.client_module
        inputs = []
        for name, value in zip(INPUT_NAMES, (mri, other)):
            tensor = mod.InferInput(name, list(value.shape), "FP32")
            tensor.set_data_from_numpy(np.ascontiguousarray(value))
            inputs.append(tensor)
        result = self.client.infer(self.model, inputs, outputs=[mod.InferRequestedOutput(OUTPUT_NAME)])
        try:
            return result.as_numpy(OUTPUT_NAME)
        except (ValueError, TypeError, KeyError) as exc:  # raw contents that do not fill the declared shape
            raise BadAnswer(f"an output that does not match its own shape ({one_line(str(exc), 80)})") from None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "server": self.url, "protocol": self.protocol, "model": self.model,
                "device": "server", "precision": f"as served by {self.url}"}

    def close(self) -> None:
        """Close this thread's connection (each thread that called `fuse` holds its own)."""
        self._drop_client()


def check_served_output(fused: np.ndarray | None, shape: tuple[int, ...], url: str, model: str) -> np.ndarray:
    """The output of the contract, float32 of the inputs' shape with finite values in [-1, 1], or one
    ServerAnswerError line: a damaged answer never becomes an image."""
    where = f"server {url}: model '{model}' returned"
    if fused is None or fused.shape != tuple(shape) or fused.dtype != np.float32:
        got = None if fused is None else f"{fused.dtype} {fused.shape}"
        raise ServerAnswerError(f"{where} {got} for {shape} float32; is it a model of the dmfnet contract?")
    finite = np.isfinite(fused)
    if not finite.all():
        raise ServerAnswerError(f"{where} {fused.size - np.count_nonzero(finite):,} NaN or Inf values; nothing "
                                "was written from it")
    if fused.size and (fused.min() < -1 or fused.max() > 1):
        raise ServerAnswerError(f"{where} values from {fused.min():.3g} to {fused.max():.3g}, outside the "
                                "contract's [-1, 1]; nothing was written from it")
    return fused


def _message(exc: Exception) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    # PyTriton wraps a model error in its traceback: its last line says what went wrong
    return one_line(lines[-1].strip() if len(lines) > 1 else text or type(exc).__name__)
