"""Generate DICOM series and NIfTI volumes from 2D slices, for the volume tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
ORIENTATION = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


FRAME_UID = "1.2.826.0.1.3680043.8.498.20251201"  # the fixtures' one frame of reference


def write_series(folder: Path, slices: np.ndarray, modality: str, spacing=(2.0, 0.9, 0.9),
                 origin=(-100.0, -120.0, 10.0), slope: float = 1.0, intercept: float = 0.0,
                 study_uid: str | None = None, shuffle: bool = True, frame_uid: str | None = None,
                 photometric: str = "MONOCHROME2") -> list[str]:
    """One file per slice; file names are shuffled so that only positions give the order. Returns SOP UIDs.
    Every series shares one frame of reference (they are co-registered phantoms) unless `frame_uid` says."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid, frame_uid = generate_uid(), study_uid or generate_uid(), frame_uid or FRAME_UID
    order = np.random.default_rng(5).permutation(len(slices)) if shuffle else np.arange(len(slices))
    uids = []
    for i, pixels in enumerate(slices):
        ds = Dataset()
        ds.SOPClassUID = {"MR": MR_STORAGE, "CT": CT_STORAGE}.get(modality, SC_STORAGE)
        ds.SOPInstanceUID = generate_uid()
        uids.append(ds.SOPInstanceUID)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.Modality = "Test^Phantom", "P001", modality
        ds.InstanceNumber = int(order[i]) + 1
        ds.ImageOrientationPatient = ORIENTATION
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + i * spacing[0]]
        ds.PixelSpacing, ds.SliceThickness = [spacing[1], spacing[2]], spacing[0]
        ds.Rows, ds.Columns = pixels.shape[:2]
        colour = pixels.ndim == 3
        ds.SamplesPerPixel = 3 if colour else 1
        ds.PhotometricInterpretation = "RGB" if colour else photometric
        if colour:
            ds.PlanarConfiguration = 0
            ds.BitsAllocated = ds.BitsStored = 8
            ds.HighBit, ds.PixelRepresentation = 7, 0
            ds.PixelData = pixels.astype(np.uint8).tobytes()
        else:
            stored = np.round((pixels.astype(np.float64) - intercept) / slope).astype(np.int16)
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
            ds.PixelData = stored.tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.save_as(folder / f"f{order[i]:03d}_{generate_uid()[-6:]}.dcm", enforce_file_format=True)
    return uids


def write_nifti(path: Path, slices: np.ndarray, spacing=(2.0, 0.9, 0.9), origin=(-90.0, -110.0, 5.0)) -> np.ndarray:
    """(S, H, W) display slices -> NIfTI (x, y, z) with an LAS-free diagonal affine; returns the affine."""
    import nibabel as nib

    data = np.moveaxis(np.swapaxes(np.flip(slices, axis=1), 1, 2), 0, 2).astype(np.float32)
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    affine[:3, 3] = origin
    nib.save(nib.Nifti1Image(data, affine), path)
    return affine


def read_series(folder: Path) -> list[pydicom.Dataset]:
    files = sorted(folder.glob("*.dcm"))
    return sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))
