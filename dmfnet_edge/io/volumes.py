"""Volumes in: DICOM series (a folder, single- or multi-frame) and NIfTI files, as stacks of 2D slices. A 2D
NIfTI input is one slice, read alone (`read_nifti_slice`) under the same header checks and orientation as the
volume; a 2D DICOM input is a frame read by the same per-frame reader (io/dicom_geometry.py) as the series.

Before any pixel of a series is read, every file's header is checked against the budgets (io/dicom_files.py), and
the files must be one patient, study, frame of reference and modality, of one size; their frames must form one
straight, evenly spaced stack (`dicom_geometry.stack_frames`). A NIfTI header's shape, budgets and stored voxel
size are checked before any voxel is read.

Slices are ordered by their position along the slice normal (ImagePositionPatient projected on the cross
product of the ImageOrientationPatient row and column directions), never by file name. Values are the
modality LUT output (e.g. Hounsfield units for CT). Geometry (spacing, orientation, origin) is kept so that
two volumes can be checked against each other and outputs can carry the MRI's geometry.

Array layout: `data` is (S, H, W) float64 for grey volumes or (S, H, W, 3) uint8 for colour (RGB) ones.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.artifacts import sha256_file
from dmfnet_edge.errors import DmfnetError, InputError, describe_exception, one_line
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


# sizeof_hdr -> (dim format, offset, pixdim format, offset): NIfTI-1 and NIfTI-2 headers
NIFTI_FIELDS = {348: ("8h", 40, "8f", 76), 540: ("8q", 16, "8d", 104)}


def _stored_voxel_size(path: Path) -> list[float]:
    """pixdim of the spatial axes as the file stores it (nibabel turns 0 into 1 mm, and a negative size into its
    magnitude, when it loads a header, with only a log line to say so); [] where the header is not understood
    (nibabel's loader then says why)."""
    nib = require("nibabel", purpose="reading NIfTI")
    try:
        with nib.openers.ImageOpener(str(path)) as handle:
            head = handle.read(540)
        for order in "<>":
            layout = NIFTI_FIELDS.get(struct.unpack_from(order + "i", head)[0])
            if layout:
                dims = struct.unpack_from(order + layout[0], head, layout[1])
                pixdim = struct.unpack_from(order + layout[2], head, layout[3])
                return [float(v) for v in pixdim[1:1 + min(max(dims[0], 0), 3)]]
    except Exception:  # damaged or not NIfTI: reported by the loader
        return []
    return []


def _check_voxel_size(path: Path) -> None:
    sizes = _stored_voxel_size(path)
    if not all(np.isfinite(v) and v > 0 for v in sizes):
        raise InputError(f"{path}: the header's voxel size (pixdim {', '.join(f'{v:g}' for v in sizes)}) is not "
                         "positive and finite; expected the voxel size in mm: correct the header (e.g. nibabel, "
                         "fslmodhd) or re-export the file")


def _load_nifti(path: Path) -> Any:
    """The nibabel image: its header parsed (the stored voxel size checked first), no voxel read yet."""
    nib = require("nibabel", purpose="reading NIfTI")
    _check_voxel_size(path)
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for damaged files
        raise InputError(f"{path}: not a readable NIfTI file ({describe_exception(exc)})") from None


def _read_voxels(read: Callable[[], np.ndarray], path: Path) -> np.ndarray:
    try:
        return read()
    except Exception as exc:  # a damaged or truncated file fails only when its voxels are read
        raise InputError(f"{path}: not a readable NIfTI file ({describe_exception(exc)})") from None


def _kept_shape(image: Any, path: Path) -> tuple[int, ...]:
    """(x, y) or (x, y, z): the header's shape with singleton axes beyond the third dropped, checked before any voxel
    is read: every axis at least 1 long, two or three axes, one slice within the pixel budget."""
    shape = tuple(int(d) for d in image.shape)
    if min(shape, default=0) < 1:
        raise InputError(f"{path}: the NIfTI header declares shape {shape}, with an axis of length 0; the file holds "
                         "no image (re-export it)")
    kept = shape[:3] + tuple(d for d in shape[3:] if d != 1)
    if not 2 <= len(kept) <= 3:
        raise InputError(f"{path}: NIfTI data of shape {shape} is not a 2D or 3D image (or RGB24 volume); a 4D "
                         "series must be split into volumes first")
    check_pixel_budget(kept[0], kept[1], str(path))
    return kept


def _values(raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Voxels as read by nibabel -> `shape` float64 (the scaled values), or `shape` + (3,) uint8 for an RGB24 file
    (structured R, G, B voxels)."""
    if raw.dtype.names:
        return np.stack([raw[c] for c in raw.dtype.names[:3]], axis=-1).astype(np.uint8).reshape(shape + (3,))
    return np.asarray(raw, dtype=np.float64).reshape(shape)


def _display_slices(data: np.ndarray) -> np.ndarray:
    """(x, y, z[, c]) voxels -> (z, rows = y flipped, columns = x[, c]) slices, as 2D slices are shown."""
    return np.flip(np.swapaxes(np.moveaxis(data, 2, 0), 1, 2), axis=1)


def read_nifti_volume(path: Path) -> Volume:
    """A NIfTI file as a Volume (a 2D image is a volume of one slice). The shape, the budgets and the voxel size
    are checked from the header before any voxel is read; the file's SHA-256 is kept for the provenance record."""
    image = _load_nifti(path)
    kept = _kept_shape(image, path)
    check_voxel_budget(int(np.prod(kept)), str(path))
    data = _values(_read_voxels(lambda: np.asanyarray(image.dataobj), path), kept)
    if data.dtype != np.uint8 and not np.all(np.isfinite(data)):
        raise InputError(f"{path}: volume contains NaN or Inf values")
    slices = _display_slices(np.expand_dims(data, 2) if len(kept) == 2 else data)
    zooms = tuple(image.header.get_zooms()) + (1.0, 1.0, 1.0)
    directions = image.affine[:3, :3] / np.maximum(np.linalg.norm(image.affine[:3, :3], axis=0), 1e-12)
    return Volume(np.ascontiguousarray(slices), (float(zooms[2]), float(zooms[1]), float(zooms[0])),
                  directions.T.copy(), image.affine[:3, 3].copy(), "", path, "nifti", header=image,
                  input_sha256=sha256_file(path))


def read_nifti_slice(path: Path, index: int | None = None, window: Window | None = None
                     ) -> tuple[np.ndarray, dict]:
    """One slice of a NIfTI file (a 2D image: its only slice) as uint8 grey, or RGB for an RGB24 file (colours
    kept as stored, as `fuse-volume` keeps them), oriented as `fuse-volume` orients its slices. Only that slice is
    read (nibabel's lazy slicing), so memory is one slice's whatever the volume; the voxel budget does not apply.
    Grey values are windowed by `window` if given, else by the slice's own 0.5th..99.5th percentiles (not the
    volume's: that would read the volume; docs/DATA.md)."""
    image = _load_nifti(path)
    kept = _kept_shape(image, path)
    count = kept[2] if len(kept) == 3 else 1
    if index is None and count > 1:
        raise InputError(f"{path}: a volume of {count} slices; pick one with --slice N "
                         "or fuse the whole volume with 'dmfnet fuse-volume'")
    index = 0 if index is None else index
    if not 0 <= index < count:
        raise InputError(f"{path}: slice {index} out of range (0..{count - 1})")
    key = (slice(None), slice(None)) + ((index,) + (0,) * (len(image.shape) - 3) if len(image.shape) > 2 else ())
    plane = _values(_read_voxels(lambda: np.asanyarray(image.dataobj[key]), path), kept[:2])
    plane = _display_slices(np.expand_dims(plane, 2))[0]
    meta: dict[str, Any] = {"format": "nifti", "shape": list(image.shape)}
    if plane.dtype == np.uint8:
        if window is not None:
            raise InputError(f"{path}: an RGB NIfTI holds display colours; a window does not apply to it")
        return np.ascontiguousarray(plane), {**meta, "colour": "rgb"}
    if not np.all(np.isfinite(plane)):
        raise InputError(f"{path}: slice {index} contains NaN or Inf values")
    lower, upper = center_width(window) if window else value_range(plane, "percentile")
    return window_to_uint8(plane, lower, upper, str(path)), meta


def _dicom_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(f"{path}: empty folder; expected the files of one DICOM series")
    return files


def _read_headers(files: list[Path]) -> list[Any]:
    """The datasets of the files that hold pixel data, each read without its large elements (io/dicom_files.py)."""
    from dmfnet_edge.io.dicom_files import read_dataset

    datasets = []
    for f in files:
        try:
            ds = read_dataset(f)
        except InputError:  # DICOM, but refused (a deflate bomb): not a file to skip
            raise
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


SERIES_IDENTITY = ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "Modality")


def _check_one_series(datasets: list[Any], path: Path) -> None:
    """The files of one series must be one patient, study, frame of reference and modality (a stray file of
    another patient would be fused into the volume), each within the budgets by its own header, all of one size,
    and together within the voxel budget: checked before any pixel is read."""
    from dmfnet_edge.io.dicom_files import check_declared_geometry, geometry

    for keyword in SERIES_IDENTITY:
        seen: dict[str, str] = {}
        for ds in datasets:
            seen.setdefault(str(ds.get(keyword) or ""), ds.filename)
        if len(seen) > 1:
            (a, file_a), (b, file_b) = list(seen.items())[:2]
            raise InputError(one_line(f"{path}: the series mixes {keyword} values ('{a[:64]}' in {Path(file_a).name}, "
                                      f"'{b[:64]}' in {Path(file_b).name}); one series is one patient, study, frame of "
                                      "reference and modality: remove the stray file(s) from the folder", 400))
    for ds in datasets:
        check_declared_geometry(ds, ds.filename)
    sizes = {geometry(ds)[:2] for ds in datasets}
    if len(sizes) > 1:
        raise InputError(f"{path}: the series mixes slice sizes ({', '.join(f'{c}x{r}' for r, c in sorted(sizes))}); "
                         "one stack has one size")
    check_voxel_budget(sum(int(np.prod(geometry(ds))) for ds in datasets), str(path))


def _read_dicom_series(path: Path, series_uid: str | None) -> Volume:
    from dmfnet_edge.io.dicom_geometry import frames_of, stack_frames

    files = _dicom_files(path)
    datasets = _select_series(_read_headers(files), path, series_uid)
    _check_one_series(datasets, path)
    frames, step = stack_frames([frame for ds in datasets for frame in frames_of(ds)], str(path))
    if len({fr.monochrome1 for fr in frames}) > 1:
        raise InputError(f"{path}: the series mixes MONOCHROME1 and MONOCHROME2 slices; no one grey scale fits "
                         "both")
    data = np.stack([fr.pixels() for fr in frames])
    first = frames[0]
    return Volume(data, (step, first.spacing[0], first.spacing[1]),
                  np.stack([first.orientation[:3], first.orientation[3:], first.normal]), first.position,
                  first.modality, path, "dicom", sources=[fr.dataset for fr in frames],
                  input_sha256=_tree_sha256([Path(ds.filename) for ds in datasets]),
                  monochrome1=first.monochrome1)
