"""The volume and medical image readers bound their memory before reading: every DICOM file's declared geometry
against the budgets before any pixel is read, a deflated file's inflation, a NIfTI slice read alone; a series is
one patient's straight stack; NIfTI voxel sizes as stored."""

import subprocess
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest

import dmfnet_edge.limits as limits
from dmfnet_edge.errors import InputError
from dmfnet_edge.io import dicom_files
from dmfnet_edge.io.medical import read_dicom
from dmfnet_edge.io.volumes import read_nifti_slice, read_nifti_volume, read_volume
from dmfnet_edge.preprocess.intensity import value_range, window_to_uint8
from tests.conftest import needs
from tests.volume_fixtures import deflate_dicom, edit_dicom, write_multiframe, write_series

nib = needs("nibabel", "medical")
REPO = Path(__file__).resolve().parents[2]


def _stack(slices: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-500, 1500, (slices, 64, 64))


def _no_pixels(monkeypatch) -> None:
    """Any pixel decoding, or reading of an element left on disk, fails the test: the refusal must come from the
    headers."""
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array",
                        property(lambda ds: pytest.fail("pixels were decoded before the headers were checked")))
    monkeypatch.setattr("pydicom.pixels.pixel_array", lambda *a, **k: pytest.fail("pixels were decoded"))
    monkeypatch.setattr("pydicom.filereader.read_deferred_data_element",
                        lambda *a, **k: pytest.fail("an element left on disk was read"))


def _by_position(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))


@pytest.mark.parametrize("which", [0, 1, 2])
def test_every_file_of_a_series_is_checked_against_the_budget_before_any_pixel_is_read(tmp_path, monkeypatch,
                                                                                      which):
    write_series(tmp_path / "ct", _stack(), "CT")
    edit_dicom(sorted((tmp_path / "ct").glob("*.dcm"))[which], Rows=46000, Columns=46000)
    _no_pixels(monkeypatch)
    with pytest.raises(InputError, match="46000x46000 = 2,116,000,000 pixels exceeds the budget"):
        read_volume(tmp_path / "ct")


def test_the_voxel_budget_counts_every_file_of_a_series(tmp_path, monkeypatch):
    write_series(tmp_path / "ct", _stack(), "CT")
    monkeypatch.setattr(limits, "MAX_VOXELS", 2 * 64 * 64)  # each file fits, the three together do not
    _no_pixels(monkeypatch)
    with pytest.raises(InputError, match="12,288 voxels exceed the volume budget of 8,192"):
        read_volume(tmp_path / "ct")


def test_slices_of_different_sizes_are_refused_from_their_headers(tmp_path, monkeypatch):
    write_series(tmp_path / "ct", _stack(), "CT")
    edit_dicom(_by_position(tmp_path / "ct")[2], Rows=32)
    _no_pixels(monkeypatch)
    with pytest.raises(InputError, match=r"mixes slice sizes \(64x32, 64x64\)"):
        read_volume(tmp_path / "ct")


def test_a_header_declaring_no_pixels_is_refused(tmp_path):
    write_series(tmp_path / "ct", _stack(1), "CT")
    path = edit_dicom(next((tmp_path / "ct").glob("*.dcm")), Columns=0)
    with pytest.raises(InputError, match="declares 0x64 pixels in 1 frame"):
        read_dicom(path)


def test_a_deflated_series_and_file_read_as_their_uncompressed_originals(tmp_path):
    stack = _stack()
    write_series(tmp_path / "plain", stack, "CT", shuffle=False)
    write_series(tmp_path / "deflated", stack, "CT", shuffle=False)
    for f in (tmp_path / "deflated").glob("*.dcm"):
        deflate_dicom(f)
    assert np.array_equal(read_volume(tmp_path / "deflated").data, read_volume(tmp_path / "plain").data)
    first = sorted((tmp_path / "deflated").glob("*.dcm"))[0]
    assert pydicom.dcmread(first).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99"
    plain = sorted((tmp_path / "plain").glob("*.dcm"))[0]
    assert np.array_equal(read_dicom(first, window=(40, 400))[0], read_dicom(plain, window=(40, 400))[0])


