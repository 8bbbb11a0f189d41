"""`dmfnet compare`: the model against the classic baselines on a split: fused images per method, metric
tables per task (with the metrics each method wins) and a picture grid."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge.baselines import BASELINES, fuse_with_baseline
from dmfnet_edge.cli.common import Kept, add_model_options, runner_from
from dmfnet_edge.cli.progress import bar
from dmfnet_edge.cli.types import int_range
from dmfnet_edge.io.images import write_image
from dmfnet_edge.io.output_guard import refuse_overlap
from dmfnet_edge.io.pairs import ImagePair, find_pairs
from dmfnet_edge.metrics.evaluate import evaluate
from dmfnet_edge.pipeline import fuse_pixels
from dmfnet_edge.reporting.comparison import (
    comparison_figure,
    comparison_markdown,
    comparison_summary,
    method_folder,
    write_comparison,
)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, type=Path, help="DIR/MRI-X/{MRI,X}/NAME.png")
    p.add_argument("--out", required=True, type=Path, help="OUT/<method>/MRI-X/NAME.png, comparison.{md,json}, "
                                                           "figure.png")
    p.add_argument("--figure-rows", type=int_range(1, 20), default=2, help="pairs per task in the picture grid")
    add_model_options(p)


def _method_fns(runner) -> dict[str, Any]:
    fns: dict[str, Any] = {name: (lambda m, o, n=name: fuse_with_baseline(n, m, o)) for name in BASELINES}
    fns[f"DM-FNet ({runner.model_name})"] = lambda m, o: fuse_pixels(runner, m, o).pixels
    return fns


def run(args: argparse.Namespace) -> int:
    refuse_overlap("--out", args.out, {"--pairs": args.pairs})
    pairs = find_pairs(args.pairs)
    runner = runner_from(args)
    methods = _method_fns(runner)
    results: dict[str, dict[str, Any]] = {}
    kept = Kept(args, "fused images were written", args.out, missing="no comparison was written")
    with bar(len(pairs) * len(methods), "comparing", "image") as progress:
        for method, fn in methods.items():
            def fused_for(pair: ImagePair, mri: np.ndarray, other: np.ndarray, fn=fn, method=method) -> np.ndarray:
                pixels = fn(mri, other)
                write_image(args.out / method_folder(method) / pair.task / f"{pair.name}.png", pixels)
                kept.add()
                return pixels

            results[method] = evaluate(pairs, fused_for, lambda: progress.update(1))
    summary = comparison_summary(results, runner.describe())
    def fused(method: str, pair: ImagePair) -> Path:
        return args.out / method_folder(method) / pair.task / f"{pair.name}.png"

    figure = comparison_figure(pairs, list(methods), fused, args.figure_rows)
    write_comparison(args.out, summary, figure)
    print(comparison_markdown(summary))
    folders = ", ".join(method_folder(m) for m in methods)
    print(f"wrote {args.out}/: METHOD/MRI-X/NAME.png for {folders}, comparison.md, comparison.json, figure.png")
    return 0


COMMANDS = {"compare": (configure, run)}
