"""`dmfnet-export calibrate`: a hashed INT8 calibration set from a training split."""

from __future__ import annotations

import argparse
from pathlib import Path

from dmfnet_edge.cli.types import POSITIVE


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, type=Path, help="training split DIR/MRI-X/{MRI,X}/NAME.png")
    p.add_argument("--exclude", type=Path, help="validation split that must not overlap (checked by hash)")
    p.add_argument("--per-modality", type=POSITIVE, default=16, help="calibration pairs per modality")
    p.add_argument("-o", "--out", required=True, type=Path, help="calibration manifest (.json)")


def run(args: argparse.Namespace) -> int:
    from dmfnet_edge.export.calibration import select_calibration_set
    from dmfnet_edge.io.output_guard import refuse_overlap

    refuse_overlap("-o", args.out, {"--pairs": args.pairs, **({"--exclude": args.exclude} if args.exclude else {})})
    manifest = select_calibration_set(args.pairs, args.per_modality, args.exclude)
    manifest.write(args.out)
    disjoint = manifest.disjoint_from_validation
    checked = f"checked, {disjoint.overlap} shared images" if disjoint.checked else "not checked (no --exclude)"
    print(f"{args.out}: {manifest.per_modality} pairs; disjointness from validation {checked}")
    return 0


COMMANDS = {"calibrate": (configure, run)}
