"""The gRPC side of `dmfnet serve`'s validating front: KServe v2 gRPC on the user's port, Triton behind it.

Triton's own gRPC endpoint listens on a loopback port of its own. `ModelInfer` requests are checked before
Triton sees them (serving/requests.py), after gRPC itself has capped the message size (a larger message is
refused from its length prefix, RESOURCE_EXHAUSTED) and the number of calls in flight. Accepted requests are
forwarded as the bytes that came in. The health, metadata and config calls are passed through; streaming
inference and the repository, shared-memory, statistics, trace and log calls are refused (shared-memory
inputs would bypass the checks). Every refusal is one line with a gRPC status; errors Triton answers are
passed on as one line (a model error's Python traceback is cut to its last line).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dmfnet_edge._optional import require
from dmfnet_edge.errors import InputError, one_line
from dmfnet_edge.serving.requests import MAX_HEADER, RequestLimits, RequestRefused, check_grpc_infer, check_model

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
PASSED = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig")
BACKEND_TIMEOUT_S = 600.0


def _status(grpc: Any, http_status: int) -> Any:
    return {404: grpc.StatusCode.NOT_FOUND, 503: grpc.StatusCode.UNAVAILABLE}.get(
        http_status, grpc.StatusCode.INVALID_ARGUMENT)


class GrpcFront:
    """The front's gRPC server, bound on creation; `start()` serves, `close()` stops."""

    def __init__(self, host: str, port: int, backend_port: int, model: str, limits: RequestLimits,
                 max_inflight: int = 16) -> None:
        self.grpc = require("grpc", extra="serve-server", purpose="dmfnet serve")
        from tritonclient.grpc import service_pb2

        self.pb, self.model, self.limits = service_pb2, model, limits
        size = [("grpc.max_receive_message_length", limits.max_body),
                ("grpc.max_send_message_length", 8 * limits.max_tensor_bytes + MAX_HEADER)]
        self.channel = self.grpc.insecure_channel(f"127.0.0.1:{backend_port}", options=size)
        self.server = self.grpc.server(ThreadPoolExecutor(max_inflight, thread_name_prefix="dmfnet-grpc-front"),
                                       handlers=[self._handlers()], options=size,
                                       maximum_concurrent_rpcs=4 * max_inflight)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = self.server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if bound != port:
            raise InputError(f"--grpc-port {port}: {host}:{port} cannot be bound; choose another port")

    def start(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.server.stop(grace=2).wait()
        self.channel.close()

    def _handlers(self) -> Any:
        grpc, handlers = self.grpc, {}
        for method in self.pb.DESCRIPTOR.services_by_name[SERVICE.rpartition(".")[2]].methods:
            path = f"/{SERVICE}/{method.name}"
            if method.name in PASSED:
                handlers[method.name] = grpc.unary_unary_rpc_method_handler(self._passed(path))
            elif method.name == "ModelInfer":
                handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                    self._infer(path), request_deserializer=self._parse_infer)
            elif method.name == "ModelStreamInfer":
                handlers[method.name] = grpc.stream_stream_rpc_method_handler(self._refused(method.name))
            else:
                handlers[method.name] = grpc.unary_unary_rpc_method_handler(self._refused(method.name))
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _parse_infer(self, data: bytes) -> tuple[bytes, Any]:
        """The request's bytes (forwarded as they came) and their parse (None when they are not one)."""
        try:
            return data, self.pb.ModelInferRequest.FromString(data)
        except Exception:  # noqa: BLE001 (protobuf's DecodeError and its C implementation's errors alike)
            return data, None

    def _infer(self, path: str):
        forward = self.channel.unary_unary(path)

        def infer(pair: tuple[bytes, Any], context: Any) -> bytes:
            data, request = pair
            try:
                if request is None:
                    raise RequestRefused("the message is not a ModelInferRequest")
                check_model(request.model_name, request.model_version, self.model)
                check_grpc_infer(request, self.limits)
            except RequestRefused as exc:
                context.abort(_status(self.grpc, exc.status), one_line(str(exc)))
            return self._call(forward, data, context)

        return infer

    def _passed(self, path: str):
        forward = self.channel.unary_unary(path)
        return lambda data, context: self._call(forward, data, context)

    def _call(self, forward: Any, data: bytes, context: Any) -> bytes:
        remaining = context.time_remaining()
        try:
            return forward(data, timeout=min(BACKEND_TIMEOUT_S, remaining or BACKEND_TIMEOUT_S))
        except self.grpc.RpcError as exc:
            lines = [line.strip() for line in (exc.details() or "").splitlines() if line.strip()]
            context.abort(exc.code(), one_line(lines[-1] if lines else "the model server failed this request"))

    def _refused(self, name: str):
        def refuse(request: Any, context: Any) -> None:
            context.abort(self.grpc.StatusCode.PERMISSION_DENIED,
                          f"{name} is not served by dmfnet serve (use ModelInfer)")

        return refuse
