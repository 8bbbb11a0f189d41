"""The one DICOM frame reader: per-frame geometry and values of DICOM images (classic single-frame and
multi-frame files), used by the series reader (io/volumes.py) and the 2D reader (io/medical.py) alike.

Multi-frame files give per-frame positions through the functional groups (enhanced objects) or, for legacy
multi-frame objects, through one position plus SpacingBetweenSlices along the slice normal. A frame decodes
alone (pydicom's `index`): the pixel data element is read whole, its size bounded from the header before
(io/dicom_files.py), and one frame is decoded from it. Values: the modality LUT
(RescaleSlope/Intercept from the frame's functional groups, the shared ones or the dataset; a Modality LUT
Sequence where present), e.g. Hounsfield units for CT; colour (RGB, YBR, palette) becomes RGB uint8.

`stack_frames` checks that the frames of a series are one straight stack before it is built: a plane
(perpendicular unit vectors), one orientation, positive pixel spacing, positions along the slice normal (a gantry
tilt drifts them within the plane; stacking them straight would misplace every later slice, so the series is
refused with the advice to resample it in another tool first), and even, non-zero gaps.
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


def _source(frame: Frame) -> str:
    return str(getattr(frame.dataset, "filename", None) or "DICOM")


def _check_plane(frame: Frame) -> None:
    """ImageOrientationPatient: two finite, perpendicular unit vectors (else there is no slice normal)."""
    row, column = frame.orientation[:3], frame.orientation[3:]
    if not (np.all(np.isfinite(frame.orientation)) and abs(np.linalg.norm(row) - 1) < 0.01
            and abs(np.linalg.norm(column) - 1) < 0.01 and abs(float(np.dot(row, column))) < 0.01):
        raise InputError(f"{_source(frame)}: ImageOrientationPatient {np.round(frame.orientation, 4).tolist()} is not "
                         "two perpendicular unit vectors; the slices have no plane to stack along (the header is "
                         "damaged)")


def _check_frame(frame: Frame, first: Frame) -> None:
    """One orientation for the stack, a positive finite pixel spacing, a finite position."""
    if not np.allclose(frame.orientation, first.orientation, atol=1e-4):
        raise InputError(f"{_source(frame)}: slices have different orientations; not one stack")
    if not all(np.isfinite(v) and v > 0 for v in frame.spacing):
        raise InputError(f"{_source(frame)}: PixelSpacing {frame.spacing[0]:g}\\{frame.spacing[1]:g} mm is not a "
                         "positive size; expected the row and column spacing in mm (correct the header, or convert "
                         "the series with a tool that knows its spacing)")
    if not np.all(np.isfinite(frame.position)):
        raise InputError(f"{_source(frame)}: ImagePositionPatient {frame.position.tolist()} is not finite")


def _check_along_normal(frames: list[Frame], normal: np.ndarray, name: str) -> None:
    """Positions must lie on one line along the slice normal: an in-plane drift (a gantry tilt, a sheared stack)
    would put every voxel of a later slice beside where a straight stack has it."""
    offsets = np.array([fr.position - frames[0].position for fr in frames])
    in_plane = offsets - np.outer(offsets @ normal, normal)
    drift = float(np.linalg.norm(in_plane, axis=1).max())
    tolerance = 0.1 * min(frames[0].spacing)
    if drift > tolerance:
        raise InputError(f"{name}: the slices are not stacked along their normal: their positions drift {drift:.2f} mm "
                         f"within the slice plane (gantry tilt or a sheared stack; up to {tolerance:.3g} mm, a tenth "
                         "of a pixel, counts as straight); resample the series onto a straight grid in another tool "
                         "first (e.g. dcm2niix, which corrects gantry tilt)")


def stack_frames(frames: list[Frame], name: str) -> tuple[list[Frame], float]:
    """The frames of one series sorted by position along their slice normal, and the slice step in mm, once they
    are checked to form one straight, evenly spaced stack: one orientation, positive pixel spacing, finite
    positions on a line along the normal (in-plane drift up to a tenth of a pixel), gaps neither zero nor uneven."""
    first = frames[0]
    _check_plane(first)
    for frame in frames:
        _check_frame(frame, first)
    normal = first.normal
    frames = sorted(frames, key=lambda fr: float(np.dot(fr.position, normal)))
    _check_along_normal(frames, normal, name)
    gaps = np.diff([float(np.dot(fr.position, normal)) for fr in frames])
    if len(gaps) and (np.any(gaps <= 1e-6) or np.ptp(gaps) > 0.01 * max(abs(gaps.mean()), 1e-6) + 1e-3):
        raise InputError(f"{name}: slice positions are duplicated or unevenly spaced "
                         f"(gaps {np.round(np.unique(np.round(gaps, 3)), 3).tolist()} mm)")
    step = float(gaps.mean()) if len(gaps) else frames[0].thickness
    if not (np.isfinite(step) and step > 0):
        raise InputError(f"{name}: SliceThickness {step:g} mm is not a positive size; expected the slice thickness "
                         "in mm (correct the header)")
    return frames, step


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
