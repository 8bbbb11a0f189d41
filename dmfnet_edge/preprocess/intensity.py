"""Every mapping of values to the 8-bit pixels the model reads or writes lives here.

* `window_to_uint8`: a linear window [lower, upper] -> 0..255, clipped (DICOM windows, NIfTI percentiles,
  every intensity spec below); non-finite values are refused.
* `rescale_to_uint8`: an image of any numeric depth from its own min..max (16-bit and float 2D files).
* `clip_to_uint8`: values already on the 0..255 scale, rounded and clipped (the baselines' blends).
* `display_uint8`: the one MONOCHROME1 rule: the 8-bit image is inverted after the value mapping (DICOM's
  presentation order: modality LUT, then VOI window, then the inverse presentation), over the whole image or
  volume at once, so every slice of a series shares one scale.

An intensity spec (volumes) is one of:
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


def window_to_uint8(values: np.ndarray, lower: float, upper: float, source: str) -> np.ndarray:
    """Linearly map [lower, upper] to 0..255 (clipped); a degenerate window gives a black image."""
    values = np.asarray(values, np.float64)
    if not np.all(np.isfinite(values)):
        raise InputError(f"{source}: image contains NaN or Inf values")
    if not (np.isfinite(lower) and np.isfinite(upper)):
        raise InputError(f"{source}: the window {lower:g}..{upper:g} is not finite")
    if upper <= lower:
        return np.zeros(values.shape, np.uint8)
    scaled = (values - lower) * (255.0 / (upper - lower))
    return np.round(np.clip(scaled, 0, 255)).astype(np.uint8)


def rescale_to_uint8(pixels: np.ndarray, source: str) -> np.ndarray:
    """Map any numeric image to uint8; 8-bit is kept, other depths are min..max scaled. Rejects NaN/Inf."""
    if pixels.dtype == np.uint8:
        return pixels
    if not np.issubdtype(pixels.dtype, np.number) or np.issubdtype(pixels.dtype, np.complexfloating):
        raise InputError(f"{source}: pixel type {pixels.dtype} is not supported")
    values = pixels.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise InputError(f"{source}: image contains NaN or Inf values; clean or re-export the image")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(pixels.shape, np.uint8)
    # halves first: hi - lo overflows to inf for values near the float64 limits (and everything became 0)
    span = hi / 2 - lo / 2
    return np.round((values / 2 - lo / 2) * (255.0 / span)).astype(np.uint8)


def clip_to_uint8(values: np.ndarray) -> np.ndarray:
    """Values on the 0..255 scale -> uint8, rounded then clipped."""
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def display_uint8(pixels: np.ndarray, monochrome1: bool) -> np.ndarray:
    """The displayed 8-bit image: MONOCHROME1 (minimum value shown white) is inverted after the value mapping."""
    return 255 - pixels if monochrome1 else pixels


def to_uint8(values: np.ndarray, spec: str, source: str = "volume") -> np.ndarray:
    """Map a grey volume (float) to uint8 under `spec`."""
    if spec == "none" and (values.min() < 0 or values.max() > 255):
        raise InputError(f"intensity 'none' needs values in 0..255, the volume spans "
                         f"{values.min():g}..{values.max():g}; choose percentile, minmax or a window")
    return window_to_uint8(values, *value_range(values, spec), source)


def pseudo_colour(grey: np.ndarray, colormap: str) -> np.ndarray:
    """(S, H, W) uint8 -> (S, H, W, 3) RGB with an OpenCV colour map."""
    if colormap not in COLORMAPS:
        raise InputError(f"--colormap {colormap}: choose one of {', '.join(COLORMAPS)} or none")
    return np.stack([cv2.applyColorMap(s, COLORMAPS[colormap])[:, :, ::-1] for s in grey])