def _counting_inflater(monkeypatch) -> list[int]:
    """Count the bytes the reader inflates."""
    inflated = [0]

    class Counting:
        def __init__(self, wbits: int):
            self.inner = zlib.decompressobj(wbits)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            out = self.inner.decompress(data, max_length)
            inflated[0] += len(out)
            return out

        def __getattr__(self, name: str):
            return getattr(self.inner, name)

    monkeypatch.setattr(dicom_files, "zlib", types.SimpleNamespace(MAX_WBITS=zlib.MAX_WBITS, decompressobj=Counting))
    return inflated


def test_a_deflate_bomb_is_refused_after_inflating_at_most_what_its_header_declares(tmp_path, monkeypatch):
    """64 MiB of padding behind a 64x64 slice (inflating to 64 MiB from 65 kB): inflation stops one byte past the
    first limit (9 MiB at the default budget), and the slice declares less than that."""
    write_series(tmp_path / "one", _stack(1), "CT")
    bomb = deflate_dicom(next((tmp_path / "one").glob("*.dcm")), padding=64 << 20)
    assert bomb.stat().st_size < 1 << 20
    inflated = _counting_inflater(monkeypatch)
    with pytest.raises(InputError, match="inflates to more than the 1,057,312 bytes its header declares"):
        read_dicom(bomb)
    assert inflated[0] == dicom_files.first_inflation_limit() + 1


def test_a_deflated_header_over_the_budget_is_refused_after_the_first_limit(tmp_path, monkeypatch):
    """A deflated 46000 x 46000 image (inflating to 4 GB) is refused by its header, read from the first
    9 MiB."""
    write_series(tmp_path / "one", _stack(1), "CT")
    path = edit_dicom(next((tmp_path / "one").glob("*.dcm")), Rows=46000, Columns=46000)
    bomb = deflate_dicom(path, padding=32 << 20)
    inflated = _counting_inflater(monkeypatch)
    with pytest.raises(InputError, match="46000x46000 = 2,116,000,000 pixels exceeds the budget"):
        read_volume(bomb)
    assert inflated[0] == dicom_files.first_inflation_limit() + 1


def test_a_deflated_multiframe_file_larger_than_the_first_limit_is_read(tmp_path, monkeypatch):
    """Beyond the first limit a file may inflate to what its header declares: 40 frames of 64 x 64 at 16 bits
    (328 kB) pass a first limit set small here (33 kB); 8 MiB of padding behind them do not."""
    monkeypatch.setenv("DMFNET_MAX_PIXELS", str(64 * 64))
    monkeypatch.setattr(dicom_files, "SLACK_BYTES", 1024)
    frames = np.random.default_rng(2).integers(0, 4000, (40, 64, 64))
    write_multiframe(tmp_path / "mf.dcm", frames)
    deflate_dicom(tmp_path / "mf.dcm")
    assert dicom_files.first_inflation_limit() < frames.size * 2
    assert np.array_equal(read_volume(tmp_path / "mf.dcm").data, frames.astype(np.float64))
    write_multiframe(tmp_path / "bomb.dcm", frames)
    deflate_dicom(tmp_path / "bomb.dcm", padding=8 << 20)
    inflated = _counting_inflater(monkeypatch)
    with pytest.raises(InputError, match=r"inflates to more than the (\d|,)+ bytes its header declares") as refused:
        read_volume(tmp_path / "bomb.dcm")
    declared = int(str(refused.value).split("more than the ")[1].split(" ")[0].replace(",", ""))
    assert frames.size * 2 < declared < frames.size * 2 + 4096 and inflated[0] == declared + 1


def test_native_pixel_data_longer_than_its_geometry_is_refused_before_it_is_read(tmp_path, monkeypatch):
    write_series(tmp_path / "one", _stack(1), "CT")
    path = next((tmp_path / "one").glob("*.dcm"))
    ds = pydicom.dcmread(path)
    ds.PixelData += bytes(2 << 20)
    ds.save_as(path)
    _no_pixels(monkeypatch)
    with pytest.raises(InputError, match="pixel data holds 2,105,344 bytes but its header"):
        read_dicom(path)


