"""The HTTP side of `dmfnet serve`'s validating front: KServe v2 over HTTP on the user's port, Triton behind it.

Triton's own HTTP endpoint listens on a loopback port of its own; this front answers clients. An inference
request is checked before Triton sees a byte of it (serving/requests.py: declared shapes and sizes within the
pixel budget, FP32, finite values), and everything about the connection is bounded first: a Content-Length is
required and capped before the body is read (no chunked or compressed bodies), the body must arrive within
a deadline, at most `max_inflight` bodies are held at once and at most `max_connections` connections are open.
Every refusal is HTTP 4xx (or 503 when busy) with KServe's error body `{"error": "<one line>"}`, and an error
Triton itself answers is passed on as one line too (a model error's Python traceback is cut to its last line).

Health, metadata and config requests (GET) are passed through; the other POST endpoints of Triton (model
repository, shared memory, tracing, logging) are refused: shared-memory inputs would bypass the checks.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from dmfnet_edge.errors import RecordError, one_line
from dmfnet_edge.records import parse_json
from dmfnet_edge.serving.requests import MAX_HEADER, RequestLimits, RequestRefused, check_http_infer, check_model

log = logging.getLogger(__name__)

INFER_PATH = re.compile(r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")
IO_TIMEOUT_S = 30.0  # one read or write on a client's socket; an idle keep-alive connection is closed after it
BODY_DEADLINE_S = 120.0  # a whole request body, however slowly it drips in
SLOT_WAIT_S = 30.0  # how long a request waits for one of the `max_inflight` slots before 503
BACKEND_TIMEOUT_S = 600.0  # a batch of budget-sized images on a slow CPU
_BUSY_BODY = b'{"error": "too many open connections; retry in a moment"}\n'
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))
PASSED_HEADERS = ("Content-Type", "Inference-Header-Content-Length")


class HttpFront(ThreadingHTTPServer):
    """The front's HTTP server; `serve_in_thread()` starts it, `close()` stops it."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, host: str, port: int, backend_port: int, model: str, limits: RequestLimits,
                 max_inflight: int = 16, max_connections: int = 256) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)
        self.backend_port, self.model, self.limits = backend_port, model, limits
        self.slots = threading.BoundedSemaphore(max_inflight)
        self.connections = threading.BoundedSemaphore(max_connections)
        self.response_limit = 8 * limits.max_tensor_bytes + MAX_HEADER  # JSON output of the largest batch
        self._thread: threading.Thread | None = None

    def serve_in_thread(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="dmfnet-http-front", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        self.server_close()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.acquire(blocking=False):  # a flood of connections gets 503, not a thread each
            with contextlib.suppress(OSError):
                request.sendall(BUSY)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IO_TIMEOUT_S
    server: HttpFront

    def setup(self) -> None:
        super().setup()
        self._backend: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        self._drop_backend()
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, too many headers) as KServe error bodies."""
        self.close_connection = True
        self._answer(code, message or self.responses.get(code, ("error",))[0])

    def parse_request(self) -> bool:
        """http.server's parsing, and a path of printable ASCII (Triton's URLs are; a control character would
        only fail later, on the way to Triton)."""
        if not super().parse_request():
            return False
        if not (self.path.isascii() and self.path.isprintable()):
            self.send_error(400, f"a path with control or non-ASCII characters: {self.path!r:.80}")
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if not urlsplit(self.path).path.startswith("/v2"):
            self._answer(404, f"no endpoint {one_line(self.path, 80)}; KServe v2 endpoints start /v2")
            return
        self._relay(*self._forward("GET", b"", {}))

    def do_POST(self) -> None:  # noqa: N802
        match = INFER_PATH.fullmatch(urlsplit(self.path).path)
        try:
            if match is None:
                raise RequestRefused(f"POST {one_line(self.path, 80)}: this server takes inference requests "
                                     f"(POST /v2/models/{self.server.model}/infer) only", 403)
            check_model(match["model"], match["version"], self.server.model)
            if not self.server.slots.acquire(timeout=SLOT_WAIT_S):
                raise RequestRefused("the server is busy (all request slots taken); retry in a moment", 503)
        except RequestRefused as exc:
            self._refuse(exc, close=True)  # the body was not read: the connection cannot carry another request
            return
        try:
            self._infer()
        finally:
            self.server.slots.release()

    def _infer(self) -> None:
        try:
            body = self._read_body(self.server.limits.max_body)
        except RequestRefused as exc:
            self._refuse(exc, close=True)
            return
        try:
            check_http_infer(body, self._header_length(), self.server.limits)
        except RequestRefused as exc:
            self._refuse(exc, close=False)
            return
        headers = {k: self.headers[k] for k in PASSED_HEADERS if self.headers.get(k) is not None}
        self._relay(*self._forward("POST", body, headers))

    def _header_length(self) -> int | None:
        text = self.headers.get("Inference-Header-Content-Length")
        if text is None:
            return None
        if not (text.strip().isascii() and text.strip().isdigit()):
            raise RequestRefused(f"Inference-Header-Content-Length {one_line(text, 40)!r}: expected a number of bytes")
        return int(text)

    def _read_body(self, limit: int) -> bytearray:
        """The request body, its declared length checked before a byte is read."""
        if self.headers.get("Transfer-Encoding") is not None:
            raise RequestRefused("a chunked request body: send a Content-Length", 411)
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise RequestRefused(f"a {one_line(encoding, 20)} request body: this server takes uncompressed bodies "
                                 "only", 415)
        if len(self.headers.get_all("Content-Length") or []) > 1:
            raise RequestRefused("more than one Content-Length")
        text = (self.headers.get("Content-Length") or "").strip()
        if not text:
            raise RequestRefused("no Content-Length: an inference request states its size", 411)
        if not (text.isascii() and text.isdigit()):
            raise RequestRefused(f"Content-Length {one_line(text, 40)!r}: expected a number of bytes")
        length = int(text)
        if length > limit:
            raise RequestRefused(f"a request of {length:,} bytes; this server takes at most {limit:,} (its batch "
                                 "and pixel bounds)", 413)
        return self._read_exactly(length)

    def _read_exactly(self, length: int) -> bytearray:
        """`length` bytes read into one buffer (no second copy of a body of up to `max_body` bytes)."""
        body, got = bytearray(length), 0
        view = memoryview(body)
        deadline = time.monotonic() + BODY_DEADLINE_S
        try:
            while got < length and time.monotonic() < deadline:
                count = self.rfile.readinto1(view[got:])
                if not count:
                    break
                got += count
        except TimeoutError:
            raise RequestRefused(f"the body stopped after {got:,} of {length:,} bytes", 408) from None
        finally:
            view.release()
        if got < length:
            raise RequestRefused(f"the body ended after {got:,} of {length:,} bytes (Content-Length)")
        return body

    def _forward(self, method: str, body: bytes | bytearray, headers: dict[str, str]
                 ) -> tuple[int, dict[str, str], bytes]:
        """Triton's answer (status, passed headers, body); one retry on a kept-alive connection Triton closed."""
        for attempt in (0, 1):
            if self._backend is None:
                self._backend = http.client.HTTPConnection("127.0.0.1", self.server.backend_port,
                                                           timeout=BACKEND_TIMEOUT_S)
            try:
                self._backend.request(method, self.path, body=body or None, headers=headers)
                answer = self._backend.getresponse()
                data = _read_limited(answer, self.server.response_limit)
                return answer.status, {k: v for k in PASSED_HEADERS if (v := answer.getheader(k))}, data
            except (OSError, http.client.HTTPException) as exc:
                self._drop_backend()
                if attempt:
                    log.warning("Triton did not answer: %s", exc)
        return 503, {}, _error_body("the model server is not answering; retry in a moment")

    def _drop_backend(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def _relay(self, status: int, headers: dict[str, str], body: bytes) -> None:
        if status >= 400:
            self._answer(status, _one_line_error(body))
            return
        self._send(status, headers, body)

    def _refuse(self, exc: RequestRefused, close: bool) -> None:
        self.close_connection = self.close_connection or close
        self._answer(exc.status, str(exc))

    def _answer(self, status: int, message: str) -> None:
        """An error answer: KServe's `{"error": "..."}`, one line."""
        self._send(status, {"Content-Type": "application/json"}, _error_body(message))

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:  # the client left; nothing to tell it
            self.close_connection = True


def _error_body(message: str) -> bytes:
    """KServe's error answer, on one line."""
    return json.dumps({"error": one_line(message)}).encode()


def _read_limited(answer: http.client.HTTPResponse, limit: int) -> bytes:
    length = answer.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise http.client.HTTPException(f"an answer of {length} bytes, over {limit}")
    data = answer.read(limit + 1)
    if len(data) > limit:
        raise http.client.HTTPException(f"an answer over {limit} bytes")
    return data


def _one_line_error(body: bytes) -> str:
    """Triton's error text as one line: PyTriton puts a model error's whole traceback there; its last line
    says what went wrong."""
    try:
        text = str(parse_json(body, "Triton's answer").get("error", ""))
    except (RecordError, AttributeError):
        text = body[:400].decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return one_line(lines[-1] if lines else "the model server failed this request")
