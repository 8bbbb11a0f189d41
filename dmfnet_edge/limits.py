"""Resource limits checked before any large allocation.

The pixel budget bounds one image (or one slice) and one network call: the fusion network needs a few kB of
working memory per pixel, so an unchecked 20000 x 20000 file would exhaust the machine instead of failing
cleanly, and so would eight budget-sized images in one batch. A file over the budget is refused from its header,
before decoding; a batch (`--batch`) is cut into calls of at most the budget's pixels (`pairs_per_call`), so peak
memory is bounded by the budget whatever the batch (docs/RELIABILITY.md, "Memory model", gives the measured
function). Override with the environment variable DMFNET_MAX_PIXELS (or --max-pixels where a command offers it).
"""

from __future__ import annotations

import os

from dmfnet_edge.errors import InputError

# Peak memory of a fusion call on the embedded default (ONNX Runtime, FP32 graph) measured by
# benchmarks/memory_model.py (docs/RELIABILITY.md, "Memory model"): about 0.1 GiB + 5 to 7 kB per pixel in the
# call, up to 10.5 kB where ONNX Runtime's arena rounds big buffers up (two 1024 x 1024 images: 21 GiB). 2**20
# pixels (one 1024 x 1024 image, four 512 x 512) keep a call under 11 GiB on a 24 GiB machine.
DEFAULT_MAX_PIXELS = 2**20


def max_pixels() -> int:
    text = os.environ.get("DMFNET_MAX_PIXELS")
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"DMFNET_MAX_PIXELS={text!r}: expected a whole number of pixels") from None
    if value < 1:
        raise InputError(f"DMFNET_MAX_PIXELS={value}: must be positive")
    return value


def check_pixel_budget(width: int, height: int, source: str) -> None:
    """Refuse an image larger than the pixel budget, before its pixels are decoded."""
    budget = max_pixels()
    if width * height > budget:
        raise InputError(f"{source}: {width}x{height} = {width * height:,} pixels exceeds the budget of "
                         f"{budget:,}; downsample it or raise DMFNET_MAX_PIXELS")


def pairs_per_call(height: int, width: int, requested: int) -> int:
    """How many (height x width) network inputs one call may take: `requested`, lowered so that the call holds
    at most the pixel budget (never below one: a single image was checked against the budget when read)."""
    return max(1, min(requested, max_pixels() // max(1, height * width)))


def check_file_size(size: int, source: str) -> None:
    """Refuse a 2D image file larger than any encoding of a budget-sized image could be (16-bit RGBA, 8 bytes a
    pixel, plus 1 MiB of headers), before it is read into memory."""
    limit = 8 * max_pixels() + (1 << 20)
    if size > limit:
        raise InputError(f"{source}: {size:,} bytes is more than an image within the pixel budget can take "
                         f"({limit:,}); downsample it or raise DMFNET_MAX_PIXELS")


MAX_VOXELS = 512 * 1024 * 1024


def check_voxel_budget(voxels: int, source: str) -> None:
    """Refuse volumes over MAX_VOXELS (they are held in memory as float64)."""
    if voxels > MAX_VOXELS:
        raise InputError(f"{source}: {voxels:,} voxels exceed the volume budget of {MAX_VOXELS:,}; "
                         "split the volume")
