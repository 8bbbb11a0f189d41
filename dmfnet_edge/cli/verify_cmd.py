"""`dmfnet-export verify`: the accuracy gates of exported graphs against the PyTorch reference."""

from __future__ import annotations

import argparse
from pathlib import Path

from dmfnet_edge.cli.common import reference_model
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
    from dmfnet_edge.evaluation.verify import verify_runner
    from dmfnet_edge.reporting.gate import verdict_lines, write_report
    from dmfnet_edge.runtime.onnx_file import open_with_manifest
    from dmfnet_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner
    from dmfnet_edge.runtime.torch_backend import TorchRunner
    from dmfnet_edge.targets import check_same_weights, gate_pairs

    pairs = gate_pairs(args.pairs, args.per_modality)
    model, meta = reference_model(args.model)
    reference = TorchRunner(model, meta)
    for path in args.onnx:  # checked (bounded, external data in its folder, as labelled) before ONNX Runtime opens it
        open_with_manifest(path)
    candidates = [OnnxRuntimeRunner(path, threads=args.threads) for path in args.onnx]
    for runner in candidates:
        check_same_weights(runner, meta, args.model)
    ok, cache = True, {}  # the reference output and metrics of every pair, computed once for all candidates
    for runner in candidates:
        with bar(len(pairs), f"verify {runner.path.name}", "pair") as progress:
            report, worst = verify_runner(runner, runner.precision, reference, pairs, lambda: progress.update(1),
                                          cache)
        json_path, png_path = write_report(report, worst, args.report, runner.path.stem)
        print("\n".join(verdict_lines(runner.path.name, report, json_path, png_path)))
        ok &= report["passed"]
    return 0 if ok else 1


COMMANDS = {"verify": (configure, run)}
