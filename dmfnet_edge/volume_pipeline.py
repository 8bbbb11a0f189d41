"""Fusing co-registered volumes slice by slice, batched through any Runner (the provenance record beside the
output: reporting/provenance.py).

Before any work the two volumes must agree on slice count, in-plane size, spacing and orientation (or the other
volume is resampled onto the MRI grid with SimpleITK on request). Intensities are mapped to 8-bit per modality
(preprocess.intensity), grey PET/SPECT get their pseudo-colour map, and the slices go through the same
prepare/finish steps as the 2D path, so a volume slice and the same 2D image fuse to identical pixels.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.errors import InputError, PairingError
from dmfnet_edge.io.volumes import Volume
from dmfnet_edge.pipeline import fuse_pairs, prepare_pair
from dmfnet_edge.preprocess.intensity import DEFAULT_COLORMAPS, DEFAULT_SPECS, display_uint8, pseudo_colour, to_uint8
from dmfnet_edge.runtime.base import Runner

MODALITY_TAGS = {"CT": "CT", "PT": "PET", "NM": "SPECT", "MR": "MRI", "PET": "PET", "SPECT": "SPECT"}
FUNCTIONAL = ("CT", "PET", "SPECT")


@dataclass
class IntensitySettings:
    mri: str | None = None
    other: str | None = None
    colormap: str | None = None  # None: the modality default; "none": keep grey

    def resolved(self, modality: str) -> dict[str, str | None]:
        colormap = self.colormap or DEFAULT_COLORMAPS.get(modality)
        return {"mri": self.mri or DEFAULT_SPECS["MRI"], "other": self.other or DEFAULT_SPECS[modality],
                "colormap": None if colormap == "none" else colormap}


@dataclass
class FusedVolume:
    pixels: np.ndarray  # (S, H, W) uint8 grey or (S, H, W, 3) uint8 RGB
    modality: str
    intensity: dict[str, str | None]
    seconds: dict[str, float] = field(default_factory=dict)


def other_modality(volume: Volume, override: str | None) -> str:
    """CT, PET or SPECT from --other-modality or the DICOM Modality tag; an MR tag is refused."""
    if override:
        if override not in FUNCTIONAL:
            raise InputError(f"--other-modality {override}: choose one of {', '.join(FUNCTIONAL)}")
        return override
    tagged = MODALITY_TAGS.get(volume.modality.upper())
    if tagged is None:
        raise InputError(f"{volume.source}: modality unknown ('{volume.modality or 'no tag'}'); "
                         f"pass --other-modality {'|'.join(FUNCTIONAL)}")
    if tagged == "MRI":
        raise InputError(f"{volume.source}: tagged MR, but the second input must be CT, PET or SPECT; "
                         "swap --mri/--other or pass --other-modality to override")
    return tagged


def check_mri(volume: Volume) -> None:
    if volume.modality and MODALITY_TAGS.get(volume.modality.upper()) in FUNCTIONAL:
        raise InputError(f"{volume.source}: tagged {volume.modality}, but --mri must be an MR series; "
                         "swap --mri/--other")
    if volume.is_colour:
        raise InputError(f"{volume.source}: the MRI volume is colour; expected grey MR images")


def frame_of_reference(volume: Volume) -> str | None:
    """A DICOM series' FrameOfReferenceUID (the coordinate system its positions are in); None otherwise."""
    if volume.kind != "dicom" or not volume.sources:
        return None
    return str(getattr(volume.sources[0], "FrameOfReferenceUID", "") or "") or None


def check_frames(mri: Volume, other: Volume, assume_registered: bool = False) -> None:
    """Refuse two DICOM series whose positions are in different coordinate systems (before any resampling:
    positions from different frames of reference cannot be compared), unless the caller vouches for them."""
    a, b = frame_of_reference(mri), frame_of_reference(other)
    if a and b and a != b and not assume_registered:
        raise PairingError(f"the series have different frames of reference (MRI {a}, other {b}): their positions "
                           "are in unrelated coordinate systems; register them first, or pass --assume-registered "
                           "if they already are")


def origin_tolerance_mm(spacing: tuple[float, float, float]) -> float:
    """How far the first voxels of two volumes on one grid may lie apart: half the largest voxel side, >= 1 mm."""
    return max(1.0, 0.5 * max(spacing))


