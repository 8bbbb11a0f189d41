"""`dmfnet-export verify`: the accuracy gates of exported graphs against the PyTorch reference."""

from __future__ import annotations

import argparse
from pathlib import Path

from dmfnet_edge.cli.progress import bar
from dmfnet_edge.cli.types import POSITIVE, THREADS


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", required=True, type=Path, nargs="+", help="exported graph(s) to check")
    p.add_argument("--model", default="edge", help="the PyTorch reference the graphs were exported from")
    p.add_argument("--pairs", required=True, type=Path, help="validation split DIR/MRI-X/{MRI,X}/NAME.png")
    p.add_argument("--per-modality", type=POSITIVE, help="use only the first N pairs of every modality")
    p.add_argument("--report", required=True, type=Path, help="folder for <graph>.verify.json and .worst.png")
    p.add_argument("--threads", type=THREADS, help="ONNX Runtime CPU threads (default: its choice)")


def run(args: argparse.Namespace) -> int:
    from dmfnet_edge.evaluation.verify import gate_graph, gate_pairs, reference_runner
    from dmfnet_edge.reporting.gate import verdict_lines

    pairs = gate_pairs(args.pairs, args.per_modality)
    reference = reference_runner(args.model)
    ok, cache = True, {}  # the reference output and metrics of every pair, computed once for all candidates
    for graph in args.onnx:
        with bar(len(pairs), f"verify {graph.name}", "pair") as progress:
            report, (json_path, png_path) = gate_graph(graph, args.model, reference, pairs, args.report,
                                                       lambda: progress.update(1), args.threads, cache)
        print("\n".join(verdict_lines(graph.name, report, json_path, png_path)))
        ok &= report["passed"]
    return 0 if ok else 1


COMMANDS = {"verify": (configure, run)}
