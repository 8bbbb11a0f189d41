from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from dmfnet_edge.errors import InputError, PairingError
from dmfnet_edge.io.images import read_image, write_image
from dmfnet_edge.io.loader import load_image
from dmfnet_edge.io.pairs import find_pairs
from dmfnet_edge.preprocess.intensity import window_to_uint8
from tests.conftest import needs, smooth_image

pytestmark = pytest.mark.runtime  # also in the runtime-only tier (torch unimportable)

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_lossless_round_trip_grey_and_rgb(tmp_path, rng, suffix):
    for colour in (False, True):
        img = smooth_image(rng, 40, 56, colour)
        path = write_image(tmp_path / f"x{int(colour)}{suffix}", img)
        assert np.array_equal(read_image(path), img)


def test_jpeg_is_read_as_rgb(tmp_path, rng):
    img = smooth_image(rng, 32, 32, colour=True)
    back = read_image(write_image(tmp_path / "x.jpg", img))
    assert back.shape == img.shape and np.abs(back.astype(int) - img).mean() < 10  # lossy, subsampled chroma


def test_16_bit_images_are_scaled_to_their_range(tmp_path):
    img = np.linspace(1000, 5000, 64 * 64).reshape(64, 64).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "x.png"), img)
    out = read_image(tmp_path / "x.png")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


def test_rgba_drops_alpha(tmp_path, rng):
    rgb = smooth_image(rng, 16, 16, colour=True)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((16, 16, 1), 7, np.uint8)], axis=2)
    cv2.imwrite(str(tmp_path / "x.png"), bgra)
    assert np.array_equal(read_image(tmp_path / "x.png"), rgb)


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"not an image at all", "not a readable image")])
def test_bad_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_image(path)


def test_truncated_png(tmp_path, rng):
    path = write_image(tmp_path / "x.png", smooth_image(rng, 64, 64))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="not a readable image"):
        read_image(path)


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(InputError, match="unsupported file type"):
        read_image(tmp_path / "x.gif")