def test_compressed_pixel_data_is_read_and_bounded_by_its_items_on_disk(tmp_path, monkeypatch):
    """RLE Lossless (pydicom decodes it without a plugin): a 256 x 256 slice, its data left on disk, reads as the
    uncompressed one; 2 MiB of items behind a 64 x 64 header (more than twice its 8 kB) are refused from the
    items' headers, before any of them is read."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    write_series(tmp_path / "s", _stack(1), "CT")
    write_series(tmp_path / "big", np.random.default_rng(5).integers(0, 4000, (1, 256, 256)), "CT")
    plain = next((tmp_path / "big").glob("*.dcm"))
    rle = tmp_path / "rle.dcm"
    ds = pydicom.dcmread(plain)
    ds.compress(RLELossless)
    ds.save_as(rle)
    assert np.array_equal(read_dicom(rle, window=(2000, 4000))[0], read_dicom(plain, window=(2000, 4000))[0])
    ds = pydicom.dcmread(next((tmp_path / "s").glob("*.dcm")))
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([bytes(1 << 20), bytes(1 << 20)])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "long.dcm")
    _no_pixels(monkeypatch)
    with pytest.raises(InputError, match=r"holds more than 1,064,960 \(compressed\) bytes but its header"):
        read_dicom(tmp_path / "long.dcm")


def test_a_frame_count_costs_what_the_file_holds_not_what_its_header_says(tmp_path, monkeypatch):
    """A 300-byte file declaring 5 million 1 x 1 frames (within both budgets) had every frame's geometry built
    before any decoding: minutes and gigabytes. Native data must hold at least half its geometry's bytes,
    compressed data one item per frame."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    write_series(tmp_path / "s", _stack(1), "CT")
    path = next((tmp_path / "s").glob("*.dcm"))
    edit_dicom(path, Rows=1, Columns=1, NumberOfFrames=5_000_000, PixelData=b"\0\0")
    monkeypatch.setattr("dmfnet_edge.io.dicom_geometry.frames_of", lambda ds: pytest.fail("frames built"))
    with pytest.raises(InputError, match=r"holds 2 bytes, too few for what its header declares \(1x1, 5000000"):
        read_dicom(path)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.NumberOfFrames = 1000
    ds.PixelData = encapsulate([b"\0\1\0\0" + bytes(60)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    with pytest.raises(InputError, match=r"holds 1 compressed fragment\(s\), too few for .* \(1x1, 1000 frame"):
        read_dicom(path)


def test_a_stack_drifting_less_than_a_tenth_of_a_pixel_is_straight(tmp_path):
    """Positions rounded in the header (0.03 mm of in-plane jitter at 0.9 mm pixels) are not a tilt."""
    stack = _stack(4)
    write_series(tmp_path / "ct", stack, "CT")
    for k, f in enumerate(_by_position(tmp_path / "ct")):
        x, y, z = (float(v) for v in pydicom.dcmread(f).ImagePositionPatient)
        edit_dicom(f, ImagePositionPatient=[x + 0.03 * (k % 2), y, z])
    assert np.array_equal(read_volume(tmp_path / "ct").data, stack.astype(np.float64))


def test_a_tilted_stack_is_refused_with_the_way_forward(tmp_path):
    write_series(tmp_path / "ct", _stack(4), "CT", spacing=(2.0, 0.9, 0.9))
    for k, f in enumerate(_by_position(tmp_path / "ct")):
        x, y, z = (float(v) for v in pydicom.dcmread(f).ImagePositionPatient)
        edit_dicom(f, ImagePositionPatient=[x, y + 2.0 * np.tan(np.radians(15)) * k, z])  # a 15 degree tilt
    with pytest.raises(InputError, match=r"drift 1.61 mm .* up to 0.09 mm, .* resample the series"):
        read_volume(tmp_path / "ct")


def test_an_orientation_without_a_plane_is_refused(tmp_path):
    write_series(tmp_path / "ct", _stack(), "CT")
    for f in (tmp_path / "ct").glob("*.dcm"):
        edit_dicom(f, ImageOrientationPatient=[1, 0, 0, 1, 0, 0])
    with pytest.raises(InputError, match="is not two perpendicular unit vectors"):
        read_volume(tmp_path / "ct")


def _nifti(path: Path, data: np.ndarray, pixdim=None) -> Path:
    image = nib.Nifti1Image(data, np.diag([0.9, 0.8, 2.0, 1.0]))
    if pixdim is not None:
        image.header["pixdim"][1:4] = pixdim
    nib.save(image, path)
    return path


@pytest.mark.parametrize("pixdim", [(0, 0, 0), (0.9, 0.8, 0), (0.9, -0.8, 2), (0.9, np.nan, 2), (np.inf, 1, 1)])
def test_a_nifti_voxel_size_is_checked_as_stored(tmp_path, pixdim):
    """nibabel's loader turns 0 into 1 mm and a negative size into its magnitude; the reader refuses both."""
    path = _nifti(tmp_path / "v.nii.gz", np.ones((16, 16, 3), np.float32), pixdim)
    for read in (read_nifti_volume, lambda p: read_nifti_slice(p, 1)):
        with pytest.raises(InputError, match=r"the header's voxel size \(pixdim .*\) is not positive and finite"):
            read(path)


def test_a_nifti_voxel_size_is_kept(tmp_path):
    path = _nifti(tmp_path / "v.nii", np.ones((16, 16, 3), np.float32), (0.9, 0.8, 2.0))
    assert read_nifti_volume(path).spacing == pytest.approx((2.0, 0.8, 0.9))


def test_a_nifti_slice_reads_its_slice_only_with_its_own_window(tmp_path, monkeypatch):
    """The slice path never reads the whole array (nibabel's ArrayProxy.__array__), so the voxel budget does not
    apply to it; its default window is the slice's own 0.5..99.5 percentiles."""
    data = np.random.default_rng(3).random((40, 32, 6)).astype(np.float32) * np.arange(1, 7) * 100
    path = _nifti(tmp_path / "v.nii.gz", data)
    whole = read_nifti_volume(path).data
    monkeypatch.setattr(limits, "MAX_VOXELS", 40 * 32)  # one slice
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", lambda *a, **k: pytest.fail("read whole"))
    for k in (0, 5):
        pixels, _ = read_nifti_slice(path, k)
        assert np.array_equal(pixels, window_to_uint8(whole[k], *value_range(whole[k], "percentile"), "x"))
        assert np.array_equal(read_nifti_slice(path, k, (300.0, 600.0))[0], window_to_uint8(whole[k], 0, 600, "x"))


def test_a_nifti_slice_with_nan_elsewhere_in_the_volume_is_read(tmp_path):
    data = np.ones((16, 16, 3), np.float32)
    data[2, 2, 2] = np.nan
    path = _nifti(tmp_path / "v.nii", data)
    assert read_nifti_slice(path, 0)[0].shape == (16, 16)
    with pytest.raises(InputError, match="slice 2 contains NaN or Inf"):
        read_nifti_slice(path, 2)


CHILD = """
import sys
import nibabel
from dmfnet_edge.io.loader import load_image
def hwm():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) // 1024
before = hwm()
load_image(sys.argv[1], slice_index=int(sys.argv[2]))
print(before, hwm())
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc VmHWM (Linux)")
def test_one_slice_of_a_big_nifti_costs_about_one_slice_of_memory(tmp_path):
    """A 256 x 256 x 400 float32 volume (100 MiB; 200 MiB as float64, which the whole-volume read held twice
    over): reading one slice in a fresh process raises its peak by less than 32 MiB."""
    data = np.zeros((256, 256, 400), np.float32)
    data[..., 200] = np.random.default_rng(4).random((256, 256))
    path = _nifti(tmp_path / "big.nii", data)
    del data
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), "200"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    before, after = (int(v) for v in done.stdout.split())
    assert after - before < 32, f"peak grew by {after - before} MiB"
