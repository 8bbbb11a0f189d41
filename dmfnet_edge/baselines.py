"""Classic fusion baselines on grey/luma images (uint8 (H, W) in, uint8 out), for comparison tables.

* average: (A + B) / 2
* max: pixel-wise maximum
* laplacian: 4-level Laplacian pyramid (OpenCV pyrDown/pyrUp, 5x5 Gaussian), detail bands fused by maximum
  absolute value, coarsest band averaged.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from dmfnet_edge.postprocess.image import merge_luma
from dmfnet_edge.preprocess.color import split_luma
from dmfnet_edge.preprocess.intensity import clip_to_uint8


def average(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return clip_to_uint8((a.astype(np.float64) + b.astype(np.float64)) / 2)


def pixel_max(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(a, b)


def _laplacian_pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    gaussian = [img]
    for _ in range(levels - 1):
        gaussian.append(cv2.pyrDown(gaussian[-1]))
    bands = []
    for fine, coarse in zip(gaussian[:-1], gaussian[1:]):
        bands.append(fine - cv2.pyrUp(coarse, dstsize=(fine.shape[1], fine.shape[0])))
    bands.append(gaussian[-1])
    return bands


def laplacian_pyramid(a: np.ndarray, b: np.ndarray, levels: int = 4) -> np.ndarray:
    pa = _laplacian_pyramid(a.astype(np.float64), levels)
    pb = _laplacian_pyramid(b.astype(np.float64), levels)
    fused = [np.where(np.abs(x) >= np.abs(y), x, y) for x, y in zip(pa[:-1], pb[:-1])]
    out = (pa[-1] + pb[-1]) / 2
    for band in reversed(fused):
        out = cv2.pyrUp(out, dstsize=(band.shape[1], band.shape[0])) + band
    return clip_to_uint8(out)


BASELINES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "average": average,
    "max": pixel_max,
    "laplacian": laplacian_pyramid,
}


def fuse_with_baseline(method: str, mri: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Fuse two uint8 images' lumas with a baseline and restore the other image's chroma, as the model path does."""
    other_luma, chroma = split_luma(other)
    return merge_luma(BASELINES[method](split_luma(mri)[0], other_luma), chroma)
