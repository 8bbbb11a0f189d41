"""2D DICOM inputs (one frame of a file), as uint8 grey or RGB pixels with their metadata, and what tells the
medical formats apart. (2D NIfTI inputs are slices of the file's Volume: io/volumes.py.)

DICOM: the frame's values come from the one frame reader the series reader uses (io/dicom_geometry.py: the
modality LUT, giving physical values, HU for CT; colour, YBR and palette images as RGB); then the window:
`window=(center, width)` if given, else the file's own VOI LUT/window, else the frame's min..max. MONOCHROME1
is inverted after the window (`preprocess.intensity.display_uint8`, the rule the volume path follows too).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.errors import DmfnetError, InputError, describe_exception
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


def read_dicom(path: Path, window: Window | None = None, frame: int | None = None) -> tuple[np.ndarray, dict]:
    """A DICOM image (one frame of a multi-frame file) as uint8 grey or RGB, plus metadata."""
    require("pydicom", purpose="reading DICOM")
    try:
        return _read_dicom(path, window, frame)
    except DmfnetError:
        raise
    except Exception as exc:  # pydicom parses lazily: damaged elements raise many exception types, anywhere
        raise InputError(f"{path}: not a readable DICOM file ({describe_exception(exc)})") from None


def _read_dicom(path: Path, window: Window | None, frame: int | None) -> tuple[np.ndarray, dict]:
    from pydicom.pixels import apply_voi_lut

    from dmfnet_edge.io.dicom_files import check_declared_geometry, read_dataset
    from dmfnet_edge.io.dicom_geometry import frames_of

    ds = read_dataset(path)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(f"{path}: DICOM file has no pixel data (not an image object)")
    check_declared_geometry(ds, str(path))
    ds.filename = str(path)
    frames = frames_of(ds)
    index = frame or 0
    if not 0 <= index < len(frames):
        raise InputError(f"{path}: frame {index} out of range (the file has {len(frames)} frame"
                         f"{'s' if len(frames) > 1 else ''})")
    values = frames[index].pixels()  # the one frame reader the series reader uses too
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    meta = {"format": "dicom", "modality": str(getattr(ds, "Modality", "")), "photometric": photometric}
    if values.ndim == 3:
        return values, meta
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        window = (_first(ds.WindowCenter), _first(ds.WindowWidth))
    if window is not None:
        out = window_to_uint8(values, *center_width(window), str(path))
    elif "VOILUTSequence" in ds:
        voi = np.asarray(apply_voi_lut(values, ds, index=0), np.float64)
        out = window_to_uint8(voi, float(voi.min()), float(voi.max()), str(path))
    else:
        out = window_to_uint8(values, float(values.min()), float(values.max()), str(path))
    out = display_uint8(out, frames[index].monochrome1)
    meta["window"] = list(window) if window is not None else None
    return out, meta


def _first(value: Any) -> float:
    """First value of a possibly multi-valued DICOM number."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)
