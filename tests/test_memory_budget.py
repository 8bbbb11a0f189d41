"""The memory model's enforcement, seen from outside the process: an image over the pixel budget is refused
before any large allocation (peak resident memory of the refusing `dmfnet` process, from the kernel), at the
default budget and exactly at its edge (`profiling.command_peak`: the child's own VmHWM)."""

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from dmfnet_edge.io.images import write_image
from dmfnet_edge.limits import DEFAULT_MAX_PIXELS
from dmfnet_edge.profiling import command_peak

REPO = Path(__file__).resolve().parents[1]


def _zero_png(path: Path, width: int, height: int) -> Path:
    """A valid, fully decodable 8-bit grey PNG of zeros, written without ever holding its pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0 + the row
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def _fuse(tmp_path: Path, mri: Path, other: Path, model: Path) -> tuple[int, str, float]:
    """(exit code, stderr, peak RSS in MiB) of `dmfnet fuse` in a fresh process."""
    return command_peak(["fuse", "--mri", str(mri), "--other", str(other), "-o", str(tmp_path / "out" / "f.png"),
                         "--model", str(model)], cwd=REPO, timeout=300,
                        env={k: v for k, v in os.environ.items() if k != "DMFNET_MAX_PIXELS"})


@pytest.mark.parametrize("width,height", [(1025, 1024), (20000, 20000)],
                         ids=["one row over the budget", "decoded 400 MB"])
def test_an_image_over_the_default_budget_is_refused_before_it_is_decoded(tmp_path, tiny_model_base, width,
                                                                         height):
    assert width * height > DEFAULT_MAX_PIXELS
    big = _zero_png(tmp_path / "big.png", width, height)
    mri = write_image(tmp_path / "mri.png", np.zeros((64, 64), np.uint8))
    code, err, peak = _fuse(tmp_path, mri, big, tiny_model_base)
    assert code == 2 and err.count("\n") == 1 and "exceeds the budget of 1,048,576" in err, err
    # the refusing process stays near the interpreter's own size (~300 MiB with torch imported); decoding the
    # 20000 x 20000 image alone would add 400 MB, running the network on it ~2,400 GB
    assert peak < 600, f"peak {peak:.0f} MiB"
    assert not (tmp_path / "out").exists()
    assert peak > 20  # the report is the child's (an interpreter with numpy and OpenCV), not an empty reading


def test_the_largest_image_within_the_budget_is_read(tmp_path):
    """The edge itself: a 1024 x 1024 image, exactly the budget, passes the check and is decoded (no network run
    here)."""
    from dmfnet_edge.io.images import read_image

    side = 1024
    assert side * side == DEFAULT_MAX_PIXELS
    image = read_image(_zero_png(tmp_path / "edge.png", side, side))
    assert image.shape == (side, side) and not image.any()
