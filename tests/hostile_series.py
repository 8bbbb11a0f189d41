"""Bad-input cases of the volume and medical image readers (DICOM series, deflated DICOM, NIfTI) and of `dmfnet
eval`'s pairs: budgets checked on every file before any pixel is read, one patient, study, frame of reference and
modality per series, a straight stack, and headers whose structure would otherwise end in a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.bad_inputs import Case, _eval, _grey, _img, _nifti, _pair, _series, _volume
from tests.volume_fixtures import deflate_dicom, edit_dicom, write_zero_nifti_gz


def _files(series: Path) -> list[Path]:
    """The files of a fixture series in slice order (their names are shuffled)."""
    import pydicom

    return sorted(series.glob("*.dcm"), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))


def _pair_of_series(folder: Path, damage) -> list[str]:
    """fuse-volume of a 3-slice MR and CT series, after `damage(ct_files_in_slice_order)`."""
    mri, ct = _series(folder, "mri", 3, "MR"), _series(folder, "ct", 3, "CT")
    damage(_files(ct))
    return _volume(folder, mri, ct)


def _huge_later_slice(files: list[Path]) -> None:
    # not the first file by name either: the reader had checked that one only
    edit_dicom(max(files, key=lambda f: f.name), Rows=46000, Columns=46000)


def _stray(keyword: str, value: str):
    return lambda files: edit_dicom(files[1], **{keyword: value})


def _sheared(files: list[Path]) -> None:
    """Gantry tilt: each slice 2 mm further along the column direction, as a tilted CT's positions run."""
    import pydicom

    for k, f in enumerate(files):
        x, y, z = (float(v) for v in pydicom.dcmread(f).ImagePositionPatient)
        edit_dicom(f, ImagePositionPatient=[x, y + 2.0 * k, z])


def _no_spacing(folder: Path) -> list[str]:
    """PixelSpacing 0\\0 in both series: the two agree, so the pairing check saw nothing wrong."""
    mri, ct = _series(folder, "mri", 3, "MR"), _series(folder, "ct", 3, "CT")
    for f in [*mri.glob("*.dcm"), *ct.glob("*.dcm")]:
        edit_dicom(f, PixelSpacing=[0, 0])
    return _volume(folder, mri, ct)


def _zero_voxel_size(folder: Path) -> Path:
    import nibabel as nib

    image = nib.Nifti1Image(np.random.default_rng(0).random((64, 64, 3)).astype(np.float32), np.eye(4))
    image.header["pixdim"][1:4] = 0  # nibabel's loader turns this into 1 mm, with only a log line
    nib.save(image, folder / "pix0.nii.gz")
    return folder / "pix0.nii.gz"


def _nifti_volume_pair(folder: Path, other: Path) -> list[str]:
    mri = _nifti(folder, np.random.default_rng(1).random((64, 64, 3)).astype(np.float32))
    return [*_volume(folder, mri, other)[:-1], str(folder / "out" / "fused.nii"), "--other-modality", "CT"]


def _eval_sizes(folder: Path, other: tuple[int, int], fused: tuple[int, int]) -> list[str]:
    argv = _eval(folder, 64)
    _img(folder / "pairs", "MRI-CT/CT/a.png", _grey(*other))
    _img(folder / "fused", "MRI-CT/a.png", _grey(*fused))
    return argv


def _one_slice(folder: Path) -> Path:
    """A 64x64 16-bit CT image file."""
    return next(_series(folder, "one", 1, "CT").glob("*.dcm"))


def _long_pixel_data(folder: Path) -> Path:
    """A 64x64 16-bit image whose pixel data element holds 40 MB more: read whole when its frame is decoded."""
    import pydicom

    path = _one_slice(folder)
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData + bytes(40 << 20)
    ds.save_as(path)
    return path


CASES: list[Case] = [
    Case("series: a later slice declares 46000x46000", lambda d, m: _pair_of_series(d, _huge_later_slice), 2,
         "46000x46000 = 2,116,000,000 pixels exceeds the budget"),
    Case("series: a deflated slice inflating to 64 MiB (deflate bomb)", lambda d, m: _pair_of_series(
        d, lambda files: deflate_dicom(files[1], padding=64 << 20)), 2,
         "the deflated data inflates to more than the"),
    Case("DICOM: a deflate bomb as a 2D input", lambda d, m: _pair(
        d, other=deflate_dicom(_one_slice(d), padding=64 << 20)), 2,
         "the deflated data inflates to more than the"),
    Case("DICOM: pixel data 40 MB longer than its 64x64 header declares", lambda d, m: _pair(
        d, other=_long_pixel_data(d)), 2, "its pixel data holds 41,951,232 bytes but its header"),
    Case("DICOM: 5 million 1x1 frames declared by a 300-byte file", lambda d, m: _pair(d, other=edit_dicom(
        _one_slice(d), Rows=1, Columns=1, NumberOfFrames=5_000_000, PixelData=b"\0\0")), 2,
         "DICOM pixel data cannot be decoded: it holds 2 bytes, too few for what its header declares (1x1, 5000000"),
    *[Case(f"series: a slice with another {keyword}", lambda d, m, k=keyword, v=value: _pair_of_series(
        d, _stray(k, v)), 2, f"the series mixes {keyword} values")
      for keyword, value in [("PatientID", "P999"), ("StudyInstanceUID", "1.2.3.4.5"),
                             ("FrameOfReferenceUID", "1.2.3.4.6"), ("Modality", "MR")]],
    Case("series: gantry-tilt shear (positions drift in-plane)", lambda d, m: _pair_of_series(d, _sheared), 2,
         "not stacked along their normal: their positions drift 4.00 mm"),
    Case("series: PixelSpacing 0\\0 in both series", lambda d, m: _no_spacing(d), 2,
         "PixelSpacing 0\\0 mm is not a positive size"),
    Case("NIfTI: pixdim 0", lambda d, m: _nifti_volume_pair(d, _zero_voxel_size(d)), 2,
         "the header's voxel size (pixdim 0, 0, 0) is not positive and finite"),
    Case("NIfTI: an axis of length 0", lambda d, m: [*_pair(d, other=_nifti(d, np.zeros((64, 0, 3), np.float32))),
                                                    "--slice", "0"], 2, "with an axis of length 0"),
    Case("NIfTI: one slice of a volume over the voxel budget", lambda d, m: [*_pair(
        d, other=write_zero_nifti_gz(d / "huge.nii.gz", (64, 64, 131073))), "--slice", "1"], 0, ""),
    Case("eval: the sources of a pair differ in size", lambda d, m: _eval_sizes(d, (48, 64), (64, 64)), 2,
         "MRI-CT/a: the sources differ in size (MRI 64x64, CT 64x48"),
    Case("eval: a fused image of another size", lambda d, m: _eval_sizes(d, (64, 64), (48, 64)), 2,
         "MRI-CT/a: the fused image is 64x48 but its sources are 64x64"),
]
