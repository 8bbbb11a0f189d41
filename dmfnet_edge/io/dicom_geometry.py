"""The one DICOM frame reader: per-frame geometry and values of DICOM images (classic single-frame and
multi-frame files), used by the series reader (io/volumes.py) and the 2D reader (io/medical.py) alike.

Multi-frame files give per-frame positions through the functional groups (enhanced objects) or, for legacy
multi-frame objects, through one position plus SpacingBetweenSlices along the slice normal. A frame decodes
alone (pydicom's `index`), so memory is one frame's whatever the file holds. Values: the modality LUT
(RescaleSlope/Intercept from the frame's functional groups, the shared ones or the dataset; a Modality LUT
Sequence where present), e.g. Hounsfield units for CT; colour (RGB, YBR, palette) becomes RGB uint8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dmfnet_edge.errors import InputError, describe_exception
from dmfnet_edge.preprocess.intensity import window_to_uint8


def _floats(value: Any, count: int, default: list[float]) -> np.ndarray:
    try:
        out = np.array([float(v) for v in value], np.float64)
    except (TypeError, ValueError):
        return np.array(default, np.float64)
    return out if out.size == count else np.array(default, np.float64)


def _item(ds: Any, *path: str) -> Any:
    """Follow sequence keywords to the first item (None when any step is absent)."""
    for keyword in path:
        seq = getattr(ds, keyword, None)
        if not seq:
            return None
        ds = seq[0]
    return ds


@dataclass
class Frame:
    dataset: Any
    index: int | None  # frame number in a multi-frame file, None for single-frame
    position: np.ndarray  # (3,) ImagePositionPatient
    orientation: np.ndarray  # (6,) row direction then column direction
    spacing: tuple[float, float]  # (row spacing, column spacing) mm
    thickness: float
    slope: float
    intercept: float
    modality: str

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.orientation[:3], self.orientation[3:])
        return n / (np.linalg.norm(n) or 1.0)

    def pixels(self) -> np.ndarray:
        """Modality-LUT values (H, W) float64 (never inverted: see `monochrome1`), or (H, W, 3) uint8 for
        colour images."""
        from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array

        ds, name = self.dataset, getattr(self.dataset, "filename", None) or "DICOM"
        try:
            arr = ds.pixel_array if self.index is None else pixel_array(ds, index=self.index)
        except Exception as exc:  # pydicom raises many types for undecodable pixel data
            hint = "; install a pydicom decoder plugin (e.g. pylibjpeg)" if "plugin" in str(exc).lower() else ""
            raise InputError(f"{name}: DICOM pixel data cannot be decoded ({describe_exception(exc)}){hint}") \
                from None
        samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        if (samples == 1 and arr.ndim != 2) or (samples > 1 and arr.ndim != 3):
            raise InputError(f"{name}: unexpected pixel array shape {arr.shape}")
        if str(getattr(ds, "PhotometricInterpretation", "")) == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
        if arr.ndim == 3:  # RGB (after pydicom's YBR conversion, or from the palette)
            return arr if arr.dtype == np.uint8 else window_to_uint8(arr, 0, float(arr.max()) or 1.0, name)
        if "ModalityLUTSequence" in ds:
            return np.asarray(apply_modality_lut(arr, ds), np.float64)
        return arr.astype(np.float64) * self.slope + self.intercept

    @property
    def monochrome1(self) -> bool:
        """Shown inverted (minimum value white); applied after the value mapping, `intensity.display_uint8`."""
        return str(getattr(self.dataset, "PhotometricInterpretation", "")) == "MONOCHROME1"


def _spacing(ds: Any, frame_groups: Any, shared: Any) -> tuple[float, float]:
    """PixelSpacing from the frame's functional groups, else the shared ones, else the dataset (an enhanced file
    usually has it in the shared groups only)."""
    source = ds
    for groups in (frame_groups, shared):
        measures = _item(groups, "PixelMeasuresSequence") if groups is not None else None
        if measures is not None and "PixelSpacing" in measures:
            source = measures
            break
    row, col = _floats(getattr(source, "PixelSpacing", None), 2, [1.0, 1.0])
    return float(row), float(col)


def _thickness(ds: Any, frame_groups: Any, shared: Any) -> float:
    """SliceThickness from the frame's functional groups, else the shared ones, else the dataset (1 mm when
    none says); an enhanced file keeps it in the Pixel Measures of its functional groups."""
    for groups in (frame_groups, shared):
        measures = _item(groups, "PixelMeasuresSequence") if groups is not None else None
        if measures is not None and measures.get("SliceThickness"):
            return float(measures.SliceThickness)
    return float(getattr(ds, "SliceThickness", 0) or 0) or 1.0


def _rescale(ds: Any, frame_groups: Any, shared: Any) -> tuple[float, float]:
    for groups in (frame_groups, shared):
        item = _item(groups, "PixelValueTransformationSequence") if groups is not None else None
        if item is not None and "RescaleSlope" in item:
            return float(item.RescaleSlope), float(item.RescaleIntercept)
    return float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)


def frames_of(ds: Any) -> list[Frame]:
    """Every frame of a dataset with its geometry and rescale."""
    count = int(getattr(ds, "NumberOfFrames", 1) or 1)
    modality = str(getattr(ds, "Modality", ""))
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    thickness = _thickness(ds, None, shared)
    frames = []
    for i in range(count):
        groups = per_frame[i] if per_frame is not None and i < len(per_frame) else None
        orient_item = (_item(groups, "PlaneOrientationSequence") if groups is not None else None) or \
            (_item(shared, "PlaneOrientationSequence") if shared is not None else None) or ds
        orientation = _floats(getattr(orient_item, "ImageOrientationPatient", None), 6, [1, 0, 0, 0, 1, 0])
        position_item = _item(groups, "PlanePositionSequence") if groups is not None else None
        if position_item is not None:
            position = _floats(position_item.ImagePositionPatient, 3, [0, 0, 0])
        else:
            base = _item(ds, "DetectorInformationSequence") or ds
            position = _floats(getattr(base, "ImagePositionPatient", None), 3, [0, 0, 0])
            step = float(getattr(ds, "SpacingBetweenSlices", 0) or 0) or thickness
            normal = np.cross(orientation[:3], orientation[3:])
            position = position + i * step * normal
            if "ImagePositionPatient" not in ds and count == 1:
                position = np.array([0.0, 0.0, float(getattr(ds, "InstanceNumber", 0) or 0) * thickness])
        slope, intercept = _rescale(ds, groups, shared)
        frames.append(Frame(ds, i if count > 1 else None, position, orientation, _spacing(ds, groups, shared),
                            _thickness(ds, groups, shared), slope, intercept, modality))
    return frames
