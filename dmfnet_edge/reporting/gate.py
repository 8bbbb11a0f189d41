"""An accuracy gate's verdict: which modality failed which threshold, the report (JSON) and its worst pair's
heat-map (PNG) written together, and the lines a command prints. The measuring is evaluation/verify.py's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dmfnet_edge.precisions import Gate


def check_gate(task: str, summary: dict[str, Any], gate: Gate) -> list[str]:
    """Human-readable failures of one modality against `gate` (empty when it passes)."""
    failures = []
    if gate.max_abs is not None and summary["max_abs"] > gate.max_abs:
        failures.append(f"{task}: max abs error {summary['max_abs']:.2e} > {gate.max_abs:.0e}")
    if gate.min_psnr_db is not None and summary["psnr_db"] < gate.min_psnr_db:
        failures.append(f"{task}: fused PSNR {summary['psnr_db']:.2f} dB < {gate.min_psnr_db} dB")
    if gate.metric_rel_tol is not None:
        for m in gate.gated_metrics:
            if summary["metrics_rel_diff"][m] > gate.metric_rel_tol:
                failures.append(f"{task}: {m} differs by {100 * summary['metrics_rel_diff'][m]:.2f} % "
                                f"(> {100 * gate.metric_rel_tol:.0f} %)")
    return failures


def verdict_lines(name: str, report: dict[str, Any], json_path: Path, png_path: Path) -> list[str]:
    """A gate's verdict, one line per modality, the failed gates and where the report is (verify and recipe)."""
    lines = []
    lines.append(f"{name} [{report['precision']}]: {'PASS' if report['passed'] else 'FAIL'}")
    for task, s in report["tasks"].items():
        rel = s["metrics_rel_diff"]
        lines.append(f"  {task:<10} n={s['pairs']:<3} max|d|={s['max_abs']:.2e} p99={s['p99_abs']:.2e} "
                     f"PSNR={s['psnr_db']:.2f} dB (worst {s['psnr_worst_pair_db']:.2f}) "
                     f"dQabf={100 * rel['Qabf']:.2f}% dVIF={100 * rel['VIF']:.2f}% dSSIM={100 * rel['SSIM']:.2f}%")
    for failure in report["failures"]:
        lines.append(f"  gate failed: {failure}")
    lines.append(f"  report: {json_path}  worst pair: {png_path}")
    return lines


def write_report(report: dict[str, Any], worst: Any, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """The gate's report (JSON) and its worst pair's heat-map (PNG), written together: both or neither, the JSON
    last."""
    from dmfnet_edge.files import write_together
    from dmfnet_edge.io.images import encode_image
    from dmfnet_edge.records import json_bytes
    from dmfnet_edge.reporting.pictures import heatmap_picture

    json_path, png_path = out_dir / f"{stem}.verify.json", out_dir / f"{stem}.worst.png"
    picture = heatmap_picture(worst.ref.pixels, worst.test.pixels, worst.diff,
                              f"{report['precision']} {report['worst_pair']}")
    write_together([(png_path, encode_image(picture, ".png")), (json_path, json_bytes(report, strict=False))])
    return json_path, png_path
