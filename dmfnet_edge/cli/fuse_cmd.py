"""`dmfnet fuse` (one pair) and `dmfnet fuse-dir` (a dataset folder) commands."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dmfnet_edge.cli.common import Kept, add_model_options, parse_window, runner_from
from dmfnet_edge.cli.progress import bar
from dmfnet_edge.cli.types import NON_NEGATIVE, int_range
from dmfnet_edge.errors import InputError
from dmfnet_edge.io.images import IMAGE_SUFFIXES, read_image, write_image
from dmfnet_edge.io.loader import load_image
from dmfnet_edge.io.output_guard import refuse_overlap
from dmfnet_edge.io.pairs import find_pairs
from dmfnet_edge.pipeline import fuse_pairs, fuse_pixels, prepare_pair


def configure_fuse(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mri", required=True, type=Path, help="MRI image: PNG/JPEG/TIFF/BMP, DICOM or NIfTI")
    p.add_argument("--other", required=True, type=Path, help="CT, PET or SPECT image of the same slice")
    p.add_argument("-o", "--output", required=True, type=Path, help="fused image (.png, .jpg, .tif, .bmp)")
    p.add_argument("--slice", type=NON_NEGATIVE, help="slice index for NIfTI volumes, frame for multi-frame DICOM")
    p.add_argument("--window-mri", help="CENTER,WIDTH window for DICOM/NIfTI MRI values")
    p.add_argument("--window-other", help="CENTER,WIDTH window for DICOM/NIfTI values (e.g. CT 40,400)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output image")
    add_model_options(p)


def run_fuse(args: argparse.Namespace) -> int:
    if args.output.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"{args.output}: unsupported output type; use one of {', '.join(IMAGE_SUFFIXES)}")
    mri = load_image(args.mri, args.slice, parse_window(args.window_mri))
    other = load_image(args.other, args.slice, parse_window(args.window_other))
    refuse_overlap("-o", args.output, {"--mri": args.mri, "--other": args.other})
    if args.output.exists() and not args.overwrite:
        raise InputError(f"{args.output}: exists; pass --overwrite to replace it")
    runner = runner_from(args)
    start = time.perf_counter()
    fused = fuse_pixels(runner, mri.pixels, other.pixels, f"{args.mri.name} + {args.other.name}")
    seconds = time.perf_counter() - start
    write_image(args.output, fused.pixels)
    print(f"{args.output} ({fused.pixels.shape[1]}x{fused.pixels.shape[0]}, "
          f"{'RGB' if fused.pixels.ndim == 3 else 'grey'}) in {seconds:.2f} s on {runner.backend}")
    return 0


def configure_fuse_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, type=Path, help="DIR/MRI-X/{MRI,X}/NAME.png")
    p.add_argument("--out", required=True, type=Path, help="writes OUT/MRI-X/NAME.png and OUT/report.json")
    p.add_argument("--batch", type=int_range(1, 64), default=1, help="pairs per network call (same-size pairs only)")
    p.add_argument("--metrics", action="store_true", help="also compute the eleven fusion metrics per pair")
    p.add_argument("--json", action="store_true", help="print the full summary as JSON instead of a short one")
    add_model_options(p)


def run_fuse_dir(args: argparse.Namespace) -> int:
    from dmfnet_edge.reporting.report import fuse_summary_lines, write_fuse_report

    refuse_overlap("--out", args.out, {"--pairs": args.pairs})
    pairs = find_pairs(args.pairs)
    runner = runner_from(args)
    seconds: dict[str, float] = {}
    written: dict[str, Path] = {}
    kept = Kept(args, "pairs were fused", args.out, len(pairs), "no report was written")

    def prepared():
        for pair in pairs:
            yield pair, prepare_pair(read_image(pair.mri), read_image(pair.other), f"{pair.task}/{pair.name}")

    with bar(len(pairs), f"fusing on {runner.backend}", "pair") as progress:
        for done, fused, elapsed in fuse_pairs(runner, prepared(), args.batch):
            for pair, image in zip(done, fused):
                key = f"{pair.task}/{pair.name}"
                written[key] = write_image(args.out / pair.task / f"{pair.name}.png", image.pixels)
                kept.add()
                seconds[key] = elapsed / len(done)
            progress.update(len(done))
    with bar(len(pairs), "metrics and report" if args.metrics else "report", "pair") as progress:
        report = write_fuse_report(args.out, pairs, written, seconds, runner.describe(), args.metrics,
                                   progress=lambda: progress.update(1))
    print(json.dumps(report["summary"], indent=2) if args.json else "\n".join(fuse_summary_lines(report, args.out)))
    return 0


COMMANDS = {"fuse": (configure_fuse, run_fuse), "fuse-dir": (configure_fuse_dir, run_fuse_dir)}
