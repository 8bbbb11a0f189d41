"""Volumes in: DICOM series (a folder, single- or multi-frame) and NIfTI files, as stacks of 2D slices. A 2D
NIfTI input is a slice of the same Volume (`read_nifti_slice`); a 2D DICOM input is a frame read by the same
per-frame reader (io/dicom_geometry.py) as the series.

Slices are ordered by their position along the slice normal (ImagePositionPatient projected on the cross
product of the ImageOrientationPatient row and column directions), never by file name. Values are the
modality LUT output (e.g. Hounsfield units for CT). Geometry (spacing, orientation, origin) is kept so that
two volumes can be checked against each other and outputs can carry the MRI's geometry.

Array layout: `data` is (S, H, W) float64 for grey volumes or (S, H, W, 3) uint8 for colour (RGB) ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.artifacts import sha256_file
from dmfnet_edge.errors import DmfnetError, InputError, describe_exception
from dmfnet_edge.io.images import regular_file
from dmfnet_edge.io.medical import Window, center_width, is_nifti
from dmfnet_edge.limits import check_pixel_budget, check_voxel_budget
from dmfnet_edge.preprocess.intensity import value_range, window_to_uint8


@dataclass
class Volume:
    """A stack of co-planar slices with its geometry. Spacing is (slice, row, column) in mm."""

    data: np.ndarray
    spacing: tuple[float, float, float]
    orientation: np.ndarray  # (3, 3): rows are the column-step, row-step and slice-step unit vectors
    origin: np.ndarray  # (3,) position of the first voxel of the first slice
    modality: str
    source: Path
    kind: str  # "dicom" or "nifti"
    sources: list[Any] = field(default_factory=list)  # per slice: pydicom datasets (DICOM) or nothing
    header: Any = None  # the nibabel image (NIfTI)
    input_sha256: str = ""
    monochrome1: bool = False  # DICOM MONOCHROME1: the 8-bit slices are inverted after the value mapping

    @property
    def slices(self) -> int:
        return self.data.shape[0]

    @property
    def plane(self) -> tuple[int, int]:
        return self.data.shape[1], self.data.shape[2]

    @property
    def is_colour(self) -> bool:
        return self.data.ndim == 4


def read_volume(path: str | Path, series_uid: str | None = None) -> Volume:
    """A DICOM series folder (or one multi-frame file) or a NIfTI file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found")
    if path.is_dir():
        return read_dicom_series(path, series_uid)
    regular_file(path, "")
    if is_nifti(path):
        return read_nifti_volume(path)
    return read_dicom_series(path, series_uid)


def _tree_sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in sorted(files):
        digest.update(sha256_file(f).encode())
    return digest.hexdigest()


def _nifti_voxels(image: Any, path: Path) -> np.ndarray:
    """The voxels as (x, y, z) float64 (the scaled values) or (x, y, z, 3) uint8 for an RGB24 file (structured R,
    G, B voxels). A 2D image gets z = 1 and singleton axes beyond the third are dropped; the shape is checked,
    and the pixel and voxel budgets applied, from the header, before any voxel is read."""
    shape = tuple(int(d) for d in image.shape)
    kept = shape[:3] + tuple(d for d in shape[3:] if d != 1)
    if not 2 <= len(kept) <= 3:
        raise InputError(f"{path}: NIfTI data of shape {shape} is not a 2D or 3D image (or RGB24 volume); a 4D "
                         "series must be split into volumes first")
    check_pixel_budget(kept[0], kept[1], str(path))
    check_voxel_budget(int(np.prod(kept)), str(path))
    if image.get_data_dtype().names:
        raw = np.asanyarray(image.dataobj)
        data = np.stack([raw[c] for c in raw.dtype.names[:3]], axis=-1).astype(np.uint8).reshape(kept + (3,))
    else:
        data = np.asarray(image.dataobj, dtype=np.float64).reshape(kept)
    return np.expand_dims(data, 2) if len(kept) == 2 else data


def read_nifti_volume(path: Path, hash_input: bool = True) -> Volume:
    """A NIfTI file as a Volume (a 2D image is a volume of one slice). `hash_input`: record the file's SHA-256
    (`input_sha256`, for the provenance record); the 2D path, which keeps no record, skips reading it twice."""
    nib = require("nibabel", purpose="reading NIfTI")
    try:
        image = nib.load(str(path))
        data = _nifti_voxels(image, path)
    except InputError:
        raise
    except Exception as exc:  # nibabel raises several types for damaged files
        raise InputError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if data.dtype != np.uint8 and not np.all(np.isfinite(data)):
        raise InputError(f"{path}: volume contains NaN or Inf values")
    # (x, y, z[, c]) -> (z, rows = y flipped, columns = x[, c]), as 2D slices are shown
    slices = np.flip(np.swapaxes(np.moveaxis(data, 2, 0), 1, 2), axis=1)
    zooms = tuple(image.header.get_zooms()) + (1.0, 1.0, 1.0)
    directions = image.affine[:3, :3] / np.maximum(np.linalg.norm(image.affine[:3, :3], axis=0), 1e-12)
    return Volume(np.ascontiguousarray(slices), (float(zooms[2]), float(zooms[1]), float(zooms[0])),
                  directions.T.copy(), image.affine[:3, 3].copy(), "", path, "nifti", header=image,
                  input_sha256=sha256_file(path) if hash_input else "")


