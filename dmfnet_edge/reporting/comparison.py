"""The model against the classic baselines: per-task metric tables, the metrics the model wins against each
baseline, the Markdown text and the picture grid of `dmfnet compare`, written together."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge.baselines import BASELINES
from dmfnet_edge.files import write_together
from dmfnet_edge.io.images import encode_image, read_image
from dmfnet_edge.io.pairs import ImagePair
from dmfnet_edge.metrics.fusion import CONVENTIONS, METRIC_NAMES
from dmfnet_edge.metrics.table import markdown_table
from dmfnet_edge.records import json_bytes
from dmfnet_edge.reporting.pictures import overview_picture


def wins(ours: dict[str, float], baseline: dict[str, float]) -> list[str]:
    """Metrics (all higher-is-better) on which `ours` is strictly above `baseline`."""
    return [m for m in METRIC_NAMES if ours[m] > baseline[m]]


def comparison_summary(results: dict[str, dict[str, Any]], backend: dict[str, Any]) -> dict[str, Any]:
    model = next(m for m in results if m.startswith("DM-FNet"))
    tasks = list(results[model]["tasks"])
    table = {t: {m: results[m]["tasks"][t] for m in results} for t in tasks}
    won = {t: {b: wins(table[t][model], table[t][b]) for b in BASELINES} for t in tasks}
    return {"conventions": CONVENTIONS, "backend": backend, "counts": results[model]["counts"], "tasks": table,
            "model": model, "model_wins": won}


def comparison_markdown(summary: dict[str, Any]) -> str:
    lines = []
    for task, rows in summary["tasks"].items():
        lines += [f"### {task} ({summary['counts'][task]} pairs)", "", markdown_table(rows, "method"), ""]
        for baseline, metrics in summary["model_wins"][task].items():
            lines.append(f"- {summary['model']} beats {baseline} on {len(metrics)}/11: {', '.join(metrics)}")
        lines.append("")
    lines.append(f"Conventions: {summary['conventions']}.")
    return "\n".join(lines) + "\n"


def comparison_figure(pairs: list[ImagePair], methods: list[str], fused: Callable[[str, ImagePair], Path],
                      rows_per_task: int) -> np.ndarray:
    """The picture grid: per task, `rows_per_task` pairs, each MRI, the other image and every method's output."""
    rows = []
    per_task: dict[str, int] = {}
    for pair in pairs:
        if per_task.get(pair.task, 0) >= rows_per_task:
            continue
        per_task[pair.task] = per_task.get(pair.task, 0) + 1
        row = [(read_image(pair.mri), f"MRI {pair.task[4:]} {pair.name}"), (read_image(pair.other), pair.modality)]
        row += [(read_image(fused(m, pair)), method_folder(m)) for m in methods]
        rows.append(row)
    return overview_picture(rows)


def method_folder(method: str) -> str:
    """The output folder of a method: 'dm-fnet' for the model, the baseline's name otherwise."""
    return method.split(" ")[0].lower() if method.startswith("DM-FNet") else method


def write_comparison(out: Path, summary: dict[str, Any], figure: np.ndarray) -> None:
    """comparison.json, comparison.md and figure.png as one result (the JSON, its marker, last)."""
    write_together([(out / "figure.png", encode_image(figure, ".png")),
                    (out / "comparison.md", comparison_markdown(summary).encode()),
                    (out / "comparison.json", json_bytes(summary, strict=False))])
