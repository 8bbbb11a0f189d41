"""Reading one DICOM file's dataset with bounded memory, for the 2D reader (io/medical.py) and the series reader
(io/volumes.py) alike.

- Elements larger than `DEFER_BYTES` (the pixel data, big private blobs) stay on disk until they are used
  (pydicom's deferred reading): reading a header costs kilobytes, whatever the file holds.
- A Deflated Explicit VR Little Endian file is inflated here, never beyond what its header declares: first at most
  the bytes of one image within the pixel budget (`first_inflation_limit`); a file that inflates further must
  declare, before its pixel data, a geometry within the budgets, and may then inflate to that geometry's bytes plus
  1 MiB of other elements. pydicom itself would inflate the whole stream before anything could be checked (a
  deflate bomb of a few MB inflates to gigabytes).
- `check_declared_geometry`: Rows x Columns against the pixel budget, Rows x Columns x frames against the voxel
  budget and the pixel data's length against what that geometry needs (native: at most its bytes plus 1 MiB and
  at least half of them; compressed: at most twice plus 1 MiB, and an item per frame), from the element headers,
  before any pixel is read: a header's frame count costs what the file holds, not what the header says.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from dmfnet_edge._optional import require
from dmfnet_edge.errors import InputError
from dmfnet_edge.limits import check_pixel_budget, check_voxel_budget, max_pixels

DEFER_BYTES = 64 * 1024
DEFLATED = "1.2.840.10008.1.2.1.99"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
SLACK_BYTES = 1 << 20  # other elements and padding beside the pixel data
CHUNK_BYTES = 1 << 20


def read_dataset(path: Path) -> Any:
    """The dataset of the DICOM file at `path`, its large elements left on disk until used. pydicom's own
    exceptions for a file that is not DICOM (the caller decides whether that skips the file or is an error);
    InputError for a deflated file that inflates beyond what its header declares."""
    pydicom = require("pydicom", purpose="reading DICOM")
    meta = pydicom.filereader.read_file_meta_info(str(path))
    if str(meta.get("TransferSyntaxUID", "")) == DEFLATED:
        return _read_deflated(pydicom, path, meta)
    return pydicom.dcmread(str(path), defer_size=DEFER_BYTES)


def first_inflation_limit() -> int:
    """Bytes a deflated file may inflate to before its header must say why: one image within the pixel budget at
    8 bytes a pixel, plus the slack for other elements."""
    return 8 * max_pixels() + SLACK_BYTES


def _read_deflated(pydicom: Any, path: Path, meta: Any) -> Any:
    from pydicom.dataset import FileDataset

    group_length = meta.get("FileMetaInformationGroupLength")
    if group_length is None:
        raise InputError(f"{path}: a deflated DICOM file without File Meta Information Group Length (0002,0000); "
                         "expected a standard Part 10 file: re-save it uncompressed")
    with open(path, "rb") as handle:
        preamble = handle.read(128)
        handle.seek(128 + 4 + 12 + int(group_length))  # preamble, 'DICM', the group length element, the group
        data = _inflate(handle, path)
    dataset = pydicom.filereader.read_dataset(io.BytesIO(data), is_implicit_VR=False, is_little_endian=True)
    return FileDataset(str(path), dataset, preamble=preamble, file_meta=meta, is_implicit_VR=False,
                       is_little_endian=True)


def _inflate(handle: BinaryIO, path: Path) -> bytes:
    """The deflated dataset after the file meta, inflated in steps: never more than one byte beyond the limit."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    data = _inflate_up_to(inflater, handle, first_inflation_limit())
    if len(data) <= first_inflation_limit():
        return bytes(data)
    limit = _declared_bytes(bytes(data), path)
    data += _inflate_up_to(inflater, handle, limit - len(data))
    if len(data) > limit:
        raise InputError(f"{path}: the deflated data inflates to more than the {limit:,} bytes its header declares "
                         "(a deflate bomb, or a damaged file); refused before inflating further")
    return bytes(data)


def _inflate_up_to(inflater: Any, handle: BinaryIO, limit: int) -> bytearray:
    """At most limit + 1 inflated bytes (one more than allowed shows that there is more)."""
    out = bytearray()
    while len(out) <= limit and not inflater.eof:
        compressed = inflater.unconsumed_tail or handle.read(CHUNK_BYTES)
        if not compressed:
            break
        out += inflater.decompress(compressed, limit + 1 - len(out))
    return out


def _declared_bytes(prefix: bytes, path: Path) -> int:
    """What a deflated dataset may inflate to, from the elements before its pixel data (in `prefix`): those
    elements, the pixel data its geometry declares (checked against the budgets first) and the slack."""
    pydicom = require("pydicom", purpose="reading DICOM")
    reached: list[bool] = []

    def at_pixels(tag: int, _vr: Any, _length: int) -> bool:
        reached.append(tag in PIXEL_TAGS)
        return reached[-1]

    stream = io.BytesIO(prefix)
    header = pydicom.filereader.read_dataset(stream, is_implicit_VR=False, is_little_endian=True,
                                             stop_when=at_pixels)
    if not (reached and reached[-1]):
        raise InputError(f"{path}: the deflated data inflates beyond {first_inflation_limit():,} bytes without "
                         "reaching its pixel data (a deflate bomb, or a damaged file); refused before inflating "
                         "further")
    check_declared_geometry(header, str(path), lengths=False)
    return stream.tell() + pixel_bytes(header) + SLACK_BYTES


