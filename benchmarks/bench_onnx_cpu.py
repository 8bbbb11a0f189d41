"""CPU latency per 256x256 pair: PyTorch eager FP32 vs ONNX Runtime FP32 vs ONNX Runtime INT8 graphs, against the
three-level graph shipped before the one-level model (benchmarks/baseline/, `--baseline`) and its PyTorch eager
equivalent, which the CPU-speed targets are stated against.

All variants run in this process on the same real sample pair, interleaved round by round after warm-up,
with the same thread count; medians and ratios are printed, then the issue's targets with PASS/MISS.
`--profile` adds ONNX Runtime's per-operator time breakdown for every graph.

Cold start (`--cold N`, default 5): N fresh `dmfnet fuse` processes per shipped ONNX Runtime graph (interpreter,
imports, session, one pair, the PNG written), interleaved, timed from outside, against the same backend's
in-process median. Arithmetic floor: the model's FLOPs per pair (`dmfnet info`'s count) over this CPU's measured
single-precision GEMM rate with the same threads (a 2048-square matmul, the best of five): the fraction of that
floor each variant reaches is printed beside it.

Volumes (`--volume-slices N`, default 32): `dmfnet fuse-volume` of an N-slice 256x256 DICOM pair (the bundled
MRI-CT sample, shifted per slice; benchmarks/bench_volume.py has the fuller comparison) at batch 1 and batch 4,
the median of three runs each, as seconds per slice in the same table.

    python benchmarks/bench_onnx_cpu.py [--repeats 15] [--threads 2] [--profile] [--cold 5] [--volume-slices 32]
        [--fp32 F.onnx] [--int8 F.onnx] [--int8-trt F.onnx]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from dmfnet_edge.io.images import read_image
from dmfnet_edge.models.checkpoint import load_model
from dmfnet_edge.models.flops import pair_flops
from dmfnet_edge.pipeline import prepare_pair
from dmfnet_edge.profiling import cpu_description
from dmfnet_edge.runtime import shipped_onnx

SAMPLE = Path(__file__).resolve().parents[1] / "dmfnet_edge" / "samples" / "MRI-PET"
# The FP32 graph shipped before the one-level model (three noise levels, six UNet passes per pair), kept as the
# speed baseline the CPU-speed targets are stated against
BASELINE = Path(__file__).resolve().parent / "baseline" / "dmfnet-edge-fp32-3levels.onnx"
EAGER, EAGER_OLD = "PyTorch eager FP32", "PyTorch eager FP32, 3 levels (before)"
ORT_OLD, ORT_FP32, ORT_INT8 = "ONNX Runtime FP32, 3 levels (before)", "ONNX Runtime FP32", \
    "ONNX Runtime INT8 (ORT QOperator)"


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


def gemm_rate(threads: int, n: int = 2048) -> float:
    """FLOP/s of a float32 n x n matmul on `threads` threads (best of five): what this CPU's FMA units sustain."""
    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    best = float("inf")
    for _ in range(6):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def three_levels(model: torch.nn.Module) -> torch.nn.Module:
    """The shipped model's UNet under a fusion network that reads t = 5, 10, 20 (the architecture before the
    one-level model; its fusion weights are freshly initialised: only its time is measured)."""
    import dataclasses

    from dmfnet_edge.models.dmfnet import DMFNet

    cfg = model.cfg
    old = DMFNet(dataclasses.replace(cfg, fusion=dataclasses.replace(cfg.fusion, timesteps=(5, 10, 20))))
    old.unet.load_state_dict(model.unet.state_dict())
    return old.eval()


