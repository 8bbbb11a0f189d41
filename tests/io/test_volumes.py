"""Volumes: DICOM series and NIfTI in, fused NIfTI / DICOM derived series out, geometry, UIDs, provenance."""

import json

import numpy as np
import pydicom
import pytest

from dmfnet_edge.cli.main import main
from dmfnet_edge.errors import InputError, PairingError
from dmfnet_edge.io.volumes import read_volume
from dmfnet_edge.pipeline import fuse_pixels
from dmfnet_edge.preprocess.intensity import to_uint8, value_range
from dmfnet_edge.runtime.torch_backend import TorchRunner
from tests.conftest import smooth_image
from tests.volume_fixtures import read_series, write_multiframe, write_nifti, write_series

nib = pytest.importorskip("nibabel")
SLICES = 4


@pytest.fixture(scope="module")
def stacks():
    rng = np.random.default_rng(3)
    mri = np.stack([smooth_image(rng, 64, 80) for _ in range(SLICES)])
    ct = np.stack([smooth_image(rng, 64, 80) for _ in range(SLICES)])
    pet = np.stack([smooth_image(rng, 64, 80, colour=True) for _ in range(SLICES)])
    return mri, ct, pet


@pytest.fixture(scope="module")
def series(stacks, tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom")
    mri, ct, pet = stacks
    uids = {"MR": write_series(root / "mri", mri, "MR"), "CT": write_series(root / "ct", ct, "CT", slope=1.0,
                                                                             intercept=-1024.0)}
    uids["PT"] = write_series(root / "pet", pet, "PT")
    return root, uids


def fuse(*argv):
    return main(["fuse-volume", *argv])


def test_dicom_series_is_sorted_by_position_with_modality_lut(series, stacks):
    root, _ = series
    volume = read_volume(root / "ct")
    assert volume.slices == SLICES and volume.spacing == pytest.approx((2.0, 0.9, 0.9))
    assert np.allclose(volume.data, stacks[1].astype(np.float64))  # stored = v + 1024, the LUT undoes it
    assert np.allclose(volume.origin, [-100, -120, 10]) and volume.modality == "CT"


def test_round_trip_matches_the_2d_path_pixel_for_pixel(series, stacks, tmp_path, tiny_model_base):
    root, uids = series
    runner = TorchRunner.load(str(tiny_model_base))
    for other, stack, modality in [("ct", stacks[1], "CT"), ("pet", stacks[2], "PT")]:
        out = tmp_path / f"fused-{other}"
        assert fuse("--mri", str(root / "mri"), "--other", str(root / other), "-o", str(out), "--model",
                    str(tiny_model_base), "--backend", "torch", "--mri-intensity", "none", "--other-intensity",
                    "none", "--batch", "1") == 0
        back = read_series(out)
        assert len(back) == SLICES
        for i, ds in enumerate(back):
            expected = fuse_pixels(runner, stacks[0][i], stack[i]).pixels
            assert np.array_equal(ds.pixel_array, expected)
            refs = {r.ReferencedSOPInstanceUID for r in ds.SourceImageSequence}
            assert refs == {uids["MR"][i], uids[modality][i]}
            assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and "DM-FNet" in ds.SeriesDescription
        assert len({ds.SOPInstanceUID for ds in back}) == SLICES and len({ds.SeriesInstanceUID for ds in back}) == 1
        assert back[0].SeriesInstanceUID not in {pydicom.dcmread(next((root / "mri").iterdir())).SeriesInstanceUID}
        geometry = read_volume(out)
        assert geometry.spacing == pytest.approx((2.0, 0.9, 0.9)) and np.allclose(geometry.origin, [-100, -120, 10])
        assert json.loads(out.with_name(out.name + ".provenance.json").read_text())["inputs"]["mri"]["sha256"]


def test_nifti_output_keeps_the_mri_affine(tmp_path, stacks, tiny_model_base):
    mri_affine = write_nifti(tmp_path / "mri.nii.gz", stacks[0].astype(np.float32))
    write_nifti(tmp_path / "ct.nii.gz", stacks[1].astype(np.float32) * 4 - 1000)
    out = tmp_path / "fused.nii.gz"
    assert fuse("--mri", str(tmp_path / "mri.nii.gz"), "--other", str(tmp_path / "ct.nii.gz"), "--other-modality",
                "CT", "-o", str(out), "--model", str(tiny_model_base), "--backend", "torch") == 0
    image = nib.load(out)
    assert np.allclose(image.affine, mri_affine) and image.shape == (80, 64, SLICES)
    assert image.get_data_dtype() == np.uint8
    back = read_volume(out)
    assert back.data.shape == (SLICES, 64, 80)
    provenance = json.loads((tmp_path / "fused.nii.gz.provenance.json").read_text())
    assert provenance["intensity"]["other"] == "brain" and provenance["model"]["model"] == "tiny"


def test_simpleitk_reads_the_outputs_with_correct_geometry(series, tmp_path, tiny_model_base):
    sitk = pytest.importorskip("SimpleITK")
    root, _ = series
    out = tmp_path / "fused"
    assert fuse("--mri", str(root / "mri"), "--other", str(root / "pet"), "-o", str(out), "--model",
                str(tiny_model_base), "--backend", "torch") == 0
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(out)))
    image = reader.Execute()
    assert image.GetSize() == (80, 64, SLICES) and image.GetNumberOfComponentsPerPixel() == 3
    assert np.allclose(image.GetSpacing(), (0.9, 0.9, 2.0)) and np.allclose(image.GetOrigin(), (-100, -120, 10))


