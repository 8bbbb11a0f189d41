"""Accuracy gates: an exported graph against the PyTorch FP32 reference on real pairs of every modality.

Per modality it measures (1) tensor error of the network output (max / mean / p99 |diff|), (2) the PSNR of the
fused 8-bit luma against the PyTorch output's (pooled over the modality's pairs; the worst pair is reported
too), (3) the eleven fusion metrics of both outputs and their relative differences. Gates (edge model):

| precision | gate |
|---|---|
| fp32 | max abs error <= 1e-4 |
| fp16 | fused PSNR >= 45 dB |
| int8-* | fused PSNR >= 35 dB and Qabf, VIF, SSIM each within 2 % of FP32 |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge.artifacts import WeightsSidecar
from dmfnet_edge.errors import InputError
from dmfnet_edge.io.images import read_image
from dmfnet_edge.io.pairs import ImagePair
from dmfnet_edge.metrics.evaluate import pair_metrics
from dmfnet_edge.metrics.fusion import METRIC_NAMES
from dmfnet_edge.pipeline import FusedImage, finish, prepare_pair
from dmfnet_edge.precisions import REGISTRY, Gate
from dmfnet_edge.reporting.gate import check_gate
from dmfnet_edge.runtime.base import Runner

GATES: dict[str, Gate] = {p.name: p.gate for p in REGISTRY}  # the gate of every graph precision


def psnr_db(mse: float) -> float:
    """PSNR of 8-bit images in dB, capped at 99 dB (99 = identical)."""
    return 99.0 if mse == 0 else min(99.0, 10 * math.log10(255.0**2 / mse))


@dataclass
class PairResult:
    task: str
    name: str
    diff: np.ndarray  # |test - reference| of the network output over the image, float32 (H, W)
    mse: float  # of the fused 8-bit luma
    ref: FusedImage
    test: FusedImage
    ref_metrics: dict[str, float]
    test_metrics: dict[str, float]


ReferenceCache = dict[tuple[str, str], tuple[np.ndarray, FusedImage, dict[str, float]]]


def compare_pair(pair: ImagePair, reference: Runner, candidate: Runner,
                 cache: ReferenceCache | None = None) -> PairResult:
    """One pair through both runners; `cache` keeps the reference's output and metrics for the next candidate."""
    mri, other = read_image(pair.mri), read_image(pair.other)
    prepared = prepare_pair(mri, other, f"{pair.task}/{pair.name}")
    inputs = prepared.mri[None, None], prepared.other[None, None]
    key = (pair.task, pair.name)
    entry = cache.get(key) if cache is not None else None
    if entry is None:
        ref_raw = reference.fuse(*inputs)[0, 0]
        ref = finish(prepared, ref_raw)
        entry = (ref_raw, ref, pair_metrics(pair, ref.pixels, mri, other))
        if cache is not None:
            cache[key] = entry
    ref_raw, ref, ref_metrics = entry
    test_raw = candidate.fuse(*inputs)[0, 0]
    test = finish(prepared, test_raw)
    h, w = prepared.height, prepared.width
    diff = np.abs(test_raw[:h, :w] - ref_raw[:h, :w]).astype(np.float32)
    mse = float(np.mean((test.luma.astype(np.float64) - ref.luma) ** 2))
    return PairResult(pair.task, pair.name, diff, mse, ref, test, ref_metrics,
                      pair_metrics(pair, test.pixels, mri, other))


def summarise_task(results: list[PairResult]) -> dict[str, Any]:
    diffs = np.concatenate([r.diff.ravel() for r in results])
    ref = {m: float(np.mean([r.ref_metrics[m] for r in results])) for m in METRIC_NAMES}
    test = {m: float(np.mean([r.test_metrics[m] for r in results])) for m in METRIC_NAMES}
    rel = {m: abs(test[m] - ref[m]) / abs(ref[m]) if ref[m] else abs(test[m]) for m in METRIC_NAMES}
    return {"pairs": len(results), "max_abs": float(diffs.max()), "mean_abs": float(diffs.mean()),
            "p99_abs": float(np.percentile(diffs, 99)),
            "psnr_db": psnr_db(float(np.mean([r.mse for r in results]))),
            "psnr_worst_pair_db": min(psnr_db(r.mse) for r in results),
            "metrics_reference": ref, "metrics_candidate": test, "metrics_rel_diff": rel}


