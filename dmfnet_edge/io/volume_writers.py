"""Volumes out, written atomically: NIfTI with the MRI's affine and header, or a DICOM derived series.

Fused slices are (S, H, W) uint8 grey or (S, H, W, 3) uint8 RGB, in the MRI volume's slice order.
"""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.errors import EnvironmentProblem, InputError
from dmfnet_edge.files import Companion, atomic_write_bytes, companion_staged, staged_folder
from dmfnet_edge.io.volumes import Volume

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
IMPLEMENTATION_UID_ROOT = "1.2.826.0.1.3680043.10.1465."  # organisational root for generated UIDs


def _affine(volume: Volume) -> np.ndarray:
    """Voxel (x, y, z) -> mm affine for a volume (the NIfTI one when the volume came from NIfTI)."""
    if volume.header is not None:
        return volume.header.affine
    dz, dy, dx = volume.spacing
    col, row, normal = volume.orientation  # unit vectors along columns (x), rows (y) and slices
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = col * dx, row * dy, normal * dz
    affine[:3, 3] = volume.origin
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    return lps_to_ras @ affine


def _to_nifti_layout(slices: np.ndarray) -> np.ndarray:
    """Inverse of the reader's (x, y, z) -> (z, rows flipped, columns) transform."""
    return np.moveaxis(np.swapaxes(np.flip(slices, axis=1), 1, 2), 0, 2)


def write_nifti(path: Path, fused: np.ndarray, mri: Volume, description: str,
                companion: Companion | None = None) -> Path:
    """The fused volume as NIfTI with the MRI's geometry; `companion` (its provenance) lands with it or the
    volume is not written (`files.companion_staged`)."""
    nib = require("nibabel", purpose="writing NIfTI")
    data = _to_nifti_layout(fused)
    if mri.kind == "dicom":  # DICOM rows/columns are y/x without the display flip used for NIfTI
        data = np.flip(data, axis=1)
    if data.ndim == 4:
        rgb = np.empty(data.shape[:3], dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        rgb["R"], rgb["G"], rgb["B"] = data[..., 0], data[..., 1], data[..., 2]
        data = rgb
    header = mri.header.header.copy() if mri.header is not None else None
    image = nib.Nifti1Image(data, _affine(mri), header=header)
    image.header.set_data_dtype(data.dtype)
    image.header["descrip"] = description[:79].encode()
    image.header["scl_slope"], image.header["scl_inter"] = 1.0, 0.0
    encoded = image.to_bytes() if not path.name.endswith(".gz") else _gzip(image.to_bytes())
    with companion_staged(companion, [path]) as publish_companion:
        atomic_write_bytes(path, encoded)
        publish_companion()
    return path


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, mtime=0)


def _uid(pydicom: Any) -> str:
    return pydicom.uid.generate_uid(prefix=IMPLEMENTATION_UID_ROOT)


def _copy_attributes(target: Any, source: Any, keywords: tuple[str, ...]) -> None:
    for keyword in keywords:
        if source is not None and keyword in source:
            setattr(target, keyword, getattr(source, keyword))


PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                 "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
                 "FrameOfReferenceUID")


def _reference(pydicom: Any, source: Any) -> Any:
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def _slice_dataset(pydicom: Any, pixels: np.ndarray, index: int, mri: Volume, other: Volume,
                   series: dict[str, str], description: str) -> Any:
    ds = pydicom.Dataset()
    source = mri.sources[index] if mri.sources else None
    _copy_attributes(ds, source, PATIENT_STUDY)
    ds.StudyInstanceUID = getattr(ds, "StudyInstanceUID", series["study"])
    ds.FrameOfReferenceUID = getattr(ds, "FrameOfReferenceUID", series["frame_of_reference"])
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE, _uid(pydicom)
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series["uid"], 9001, index + 1
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY", "FUSION"]
    ds.SeriesDescription = description[:64]
    ds.DerivationDescription = description[:1024]
    ds.ContentDate, ds.ContentTime = series["date"], series["time"]
    refs = [s for s in (source, other.sources[index] if other.sources else None) if s is not None]
    ds.SourceImageSequence = [_reference(pydicom, s) for s in refs]
    dz, dy, dx = mri.spacing
    ds.PixelSpacing, ds.SliceThickness = [dy, dx], dz
    ds.ImageOrientationPatient = [float(v) for v in np.concatenate([mri.orientation[0], mri.orientation[1]])]
    position = mri.origin + index * dz * mri.orientation[2]
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    ds.PhotometricInterpretation = "RGB" if pixels.ndim == 3 else "MONOCHROME2"
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def _swap_in(staging: Path, folder: Path) -> None:
    """Put the new series in place of the old one by two renames; the old one is deleted only once the new one
    is there (a failure in between puts the old one back)."""
    if not folder.exists():
        os.replace(staging, folder)
        return
    retired = folder.with_name(f".{folder.name}.replaced-{os.getpid()}")
    os.replace(folder, retired)
    try:
        os.replace(staging, folder)
    except BaseException:
        os.replace(retired, folder)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def write_dicom_series(folder: Path, fused: np.ndarray, mri: Volume, other: Volume, description: str,
                       overwrite: bool = False, companion: Companion | None = None) -> list[Path]:
    """Write one Secondary Capture file per slice into a new folder, all at once (temp folder + rename);
    `companion` (its provenance) is staged before the rename and lands right after it."""
    pydicom = require("pydicom", purpose="writing DICOM")
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise InputError(f"{folder}: exists and is not empty; choose a new folder or pass --overwrite")
    now = datetime.datetime.now(datetime.timezone.utc)
    series = {"uid": _uid(pydicom), "study": _uid(pydicom), "frame_of_reference": _uid(pydicom),
              "date": now.strftime("%Y%m%d"), "time": now.strftime("%H%M%S")}
    try:
        with staged_folder(folder) as staging:
            names = []
            for i in range(fused.shape[0]):
                ds = _slice_dataset(pydicom, fused[i], i, mri, other, series, description)
                meta = pydicom.dataset.FileMetaDataset()
                meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
                meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
                ds.file_meta = meta
                name = f"IM{i + 1:05d}.dcm"
                ds.save_as(staging / name, enforce_file_format=True)
                names.append(name)
            with companion_staged(companion, [folder / n for n in names]) as publish_companion:
                _swap_in(staging, folder)
                publish_companion()
    except OSError as exc:
        raise EnvironmentProblem(f"{folder}: writing the series failed ({exc.strerror}); nothing was written") \
            from None
    return [folder / n for n in names]