@pytest.mark.parametrize("change, message", [("slices", "slice count differs"), ("spacing", "spacing differs")])
def test_mismatched_volumes_are_refused_before_any_work(stacks, tmp_path, tiny_model_base, change, message, capsys):
    write_series(tmp_path / "mri", stacks[0], "MR")
    other = stacks[1][:-1] if change == "slices" else stacks[1]
    write_series(tmp_path / "ct", other, "CT", spacing=(2.0, 0.9, 0.9) if change == "slices" else (3.0, 0.9, 0.9))
    assert fuse("--mri", str(tmp_path / "mri"), "--other", str(tmp_path / "ct"), "-o", str(tmp_path / "out"),
                "--model", str(tiny_model_base)) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_series_in_different_frames_of_reference_are_refused_unless_vouched_for(stacks, tmp_path, tiny_model_base,
                                                                                capsys):
    from pydicom.uid import generate_uid

    write_series(tmp_path / "mri", stacks[0], "MR")
    write_series(tmp_path / "ct", stacks[1], "CT", frame_uid=generate_uid())
    argv = ["--mri", str(tmp_path / "mri"), "--other", str(tmp_path / "ct"), "--model", str(tiny_model_base),
            "--backend", "torch"]
    assert fuse(*argv, "-o", str(tmp_path / "out")) == 2
    assert "different frames of reference" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert fuse(*argv, "-o", str(tmp_path / "out.nii"), "--assume-registered") == 0
    record = json.loads((tmp_path / "out.nii.provenance.json").read_text())
    assert record["geometry"]["assumed_registered"] is True  # the provenance says who vouched


@pytest.mark.parametrize("kind", ["dicom", "nifti"])
def test_volumes_that_do_not_cover_the_same_place_are_refused(stacks, tmp_path, tiny_model_base, kind, capsys):
    """Same grid, same frame, origins 500 mm apart: fused silently before; refused now, naming the distance."""
    if kind == "dicom":
        write_series(tmp_path / "mri", stacks[0], "MR")
        write_series(tmp_path / "ct", stacks[1], "CT", origin=(400.0, -120.0, 310.0))
        mri, other = tmp_path / "mri", tmp_path / "ct"
    else:
        pytest.importorskip("nibabel")
        mri, other = tmp_path / "mri.nii.gz", tmp_path / "ct.nii.gz"
        write_nifti(mri, stacks[0].astype(np.float32))
        write_nifti(other, stacks[1].astype(np.float32), origin=(410.0, -110.0, 305.0))
    code = fuse("--mri", str(mri), "--other", str(other), "-o", str(tmp_path / "out.nii"), "--model",
                str(tiny_model_base), "--other-modality", "CT")
    err = capsys.readouterr().err
    assert code == 2 and "the volumes start 583.1 mm apart" in err and "pass --resample" in err, err
    assert not (tmp_path / "out.nii").exists()


