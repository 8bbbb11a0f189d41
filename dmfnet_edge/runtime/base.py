"""The one interface every backend implements (torch-free).

A Runner maps network inputs to the fused luma: `fuse(mri, other)` takes two float32 arrays (N, 1, H, W) in
[-1, 1] with H and W multiples of 16 (at least 64) and returns float32 (N, 1, H, W) in (-1, 1).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Runner(Protocol):
    backend: str  # "torch", "onnxruntime", ...
    model_name: str

    def fuse(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


def check_network_inputs(mri: np.ndarray, other: np.ndarray) -> None:
    """Raise ValueError when the arrays break the Runner contract (a caller bug, not user input)."""
    if mri.shape != other.shape or mri.ndim != 4 or mri.shape[1] != 1:
        raise ValueError(f"expected two (N, 1, H, W) arrays of one shape, got {mri.shape} and {other.shape}")
    if mri.shape[2] % 16 or mri.shape[3] % 16 or min(mri.shape[2:]) < 64:
        raise ValueError(f"H and W must be multiples of 16 and at least 64, got {mri.shape[2:]}")
    if mri.dtype != np.float32 or other.dtype != np.float32:
        raise ValueError(f"expected float32 inputs, got {mri.dtype} and {other.dtype}")
