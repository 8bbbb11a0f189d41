"""Volume throughput: `dmfnet fuse-volume` on a 64-slice 256x256 DICOM pair against the 2D CLI in a loop.

Variants, all measured in this run on the same data and backend:
  2D CLI loop        `dmfnet fuse` once per slice (a new process per slice, as a shell loop would do)
  in-process loop    the 2D path slice by slice in one process (batch 1)
  fuse-volume        the volume command (DICOM series in, DICOM series out), batched
The volume is built from the bundled MRI-CT sample (slices shifted and mirrored to vary).

    python benchmarks/bench_volume.py [--slices 64] [--backend auto] [--batch 8] [--loop-slices 8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dmfnet_edge.cli.main import main as dmfnet
from dmfnet_edge.io.images import read_image, write_image
from dmfnet_edge.pipeline import fuse_pixels
from dmfnet_edge.runtime import open_runner

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.volume_fixtures import write_series  # noqa: E402

SAMPLE = REPO / "dmfnet_edge" / "samples" / "MRI-CT"


def stacks(slices: int) -> tuple[np.ndarray, np.ndarray]:
    mri, ct = read_image(SAMPLE / "MRI" / "11.png"), read_image(SAMPLE / "CT" / "11.png")
    shifts = [(i % 8 - 4, i // 8 - 4) for i in range(slices)]
    roll = [(np.roll(mri, s, axis=(0, 1)), np.roll(ct, s, axis=(0, 1))) for s in shifts]
    return np.stack([m for m, _ in roll]), np.stack([c for _, c in roll])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--model", default="edge")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--loop-slices", type=int, default=8, help="slices timed for the 2D CLI loop (extrapolated)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    mri, ct = stacks(args.slices)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_series(root / "mri", mri, "MR", spacing=(2.0, 1.0, 1.0))
        write_series(root / "ct", ct.astype(np.float64) - 1000, "CT", spacing=(2.0, 1.0, 1.0), intercept=-1024.0)
        for i in range(args.loop_slices):
            write_image(root / "png" / f"m{i}.png", mri[i])
            write_image(root / "png" / f"c{i}.png", ct[i])
        common = ["--model", args.model, "--backend", args.backend, "--threads", str(args.threads)]

        start = time.perf_counter()
        for i in range(args.loop_slices):
            png = root / "png"
            subprocess.run([sys.executable, "-m", "dmfnet_edge.cli.main", "fuse", "--mri", str(png / f"m{i}.png"),
                            "--other", str(png / f"c{i}.png"), "-o", str(png / f"f{i}.png"), *common],
                           check=True, capture_output=True)
        cli_per_slice = (time.perf_counter() - start) / args.loop_slices

        runner = open_runner(args.backend, args.model, threads=args.threads)
        fuse_pixels(runner, mri[0], ct[0])  # warm-up
        start = time.perf_counter()
        for i in range(args.slices):
            fuse_pixels(runner, mri[i], ct[i])
        loop_per_slice = (time.perf_counter() - start) / args.slices

        start = time.perf_counter()
        code = dmfnet(["fuse-volume", "--mri", str(root / "mri"), "--other", str(root / "ct"), "-o",
                       str(root / "out"), "--other-intensity", "window:-872,256", "--batch", str(args.batch), *common])
        volume_total = time.perf_counter() - start
        assert code == 0
    n = args.slices
    precision = runner.describe().get("precision", "fp32")
    print(f"\n{n}-slice 256x256 MRI-CT volume pair, backend {runner.backend} ({precision}), "
          f"{args.threads} threads, batch {args.batch}")
    print(f"{'variant':<44} {'s/slice':>8} {'slices/s':>9} {'vs 2D CLI loop':>15}")
    rows = [("2D CLI loop (process per slice, extrapolated)", cli_per_slice),
            ("2D path in one process, slice by slice", loop_per_slice),
            ("fuse-volume (read + fuse + write DICOM)", volume_total / n)]
    for name, per in rows:
        print(f"{name:<44} {per:>8.3f} {1 / per:>9.2f} {cli_per_slice / per:>14.2f}x")


if __name__ == "__main__":
    main()
