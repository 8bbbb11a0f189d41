"""Backends behind one Runner interface; imports without torch (backends load lazily)."""

from __future__ import annotations

import logging

from dmfnet_edge._optional import available
from dmfnet_edge.errors import InputError
from dmfnet_edge.runtime.base import Runner

log = logging.getLogger(__name__)
BACKENDS = ("auto", "torch")


def pick_backend(requested: str) -> str:
    """Resolve 'auto' to the best usable backend."""
    if requested != "auto":
        return requested
    if available("torch"):
        return "torch"
    raise InputError("no usable backend: install the 'train' extra for the torch backend")


def open_runner(backend: str = "auto", model: str = "edge", device: str = "cpu", threads: int | None = None
                ) -> Runner:
    """Create the Runner for `backend` ('auto' picks and logs which)."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    chosen = pick_backend(backend)
    if backend == "auto":
        log.info("backend auto -> %s", chosen)
    from dmfnet_edge.runtime.torch_backend import TorchRunner

    return TorchRunner.load(model, device=device, threads=threads)


__all__ = ["BACKENDS", "Runner", "open_runner", "pick_backend"]
