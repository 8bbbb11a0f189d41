"""Peak memory of fusion as a function of image size and batch: the measured memory model of docs/RELIABILITY.md.

Every point is a fresh `dmfnet` process (the embedded default: ONNX Runtime on the CPU, the shipped FP32 graph)
whose peak resident set size it reports itself as it exits (its /proc VmHWM, `profiling.command_peak`; the
kernel's ru_maxrss would carry this script's own size into children smaller than it):
  batch 1   `dmfnet fuse` of one side x side MRI-PET pair (the bundled sample, resized)
  batch B   `dmfnet fuse-dir --batch B` over enough pairs to fill one call of the size the pixel budget allows
            (min(B, 2 x pairs per call) pairs: where the budget cuts the batch, two calls show the cut)
A floor run (one 64 x 64 pair) gives the fixed cost: interpreter, libraries, the loaded graph. The script
reports the linear bound peak <= floor + k x (pixels per network call) with k the largest (peak - floor) /
pixels over the points, the bound the budget implies, and the table; `--json` writes them for the docs.

    python benchmarks/memory_model.py [--sides 256,512,1024,2048] [--batches 1,8] [--json docs/benchmarks/memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from dmfnet_edge.io.images import read_image, write_image
from dmfnet_edge.limits import DEFAULT_MAX_PIXELS, max_pixels, pairs_per_call
from dmfnet_edge.preprocess.tensor import padded_size
from dmfnet_edge.profiling import command_peak

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "dmfnet_edge" / "samples" / "MRI-PET"


def sample_pair(side: int, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    name = sorted(p.name for p in (SAMPLE / "MRI").glob("*.png"))[0]
    mri, pet = read_image(SAMPLE / "MRI" / name), read_image(SAMPLE / "PET" / name)
    resize = [cv2.resize(np.roll(x, shift, axis=1), (side, side), interpolation=cv2.INTER_CUBIC) for x in (mri, pet)]
    return resize[0], resize[1]


def peak_of(argv: list[str], threads: int) -> tuple[float, float, str | None]:
    """(peak RSS in MiB, seconds, the error line if the input was refused) of one dmfnet process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    code, err, peak = command_peak([*argv, "--threads", str(threads)], env=env, cwd=REPO)
    seconds = time.perf_counter() - start
    if code not in (0, 2):
        raise SystemExit(f"{' '.join(argv)} failed ({code}): {err.strip()}")
    return peak, seconds, err.strip() if code else None


def point(work: Path, side: int, batch: int, threads: int) -> dict:
    per_call = pairs_per_call(*padded_size(side, side), batch)
    folder = work / f"{side}-{batch}"
    if batch == 1:
        mri, pet = sample_pair(side)
        a, b = write_image(folder / "mri.png", mri), write_image(folder / "pet.png", pet)
        argv = ["fuse", "--mri", str(a), "--other", str(b), "-o", str(folder / "out" / "fused.png")]
        pairs = 1
    else:
        pairs = min(batch, 2 * per_call) if side * side <= max_pixels() else 1
        for k in range(pairs):
            mri, pet = sample_pair(side, shift=3 * k)
            write_image(folder / "pairs" / "MRI-PET" / "MRI" / f"{k:02d}.png", mri)
            write_image(folder / "pairs" / "MRI-PET" / "PET" / f"{k:02d}.png", pet)
        argv = ["fuse-dir", "--pairs", str(folder / "pairs"), "--out", str(folder / "out"), "--batch", str(batch)]
    peak, seconds, refused = peak_of(argv, threads)
    ph, pw = padded_size(side, side)
    return {"side": side, "batch": batch, "pairs": pairs, "pairs_per_call": 0 if refused else per_call,
            "pixels_per_call": 0 if refused else per_call * ph * pw, "peak_mib": round(peak, 1),
            "seconds": round(seconds, 2), "refused": refused}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="256,512,1024,2048")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the table and fit here")
    args = parser.parse_args()
    sides = [int(s) for s in args.sides.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="dmfnet-memory-") as tmp:
        floor = point(Path(tmp), 64, 1, args.threads)
        print(f"floor (64x64, batch 1): {floor['peak_mib']:.0f} MiB", flush=True)
        rows = []
        for side in sides:
            for batch in batches:
                rows.append(point(Path(tmp), side, batch, args.threads))
                r = rows[-1]
                what = f"refused ({r['refused']})" if r["refused"] else f"{r['pairs_per_call']} per call"
                print(f"{side:>5} x {side:<5} batch {batch}: {r['pairs']} pairs, {what}, "
                      f"peak {r['peak_mib']:>8.0f} MiB, {r['seconds']:.1f} s", flush=True)
    ran = [r for r in rows if not r["refused"]]
    x = np.array([r["pixels_per_call"] for r in ran], dtype=float)
    y = np.array([r["peak_mib"] for r in ran])
    per_pixel = (y - floor["peak_mib"]) / x
    k, intercept = float(per_pixel.max()), floor["peak_mib"]
    bound = intercept + k * max_pixels()
    print("\n| side | batch | pairs | pairs per call | pixels per call | peak RSS (MiB) | bound (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["refused"]:
            print(f"| {r['side']} | {r['batch']} | {r['pairs']} | refused before decoding | - "
                  f"| {r['peak_mib']:,.0f} | - |")
            continue
        model = intercept + k * r["pixels_per_call"]
        print(f"| {r['side']} | {r['batch']} | {r['pairs']} | {r['pairs_per_call']} | {r['pixels_per_call']:,} "
              f"| {r['peak_mib']:,.0f} | {model:,.0f} |")
    print(f"\nbound: peak <= {intercept:.0f} MiB (floor run) + {k * 2**20:.0f} bytes x pixels per call "
          f"(per-point bytes per pixel {', '.join(f'{v * 2**20:.0f}' for v in per_pixel)})")
    print(f"budget {max_pixels():,} pixels per call -> peak at most about {bound:,.0f} MiB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads",
            "backend": "onnxruntime, shipped FP32 graph", "floor": floor, "rows": rows,
            "bound": {"floor_mib": round(intercept, 1), "bytes_per_pixel": round(k * 2**20, 1)},
            "budget_pixels": max_pixels(), "default_budget_pixels": DEFAULT_MAX_PIXELS,
            "bound_mib": round(bound, 1)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
