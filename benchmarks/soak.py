"""Soak test: fuse thousands of pairs in one process and watch memory and file handles.

Every pair is read from disk, fused on the chosen backend and written (atomically) to a ring of output files,
so the whole 2D path is exercised. RSS and the number of open file descriptors are sampled every
--sample-every pairs; the verdict compares the end with the state after --warmup pairs.
PASS when RSS grew by less than 5 % and no file descriptor leaked.

    python benchmarks/soak.py [--pairs 5000] [--backend auto] [--json soak.json] [--plot soak.png]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from dmfnet_edge.io.images import read_image, write_image
from dmfnet_edge.pipeline import fuse_pixels
from dmfnet_edge.runtime import open_runner

SAMPLES = Path(__file__).resolve().parents[1] / "dmfnet_edge" / "samples"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def sources(folder: Path) -> list[tuple[Path, Path]]:
    """Input files: the bundled samples plus flipped copies, so that not every call sees the same pixels."""
    pairs = []
    for task in sorted(SAMPLES.glob("MRI-*")):
        mri, other = task / "MRI" / "11.png", next(p for p in (task / task.name[4:]).glob("*.png"))
        for k, flip in enumerate((None, 0, 1)):
            a, b = read_image(mri), read_image(other)
            if flip is not None:
                a, b = np.flip(a, flip).copy(), np.flip(b, flip).copy()
            stem = folder / f"{task.name}-{k}"
            pairs.append((write_image(Path(f"{stem}-m.png"), a), write_image(Path(f"{stem}-o.png"), b)))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--model", default="edge")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--sample-every", type=int, default=100)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    if args.pairs < 4:
        parser.error("--pairs: give at least 4")
    warmup = min(args.warmup, args.pairs // 4)  # a short soak keeps three quarters of its pairs to measure
    runner = open_runner(args.backend, args.model, threads=args.threads)
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = sources(Path(tmp))
        start = time.perf_counter()
        for i in range(1, args.pairs + 1):
            mri, other = inputs[i % len(inputs)]
            fused = fuse_pixels(runner, read_image(mri), read_image(other))
            write_image(Path(tmp) / "out" / f"f{i % 10}.png", fused.pixels)
            if i % args.sample_every == 0 or i in (warmup, args.pairs):
                samples.append({"pair": i, "rss_mib": rss_mib(), "fds": open_fds(),
                                "seconds": time.perf_counter() - start})
    base = next(s for s in samples if s["pair"] >= warmup)
    end = samples[-1]
    growth = 100 * (end["rss_mib"] - base["rss_mib"]) / base["rss_mib"]
    verdict = growth < 5 and end["fds"] <= base["fds"]
    summary = {"pairs": args.pairs, "backend": runner.describe(), "rss_after_warmup_mib": round(base["rss_mib"], 1),
               "rss_end_mib": round(end["rss_mib"], 1), "rss_max_mib": round(max(s["rss_mib"] for s in samples), 1),
               "rss_growth_percent": round(growth, 2), "fds_after_warmup": base["fds"], "fds_end": end["fds"],
               "seconds_per_pair": round(end["seconds"] / args.pairs, 4), "passed": verdict, "samples": samples}
    print(json.dumps({k: v for k, v in summary.items() if k != "samples"}, indent=2))
    print("PASS" if verdict else "FAIL")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    if args.plot:
        plot(samples, args.plot, runner.backend)


def plot(samples: list[dict[str, float]], path: Path, backend: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot([s["pair"] for s in samples], [s["rss_mib"] for s in samples], label="RSS (MiB)")
    ax.set_xlabel("pairs fused")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(0, max(s["rss_mib"] for s in samples) * 1.2)
    ax2 = ax.twinx()
    ax2.plot([s["pair"] for s in samples], [s["fds"] for s in samples], color="tab:orange", label="open fds")
    ax2.set_ylabel("open file descriptors")
    ax2.set_ylim(0, max(s["fds"] for s in samples) * 1.5)
    ax.set_title(f"soak: {samples[-1]['pair']} pairs on {backend}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
