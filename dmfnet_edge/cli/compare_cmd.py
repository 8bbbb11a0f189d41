"""`dmfnet compare`: the model against the classic baselines on a split: fused images per method, metric
tables per task (with the metrics each method wins) and a picture grid."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge.artifacts import write_json_atomic
from dmfnet_edge.baselines import BASELINES, fuse_with_baseline
from dmfnet_edge.cli.common import Kept, add_model_options, runner_from
from dmfnet_edge.cli.progress import bar
from dmfnet_edge.cli.types import int_range
from dmfnet_edge.files import atomic_write_bytes
from dmfnet_edge.io.images import encode_image, read_image, write_image
from dmfnet_edge.io.output_guard import refuse_overlap
from dmfnet_edge.io.pairs import ImagePair, find_pairs
from dmfnet_edge.metrics.evaluate import evaluate
from dmfnet_edge.metrics.fusion import CONVENTIONS, METRIC_NAMES
from dmfnet_edge.metrics.table import markdown_table
from dmfnet_edge.pipeline import fuse_pixels
from dmfnet_edge.postprocess.pictures import overview_picture


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, type=Path, help="DIR/MRI-X/{MRI,X}/NAME.png")
    p.add_argument("--out", required=True, type=Path, help="OUT/<method>/MRI-X/NAME.png, comparison.{md,json}, "
                                                           "figure.png")
    p.add_argument("--figure-rows", type=int_range(1, 20), default=2, help="pairs per task in the picture grid")
    add_model_options(p)


def wins(ours: dict[str, float], baseline: dict[str, float]) -> list[str]:
    """Metrics (all higher-is-better) on which `ours` is strictly above `baseline`."""
    return [m for m in METRIC_NAMES if ours[m] > baseline[m]]


def _method_fns(runner) -> dict[str, Any]:
    fns: dict[str, Any] = {name: (lambda m, o, n=name: fuse_with_baseline(n, m, o)) for name in BASELINES}
    fns[f"DM-FNet ({runner.model_name})"] = lambda m, o: fuse_pixels(runner, m, o).pixels
    return fns


def _folder(method: str) -> str:
    return method.split(" ")[0].lower() if method.startswith("DM-FNet") else method


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
                write_image(args.out / _folder(method) / pair.task / f"{pair.name}.png", pixels)
                kept.add()
                return pixels

            results[method] = evaluate(pairs, fused_for, lambda: progress.update(1))
    summary = _summary(results, runner.describe())
    write_json_atomic(args.out / "comparison.json", summary)
    atomic_write_bytes(args.out / "comparison.md", _markdown(summary).encode())
    atomic_write_bytes(args.out / "figure.png", encode_image(_figure(pairs, methods, args), ".png"))
    print(_markdown(summary))
    print(f"wrote {args.out}/: METHOD/MRI-X/NAME.png for {', '.join(_folder(m) for m in methods)}, comparison.md, "
          "comparison.json, figure.png")
    return 0


def _summary(results: dict[str, dict[str, Any]], backend: dict[str, Any]) -> dict[str, Any]:
    model = next(m for m in results if m.startswith("DM-FNet"))
    tasks = list(results[model]["tasks"])
    table = {t: {m: results[m]["tasks"][t] for m in results} for t in tasks}
    won = {t: {b: wins(table[t][model], table[t][b]) for b in BASELINES} for t in tasks}
    return {"conventions": CONVENTIONS, "backend": backend, "counts": results[model]["counts"], "tasks": table,
            "model": model, "model_wins": won}


def _markdown(summary: dict[str, Any]) -> str:
    lines = []
    for task, rows in summary["tasks"].items():
        lines += [f"### {task} ({summary['counts'][task]} pairs)", "", markdown_table(rows, "method"), ""]
        for baseline, metrics in summary["model_wins"][task].items():
            lines.append(f"- {summary['model']} beats {baseline} on {len(metrics)}/11: {', '.join(metrics)}")
        lines.append("")
    lines.append(f"Conventions: {summary['conventions']}.")
    return "\n".join(lines) + "\n"


def _figure(pairs: list[ImagePair], methods: dict[str, Any], args: argparse.Namespace) -> np.ndarray:
    rows = []
    per_task: dict[str, int] = {}
    for pair in pairs:
        if per_task.get(pair.task, 0) >= args.figure_rows:
            continue
        per_task[pair.task] = per_task.get(pair.task, 0) + 1
        row = [(read_image(pair.mri), f"MRI {pair.task[4:]} {pair.name}"), (read_image(pair.other), pair.modality)]
        row += [(read_image(args.out / _folder(m) / pair.task / f"{pair.name}.png"), _folder(m)) for m in methods]
        rows.append(row)
    return overview_picture(rows)


COMMANDS = {"compare": (configure, run)}