def check_geometry(mri: Volume, other: Volume) -> None:
    """Refuse volumes that are not on one grid, naming both values."""
    if mri.slices != other.slices:
        raise PairingError(f"slice count differs: MRI {mri.slices}, other {other.slices}; co-register the "
                           "volumes or pass --resample")
    if mri.plane != other.plane:
        raise PairingError(f"in-plane size differs: MRI {mri.plane[1]}x{mri.plane[0]}, other "
                           f"{other.plane[1]}x{other.plane[0]}; pass --resample")
    if not np.allclose(mri.spacing, other.spacing, rtol=1e-3, atol=1e-4):
        raise PairingError(f"voxel spacing differs: MRI {_mm(mri.spacing)}, other {_mm(other.spacing)} mm "
                           "(slice, row, column); pass --resample")
    if not np.allclose(mri.orientation, other.orientation, atol=1e-3):
        raise PairingError(f"orientation differs: MRI {np.round(mri.orientation[:2].ravel(), 3).tolist()}, "
                           f"other {np.round(other.orientation[:2].ravel(), 3).tolist()}; pass --resample")
    if mri.kind == other.kind:  # DICOM (LPS) and NIfTI (RAS) positions are not compared across kinds
        apart = float(np.linalg.norm(np.asarray(mri.origin, float) - np.asarray(other.origin, float)))
        if apart > origin_tolerance_mm(mri.spacing):
            raise PairingError(f"the volumes start {apart:.1f} mm apart (first voxel: MRI "
                               f"{np.round(mri.origin, 1).tolist()}, other {np.round(other.origin, 1).tolist()} "
                               f"mm; at most {origin_tolerance_mm(mri.spacing):g} mm on one grid): they do not cover "
                               "the same place; pass --resample to put the other on the MRI grid by position")


def _mm(spacing: tuple[float, float, float]) -> str:
    return "x".join(f"{v:g}" for v in spacing)


def resample_onto(other: Volume, mri: Volume) -> Volume:
    """Resample `other` onto the MRI's grid (linear) with SimpleITK, keeping physical positions."""
    sitk = require("SimpleITK", extra="medical", purpose="--resample")

    def to_image(vol: Volume, data: np.ndarray) -> Any:
        image = sitk.GetImageFromArray(data, isVector=data.ndim == 4)
        image.SetSpacing((vol.spacing[2], vol.spacing[1], vol.spacing[0]))
        image.SetOrigin(tuple(float(v) for v in vol.origin))
        image.SetDirection(tuple(float(v) for v in vol.orientation.T.ravel()))
        return image

    reference = to_image(mri, np.zeros(mri.data.shape, np.float32))
    data = other.data.astype(np.float32)
    out = sitk.Resample(to_image(other, data), reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    resampled = sitk.GetArrayFromImage(out)
    if other.is_colour:
        resampled = np.clip(np.round(resampled), 0, 255).astype(np.uint8)
    return Volume(resampled.astype(np.float64) if not other.is_colour else resampled, mri.spacing,
                  mri.orientation, mri.origin, other.modality, other.source, other.kind, sources=[],
                  input_sha256=other.input_sha256, monochrome1=other.monochrome1)


def to_slices(mri: Volume, other: Volume, modality: str, settings: IntensitySettings
              ) -> tuple[np.ndarray, np.ndarray, dict[str, str | None]]:
    """8-bit MRI slices (S, H, W) and other slices (grey or RGB), with the settings actually used."""
    resolved = settings.resolved(modality)
    mri8 = display_uint8(to_uint8(mri.data, resolved["mri"], str(mri.source)), mri.monochrome1)
    if other.is_colour:
        return mri8, other.data, {**resolved, "other": "as stored (colour)", "colormap": None}
    other8 = display_uint8(to_uint8(other.data, resolved["other"], str(other.source)), other.monochrome1)
    if modality != "CT" and resolved["colormap"]:
        other8 = pseudo_colour(other8, resolved["colormap"])
    return mri8, other8, resolved


def fuse_slices(runner: Runner, mri8: np.ndarray, other8: np.ndarray, batch: int,
                progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Fuse 8-bit slice stacks, `batch` slices per Runner call (fewer where that would exceed the pixel budget);
    returns (S, H, W[, 3]) uint8."""
    out: list[np.ndarray] = []
    prepared = ((i, prepare_pair(mri8[i], other8[i], f"slice {i}")) for i in range(mri8.shape[0]))
    for keys, fused, _ in fuse_pairs(runner, prepared, batch):
        out += [f.pixels for f in fused]
        if progress:
            progress(len(keys))
    return np.stack(out)


def fuse_volume(runner: Runner, mri: Volume, other: Volume, modality: str, settings: IntensitySettings,
                batch: int = 8, progress: Callable[[int], None] | None = None) -> FusedVolume:
    start = time.perf_counter()
    mri8, other8, used = to_slices(mri, other, modality, settings)
    mapped = time.perf_counter()
    pixels = fuse_slices(runner, mri8, other8, batch, progress)
    done = time.perf_counter()
    return FusedVolume(pixels, modality, used, {"intensity_mapping": round(mapped - start, 4),
                                                "fusion": round(done - mapped, 4)})
