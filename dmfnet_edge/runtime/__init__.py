"""Backends behind one Runner interface; imports without torch (backends load lazily).

`open_runner(backend, model)` parses the model once (config.ModelSpec: a shipped name, a preset, saved weights,
FILE.onnx, FILE.engine or a server) and opens it with the backend the registry (runtime/backends.py) names:
`auto` picks TensorRT for an engine, ONNX Runtime for a graph or the shipped model, torch for weights.
"""

from __future__ import annotations

from dmfnet_edge.runtime.backends import (
    BACKEND_CHOICES,
    BACKENDS,
    DEFAULT_ORT_PRECISION,
    PRECISION_CHOICES,
    open_runner,
    pick_backend,
    shipped_onnx,
)
from dmfnet_edge.runtime.base import Runner

__all__ = ["BACKENDS", "BACKEND_CHOICES", "DEFAULT_ORT_PRECISION", "PRECISION_CHOICES", "Runner", "open_runner",
           "pick_backend", "shipped_onnx"]
