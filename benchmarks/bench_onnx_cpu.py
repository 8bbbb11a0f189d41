"""CPU latency per 256x256 pair: PyTorch eager FP32 vs ONNX Runtime FP32 vs ONNX Runtime INT8 graphs.

All variants run in this process on the same real sample pair, interleaved round by round after warm-up,
with the same thread count; medians and ratios are printed, then the issue's targets with PASS/MISS.
`--profile` adds ONNX Runtime's per-operator time breakdown for every graph.

    python benchmarks/bench_onnx_cpu.py [--repeats 15] [--threads 2] [--profile]
        [--fp32 F.onnx] [--int8 F.onnx] [--int8-trt F.onnx]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from dmfnet_edge.io.images import read_image
from dmfnet_edge.models.checkpoint import load_model
from dmfnet_edge.pipeline import prepare_pair
from dmfnet_edge.profiling import cpu_description
from dmfnet_edge.runtime import shipped_onnx

SAMPLE = Path(__file__).resolve().parents[1] / "dmfnet_edge" / "samples" / "MRI-PET"


def session(path: Path, threads: int, profile: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_profiling = profile
    # ONNX Runtime's idle workers otherwise spin on the cores PyTorch runs on next (interleaved rounds); measured
    # on the 2-core machine: PyTorch 1.61 s with spinning ORT sessions beside it, 1.1-1.3 s alone
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def op_breakdown(sess: ort.InferenceSession, top: int = 8) -> str:
    events = json.loads(Path(sess.end_profiling()).read_text())
    totals: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"].get("op_name", "?")] += event["dur"]
    whole = sum(totals.values()) or 1
    return ", ".join(f"{op} {100 * t / whole:.0f}%" for op, t in totals.most_common(top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="edge")
    parser.add_argument("--fp32", type=Path, default=shipped_onnx("edge", "fp32"))
    parser.add_argument("--int8", type=Path, default=shipped_onnx("edge", "int8"))
    parser.add_argument("--int8-trt", type=Path, help="TensorRT-style Q/DQ graph, timed on ONNX Runtime for info")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model, _ = load_model(args.model)
    pair = prepare_pair(read_image(SAMPLE / "MRI" / "11.png"), read_image(SAMPLE / "PET" / "11.png"))
    feed = {"mri": pair.mri[None, None], "other": pair.other[None, None]}
    tensors = {k: torch.from_numpy(v) for k, v in feed.items()}
    graphs = {"ONNX Runtime FP32": args.fp32, "ONNX Runtime INT8 (ORT QOperator)": args.int8}
    if args.int8_trt:
        graphs["ONNX Runtime INT8 (TensorRT Q/DQ)"] = args.int8_trt
    sessions = {name: session(path, args.threads, args.profile) for name, path in graphs.items()}

    def eager() -> np.ndarray:
        with torch.inference_mode():
            return model(tensors["mri"], tensors["other"]).numpy()

    runners = {"PyTorch eager FP32": eager}
    runners.update({name: (lambda s=s: s.run(["fused"], feed)[0]) for name, s in sessions.items()})
    reference = eager()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for round_ in range(args.warmup + args.repeats):
        for name, fn in runners.items():
            start = time.perf_counter()
            out = fn()
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - start)
            if round_ == 0 and name != "PyTorch eager FP32":
                print(f"  {name}: max |out - PyTorch| = {np.abs(out - reference).max():.2e}")
    report(times, args)
    if args.profile:
        for name, sess in sessions.items():
            print(f"profile {name}: {op_breakdown(sess)}")


def report(times: dict[str, list[float]], args: argparse.Namespace) -> None:
    med = {name: statistics.median(t) for name, t in times.items()}
    eager, fp32 = med["PyTorch eager FP32"], med["ONNX Runtime FP32"]
    print(f"\n256x256 pair, {args.threads} threads, {cpu_description()}, torch "
          f"{torch.__version__}, onnxruntime {ort.__version__}, {args.repeats} timed runs each (medians)")
    print(f"{'variant':<36} {'median s':>9} {'min s':>8} {'vs eager':>9} {'vs ORT FP32':>12}")
    for name, t in times.items():
        print(f"{name:<36} {med[name]:>9.3f} {min(t):>8.3f} {eager / med[name]:>8.2f}x {fp32 / med[name]:>11.2f}x")
    int8 = med["ONNX Runtime INT8 (ORT QOperator)"]
    checks = [("ORT FP32 >= 2x PyTorch eager", eager / fp32 >= 2), ("ORT FP32 < 1 s per pair", fp32 < 1),
              ("ORT INT8 >= 1.5x ORT FP32", fp32 / int8 >= 1.5)]
    for text, ok in checks:
        print(f"target {text}: {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