def volume_rates(slices: int, threads: int, batches: tuple[int, ...] = (1, 4), runs: int = 3
                 ) -> dict[str, list[float]]:
    """Seconds per slice of `dmfnet fuse-volume` (DICOM series in and out, ONNX Runtime FP32) per batch size."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench_volume import stacks

    from dmfnet_edge.cli.main import main as dmfnet
    from tests.volume_fixtures import write_series

    mri, ct = stacks(slices)
    out: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_series(root / "mri", mri, "MR", spacing=(2.0, 1.0, 1.0))
        write_series(root / "ct", ct.astype(np.float64) - 1000, "CT", spacing=(2.0, 1.0, 1.0), intercept=-1024.0)
        for _ in range(runs):
            for batch in batches:
                target = root / f"out{batch}"
                start = time.perf_counter()
                code = dmfnet(["fuse-volume", "--mri", str(root / "mri"), "--other", str(root / "ct"), "-o",
                               str(target), "--other-intensity", "window:-872,256", "--batch", str(batch),
                               "--backend", "onnxruntime", "--threads", str(threads), "--overwrite"])
                assert code == 0
                out.setdefault(f"fuse-volume, {slices} slices, batch {batch} (per slice)", []).append(
                    (time.perf_counter() - start) / slices)
    return out


def cold_starts(precisions: list[str], threads: int, repeats: int) -> dict[str, list[float]]:
    """Wall seconds of fresh `dmfnet fuse` processes of the sample pair, one list per precision, interleaved."""
    tool = Path(sys.executable).parent / "dmfnet"
    times: dict[str, list[float]] = {p: [] for p in precisions}
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats + 1):  # the first round fills the OS file cache and is not counted
            for precision in precisions:
                cmd = [str(tool), "fuse", "--mri", str(SAMPLE / "MRI" / "11.png"), "--other",
                       str(SAMPLE / "PET" / "11.png"), "-o", str(Path(tmp) / f"{precision}.png"), "--overwrite",
                       "--backend", "onnxruntime", "--precision", precision, "--threads", str(threads)]
                start = time.perf_counter()
                subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
                times[precision].append(time.perf_counter() - start)
    return {p: t[1:] for p, t in times.items()}


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
    parser.add_argument("--cold", type=int, default=5, help="fresh processes per shipped graph (0: none)")
    parser.add_argument("--volume-slices", type=int, default=32, help="slices of the fuse-volume rows (0: none)")
    parser.add_argument("--baseline", type=Path, default=BASELINE, help="the FP32 graph the targets compare with")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model, _ = load_model(args.model)
    args.gflop = pair_flops(model)["total"] / 1e9
    args.gemm = gemm_rate(args.threads)
    pair = prepare_pair(read_image(SAMPLE / "MRI" / "11.png"), read_image(SAMPLE / "PET" / "11.png"))
    feed = {"mri": pair.mri[None, None], "other": pair.other[None, None]}
    tensors = {k: torch.from_numpy(v) for k, v in feed.items()}
    graphs = {ORT_OLD: args.baseline} if args.baseline.is_file() else {}
    graphs.update({ORT_FP32: args.fp32, ORT_INT8: args.int8})
    if args.int8_trt:
        graphs["ONNX Runtime INT8 (TensorRT Q/DQ)"] = args.int8_trt
    sessions = {name: session(path, args.threads, args.profile) for name, path in graphs.items()}

    def eager(net: torch.nn.Module = model) -> np.ndarray:
        with torch.inference_mode():
            return net(tensors["mri"], tensors["other"]).numpy()

    runners = {EAGER: eager}
    if model.gammas.shape[0] != 3:  # the architecture before: the same UNet read at three noise levels
        old = three_levels(model)
        runners[EAGER_OLD] = lambda: eager(old)
    runners.update({name: (lambda s=s: s.run(["fused"], feed)[0]) for name, s in sessions.items()})
    reference = eager()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for round_ in range(args.warmup + args.repeats):
        for name, fn in runners.items():
            start = time.perf_counter()
            out = fn()
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - start)
            if round_ == 0 and name.startswith("ONNX") and name != ORT_OLD:
                print(f"  {name}: max |out - PyTorch| = {np.abs(out - reference).max():.2e}")
    cold = cold_starts(["fp32", "int8"], args.threads, args.cold) if args.cold else {}
    if args.volume_slices:
        cold.update(volume_rates(args.volume_slices, args.threads))
    report(times, args, cold)
    if args.profile:
        for name, sess in sessions.items():
            print(f"profile {name}: {op_breakdown(sess)}")


def report(times: dict[str, list[float]], args: argparse.Namespace, cold: dict[str, list[float]]) -> None:
    med = {name: statistics.median(t) for name, t in times.items()}
    eager = med.get(EAGER_OLD, med[EAGER])
    base = med.get(ORT_OLD, med[ORT_FP32])
    floor = args.gflop * 1e9 / args.gemm
    print(f"\n256x256 pair, {args.threads} threads, {cpu_description()}, torch "
          f"{torch.__version__}, onnxruntime {ort.__version__}, {args.repeats} timed runs each (medians)")
    print(f"arithmetic floor: {args.gflop:.1f} GFLOP per pair / {args.gemm / 1e9:.0f} GFLOP/s (float32 GEMM, "
          f"{args.threads} threads, measured now) = {floor:.3f} s")
    base_name = "ORT FP32 before" if ORT_OLD in med else "ORT FP32"
    eager_name = "eager before" if EAGER_OLD in med else "eager"
    print(f"{'variant':<44} {'median s':>9} {'min s':>8} {'vs ' + eager_name:>16} {'vs ' + base_name:>19} "
          f"{'of floor':>9}")
    rows = dict(times)
    in_process = {"fp32": ORT_FP32, "int8": ORT_INT8}
    for precision, t in cold.items():
        name = precision if precision.startswith("fuse-volume") else f"cold start: fresh dmfnet fuse, {precision}"
        rows[name] = t
        med[name] = statistics.median(t)
    for name, t in rows.items():
        share = f"{100 * floor / med[name]:>8.0f}%" if name.startswith(("ONNX", "PyTorch")) and "before" not in name \
            else ""
        print(f"{name:<44} {med[name]:>9.3f} {min(t):>8.3f} {eager / med[name]:>15.2f}x {base / med[name]:>18.2f}x "
              f"{share:>9}")
    fp32, int8 = med[ORT_FP32], med[ORT_INT8]
    for precision, t in cold.items():
        if precision in in_process:
            print(f"cold start {precision}: {statistics.median(t) / med[in_process[precision]]:.2f}x the in-process "
                  "time of the same graph")
        else:
            print(f"{precision}: {1 / statistics.median(t):.2f} slices/s")
    checks = [(f"default (ORT FP32) >= 2x {base_name}", base / fp32 >= 2),
              (f"default (ORT FP32) >= 3x PyTorch {eager_name}", eager / fp32 >= 3),
              ("ORT FP32 < 1 s per pair", fp32 < 1), ("ORT INT8 >= 1.5x ORT FP32", fp32 / int8 >= 1.5)]
    checks += [(f"cold start {p} <= 1.5x in-process", statistics.median(t) <= 1.5 * med[in_process[p]])
               for p, t in cold.items() if p in in_process]
    for text, ok in checks:
        print(f"target {text}: {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