def _linear_weights(out_start: float, out_step: float, count: int, in_start: float, in_step: float,
                    size: int) -> np.ndarray:
    """(count, size) weights of 1-D linear interpolation: output sample i at out_start + i * out_step (mm) from
    input samples at in_start + j * in_step; every output sample must lie inside the input's extent."""
    position = (out_start + out_step * np.arange(count) - in_start) / in_step
    below = np.floor(position).astype(int)
    assert below.min() >= 0 and below.max() + 1 < size, "the output grid must lie inside the input"
    weights = np.zeros((count, size))
    weights[np.arange(count), below] = 1 - (position - below)
    weights[np.arange(count), below + 1] = position - below
    return weights


def _standard_read(sitk, folder):
    """A DICOM series as SimpleITK (GDCM) reads it: its own sorting and geometry, none of ours."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_resample_puts_the_other_volume_on_the_mri_grid(stacks, tmp_path, tiny_model_base, monkeypatch):
    """--resample: the CT, on a grid of its own (other spacing on all three axes, shifted by fractions of a voxel),
    lands on the MRI's grid with the voxels of an independent trilinear sampling at the MRI's voxel centres (hand
    computed: both grids are axis-aligned, so it separates per axis); the fused series is on the MRI's grid, as a
    standard reader sees it, and its slices are the fusion of the MRI's with that resampled CT's."""
    sitk = pytest.importorskip("SimpleITK")
    import dmfnet_edge.cli.volume_cmd as volume_cmd
    from dmfnet_edge.volume_pipeline import IntensitySettings, to_slices

    rng = np.random.default_rng(8)
    ct = np.stack([smooth_image(rng, 80, 72) for _ in range(7)]).astype(np.float64)
    ct_spacing, ct_origin = (1.5, 0.8, 1.1), (-103.3, -124.1, 8.6)  # (slice, row, column); (x, y, z) mm
    write_series(tmp_path / "mri", stacks[0], "MR")  # 2.0 x 0.9 x 0.9 mm from (-100, -120, 10)
    write_series(tmp_path / "ct", ct, "CT", spacing=ct_spacing, origin=ct_origin)
    resampled, original = [], volume_cmd.resample_onto

    def recorded(other, mri):
        resampled.append(original(other, mri))
        return resampled[-1]

    monkeypatch.setattr(volume_cmd, "resample_onto", recorded)
    out = tmp_path / "fused"
    assert fuse("--mri", str(tmp_path / "mri"), "--other", str(tmp_path / "ct"), "-o", str(out), "--model",
                str(tiny_model_base), "--backend", "torch", "--resample", "--mri-intensity", "none",
                "--other-intensity", "none") == 0
    (other,) = resampled
    mri = read_volume(tmp_path / "mri")
    expected = np.einsum("ai,bj,ck,ijk->abc", _linear_weights(10.0, 2.0, SLICES, 8.6, 1.5, 7),
                         _linear_weights(-120.0, 0.9, 64, -124.1, 0.8, 80),
                         _linear_weights(-100.0, 0.9, 80, -103.3, 1.1, 72), ct, optimize=True)
    assert other.data.shape == mri.data.shape == (SLICES, 64, 80)
    assert np.abs(other.data - expected).max() < 1e-3  # float32 resampling of values up to 255
    assert other.spacing == mri.spacing and np.array_equal(other.origin, mri.origin)
    source, fused = _standard_read(sitk, tmp_path / "mri"), _standard_read(sitk, out)
    assert fused.GetSize() == source.GetSize() == (80, 64, SLICES)
    assert np.allclose(fused.GetSpacing(), source.GetSpacing(), atol=1e-6)
    assert np.allclose(fused.GetOrigin(), source.GetOrigin(), atol=1e-4)
    assert np.allclose(fused.GetDirection(), source.GetDirection(), atol=1e-6)
    mri8, other8, _ = to_slices(mri, other, "CT", IntensitySettings("none", "none"))
    middle = SLICES // 2  # one slice fused again here is enough to tie the output to the resampled CT
    again = fuse_pixels(TorchRunner.load(str(tiny_model_base)), mri8[middle], other8[middle]).pixels
    assert np.array_equal(sitk.GetArrayFromImage(fused)[middle], again)


def test_wrong_modality_tags_are_refused(series, tmp_path, tiny_model_base, capsys):
    root, _ = series
    assert fuse("--mri", str(root / "ct"), "--other", str(root / "mri"), "-o", str(tmp_path / "x"), "--model",
                str(tiny_model_base)) == 2
    assert "swap" in capsys.readouterr().err


def test_failed_write_leaves_no_series(series, tmp_path, tiny_model_base, monkeypatch):
    root, _ = series
    calls = {"n": 0}
    original = pydicom.Dataset.save_as

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pydicom.Dataset, "save_as", flaky)
    assert fuse("--mri", str(root / "mri"), "--other", str(root / "ct"), "-o", str(tmp_path / "out"), "--model",
                str(tiny_model_base), "--backend", "torch") == 3
    assert list(tmp_path.iterdir()) == []


def test_rescale_slope_is_applied(tmp_path, stacks):
    even = (stacks[1] // 2 * 2).astype(np.float64) - 500
    write_series(tmp_path / "ct", even, "CT", slope=2.0, intercept=-1024.0)
    assert np.array_equal(read_volume(tmp_path / "ct").data, even)


def test_intensity_specs():
    values = np.linspace(-1000, 1000, 2001)
    assert value_range(values, "brain") == (0.0, 80.0)
    assert value_range(values, "window:100,50") == (75.0, 125.0)
    assert value_range(values, "percentile:0,100") == (-1000.0, 1000.0)
    assert to_uint8(values, "minmax")[[0, -1]].tolist() == [0, 255]
    with pytest.raises(InputError, match="0..255"):
        to_uint8(values, "none")
    with pytest.raises(InputError, match="two numbers"):
        value_range(values, "window:abc")


def test_monochrome1_is_inverted_after_the_window_by_one_rule(tmp_path):
    """Both readers invert MONOCHROME1 after mapping values to 8 bits, over one scale for the whole series (the
    volume reader used to invert each slice around its own range, before the window)."""
    from dmfnet_edge.io.medical import read_dicom
    from dmfnet_edge.volume_pipeline import IntensitySettings, to_slices

    ramp = np.linspace(0.0, 1.0, 64 * 80).reshape(64, 80)
    values = np.round(np.stack([100 + 300 * ramp, 900 * ramp]))  # slices with different ranges (integers: stored)
    write_series(tmp_path / "m1", values, "MR", photometric="MONOCHROME1", shuffle=False)
    write_series(tmp_path / "m2", values, "MR", shuffle=False)
    inverted, plain = read_volume(tmp_path / "m1"), read_volume(tmp_path / "m2")
    assert inverted.monochrome1 and not plain.monochrome1
    assert np.array_equal(inverted.data, plain.data)  # values are never inverted, only the displayed pixels
    for spec in ("window:450,900", "percentile", "minmax"):
        settings = IntensitySettings(mri=spec, other=spec, colormap="none")
        shown, _, _ = to_slices(inverted, inverted, "CT", settings)
        reference, _, _ = to_slices(plain, plain, "CT", settings)
        assert np.array_equal(shown, 255 - reference), spec
    for k, path in enumerate(sorted((tmp_path / "m1").glob("*.dcm"))):  # the 2D reader: same rule, same pixels
        pixels, meta = read_dicom(path, window=(450.0, 900.0))
        assert meta["photometric"] == "MONOCHROME1"
        assert np.array_equal(pixels, 255 - to_uint8(values[k], "window:450,900"))
    with pytest.raises(InputError, match="mixes MONOCHROME1 and MONOCHROME2"):
        mixed = tmp_path / "mixed"
        write_series(mixed, values, "MR", photometric="MONOCHROME1", shuffle=False)
        ds = pydicom.dcmread(sorted(mixed.glob("*.dcm"))[1])
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.save_as(sorted(mixed.glob("*.dcm"))[1])
        read_volume(mixed)


@pytest.mark.parametrize("enhanced", [False, True], ids=["legacy", "enhanced"])
def test_a_multiframe_file_is_one_volume_and_its_frames_are_decoded_one_by_one(tmp_path, enhanced, monkeypatch):
    """Legacy multi-frame (one position + SpacingBetweenSlices) and enhanced (per-frame positions, stored here in
    reverse order) files read as one sorted volume; the 2D reader decodes only the frame asked for."""
    from dmfnet_edge.io.medical import read_dicom

    frames = np.random.default_rng(8).integers(0, 1000, (3, 64, 80))
    path = tmp_path / "multiframe.dcm"
    write_multiframe(path, frames, enhanced=enhanced, reverse=enhanced)
    volume = read_volume(path)
    assert volume.slices == 3 and np.array_equal(volume.data, frames.astype(np.float64))
    assert volume.spacing == pytest.approx((2.0, 0.9, 0.9)) and np.allclose(volume.origin, [-100, -120, 10])
    stored = frames[::-1] if enhanced else frames  # the file's own frame order
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array",
                        property(lambda ds: pytest.fail("the 2D reader decoded every frame")))
    for k in range(3):
        pixels, _ = read_dicom(path, window=(500.0, 1000.0), frame=k)
        assert np.array_equal(pixels, to_uint8(stored[k].astype(np.float64), "window:500,1000"))
    with pytest.raises(InputError, match="frame 3 out of range"):
        read_dicom(path, frame=3)


def test_a_multiframe_file_over_the_volume_budget_is_refused_before_decoding(tmp_path, monkeypatch):
    import dmfnet_edge.limits as limits

    write_multiframe(tmp_path / "big.dcm", np.zeros((4, 64, 64), np.int16))
    monkeypatch.setattr(limits, "MAX_VOXELS", 3 * 64 * 64)  # three frames fit, the file's four do not
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array",
                        property(lambda ds: pytest.fail("decoded before the budget check")))
    with pytest.raises(InputError, match="16,384 voxels exceed the volume budget of 12,288"):
        read_volume(tmp_path / "big.dcm")


def test_multiple_series_need_a_choice(stacks, tmp_path):
    write_series(tmp_path / "mix", stacks[0], "MR")
    write_series(tmp_path / "mix", stacks[0], "MR")
    with pytest.raises(InputError, match="holds 2 series"):
        read_volume(tmp_path / "mix")


@pytest.mark.parametrize("kind", ["volume", "image"])
def test_pairing_error_is_an_input_error(stacks, tmp_path, tiny_model_base, capsys, kind):
    """What a user sees of a pairing failure (a PairingError is an InputError): exit 2, one line on stderr that
    names both inputs with what each has, and nothing written. Volumes: 4 slices against 3; images: two sizes."""
    assert issubclass(PairingError, InputError)
    if kind == "volume":
        write_series(tmp_path / "mri", stacks[0], "MR")
        write_series(tmp_path / "ct", stacks[1][:3], "CT")
        argv, out = ["fuse-volume", "--mri", str(tmp_path / "mri"), "--other", str(tmp_path / "ct")], tmp_path / "out"
        named = ("MRI 4", "other 3")
    else:
        from dmfnet_edge.io.images import write_image

        mri = write_image(tmp_path / "mri.png", stacks[0][0])
        other = write_image(tmp_path / "ct.png", stacks[1][0, :48])
        argv, out = ["fuse", "--mri", str(mri), "--other", str(other)], tmp_path / "out.png"
        named = ("mri.png + ct.png", "MRI is 80x64", "other image is 80x48")
    assert main([*argv, "-o", str(out), "--model", str(tiny_model_base), "--backend", "torch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dmfnet: error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert all(name in err for name in named), err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["mri", "ct"] if kind == "volume" else ["mri.png", "ct.png"])


def test_nifti_and_dicom_outputs_agree_in_a_standard_reader(series, tmp_path, tiny_model_base):
    """From DICOM inputs, the NIfTI and the DICOM outputs hold the same voxels at the same physical places."""
    sitk = pytest.importorskip("SimpleITK")
    root, _ = series
    common = ["--mri", str(root / "mri"), "--other", str(root / "ct"), "--model", str(tiny_model_base),
              "--backend", "torch"]
    assert fuse(*common, "-o", str(tmp_path / "d")) == 0
    assert fuse(*common, "-o", str(tmp_path / "n.nii.gz")) == 0
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "d")))
    dicom, nifti = reader.Execute(), sitk.ReadImage(str(tmp_path / "n.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(dicom), sitk.GetArrayFromImage(nifti))
    assert np.allclose(dicom.GetOrigin(), nifti.GetOrigin(), atol=1e-4)
    assert np.allclose(dicom.GetDirection(), nifti.GetDirection(), atol=1e-6)
    assert np.allclose(dicom.GetSpacing(), nifti.GetSpacing(), atol=1e-6)
    from dmfnet_edge.files import FILE_MODE, FOLDER_MODE

    assert (tmp_path / "d").stat().st_mode & 0o777 == FOLDER_MODE  # not mkdtemp's 0700
    assert (tmp_path / "n.nii.gz").stat().st_mode & 0o777 == FILE_MODE  # not mkstemp's 0600


def _palette_series(folder, indices):
    """A PALETTE COLOR series (8-bit indices into 16-bit red/green/blue tables), one file per slice."""
    write_series(folder, indices.astype(np.float64), "NM", shuffle=False)
    ramp = np.arange(256, dtype=np.uint16) * 257
    tables = {"Red": ramp, "Green": ramp[::-1].copy(), "Blue": (ramp // 2).astype(np.uint16)}
    for i, path in enumerate(sorted(folder.glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        ds.PhotometricInterpretation = "PALETTE COLOR"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        del ds.RescaleSlope, ds.RescaleIntercept
        for colour, table in tables.items():
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
            ds[f"{colour}PaletteColorLookupTableDescriptor"].VR = "US"
            setattr(ds, f"{colour}PaletteColorLookupTableData", table.tobytes())
        ds.PixelData = indices[i].astype(np.uint8).tobytes()
        ds.save_as(path, enforce_file_format=True)
    return tables


def test_a_palette_colour_series_reads_as_the_same_rgb_in_2d_and_as_a_volume(tmp_path):
    """One frame reader for both paths: the palette is applied in the series too (it was read as grey indices),
    and a file of the series read in 2D gives the same RGB slice."""
    from dmfnet_edge.io.medical import read_dicom

    indices = np.random.default_rng(3).integers(0, 256, (3, 64, 64))
    tables = _palette_series(tmp_path / "nm", indices)
    volume = read_volume(tmp_path / "nm")
    assert volume.is_colour and volume.data.dtype == np.uint8 and volume.data.shape == (3, 64, 64, 3)
    lut = np.stack([tables[c] for c in ("Red", "Green", "Blue")], axis=-1)[indices]
    assert np.array_equal(volume.data, to_uint8(lut.astype(np.float64), "window:32767.5,65535"))
    for k, path in enumerate(sorted((tmp_path / "nm").glob("*.dcm"))):
        pixels, meta = read_dicom(path)
        assert meta["photometric"] == "PALETTE COLOR" and np.array_equal(pixels, volume.data[k])


@pytest.mark.parametrize("kind", ["nifti", "dicom"])
def test_a_full_disk_at_the_provenance_record_changes_no_output(series, tmp_path, tiny_model_base, kind, capsys):
    """The fused volume and its provenance land together or not at all: no record means no output (a first
    run), and an --overwrite run leaves the previous output and its record as they were."""
    import tempfile
    from unittest import mock

    root, _ = series
    out = tmp_path / ("fused.nii.gz" if kind == "nifti" else "fused-series")
    record = out.with_name(out.name + ".provenance.json")
    argv = ["--mri", str(root / "mri"), "--other", str(root / "ct"), "-o", str(out), "--model",
            str(tiny_model_base), "--backend", "torch"]
    real = tempfile.mkstemp

    def full_for_records(*args, **kwargs):
        if ".provenance.json" in kwargs.get("prefix", ""):
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    def snapshot():
        files = [out] if out.is_file() else sorted(out.rglob("*")) if out.exists() else []
        return {str(p): p.read_bytes() for p in [*files, record] if p.is_file()}

    with mock.patch("tempfile.mkstemp", side_effect=full_for_records):
        assert fuse(*argv) == 3
    assert "No space left on device" in capsys.readouterr().err
    assert not out.exists() and not record.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left either
    assert fuse(*argv) == 0
    before = snapshot()
    with mock.patch("tempfile.mkstemp", side_effect=full_for_records):
        assert fuse(*argv, "--overwrite") == 3
    assert snapshot() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_enhanced_file_gives_its_slice_thickness_from_the_functional_groups(tmp_path):
    """One frame has no neighbour to measure the slice spacing from: it is the SliceThickness, which an
    enhanced file keeps in the shared Pixel Measures (it fell back to 1 mm)."""
    write_multiframe(tmp_path / "one.dcm", np.zeros((1, 32, 32), np.int16), spacing=(3.5, 0.9, 0.9), enhanced=True)
    assert read_volume(tmp_path / "one.dcm").spacing == pytest.approx((3.5, 0.9, 0.9))
