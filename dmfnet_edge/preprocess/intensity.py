"""Modality-aware mapping of physical volume values to the 8-bit images the model was trained on.

An intensity spec is one of:
* ``percentile[:LO,HI]``: linear from the volume's LO..HI percentiles (default 0.5,99.5) to 0..255;
* ``minmax``: the volume's min..max;
* ``window:CENTER,WIDTH`` or a CT preset name (``brain``, ``subdural``, ``stroke``, ``bone``,
  ``soft-tissue``): a DICOM linear window on the values (Hounsfield units for CT);
* ``none``: the values are already 0..255 (8-bit data) and are used as they are.

Defaults: MRI ``percentile`` (0.5..99.5 over the whole volume), CT ``brain`` (40/80 HU), PET and SPECT
``percentile:0,99.5`` (activity scaled to the volume's 99.5th percentile, zero stays black), then a
pseudo-colour map (PET ``jet``, SPECT ``hot``) when the functional volume is grey, because the model was trained
on pseudo-colour PET/SPECT luma.
"""

from __future__ import annotations

import cv2
import numpy as np

from dmfnet_edge.errors import InputError

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (32.0, 8.0),
    "bone": (600.0, 2800.0),
    "soft-tissue": (50.0, 400.0),
}
DEFAULT_SPECS = {"MRI": "percentile", "CT": "brain", "PET": "percentile:0,99.5", "SPECT": "percentile:0,99.5"}
DEFAULT_COLORMAPS = {"PET": "jet", "SPECT": "hot"}
COLORMAPS = {"jet": cv2.COLORMAP_JET, "hot": cv2.COLORMAP_HOT, "rainbow": cv2.COLORMAP_RAINBOW,
             "inferno": cv2.COLORMAP_INFERNO, "turbo": cv2.COLORMAP_TURBO}


def _pair(text: str, what: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"intensity '{what}': expected two numbers A,B") from None
    return a, b


def value_range(values: np.ndarray, spec: str) -> tuple[float, float]:
    """The (lower, upper) values mapped to 0 and 255 under `spec`."""
    name, _, arg = spec.partition(":")
    if name == "none":
        return 0.0, 255.0
    if name == "minmax":
        return float(values.min()), float(values.max())
    if name == "percentile":
        lo, hi = _pair(arg, spec) if arg else (0.5, 99.5)
        if not 0 <= lo < hi <= 100:
            raise InputError(f"intensity '{spec}': percentiles must satisfy 0 <= LO < HI <= 100")
        return tuple(float(v) for v in np.percentile(values, [lo, hi]))  # type: ignore[return-value]
    center, width = CT_WINDOWS[name] if name in CT_WINDOWS else _pair(arg if name == "window" else spec, spec)
    if width <= 0:
        raise InputError(f"intensity '{spec}': the window width must be positive")
    return center - width / 2, center + width / 2


def to_uint8(values: np.ndarray, spec: str) -> np.ndarray:
    """Map a grey volume (float) to uint8 under `spec`."""
    lower, upper = value_range(values, spec)
    if spec == "none" and (values.min() < 0 or values.max() > 255):
        raise InputError(f"intensity 'none' needs values in 0..255, the volume spans "
                         f"{values.min():g}..{values.max():g}; choose percentile, minmax or a window")
    if upper <= lower:
        return np.zeros(values.shape, np.uint8)
    scaled = (values - lower) * (255.0 / (upper - lower))
    return np.round(np.clip(scaled, 0, 255)).astype(np.uint8)


def pseudo_colour(grey: np.ndarray, colormap: str) -> np.ndarray:
    """(S, H, W) uint8 -> (S, H, W, 3) RGB with an OpenCV colour map."""
    if colormap not in COLORMAPS:
        raise InputError(f"--colormap {colormap}: choose one of {', '.join(COLORMAPS)} or none")
    return np.stack([cv2.applyColorMap(s, COLORMAPS[colormap])[:, :, ::-1] for s in grey])
