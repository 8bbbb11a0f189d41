"""`dmfnet baseline`: classic fusion baselines written in the same layout as `fuse-dir` (for `dmfnet eval`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dmfnet_edge.baselines import BASELINES, fuse_with_baseline
from dmfnet_edge.cli.common import Kept
from dmfnet_edge.cli.progress import track
from dmfnet_edge.io.images import read_image, write_image
from dmfnet_edge.io.output_guard import refuse_overlap
from dmfnet_edge.io.pairs import find_pairs


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, choices=sorted(BASELINES), help="the classic fusion rule")
    p.add_argument("--pairs", required=True, type=Path, help="DIR/MRI-X/{MRI,X}/NAME.png")
    p.add_argument("--out", required=True, type=Path, help="writes OUT/MRI-X/NAME.png")


def run(args: argparse.Namespace) -> int:
    refuse_overlap("--out", args.out, {"--pairs": args.pairs})
    pairs = find_pairs(args.pairs)
    kept = Kept(args, "pairs were fused", args.out, len(pairs))
    for pair in track(pairs, len(pairs), args.method, "pair"):
        fused = fuse_with_baseline(args.method, read_image(pair.mri), read_image(pair.other))
        write_image(args.out / pair.task / f"{pair.name}.png", fused)
        kept.add()
    print(f"{len(pairs)} pairs fused with '{args.method}' into {args.out}")
    return 0


COMMANDS = {"baseline": (configure, run)}
