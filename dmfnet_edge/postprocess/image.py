"""Network output back to pixels: the inverse of preprocess/ (tensor.py: range and padding, color.py: luma).

The network's fused luma is float32 (H, W) in about [-1, 1] at the padded size; `crop_to` removes the mirror
padding, `from_network` maps it to uint8 exactly as the method's tensor2img does, and `merge_luma` gives it the
functional image's chroma back (PET and SPECT are pseudo-colour; CT and MRI stay grey).
"""

from __future__ import annotations

import cv2
import numpy as np


def from_network(values: np.ndarray) -> np.ndarray:
    """float (..., H, W) in about [-1, 1] -> uint8: clamp, map to 0..255 and round (the method's tensor2img)."""
    scaled = (np.clip(values, -1.0, 1.0) + 1.0) * 127.5
    return np.round(scaled).astype(np.uint8)


def crop_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(..., Hp, Wp) -> (..., height, width): drop the bottom/right padding."""
    return image[..., :height, :width]


def merge_luma(luma: np.ndarray, chroma: np.ndarray | None) -> np.ndarray:
    """Fused Y (H, W) uint8 + source CrCb -> RGB (H, W, 3) uint8, or the grey Y itself when chroma is None."""
    if chroma is None:
        return luma
    ycrcb = np.concatenate([luma[:, :, None], chroma], axis=2)
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)