def _count(ds: Any, keyword: str, default: int) -> int:
    """A count from the header; absent, empty or 0 is `default` (as the frame reader reads NumberOfFrames)."""
    return int(ds.get(keyword) or 0) or default


def geometry(ds: Any) -> tuple[int, int, int]:
    """(rows, columns, frames) as the header declares them."""
    return _count(ds, "Rows", 0), _count(ds, "Columns", 0), _count(ds, "NumberOfFrames", 1)


def pixel_bytes(ds: Any) -> int:
    """Bytes of native pixel data the header's geometry needs (1-bit data packed, as DICOM stores it)."""
    rows, columns, frames = geometry(ds)
    bits = rows * columns * frames * max(1, _count(ds, "SamplesPerPixel", 1)) * max(1, _count(ds, "BitsAllocated", 8))
    return math.ceil(bits / 8)


def check_declared_geometry(ds: Any, name: str, lengths: bool = True) -> None:
    """Refuse a file whose header declares no pixels, more pixels than the budgets allow, or (with `lengths`)
    native pixel data longer than its geometry needs: before any pixel is read."""
    rows, columns, frames = geometry(ds)
    if rows < 1 or columns < 1 or frames < 1:
        raise InputError(f"{name}: the header declares {columns}x{rows} pixels in {frames} frame(s); expected an "
                         "image of at least one pixel and one frame (the file is damaged)")
    check_pixel_budget(columns, rows, name)
    check_voxel_budget(rows * columns * frames, name)
    if lengths:
        _check_pixel_length(ds, name)


def _check_pixel_length(ds: Any, name: str) -> None:
    """Pixel data is read whole when its first frame is decoded, and every declared frame gets its geometry, so
    the data must fit the header: native data at most what the geometry needs plus 1 MiB and at least half of it
    (YBR_FULL_422 stores two thirds), encapsulated (compressed) data at most twice that plus 1 MiB and an item for
    every frame. Measured from element headers (an encapsulated element's items walked), never by reading the
    value: so a header's frame count costs what the file holds, not what the header says."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    native = syntax is None or (syntax.is_transfer_syntax and not syntax.is_compressed)
    needed, frames = pixel_bytes(ds), geometry(ds)[2]
    allowed = (1 if native else 2) * needed + SLACK_BYTES
    for keyword in PIXEL_KEYWORDS:
        if keyword not in ds:
            continue
        element = ds.get_item(keyword, keep_deferred=True)
        length, fragments = _stored_length(ds, element, allowed) if not native else (_native_length(element), 0)
        if length > allowed:
            held = f"{length:,}" if native else f"more than {allowed:,} (compressed)"
            raise InputError(f"{name}: its pixel data holds {held} bytes but its header ({_geometry_text(ds)}) "
                             f"declares {needed:,}; the file is damaged (refused before reading the pixels)")
        if (native and 2 * length < needed) or (not native and fragments < frames):
            held = f"{length:,} bytes" if native else f"{fragments:,} compressed fragment(s)"
            raise InputError(f"{name}: DICOM pixel data cannot be decoded: it holds {held}, too few for what its "
                             f"header declares ({_geometry_text(ds)}); the file is truncated or damaged")


def _native_length(element: Any) -> int:
    value = getattr(element, "value", None)
    if value is not None:
        return len(value) if isinstance(value, (bytes, bytearray)) else 0
    return int(element.length)


def _stored_length(ds: Any, element: Any, limit: int) -> tuple[int, int]:
    """(bytes, fragments) of an encapsulated element: its items walked in memory or on disk (a Basic Offset Table
    item first, then at least one fragment per frame), bytes counted up to limit + 1."""
    value = getattr(element, "value", None)
    if value is None and element.length != 0xFFFFFFFF:
        return int(element.length), 0
    with (io.BytesIO(value) if value is not None else open(ds.filename, "rb")) as handle:
        handle.seek(0 if value is not None else element.value_tell)
        total, items = 0, 0
        while total <= limit and len(head := handle.read(8)) == 8:
            group, number, length = struct.unpack("<HHI", head)  # encapsulated syntaxes are all little endian
            if (group, number) != (0xFFFE, 0xE000):
                break  # the sequence delimiter (or damage, which the decoder reports)
            total, items = total + 8 + length, items + 1  # a header counts too: empty items cost their 8 bytes
            handle.seek(length, 1)
    return min(total, limit + 1), max(items - 1, 0)


def _geometry_text(ds: Any) -> str:
    rows, columns, frames = geometry(ds)
    return f"{columns}x{rows}, {frames} frame(s), {_count(ds, 'BitsAllocated', 8)}-bit"
