"""`dmfnet eval`: the eleven fusion metrics of fused images against their source pairs."""

from __future__ import annotations

import argparse
from pathlib import Path

from dmfnet_edge.artifacts import write_json_atomic
from dmfnet_edge.cli.progress import bar
from dmfnet_edge.io.pairs import find_pairs
from dmfnet_edge.metrics.evaluate import evaluate_folders
from dmfnet_edge.metrics.table import markdown_table


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, type=Path, help="sources: DIR/MRI-X/{MRI,X}/NAME.png")
    p.add_argument("--fused", required=True, type=Path, help="fused images: DIR/MRI-X/NAME.png")
    p.add_argument("--json", type=Path, help="also write the per-pair and per-task results as JSON")


def run(args: argparse.Namespace) -> int:
    total = len(find_pairs(args.pairs))
    with bar(total, "evaluating", "pair") as progress:
        report = evaluate_folders(args.pairs, args.fused, lambda: progress.update(1))
    counts = ", ".join(f"{task}: {n}" for task, n in report["counts"].items())
    print(markdown_table(report["tasks"]))
    print(f"\npairs: {counts}\nconventions: {report['conventions']}")
    if args.json:
        write_json_atomic(args.json, report)
        print(f"wrote {args.json}")
    return 0


COMMANDS = {"eval": (configure, run)}
