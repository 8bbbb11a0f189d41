"""Free local TCP ports for a server started by a test or a benchmark (Triton needs three: HTTP, gRPC, metrics)."""

from __future__ import annotations

import socket


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports the OS reports free on `host` right now (all bound at once, so no two are equal); a
    server started right after gets them unless another process takes one in between."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
