"""Numeric preprocessing from uint8 pixels to the network range, without torch (the way back: postprocess/).

The network sees float32 (N, 1, H, W) in [-1, 1] with H and W multiples of 16 and at least 64 (the coarsest
feature level, 1/16 of the input, must be wider than the 7x7 reflect-padded spatial attention's padding).
Images of any size are mirror-padded on the bottom/right up to that and cropped back afterwards.
"""

from __future__ import annotations

import numpy as np

SIZE_MULTIPLE = 16
MIN_NETWORK_SIDE = 64


def to_network(luma: np.ndarray) -> np.ndarray:
    """uint8 (H, W) -> float32 (H, W) in [-1, 1]."""
    return luma.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


def padded_size(height: int, width: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """The network size for an image: next multiple of `multiple`, at least MIN_NETWORK_SIDE."""
    def side(n: int) -> int:
        return max(-(-n // multiple) * multiple, MIN_NETWORK_SIDE)

    return side(height), side(width)


def pad_to_multiple(image: np.ndarray, multiple: int = SIZE_MULTIPLE) -> np.ndarray:
    """Mirror-pad (..., H, W) on the bottom/right to the network size (reflection repeats for tiny images)."""
    h, w = image.shape[-2:]
    ph, pw = padded_size(h, w, multiple)
    if (ph, pw) == (h, w):
        return image
    widths = [(0, 0)] * (image.ndim - 2) + [(0, ph - h), (0, pw - w)]
    return np.pad(image, widths, mode="reflect" if min(h, w) > 1 else "edge")
