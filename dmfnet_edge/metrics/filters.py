"""Small numpy filters the fusion metrics need (float64 throughout, no scipy)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def convolve3x3_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2D convolution (kernel flipped) with zero padding, output the size of `image` (scipy 'same')."""
    flipped = kernel[::-1, ::-1]
    padded = np.pad(image, 1)
    h, w = image.shape
    out = np.zeros((h, w), np.float64)
    for dy in range(3):
        for dx in range(3):
            if flipped[dy, dx] != 0:
                out += flipped[dy, dx] * padded[dy:dy + h, dx:dx + w]
    return out


def separable_valid(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """'valid' filtering with the symmetric separable kernel outer(taps, taps)."""
    rows = sliding_window_view(image, taps.size, axis=0) @ taps  # (H-k+1, W)
    return sliding_window_view(rows, taps.size, axis=1) @ taps


def box_mean_reflect(image: np.ndarray, size: int) -> np.ndarray:
    """Mean over size x size windows, same-size output, half-sample symmetric borders (ndimage 'reflect')."""
    pad = size // 2
    padded = np.pad(image, pad, mode="symmetric")
    csum = np.cumsum(np.cumsum(np.pad(padded, ((1, 0), (1, 0))), axis=0), axis=1)
    h, w = image.shape
    total = (csum[size:size + h, size:size + w] - csum[:h, size:size + w]
             - csum[size:size + h, :w] + csum[:h, :w])
    return total / (size * size)


def gaussian_taps(size: int, sigma: float) -> np.ndarray:
    """1D taps whose outer product is the normalised 2D Gaussian window (fspecial('gaussian'))."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()