def verify_runner(candidate: Runner, precision: str, reference: Runner, pairs: list[ImagePair],
                  progress=None, cache: ReferenceCache | None = None) -> tuple[dict[str, Any], PairResult]:
    """Run the gate for one candidate; returns the report and the worst pair (lowest PSNR). Pass the same `cache`
    for several candidates to run the reference once per pair."""
    by_task: dict[str, list[PairResult]] = {}
    for pair in pairs:
        by_task.setdefault(pair.task, []).append(compare_pair(pair, reference, candidate, cache))
        if progress:
            progress()
    gate = GATES[precision]
    tasks = {task: summarise_task(results) for task, results in by_task.items()}
    failures = [f for task, s in tasks.items() for f in check_gate(task, s, gate)]
    worst = max((r for rs in by_task.values() for r in rs), key=lambda r: (r.mse, float(r.diff.max())))
    report = {"precision": precision, "gate": gate.__dict__, "tasks": tasks, "passed": not failures,
              "failures": failures, "worst_pair": f"{worst.task}/{worst.name}", "candidate": candidate.describe(),
              "reference": reference.describe()}
    return report, worst


def gate_pairs(pairs_root: Path, per_modality: int | None) -> list:
    """The validation pairs of a gate: all of them, or the first `per_modality` of every modality."""
    from dmfnet_edge.io.pairs import find_pairs

    pairs = find_pairs(pairs_root)
    if per_modality:
        pairs = [p for i, p in enumerate(pairs) if sum(q.task == p.task for q in pairs[:i]) < per_modality]
    return pairs


def check_same_weights(runner: Any, meta: WeightsSidecar, model: str) -> None:
    """Refuse a graph exported from other weights than the reference `model` (both hashes known)."""
    expected = runner.manifest.weights_sha256
    if expected and meta.weights_sha256 and expected != meta.weights_sha256:
        raise InputError(f"{runner.path.name} was exported from other weights than --model {model}")


def reference_runner(model: str) -> tuple[Runner, WeightsSidecar]:
    """The PyTorch FP32 reference a gate measures against: shipped or saved weights, or a preset's seeded random
    weights (asked for by naming the preset), with their sidecar."""
    from dmfnet_edge.models.checkpoint import load_or_build
    from dmfnet_edge.runtime.torch_backend import TorchRunner

    module, meta = load_or_build(model, allow_random=True)
    return TorchRunner(module, meta), meta


def gate_graph(graph: Path, model: str, reference: tuple[Runner, WeightsSidecar], pairs: list[ImagePair],
               report_dir: Path, progress: Callable[[], None] | None = None, threads: int | None = None,
               cache: ReferenceCache | None = None) -> tuple[dict[str, Any], tuple[Path, Path]]:
    """The one accuracy gate of an exported graph (dmfnet-export verify and the recipe runner): the graph opened
    through the checked loader, held to the reference's weights, measured on `pairs` (`gate_pairs`), its report
    and heat-map written together. Pass one `cache` for several graphs to run the reference once per pair."""
    from dmfnet_edge.reporting.gate import write_report
    from dmfnet_edge.runtime.onnx_file import open_with_manifest
    from dmfnet_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner

    open_with_manifest(graph)  # bounded, external data in its folder, as labelled, before ONNX Runtime opens it
    runner = OnnxRuntimeRunner(graph, threads=threads)
    check_same_weights(runner, reference[1], model)
    report, worst = verify_runner(runner, runner.precision, reference[0], pairs, progress, cache)
    return report, write_report(report, worst, report_dir, graph.stem)
