"""Latency profiling for every backend: percentiles, throughput, per-stage breakdown, memory, budget gate.

One run = the 2D path on a real pair: preprocess (luma split, scaling, padding) -> network -> postprocess
(crop, 8-bit, chroma). The network time is split into stage 1 (the UNet passes) and stage 2 (the fusion
network): on torch by timing the two halves separately in extra runs, on ONNX Runtime from its profiler
(the fusion network's node names carry its module path, /fusion/...; everything else is stage 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge.pipeline import PreparedPair, finish, prepare_pair
from dmfnet_edge.records import parse_json, read_bounded
from dmfnet_edge.runtime.base import Runner

PERCENTILES = (50, 90, 99)


INT8_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_description() -> str:
    """CPU model and the instruction-set flags INT8 speed and (for full-range weights) INT8 results depend on."""
    import platform

    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    present = [f for f in INT8_ISA_FLAGS if f in flags]
    vnni = "VNNI" if {"avx512_vnni", "avx_vnni"} & flags else "no VNNI"
    return f"{fields.get('model name', platform.machine())} ({', '.join(present) or 'no AVX2'}; {vnni})"


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# The child reports its own peak (VmHWM of its address space) at exit. The kernel's ru_maxrss (wait4, RUSAGE_
# CHILDREN) would not do: it keeps the high-water mark across exec, so a child forked from a large process reports
# the parent's size when its own is smaller.
_HWM_CHILD = """
import atexit, runpy, sys
def report(path=sys.argv[1]):
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(path, "w").write(line.split()[1])
atexit.register(report)
sys.argv = ["dmfnet", *sys.argv[2:]]
runpy.run_module("dmfnet_edge.cli.main", run_name="__main__", alter_sys=True)
"""


def command_peak(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
                 timeout: float = 600) -> tuple[int, str, float]:
    """(exit status, stderr, peak resident memory in MiB) of `dmfnet ARGV` run in a fresh Python process (Linux:
    the peak is the child's own /proc VmHWM, written as it exits)."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dmfnet-peak-") as tmp:
        report = Path(tmp) / "hwm"
        done = subprocess.run([sys.executable, "-c", _HWM_CHILD, str(report), *argv], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout)
        peak = int(report.read_text()) / 1024 if report.is_file() else float("nan")
    return done.returncode, done.stderr, peak


def latency_stats(ms: list[float]) -> dict[str, float]:
    values = np.asarray(ms)
    stats = {f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES}
    stats.update({"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max()),
                  "std": float(values.std())})
    return {k: round(v, 3) for k, v in stats.items()}


def time_runs(runner: Runner, mri: np.ndarray, other: np.ndarray, runs: int, warmup: int, batch: int,
              sync: Callable[[], None] = lambda: None, progress: Callable[[], None] = lambda: None
              ) -> dict[str, list[float]]:
    """Per-run milliseconds of preprocess, network and postprocess for `batch` copies of one pair; `progress()`
    after every run (warm-up included)."""
    out: dict[str, list[float]] = {"preprocess": [], "network": [], "postprocess": [], "total": []}
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        prepared: list[PreparedPair] = [prepare_pair(mri, other) for _ in range(batch)]
        a = np.stack([p.mri for p in prepared])[:, None]
        b = np.stack([p.other for p in prepared])[:, None]
        t1 = time.perf_counter()
        fused = runner.fuse(a, b)
        sync()
        t2 = time.perf_counter()
        for k, p in enumerate(prepared):
            finish(p, fused[k, 0])
        t3 = time.perf_counter()
        if i >= warmup:
            for key, value in zip(out, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                out[key].append(1000 * value)
        progress()
    return out


def torch_stage_split(runner: Any, mri: np.ndarray, other: np.ndarray, runs: int, batch: int) -> dict[str, float]:
    """Median ms of stage 1 (UNet features) and stage 2 (fusion network) for a TorchRunner."""
    import torch

    model, device = runner.model, runner.device
    p = prepare_pair(mri, other)
    a = torch.from_numpy(np.repeat(p.mri[None, None], batch, 0)).to(device)
    b = torch.from_numpy(np.repeat(p.other[None, None], batch, 0)).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    s1, s2 = [], []
    with torch.inference_mode():
        for _ in range(runs + 2):
            t0 = time.perf_counter()
            feats = model.features(a, b)
            sync()
            t1 = time.perf_counter()
            model.fuse(feats, a, b)
            sync()
            s1.append(1000 * (t1 - t0))
            s2.append(1000 * (time.perf_counter() - t1))
    return {"stage1_unet": round(float(np.median(s1[2:])), 3), "stage2_fusion": round(float(np.median(s2[2:])), 3)}


def ort_stage_split(onnx_path: Path, threads: int | None, mri: np.ndarray, other: np.ndarray, runs: int,
                    batch: int) -> dict[str, float]:
    """Median ms per run of stage-1 and stage-2 nodes from ONNX Runtime's profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    p = prepare_pair(mri, other)
    feed = {"mri": np.repeat(p.mri[None, None], batch, 0), "other": np.repeat(p.other[None, None], batch, 0)}
    for _ in range(runs):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    try:
        events = parse_json(read_bounded(trace, 1 << 30, "ONNX Runtime profile"), str(trace))
    finally:
        trace.unlink(missing_ok=True)
    totals = {"stage1_unet": 0.0, "stage2_fusion": 0.0}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            key = "stage2_fusion" if "/fusion/" in e["name"] else "stage1_unet"  # incl. the noising of the inputs
            totals[key] += e["dur"] / 1000
    return {k: round(v / runs, 3) for k, v in totals.items()}


def sample_pair() -> tuple[Path, Path]:
    """The bundled MRI-PET sample pair: what `profile` times when no pair is given."""
    from dmfnet_edge.files import package_path

    folder = package_path("samples", "MRI-PET")
    return folder / "MRI" / "11.png", folder / "PET" / "11.png"


def network_stage_split(runner: Runner, threads: int | None, mri: np.ndarray, other: np.ndarray, runs: int,
                        batch: int) -> dict[str, float] | None:
    """Stage 1 / stage 2 median ms where the backend lets them be told apart (torch, gpu, ONNX Runtime); None
    for engines and servers, whose network is one opaque call."""
    from dmfnet_edge.runtime.backends import BACKENDS

    split = BACKENDS[runner.backend].stage_split
    if split == "torch":
        return torch_stage_split(runner, mri, other, runs, batch)
    if split == "onnxruntime":
        return ort_stage_split(runner.path, threads, mri, other, runs, batch)  # type: ignore[attr-defined]
    return None


def device_sync(runner: Runner) -> Callable[[], None]:
    """What waits for the runner's device to finish (CUDA torch runners), so that timings cover the work."""
    device = getattr(runner, "device", None)
    if device is not None and getattr(device, "type", "") == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


def profile_runner(runner: Runner, mri: np.ndarray, other: np.ndarray, runs: int, warmup: int, batch: int,
                   stage_split: dict[str, float] | None, sync: Callable[[], None] = lambda: None,
                   progress: Callable[[], None] = lambda: None) -> dict[str, Any]:
    times = time_runs(runner, mri, other, runs, warmup, batch, sync, progress)
    total = latency_stats(times["total"])
    return {"backend": runner.describe(), "runs": runs, "warmup": warmup, "batch": batch,
            "image": list(mri.shape[:2]), "latency_ms": total,
            "stages_ms_median": {k: round(float(np.median(v)), 3) for k, v in times.items() if k != "total"},
            "network_stages_ms": stage_split, "throughput_pairs_per_s": round(1000 * batch / total["p50"], 2),
            "peak_rss_mib": round(peak_rss_mib(), 1), "samples_ms": {k: [round(x, 3) for x in v]
                                                                   for k, v in times.items()}}


def budget_verdict(report: dict[str, Any], budget_ms: float | None) -> tuple[bool, str]:
    if budget_ms is None:
        return True, "no budget given"
    p99, worst = report["latency_ms"]["p99"], report["latency_ms"]["max"]
    ok = p99 <= budget_ms
    return ok, f"p99 {p99:.2f} ms {'<=' if ok else '>'} budget {budget_ms:g} ms (max {worst:.2f} ms)"


def write_outputs(report: dict[str, Any], json_path: Path | None, csv_path: Path | None,
                  plot_path: Path | None) -> None:
    from dmfnet_edge.artifacts import write_json_atomic
    from dmfnet_edge.files import atomic_write_bytes

    if json_path:
        write_json_atomic(json_path, report)
    if csv_path:
        samples = report["samples_ms"]
        rows = ["run," + ",".join(f"{k}_ms" for k in samples)]
        rows += [f"{i}," + ",".join(f"{samples[k][i]:.3f}" for k in samples) for i in range(report["runs"])]
        atomic_write_bytes(csv_path, ("\n".join(rows) + "\n").encode())
    if plot_path:
        plot_latency(report, plot_path)


def plot_latency(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = report["samples_ms"]["total"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    left.plot(total, lw=0.8)
    for p in PERCENTILES:
        left.axhline(report["latency_ms"][f"p{p}"], ls="--", lw=0.7, label=f"p{p}")
    left.set_xlabel("run")
    left.set_ylabel("ms per call")
    left.legend(fontsize=7)
    stages = report["stages_ms_median"] | (report.get("network_stages_ms") or {})
    right.barh(list(stages), list(stages.values()))
    right.set_xlabel("median ms")
    b = report["backend"]
    fig.suptitle(f"{b.get('model')} on {b.get('backend')} ({b.get('precision', 'fp32')}), batch {report['batch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
