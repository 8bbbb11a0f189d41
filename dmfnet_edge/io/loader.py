"""One entry point for every 2D input: PNG/JPEG/TIFF/BMP, DICOM and NIfTI (a slice)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dmfnet_edge.errors import InputError
from dmfnet_edge.io.images import read_image, regular_file
from dmfnet_edge.io.medical import Window, is_dicom, is_nifti, read_dicom
from dmfnet_edge.io.volumes import read_nifti_slice


@dataclass
class LoadedImage:
    """uint8 pixels, (H, W) grey or (H, W, 3) RGB, and what the reader learnt about them."""

    pixels: np.ndarray
    path: Path
    meta: dict = field(default_factory=dict)


def load_image(path: str | os.PathLike[str], slice_index: int | None = None, window: Window | None = None
               ) -> LoadedImage:
    path = Path(path)
    regular_file(path, "not an image file; for a DICOM series use 'dmfnet fuse-volume'")
    if is_nifti(path):
        pixels, meta = read_nifti_slice(path, slice_index, window)
    elif is_dicom(path):
        pixels, meta = read_dicom(path, window, slice_index)
    else:
        if window is not None:
            raise InputError(f"{path}: --window applies to DICOM and NIfTI inputs only")
        pixels, meta = read_image(path), {"format": path.suffix.lower().lstrip(".")}
    return LoadedImage(pixels, path, meta)
