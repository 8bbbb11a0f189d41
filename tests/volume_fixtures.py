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


def write_multiframe(path: Path, frames: np.ndarray, modality: str = "MR", spacing=(2.0, 0.9, 0.9),
                     origin=(-100.0, -120.0, 10.0), enhanced: bool = False, reverse: bool = False) -> None:
    """One multi-frame file of (F, H, W) integer frames. Legacy style: one position plus SpacingBetweenSlices;
    enhanced style: per-frame positions in PerFrameFunctionalGroupsSequence (stored in reverse slice order with
    `reverse`, so that only the positions give the order)."""
    from pydicom.sequence import Sequence

    path.parent.mkdir(parents=True, exist_ok=True)
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1" if enhanced else MR_STORAGE
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.FrameOfReferenceUID, ds.PatientName, ds.PatientID, ds.Modality = FRAME_UID, "Test^Phantom", "P001", modality
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    order = list(range(len(frames)))[::-1] if reverse else list(range(len(frames)))
    positions = [[origin[0], origin[1], origin[2] + k * spacing[0]] for k in order]
    if enhanced:
        shared = Dataset()
        orient, measures = Dataset(), Dataset()
        orient.ImageOrientationPatient = ORIENTATION
        measures.PixelSpacing, measures.SliceThickness = [spacing[1], spacing[2]], spacing[0]
        shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = Sequence([orient]), Sequence([measures])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        per_frame = []
        for position in positions:
            item, plane = Dataset(), Dataset()
            plane.ImagePositionPatient = position
            item.PlanePositionSequence = Sequence([plane])
            per_frame.append(item)
        ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    else:
        ds.ImageOrientationPatient, ds.ImagePositionPatient = ORIENTATION, positions[0]
        ds.PixelSpacing, ds.SliceThickness, ds.SpacingBetweenSlices = [spacing[1], spacing[2]], spacing[0], spacing[0]
    ds.PixelData = np.stack([frames[k] for k in order]).astype(np.int16).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def edit_dicom(path: Path, **values) -> Path:
    """Set header keywords of one DICOM file in place (a fixture's damage: another patient, a drifting position)."""
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    return path


def deflate_dicom(path: Path, padding: int = 0) -> Path:
    """Re-save one DICOM file in the Deflated Explicit VR Little Endian transfer syntax, with `padding` zero bytes
    of Data Set Trailing Padding (FFFC,FFFC) after the pixel data: a deflate bomb when large, since zeros inflate
    about a thousandfold."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    if padding:
        ds.DataSetTrailingPadding = bytes(padding)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_zero_nifti_gz(path: Path, shape: tuple[int, ...]) -> Path:
    """A gzipped uint8 NIfTI-2 volume of zeros (NIfTI-2: axes longer than NIfTI-1's 32767), streamed to disk: a
    volume over the voxel budget costs a few MB."""
    import gzip

    import nibabel as nib

    header = nib.Nifti2Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    header.set_data_offset(len(header.binaryblock) + 4)  # the header, then 4 bytes saying "no extensions"
    block, left = bytes(1 << 24), int(np.prod(shape))
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(header.binaryblock + b"\0" * (int(header["vox_offset"]) - len(header.binaryblock)))
        while left:
            handle.write(block[:min(left, len(block))])
            left -= min(left, len(block))
    return path