class _DiskFillsHalfway:
    """A file handle whose write stores half of the bytes, then fails as a full disk does."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.close()

    def write(self, data: bytes) -> int:
        self.handle.write(data[:len(data) // 2])
        self.handle.flush()
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("failing", ["write", "rename"])
def test_write_is_atomic_and_leaves_nothing_on_failure(tmp_path, rng, monkeypatch, failing):
    """A disk that fills halfway through the temporary file, or at the rename into place, leaves the folder as it
    was: an existing image byte-identical, no new image, no temporary file."""
    import os

    from dmfnet_edge.errors import EnvironmentProblem

    with pytest.raises(InputError):  # an unknown type is refused before anything is created
        write_image(tmp_path / "x.gif", smooth_image(rng, 8, 8))
    assert list(tmp_path.iterdir()) == []
    existing = write_image(tmp_path / "existing.png", smooth_image(rng, 16, 16))
    before = existing.read_bytes()
    reached = []
    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kwargs):
        reached.append("write")
        return _DiskFillsHalfway(real_fdopen(fd, *args, **kwargs))

    def replace(src, dst):
        reached.append("rename")
        assert Path(src).is_file() and Path(src).parent == Path(dst).parent  # staged beside the target
        raise OSError(28, "No space left on device")

    for target in (existing, tmp_path / "new.png"):
        reached.clear()
        with monkeypatch.context() as patch:
            patch.setattr(os, "fdopen" if failing == "write" else "replace",
                          fdopen if failing == "write" else replace)
            with pytest.raises(EnvironmentProblem, match="nothing was written"):
                write_image(target, smooth_image(rng, 16, 16, colour=True))
        assert reached == [failing]  # the failure came mid-write, after the temporary file was created
        assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.png"]
        assert existing.read_bytes() == before


def test_dicom_ct_applies_rescale_and_window():
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    out = load_image(PYDICOM_FILES / "CT_small.dcm", window=(40, 400)).pixels
    expected = np.round(np.clip((hu - (40 - 200)) * 255 / 400, 0, 255)).astype(np.uint8)
    assert np.abs(out.astype(int) - expected).max() <= 1  # rounding of exact .5 cases only
    assert np.mean(out == expected) > 0.99


def test_dicom_uses_its_own_window_and_reads_colour():
    mr = load_image(PYDICOM_FILES / "MR_small.dcm")
    assert mr.pixels.dtype == np.uint8 and mr.meta["window"] == [600.0, 1600.0]
    rgb = load_image(PYDICOM_FILES / "SC_rgb_small_odd.dcm").pixels
    assert rgb.shape == (3, 3, 3)
    palette = load_image(PYDICOM_FILES / "examples_palette.dcm").pixels
    assert palette.ndim == 3


@pytest.mark.parametrize("name, message", [("rtplan.dcm", "no pixel data"), ("MR_truncated.dcm", "cannot be decoded")])
def test_dicom_errors(name, message):
    with pytest.raises(InputError, match=message):
        load_image(PYDICOM_FILES / name)


def test_nifti_slices(tmp_path):
    nib = needs("nibabel", "medical")
    volume = np.zeros((20, 30, 4), np.float32)
    volume[5, 10, 2] = 100.0
    volume[:, :, 1] = np.arange(30)[None, :]
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "v.nii.gz")
    with pytest.raises(InputError, match="--slice"):
        load_image(tmp_path / "v.nii.gz")
    img = load_image(tmp_path / "v.nii.gz", slice_index=2, window=(50, 100)).pixels
    assert img.shape == (30, 20)  # rows = y, columns = x
    assert img[30 - 1 - 10, 5] == 255 and img.sum() == 255
    with pytest.raises(InputError, match="out of range"):
        load_image(tmp_path / "v.nii.gz", slice_index=9)


def _write_pair(root, task, modality, name, rng, colour=False):
    write_image(root / task / "MRI" / f"{name}.png", smooth_image(rng, 32, 32))
    write_image(root / task / modality / f"{name}.png", smooth_image(rng, 32, 32, colour))


def test_pair_discovery_and_lonely_files(tmp_path, rng):
    _write_pair(tmp_path, "MRI-CT", "CT", "a", rng)
    _write_pair(tmp_path, "MRI-PET", "PET", "b", rng, colour=True)
    pairs = find_pairs(tmp_path)
    assert [(p.task, p.name) for p in pairs] == [("MRI-CT", "a"), ("MRI-PET", "b")]
    assert find_pairs(tmp_path / "MRI-PET")[0].modality == "PET"
    write_image(tmp_path / "MRI-CT" / "MRI" / "z.png", smooth_image(rng, 32, 32))
    with pytest.raises(PairingError, match="without a partner"):
        find_pairs(tmp_path)
    with pytest.raises(InputError, match="no image pairs"):
        find_pairs(tmp_path / "MRI-CT" / "MRI")


def test_pair_discovery_skips_hidden_files_and_hints_at_letter_case(tmp_path, rng):
    from dmfnet_edge.errors import InputError
    from dmfnet_edge.io.images import write_image
    from dmfnet_edge.io.pairs import find_pairs
    from tests.conftest import smooth_image

    for side in ("MRI", "CT"):
        write_image(tmp_path / "ok" / "MRI-CT" / side / "01.png", smooth_image(rng, 64, 64))
        (tmp_path / "ok" / "MRI-CT" / side / "._01.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    assert [p.name for p in find_pairs(tmp_path / "ok")] == ["01"]
    (tmp_path / "ok" / "MRI-CT" / "MRI").rename(tmp_path / "ok" / "MRI-CT" / "mri")
    with pytest.raises(InputError, match="found 'mri': folder names are case-sensitive, rename it to 'MRI'"):
        find_pairs(tmp_path / "ok")
    (tmp_path / "ok" / "MRI-CT").rename(tmp_path / "ok" / "mri-ct")
    with pytest.raises(InputError, match="found 'mri-ct': .* rename it to 'MRI-CT'"):
        find_pairs(tmp_path / "ok")


def test_the_budget_is_checked_on_a_header_a_damaged_chunk_cannot_hide(tmp_path, monkeypatch):
    """A PNG whose text chunk has a bad checksum: Pillow gives up on it, OpenCV would decode it anyway; the
    size is read from IHDR and the budget refuses it before any decoding."""
    import struct
    import zlib

    import cv2

    from dmfnet_edge.errors import InputError
    from dmfnet_edge.io.images import read_image

    ok, png = cv2.imencode(".png", np.zeros((300, 300), np.uint8))
    data = png.tobytes()
    text = b"tEXt" + b"comment\x00hello"
    chunk = struct.pack(">I", len(text) - 4) + text + struct.pack(">I", zlib.crc32(text) ^ 1)  # bad CRC
    path = tmp_path / "bomb.png"
    path.write_bytes(data[:33] + chunk + data[33:])
    monkeypatch.setenv("DMFNET_MAX_PIXELS", "40000")
    with pytest.raises(InputError, match=r"300x300 = 90,000 pixels exceeds the budget of 40,000"):
        read_image(path)


def test_content_decides_the_format_not_the_name(tmp_path):
    import cv2

    from dmfnet_edge.errors import InputError
    from dmfnet_edge.io.images import read_image

    hdr = tmp_path / "x.hdr"
    cv2.imwrite(str(hdr), np.ones((64, 64, 3), np.float32))
    disguised = tmp_path / "radiance.png"
    disguised.write_bytes(hdr.read_bytes())
    with pytest.raises(InputError, match="not a PNG, JPEG, TIFF or BMP file by its first bytes"):
        read_image(disguised)
    jpeg = tmp_path / "really-a-jpeg.png"  # a supported format under another supported name still reads
    jpeg.write_bytes(cv2.imencode(".jpg", np.full((32, 48), 128, np.uint8))[1].tobytes())
    assert read_image(jpeg).shape == (32, 48)


def test_float64_tiff_with_extreme_values_keeps_its_contrast(tmp_path):
    import cv2

    from dmfnet_edge.io.images import read_image

    half = np.linspace(0, 1.7e308, 32 * 64)
    values = np.concatenate([-half[::-1], half]).reshape(64, 64)  # hi - lo overflows float64
    path = tmp_path / "extreme.tif"
    cv2.imwrite(str(path), values)
    pixels = read_image(path)
    assert pixels.min() == 0 and pixels.max() == 255 and len(np.unique(pixels)) == 256


def test_an_rgb_nifti_is_fused_by_fuse_as_fuse_volume_reads_it(tmp_path):
    """RGB24 NIfTI (structured R, G, B voxels): the 2D reader keeps the colours, as the volume reader does."""
    nib = needs("nibabel", "medical")
    from dmfnet_edge.cli.main import main
    from dmfnet_edge.io.images import read_image
    from dmfnet_edge.io.volumes import read_nifti_slice, read_nifti_volume

    rng = np.random.default_rng(9)
    rgb = rng.integers(0, 256, (64, 64, 3, 3), dtype=np.uint8)  # x, y, z, channel
    voxels = np.zeros((64, 64, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    for i, c in enumerate("RGB"):
        voxels[c] = rgb[..., i]
    path = tmp_path / "pet_rgb.nii.gz"
    nib.save(nib.Nifti1Image(voxels, np.eye(4)), path)
    pixels, meta = read_nifti_slice(path, 1)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8 and meta["colour"] == "rgb"
    assert np.array_equal(pixels, read_nifti_volume(path).data[1])  # the same slice as fuse-volume's
    from dmfnet_edge.errors import InputError

    with pytest.raises(InputError, match="a window does not apply"):
        read_nifti_slice(path, 1, window=(40, 400))
    mri = tmp_path / "mri.png"
    from dmfnet_edge.io.images import write_image

    write_image(mri, rng.integers(0, 256, (64, 64), dtype=np.uint8))
    assert main(["fuse", "--mri", str(mri), "--other", str(path), "--slice", "1", "-o", str(tmp_path / "f.png")]) == 0
    assert read_image(tmp_path / "f.png").shape == (64, 64, 3)


def test_nifti_2d_3d_and_4d_shapes_read_through_one_volume_reader(tmp_path):
    """A 2D NIfTI is a volume of one slice for both the 2D and the volume command; a singleton 4th axis is
    dropped; a real 4D series is refused from its header, before its voxels are read."""
    import struct

    nib = needs("nibabel", "medical")
    from dmfnet_edge.io.volumes import read_nifti_slice, read_nifti_volume

    rng = np.random.default_rng(4)
    plane = rng.random((40, 24), dtype=np.float32) * 1000
    nib.save(nib.Nifti1Image(plane, np.eye(4)), tmp_path / "flat.nii.gz")
    volume = read_nifti_volume(tmp_path / "flat.nii.gz")
    assert volume.data.shape == (1, 24, 40) and volume.spacing == (1.0, 1.0, 1.0)  # its zooms have two values
    pixels, _ = read_nifti_slice(tmp_path / "flat.nii.gz")
    lo, hi = np.percentile(plane, [0.5, 99.5])
    assert np.array_equal(pixels, window_to_uint8(np.flipud(plane.T), lo, hi, "x"))
    with pytest.raises(InputError, match="out of range"):
        read_nifti_slice(tmp_path / "flat.nii.gz", 1)

    nib.save(nib.Nifti1Image(plane[:, :, None, None], np.eye(4)), tmp_path / "single.nii")
    assert read_nifti_volume(tmp_path / "single.nii").data.shape == (1, 24, 40)

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.float32), np.eye(4)), tmp_path / "series.nii")
    raw = bytearray((tmp_path / "series.nii").read_bytes())
    dims = list(struct.unpack_from("<8h", raw, 40))
    dims[4] = 30000  # the header now promises 7.7 million voxels the file does not hold
    struct.pack_into("<8h", raw, 40, *dims)
    (tmp_path / "series.nii").write_bytes(bytes(raw))
    for reader in (read_nifti_volume, read_nifti_slice):
        with pytest.raises(InputError, match=r"shape \(8, 8, 4, 30000\) is not a 2D or 3D image"):
            reader(tmp_path / "series.nii")
