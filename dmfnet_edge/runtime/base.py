"""The one interface every backend implements (torch-free).

A Runner maps network inputs to the fused luma: `fuse(mri, other)` takes two float32 arrays (N, 1, H, W) in
[-1, 1] with H and W multiples of 16 (at least 64) and returns float32 (N, 1, H, W) in (-1, 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from dmfnet_edge.errors import InputError
from dmfnet_edge.preprocess.tensor import MIN_NETWORK_SIDE, SIZE_MULTIPLE


class Runner(Protocol):
    backend: str  # a name of the backend registry (runtime/backends.py)
    model_name: str

    def fuse(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...  # releases what the runner holds (a session, device memory); a second close is a no-op

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...


class Closing:
    """`with runner:` for runners whose `close()` is all their clean-up (as Polygraphy's runners deactivate)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):  # noqa: ANN204 (the runner itself)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_network_inputs(mri: np.ndarray, other: np.ndarray) -> None:
    """Raise ValueError when the arrays break the Runner contract (a caller bug, not user input)."""
    if mri.shape != other.shape or mri.ndim != 4 or mri.shape[1] != 1:
        raise ValueError(f"expected two (N, 1, H, W) arrays of one shape, got {mri.shape} and {other.shape}")
    if mri.shape[2] % SIZE_MULTIPLE or mri.shape[3] % SIZE_MULTIPLE or min(mri.shape[2:]) < MIN_NETWORK_SIDE:
        raise ValueError(f"H and W must be multiples of {SIZE_MULTIPLE} and at least {MIN_NETWORK_SIDE}, got "
                         f"{mri.shape[2:]}")
    if mri.dtype != np.float32 or other.dtype != np.float32:
        raise ValueError(f"expected float32 inputs, got {mri.dtype} and {other.dtype}")


def run_with_contract(contract: Any, run: Callable[[np.ndarray, np.ndarray], np.ndarray], mri: np.ndarray,
                      other: np.ndarray, name: str) -> np.ndarray:
    """Call `run` on inputs shaped for a graph's contract: smaller images are mirror-padded up to a static size
    (and cropped back), larger ones refused; a static batch is filled with copies and trimmed."""
    n, _, h, w = mri.shape
    if contract.static_size is not None:
        sh, sw = contract.static_size
        if h > sh or w > sw:
            raise InputError(f"{name} was built for {sw}x{sh} images, this one needs {w}x{h}; export with "
                             "'dmfnet-export onnx --dynamic' (and rebuild) for larger images")
        pad = ((0, 0), (0, 0), (0, sh - h), (0, sw - w))
        mri, other = np.pad(mri, pad, mode="reflect"), np.pad(other, pad, mode="reflect")
    step = contract.static_batch or n
    outputs = []
    for i in range(0, n, step):
        a, b = mri[i:i + step], other[i:i + step]
        short = step - a.shape[0]
        if short:
            a, b = (np.concatenate([x, np.repeat(x[-1:], short, axis=0)]) for x in (a, b))
        outputs.append(run(np.ascontiguousarray(a), np.ascontiguousarray(b))[:step - short])
    return np.concatenate(outputs)[:, :, :h, :w]
