"""Pictures people look at instead of reading numbers: the overview grid of fused pairs (fuse-dir, compare) and
the worst pair's difference heat-map of an accuracy gate. RGB uint8 in, RGB uint8 out."""

from __future__ import annotations

import cv2
import numpy as np

TILE = 192  # side of one overview tile


def rgb(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB) if pixels.ndim == 2 else pixels


def put_caption(image: np.ndarray, text: str, at: tuple[int, int], colour: tuple[int, int, int],
                scale: float = 0.5) -> None:
    """Draw `text` in place. OpenCV's Hershey fonts draw printable ASCII only (file names that are not UTF-8, as
    surrogate escapes, crashed it), so anything else is drawn as '?'."""
    ascii_text = "".join(c if " " <= c <= "~" else "?" for c in text)
    cv2.putText(image, ascii_text, at, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def _tile(pixels: np.ndarray, caption: str) -> np.ndarray:
    tile = cv2.resize(rgb(pixels), (TILE, TILE), interpolation=cv2.INTER_AREA)
    put_caption(tile, caption, (6, 18), (255, 255, 0))
    return tile


def overview_picture(rows: list[list[tuple[np.ndarray, str]]]) -> np.ndarray:
    """A grid of captioned tiles, one row per pair (RGB uint8)."""
    width = max(len(r) for r in rows)
    blank = np.zeros((TILE, TILE, 3), np.uint8)
    lines = [np.concatenate([_tile(p, c) for p, c in row] + [blank] * (width - len(row)), axis=1)
             for row in rows]
    return np.concatenate(lines, axis=0)


def heatmap_picture(reference: np.ndarray, candidate: np.ndarray, diff: np.ndarray, title: str,
                    reference_name: str = "PyTorch FP32") -> np.ndarray:
    """RGB strip: reference fused | candidate fused | |diff| heat-map (its scale printed on it)."""
    peak = float(diff.max()) or 1.0
    heat = cv2.applyColorMap(np.round(diff / peak * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[:, :, ::-1]
    strip = np.concatenate([rgb(reference), rgb(candidate), heat], axis=1).copy()
    w = diff.shape[1]
    for i, text in enumerate([reference_name, title, f"|diff| 0..{peak:.2e}"]):
        put_caption(strip, text, (i * w + 5, 16), (0, 255, 0), 0.45)
    return strip