def read_nifti_slice(path: Path, index: int | None = None, window: Window | None = None
                     ) -> tuple[np.ndarray, dict]:
    """One slice of the NIfTI file's Volume (a 2D image: its only slice) as uint8 grey, or RGB for an RGB24 file
    (colours kept as stored, as `fuse-volume` keeps them). Grey values are windowed by `window` if given, else by
    the whole volume's 0.5th..99.5th percentiles, so every slice of one volume shares one scale (and the voxel
    budget, checked before reading, bounds the memory of reading it whole)."""
    volume = read_nifti_volume(path, hash_input=False)
    if index is None and volume.slices > 1:
        raise InputError(f"{path}: a volume of {volume.slices} slices; pick one with --slice N "
                         "or fuse the whole volume with 'dmfnet fuse-volume'")
    index = 0 if index is None else index
    if not 0 <= index < volume.slices:
        raise InputError(f"{path}: slice {index} out of range (0..{volume.slices - 1})")
    meta: dict[str, Any] = {"format": "nifti", "shape": list(volume.header.shape)}
    if volume.is_colour:
        if window is not None:
            raise InputError(f"{path}: an RGB NIfTI holds display colours; a window does not apply to it")
        return volume.data[index].copy(), {**meta, "colour": "rgb"}
    lower, upper = center_width(window) if window else value_range(volume.data, "percentile")
    return window_to_uint8(volume.data[index], lower, upper, str(path)), meta


def _dicom_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(f"{path}: empty folder; expected the files of one DICOM series")
    return files


def _read_headers(files: list[Path]) -> list[Any]:
    pydicom = require("pydicom", purpose="reading DICOM")
    datasets = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f))
        except Exception:  # not DICOM (e.g. a DICOMDIR index or a stray text file): skip it
            continue
        if "PixelData" in ds:
            ds.filename = str(f)
            datasets.append(ds)
    return datasets


def _select_series(datasets: list[Any], folder: Path, series_uid: str | None) -> list[Any]:
    by_series: dict[str, list[Any]] = {}
    for ds in datasets:
        by_series.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), []).append(ds)
    if not by_series:
        raise InputError(f"{folder}: no DICOM image with pixel data found")
    if series_uid is not None:
        if series_uid not in by_series:
            raise InputError(f"{folder}: no series {series_uid}; found {sorted(by_series)}")
        return by_series[series_uid]
    if len(by_series) > 1:
        raise InputError(f"{folder}: holds {len(by_series)} series ({', '.join(sorted(by_series))}); "
                         "pick one with --mri-series/--other-series UID")
    return next(iter(by_series.values()))


def read_dicom_series(path: Path, series_uid: str | None = None) -> Volume:
    """A DICOM series (or one multi-frame file) as a Volume; damaged files give an InputError."""
    try:
        return _read_dicom_series(path, series_uid)
    except DmfnetError:
        raise
    except Exception as exc:  # pydicom parses lazily: damaged elements raise many exception types, anywhere
        raise InputError(f"{path}: not a readable DICOM series ({describe_exception(exc)})") from None


def _read_dicom_series(path: Path, series_uid: str | None) -> Volume:
    from dmfnet_edge.io.dicom_geometry import frames_of

    files = _dicom_files(path)
    datasets = _select_series(_read_headers(files), path, series_uid)
    frames = [frame for ds in datasets for frame in frames_of(ds)]
    normal = frames[0].normal
    for frame in frames:
        if not np.allclose(frame.orientation, frames[0].orientation, atol=1e-4):
            raise InputError(f"{path}: slices have different orientations; not one stack")
    rows, cols = int(getattr(datasets[0], "Rows", 0) or 0), int(getattr(datasets[0], "Columns", 0) or 0)
    check_pixel_budget(cols, rows, str(path))
    check_voxel_budget(rows * cols * len(frames), str(path))
    frames.sort(key=lambda fr: float(np.dot(fr.position, normal)))
    positions = np.array([float(np.dot(fr.position, normal)) for fr in frames])
    gaps = np.diff(positions)
    if len(gaps) and (np.any(gaps <= 1e-6) or np.ptp(gaps) > 0.01 * max(abs(gaps.mean()), 1e-6) + 1e-3):
        raise InputError(f"{path}: slice positions are duplicated or unevenly spaced "
                         f"(gaps {np.round(np.unique(np.round(gaps, 3)), 3).tolist()} mm)")
    if len({fr.monochrome1 for fr in frames}) > 1:
        raise InputError(f"{path}: the series mixes MONOCHROME1 and MONOCHROME2 slices; no one grey scale fits "
                         "both")
    data = np.stack([fr.pixels() for fr in frames])
    first = frames[0]
    dz = float(gaps.mean()) if len(gaps) else first.thickness
    return Volume(data, (dz, first.spacing[0], first.spacing[1]),
                  np.stack([first.orientation[:3], first.orientation[3:], normal]), first.position,
                  first.modality, path, "dicom", sources=[fr.dataset for fr in frames],
                  input_sha256=_tree_sha256([Path(ds.filename) for ds in datasets]),
                  monochrome1=first.monochrome1)
