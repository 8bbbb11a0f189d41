"""Reading and writing 2D images (PNG, JPEG, TIFF, BMP) with OpenCV, without torch.

`read_image` returns uint8 pixels: (H, W) for grey or (H, W, 3) RGB for colour. 16-bit and float images are
mapped linearly from their own min..max to 0..255 (documented in docs/DATA.md), alpha is dropped.
`write_image` writes atomically: a temporary file in the target folder, renamed into place on success.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from pathlib import Path

import cv2
import numpy as np

from dmfnet_edge.errors import InputError
from dmfnet_edge.files import atomic_write_bytes
from dmfnet_edge.limits import check_file_size, check_pixel_budget
from dmfnet_edge.preprocess.intensity import rescale_to_uint8

# OpenCV prints its own "[ERROR:...] readHeader ..." lines for malformed files; every decode failure is reported
# here as one error line instead
if hasattr(cv2, "setLogLevel"):  # OpenCV 4.x
    cv2.setLogLevel(0)  # LOG_LEVEL_SILENT
else:  # OpenCV 5
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def regular_file(path: Path, folder_hint: str = "expected an image file") -> int:
    """The size of `path` if it is a regular file (after symlinks); a folder, pipe, device or socket is refused
    before anything opens it (opening a FIFO blocks, /dev/zero never ends)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a folder, {folder_hint}")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: is not a regular file (a pipe, device or socket); give an image file")
    return info.st_size


def _check_readable(path: Path) -> bytes:
    size = regular_file(path)
    if not size:
        raise InputError(f"{path}: file is empty")
    check_file_size(size, str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    if not data:
        raise InputError(f"{path}: file is empty")
    return data


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a TIFF's first image file directory (tags 256 and 257), without decoding."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, offset)
        sides: dict[int, int] = {}
        for k in range(min(count, 4096)):
            tag, kind, _, value = struct.unpack_from(order + "HHI4s", data, offset + 2 + 12 * k)
            if tag in (256, 257):
                fmt = {3: "H", 4: "I"}.get(kind)
                if fmt is None:
                    return None
                sides[tag] = struct.unpack_from(order + fmt, value)[0]
    except struct.error:
        return None
    return (sides[256], sides[257]) if len(sides) == 2 else None


def header_format(data: bytes) -> str | None:
    """'png', 'jpeg', 'tiff' or 'bmp' by the file's first bytes (its name does not count); None otherwise."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data.startswith(b"BM"):
        return "bmp"
    return None


def probe_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file header without decoding pixels; None when the header is not understood.

    PNG and BMP sizes are read from their fixed header fields (a PNG's IHDR chunk comes first, and a damaged
    checksum in a later chunk must not hide it), TIFF from its first directory, JPEG by Pillow."""
    kind = header_format(data)
    if kind == "png" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if kind == "bmp" and len(data) >= 26:
        width, height = struct.unpack_from("<ii", data, 18)
        return abs(width), abs(height)
    if kind == "tiff":
        return _tiff_size(data)
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None  # our own budget applies (limits.py); Pillow only reads the header here
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def decode_image(data: bytes, source: str) -> np.ndarray:
    """Decode image bytes to uint8 (H, W) grey or (H, W, 3) RGB, refusing images over the pixel budget before
    decoding: the content must be PNG, JPEG, TIFF or BMP (whatever the name says) with a readable size."""
    if header_format(data) is None:
        raise InputError(f"{source}: not a readable image: not a PNG, JPEG, TIFF or BMP file by its first bytes "
                         "(whatever its name says)")
    size = probe_size(data)
    if size is None:
        raise InputError(f"{source}: not a readable image (its header gives no size; corrupt or truncated)")
    check_pixel_budget(*size, source)
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InputError(f"{source}: not a readable image ({str(exc).strip().splitlines()[-1]})") from None
    if pixels is None:
        raise InputError(f"{source}: not a readable image (corrupt, truncated or not PNG/JPEG/TIFF/BMP)")
    if (pixels.shape[1], pixels.shape[0]) != tuple(size):
        raise InputError(f"{source}: its header says {size[0]}x{size[1]} but it decodes to "
                         f"{pixels.shape[1]}x{pixels.shape[0]}; the file is damaged")
    if pixels.ndim == 3:
        channels = pixels.shape[2]
        if channels == 1:
            pixels = pixels[:, :, 0]
        elif channels == 2:
            pixels = pixels[:, :, 0]  # grey + alpha
        elif channels in (3, 4):
            pixels = cv2.cvtColor(pixels[:, :, :3], cv2.COLOR_BGR2RGB)
        else:
            raise InputError(f"{source}: {channels} channels are not supported (expected 1, 3 or 4)")
    elif pixels.ndim != 2:
        raise InputError(f"{source}: {pixels.ndim}-dimensional image is not supported (expected a 2D image)")
    return np.ascontiguousarray(rescale_to_uint8(pixels, source))


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as uint8 (H, W) grey or (H, W, 3) RGB."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"{path}: unsupported file type '{path.suffix}' (expected one of "
                         f"{', '.join(IMAGE_SUFFIXES)}, or DICOM/NIfTI)")
    return decode_image(_check_readable(path), str(path))


def encode_image(pixels: np.ndarray, suffix: str) -> bytes:
    """Encode uint8 grey (H, W) or RGB (H, W, 3) pixels into the format named by `suffix`."""
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix.lower(), pixels, params)
    if not ok:
        raise InputError(f"cannot encode an image as '{suffix}'")
    return buf.tobytes()


def write_image(path: str | os.PathLike[str], pixels: np.ndarray) -> Path:
    """Write uint8 grey or RGB pixels atomically; the format follows the file suffix."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"{path}: unsupported output type '{path.suffix}' (use .png, .jpg, .tif or .bmp)")
    atomic_write_bytes(path, encode_image(pixels, path.suffix))
    return path
