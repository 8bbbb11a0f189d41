"""Peak memory of reading one slice of a NIfTI volume (`dmfnet fuse --slice K`'s reader, io/loader.load_image), in
a fresh process per point that reports its own /proc VmHWM after its imports (nibabel included) and after the
read: the rows of docs/RELIABILITY.md's "Memory model" for NIfTI.

Volumes are float32 (x, y, z) of random values, written slice by slice (never held whole), as .nii and, where
asked, .nii.gz; the slice read is the middle one. `--code DIR` measures another checkout of the package (e.g.
`git archive REV | tar -x -C DIR`), so that the reader before a change runs on the same files.

    python benchmarks/nifti_slice_memory.py [--shapes 512x512x256,512x512x512] [--gz] [--code DIR]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import nibabel
from dmfnet_edge.io.loader import load_image

def hwm():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024

before = hwm()
load_image(sys.argv[2], slice_index=int(sys.argv[3]))
print(before, hwm())
"""


def write_volume(path: Path, shape: tuple[int, int, int]) -> Path:
    """A float32 NIfTI-1 volume written one slice at a time (NIfTI stores x fastest, so a slice is contiguous)."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_data_offset(352)
    rng = np.random.default_rng(0)
    with open(path, "wb") as handle:
        handle.write(header.binaryblock + bytes(4))
        for k in range(shape[2]):
            handle.write((rng.random(shape[:2], dtype=np.float32) * (k + 1)).tobytes(order="F"))
    return path


def gzipped(path: Path) -> Path:
    with open(path, "rb") as source, gzip.open(path.with_name(path.name + ".gz"), "wb", compresslevel=1) as out:
        shutil.copyfileobj(source, out, 1 << 24)
    return path.with_name(path.name + ".gz")


def measure(path: Path, index: int, code: Path) -> tuple[float, float, float]:
    """(MiB after imports, peak MiB, seconds) of one read in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(code), str(path), str(index)], cwd=code,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{path}: {done.stderr.strip().splitlines()[-1]}")
    before, after = (float(v) for v in done.stdout.split())
    return before, after, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="512x512x256,512x512x512")
    parser.add_argument("--gz", action="store_true", help="also measure gzipped copies")
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout whose package is measured")
    args = parser.parse_args()
    print(f"package: {args.code}\n| volume | file | file size | after imports | peak | peak - imports | s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="nifti-slice-") as tmp:
        for text in args.shapes.split(","):
            shape = tuple(int(v) for v in text.split("x"))
            plain = write_volume(Path(tmp) / "v.nii", shape)  # type: ignore[arg-type]
            for path in [plain, gzipped(plain)] if args.gz else [plain]:
                before, peak, seconds = measure(path, shape[2] // 2, args.code.resolve())
                print(f"| {text} float32 | {''.join(path.suffixes)} | {path.stat().st_size / 2**20:,.0f} MiB | "
                      f"{before:,.0f} MiB | {peak:,.0f} MiB | {peak - before:,.0f} MiB | {seconds:.1f} |", flush=True)
                path.unlink()


if __name__ == "__main__":
    main()
