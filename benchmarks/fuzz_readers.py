"""Mutation fuzzing of every reader: N mutated files (PNG, JPEG, BMP, TIFF, DICOM, NIfTI), each read through
the public loader. A case ends in an image, a clear InputError, or a crash (anything else): crashes are
printed with their type and the seed that reproduces them. Exit status 1 when any crash was found.

    python benchmarks/fuzz_readers.py [--cases 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import io
import sys
import tempfile
import time
import traceback
import zlib
from pathlib import Path

import numpy as np
import pydicom

from dmfnet_edge.errors import InputError
from dmfnet_edge.io.images import encode_image
from dmfnet_edge.io.loader import load_image

DICOM = Path(pydicom.__file__).parent / "data" / "test_files"


def seeds() -> dict[str, bytes]:
    import nibabel as nib

    rng = np.random.default_rng(0)
    grey, rgb = rng.integers(0, 256, (48, 40), dtype=np.uint8), rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    out = {f"png{k}": encode_image(img, ".png") for k, img in (("g", grey), ("c", rgb))}
    out.update({"jpg": encode_image(rgb, ".jpg"), "bmp": encode_image(grey, ".bmp"), "tif": encode_image(rgb, ".tif")})
    for name in ("CT_small.dcm", "MR_small.dcm", "SC_rgb_small_odd.dcm", "examples_palette.dcm"):
        out[name] = (DICOM / name).read_bytes()
    buffer = io.BytesIO()
    image = nib.Nifti1Image(rng.random((16, 12, 2)).astype(np.float32), np.eye(4))
    buffer.write(image.to_bytes())
    out["nii"] = buffer.getvalue()
    out["nii.gz"] = gzip.compress(buffer.getvalue(), mtime=0)
    return out


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 10))):
        kind = rng.integers(5)
        pos = int(rng.integers(max(len(out), 1)))
        if kind == 0 and out:
            out[pos] ^= int(rng.integers(1, 256))
        elif kind == 1:
            del out[pos:pos + int(rng.integers(1, 256))]
        elif kind == 2:
            out[pos:pos] = rng.bytes(int(rng.integers(1, 32)))
        elif kind == 3 and len(out) > 8:  # overwrite a 4-byte field with an extreme value (sizes, offsets)
            out[pos:pos + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"])
        else:
            out = out[: int(rng.integers(len(out) + 1))]
    return bytes(out)


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute the CRC of every complete PNG chunk, so that mutations reach the decoder instead of all being
    stopped by the CRC check (which is what happens to a mutated PNG otherwise)."""
    out = bytearray(data)
    pos = 8
    while pos + 12 <= len(out):
        length = int.from_bytes(out[pos:pos + 4], "big")
        end = pos + 8 + length
        if end + 4 > len(out):
            break
        out[end:end + 4] = zlib.crc32(bytes(out[pos + 4:end])).to_bytes(4, "big")
        pos = end + 4
    return bytes(out)


def suffix(name: str) -> str:
    return ".nii.gz" if name == "nii.gz" else ".nii" if name == "nii" else ".dcm" if name.endswith(".dcm") \
        else f".{name[:3]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    corpus = seeds()
    names = sorted(corpus)
    outcomes: collections.Counter = collections.Counter()
    crashes = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for case in range(args.cases):
            rng = np.random.default_rng([args.seed, case])
            name = names[case % len(names)]
            path = Path(tmp) / f"case{suffix(name)}"
            data = mutate(corpus[name], rng)
            if name.startswith("png") and case % 4:  # three in four PNG cases get valid CRCs
                data = fix_png_crcs(data)
            path.write_bytes(data)
            try:
                pixels = load_image(path, slice_index=0).pixels
                assert pixels.dtype == np.uint8 and pixels.ndim in (2, 3), "bad output array"
                outcomes[(name, "image")] += 1
            except InputError:
                outcomes[(name, "InputError")] += 1
            except Exception as exc:  # a crash: anything that is not a clear user error
                outcomes[(name, "CRASH")] += 1
                crashes.append((case, name, type(exc).__name__, traceback.format_exc(limit=3)))
    elapsed = time.perf_counter() - start
    print(f"{args.cases} cases in {elapsed:.0f} s ({args.cases / elapsed:.0f}/s), seed {args.seed}")
    print(f"{'seed file':<24} {'image':>7} {'InputError':>11} {'crash':>6}")
    for name in names:
        print(f"{name:<24} {outcomes[(name, 'image')]:>7} {outcomes[(name, 'InputError')]:>11} "
              f"{outcomes[(name, 'CRASH')]:>6}")
    print(f"crashes: {len(crashes)}")
    for case, name, kind, trace in crashes[:10]:
        print(f"--- case {case} ({name}): {kind}\n{trace}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
