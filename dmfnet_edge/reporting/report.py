"""Reports written next to a folder of fused outputs (fuse-dir): report.json, report.md and the overview picture,
with the fusion metrics of every pair when asked for."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dmfnet_edge import __version__
from dmfnet_edge.files import write_together
from dmfnet_edge.io.images import encode_image, read_image
from dmfnet_edge.io.pairs import ImagePair
from dmfnet_edge.metrics.evaluate import pair_metrics, summarise
from dmfnet_edge.metrics.fusion import CONVENTIONS
from dmfnet_edge.metrics.table import markdown_table
from dmfnet_edge.records import json_bytes
from dmfnet_edge.reporting.pictures import overview_picture


def overview_sample(pairs: list[ImagePair], count: int) -> list[ImagePair]:
    """Up to `count` pairs for the overview, taken from every task in turn (the first pairs of a split are often
    all of one modality)."""
    by_task: dict[str, list[ImagePair]] = {}
    for pair in pairs:
        by_task.setdefault(pair.task, []).append(pair)
    chosen: list[ImagePair] = []
    for rank in range(max((len(v) for v in by_task.values()), default=0)):
        chosen += [group[rank] for group in by_task.values() if rank < len(group)]
    return chosen[:count]


def fuse_summary_lines(report: dict[str, Any], out: Path) -> list[str]:
    """A few lines for people: what was fused, on what, how fast, the headline metrics, where the files went."""
    summary, backend = report["summary"], report["summary"]["backend"]
    lines = [f"fused {summary['pairs']} pairs with model {backend.get('model')} on {backend.get('backend')} "
             f"({backend.get('precision') or 'fp32'}): {summary['seconds_per_pair_median']:.2f} s per pair "
             f"(median; max {summary['seconds_per_pair_max']:.2f} s)"]
    for task, values in summary.get("metrics", {}).items():
        lines.append(f"  {task:<10} " + "  ".join(f"{m} {values[m]:.3f}" for m in HEADLINE_METRICS))
    lines.append(f"wrote {out}/: MRI-X/NAME.png, report.md, report.json, overview.png"
                 + (" (all eleven metrics in report.md)" if "metrics" in summary else ""))
    return lines


def write_fuse_report(out: Path, pairs: list[ImagePair], written: dict[str, Path], seconds: dict[str, float],
                      backend: dict[str, Any], with_metrics: bool, max_rows: int = 6,
                      progress: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """report.json, report.md and overview.png for a fused folder; `progress()` after every pair."""
    per_task: dict[str, list[dict[str, float]]] = {}
    shown = {id(p) for p in overview_sample(pairs, max_rows)}
    rows = []
    for pair in pairs:
        key = f"{pair.task}/{pair.name}"
        fused = read_image(written[key])
        if with_metrics:
            per_task.setdefault(pair.task, []).append(pair_metrics(pair, fused))
        if id(pair) in shown:
            rows.append([(read_image(pair.mri), f"MRI {pair.name}"),
                         (read_image(pair.other), f"{pair.modality} {pair.name}"), (fused, "fused")])
        progress()
    times = list(seconds.values())
    summary = {"pairs": len(pairs), "backend": backend, "package_version": __version__,
               "seconds_per_pair_median": round(statistics.median(times), 4),
               "seconds_per_pair_max": round(max(times), 4)}
    if with_metrics:
        summary["metrics"] = summarise(per_task)
        summary["conventions"] = CONVENTIONS
    report = {"summary": summary, "outputs": {k: str(v) for k, v in written.items()}, "seconds": seconds}
    write_together([(out / "overview.png", encode_image(overview_picture(rows), ".png")),
                    (out / "report.md", _markdown(summary).encode()),
                    (out / "report.json", json_bytes(report, strict=False))])
    return report


HEADLINE_METRICS = ("Qabf", "VIF", "SSIM", "MI", "EN", "SD")


def _markdown(summary: dict[str, Any]) -> str:
    b = summary["backend"]
    lines = ["# Fusion report", "",
             f"{summary['pairs']} pairs fused with model `{b.get('model')}` on backend `{b.get('backend')}` "
             f"({b.get('device', '')}), dmfnet-edge {summary['package_version']}.", "",
             f"Time per pair: median {summary['seconds_per_pair_median']:.3f} s, "
             f"max {summary['seconds_per_pair_max']:.3f} s (network call incl. pre/post-processing).", "",
             "![overview](overview.png)", ""]
    if "metrics" in summary:
        lines += ["## Fusion metrics (mean per task)", "", markdown_table(summary["metrics"]), "",
                  f"Conventions: {summary['conventions']}.", ""]
    return "\n".join(lines)
