"""BT.601 luma/chroma split (8-bit YCrCb with offset 128, OpenCV's definition); the merge is postprocess/.

PET and SPECT are pseudo-colour: the network fuses their luma Y and the fused image gets the functional
image's chroma back, as the method does. Grey images have neutral chroma (Cr = Cb = 128).
"""

from __future__ import annotations

import cv2
import numpy as np


def split_luma(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 (H, W) or (H, W, 3) RGB -> (Y (H, W) uint8, CrCb (H, W, 2) uint8 or None for grey)."""
    if pixels.ndim == 2:
        return pixels, None
    ycrcb = cv2.cvtColor(pixels, cv2.COLOR_RGB2YCrCb)
    return np.ascontiguousarray(ycrcb[:, :, 0]), np.ascontiguousarray(ycrcb[:, :, 1:])


def grey_of(pixels: np.ndarray) -> np.ndarray:
    """Evaluation grey, float64 in 0..255: round(BT.601 luma) as OpenCV's BGR2GRAY computes it."""
    if pixels.ndim == 2:
        return pixels.astype(np.float64)
    grey = cv2.cvtColor(pixels.astype(np.float32), cv2.COLOR_RGB2GRAY)
    return np.round(grey).astype(np.float64)
