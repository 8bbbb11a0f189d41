"""2D slices from DICOM files and NIfTI volumes, as uint8 grey or RGB pixels with their metadata.

DICOM: the modality LUT (RescaleSlope/Intercept) is applied first, giving physical values (HU for CT); then
the window: `window=(center, width)` if given, else the file's own VOI LUT/window, else the slice's min..max.
MONOCHROME1 is inverted after the window (`preprocess.intensity.display_uint8`, the rule the volume
reader follows too). Colour (RGB, YBR, palette) images become RGB.

NIfTI: a 2D image, or slice `index` along the last axis of a 3D volume. Values are windowed by `window` if
given, else by the volume's 0.5th..99.5th percentiles, so every slice of one volume shares one scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.errors import DmfnetError, InputError
from dmfnet_edge.limits import check_pixel_budget
from dmfnet_edge.preprocess.intensity import display_uint8, window_to_uint8

Window = tuple[float, float]


def center_width(window: Window) -> tuple[float, float]:
    """(center, width) -> (lower, upper), DICOM's linear window convention."""
    center, width = window
    if width <= 0:
        raise InputError(f"window width must be positive, got {width}")
    return center - width / 2, center + width / 2


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _dicom_pixels(ds: Any, path: Path, frame: int | None) -> np.ndarray:
    """The pixels of one frame: a multi-frame file decodes that frame alone (pydicom's `index`), so memory is one
    frame's whatever the file holds."""
    from pydicom.pixels import pixel_array

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(f"{path}: DICOM file has no pixel data (not an image object)")
    check_pixel_budget(int(getattr(ds, "Columns", 0) or 0), int(getattr(ds, "Rows", 0) or 0), str(path))
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    index = None
    if frames > 1:
        index = 0 if frame is None else frame
        if not 0 <= index < frames:
            raise InputError(f"{path}: frame {index} out of range (the file has {frames} frames)")
    try:
        pixels = ds.pixel_array if index is None else pixel_array(ds, index=index)
    except Exception as exc:  # pydicom raises many types for undecodable pixel data
        hint = "; install a pydicom decoder plugin (e.g. pylibjpeg)" if "plugin" in str(exc).lower() else ""
        raise InputError(f"{path}: DICOM pixel data cannot be decoded ({describe_exception(exc)}){hint}") \
            from None
    if index is None and samples == 1 and pixels.ndim == 3:
        raise InputError(f"{path}: unexpected pixel array shape {pixels.shape}")
    return pixels


def describe_exception(exc: BaseException, limit: int = 160) -> str:
    """'Type: first line of the message', shortened (third-party messages can embed whole byte strings)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_dicom(path: Path, window: Window | None = None, frame: int | None = None) -> tuple[np.ndarray, dict]:
    """A DICOM image (one frame of a multi-frame file) as uint8 grey or RGB, plus metadata."""
    pydicom = require("pydicom", purpose="reading DICOM")
    try:
        return _read_dicom(pydicom, path, window, frame)
    except DmfnetError:
        raise
    except Exception as exc:  # pydicom parses lazily: damaged elements raise many exception types, anywhere
        raise InputError(f"{path}: not a readable DICOM file ({describe_exception(exc)})") from None


def _read_dicom(pydicom: Any, path: Path, window: Window | None, frame: int | None) -> tuple[np.ndarray, dict]:
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(str(path))
    pixels = _dicom_pixels(ds, path, frame)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    meta = {"format": "dicom", "modality": str(getattr(ds, "Modality", "")), "photometric": photometric}
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        return window_to_uint8(rgb, 0, float(rgb.max()) or 1.0, str(path)), meta
    if pixels.ndim == 3:  # RGB after pydicom's YBR conversion
        return (pixels if pixels.dtype == np.uint8 else window_to_uint8(pixels, 0, float(pixels.max()) or 1,
                                                                          str(path))), meta
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        window = (_first(ds.WindowCenter), _first(ds.WindowWidth))
    if window is not None:
        out = window_to_uint8(values, *center_width(window), str(path))
    elif "VOILUTSequence" in ds:
        voi = np.asarray(apply_voi_lut(values, ds, index=0), np.float64)
        out = window_to_uint8(voi, float(voi.min()), float(voi.max()), str(path))
    else:
        out = window_to_uint8(values, float(values.min()), float(values.max()), str(path))
    out = display_uint8(out, photometric == "MONOCHROME1")
    meta["window"] = list(window) if window is not None else None
    return out, meta


def _first(value: Any) -> float:
    """First value of a possibly multi-valued DICOM number."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)
