"""The mixed-precision search: which layer groups an INT8 graph keeps in FP32.

Both INT8 flavours use it: a sensitivity search on calibration pairs (never validation pairs) finds the layer
groups whose 8-bit activations cost the most accuracy and keeps them in FP32 (`plan_mixed_precision`); or the
user names the groups (`given_plan`). The plan is recorded in the graph's manifest, and `plot_mixed_precision`
draws it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dmfnet_edge._optional import require
from dmfnet_edge.contract import MixedPrecisionPlan, layer_group, read_manifest
from dmfnet_edge.errors import InputError
from dmfnet_edge.evaluation.verify import psnr_db
from dmfnet_edge.files import atomic_write_bytes

KEEP_FP32_AUTO, KEEP_FP32_NONE = "auto", "none"
# What the search aims for on its probes. The INT8 gate asks for >= 35 dB and Qabf/VIF/SSIM within 2 %; the
# metrics are the binding part: on the edge model a plan at 42.7 dB still moved SPECT's VIF by 2.5 %.
TARGET_PROBE_PSNR_DB = 46.0
SHAPE_OPS = {"Gather", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Split", "Pad"}  # quantizable, but move data


def layer_groups(model: Any, leave_out: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Group -> names of its nodes that INT8 would quantize (compute ops; data-movement ops and the nodes in
    `leave_out` left out)."""
    from onnxruntime.quantization.registry import QLinearOpsRegistry

    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type in QLinearOpsRegistry and node.op_type not in SHAPE_OPS and node.name not in leave_out:
            groups.setdefault(layer_group(node.name), []).append(node.name)
    return groups


def plan_mixed_precision(groups: dict[str, list[str]], quantize_only: Callable[[list[str] | None], Path],
                         measure: Callable[[Path], float], target_db: float = TARGET_PROBE_PSNR_DB
                         ) -> dict[str, Any]:
    """Choose the layer groups to keep in FP32 so that the INT8 graph reaches `target_db` on the probes.

    `quantize_only(names)` writes a graph in which only `names` are quantized (None: all but nothing excluded)
    and returns its path; `measure(path)` returns its probe PSNR. Sensitivity of a group = the PSNR with only that
    group quantized. Quantization errors of separate groups add roughly as independent noise, so their MSEs are
    summed: the most sensitive groups are kept in FP32 until the predicted PSNR reaches the target; the plan is
    then checked on the real mixed graph and widened one group at a time while it falls short.
    """
    sensitivity = {g: measure(quantize_only(names)) for g, names in groups.items()}
    mse = {g: 255.0**2 * 10 ** (-db / 10) for g, db in sensitivity.items()}
    order = sorted(groups, key=lambda g: -mse[g])
    keep: list[str] = []
    while order[len(keep):]:
        predicted = sum(mse[g] for g in order[len(keep):])
        if psnr_db(predicted) >= target_db:
            break
        keep.append(order[len(keep)])
    while True:
        names = [n for g in order if g not in keep for n in groups[g]]
        achieved = measure(quantize_only(names)) if names else 99.0
        if achieved >= target_db or len(keep) == len(order):
            break
        keep.append(order[len(keep)])
    return {"mode": KEEP_FP32_AUTO, "target_probe_psnr_db": target_db, "kept_fp32": keep,
            "quantized_groups": len(order) - len(keep), "probe_psnr_db": round(achieved, 2),
            "sensitivity_psnr_db": {g: round(sensitivity[g], 2) for g in order}}


def given_plan(groups: dict[str, list[str]], keep_fp32: str | list[str]) -> dict[str, Any]:
    """The plan that keeps the named groups (or none) in FP32; unknown names are refused with the real ones."""
    keep = [] if keep_fp32 == KEEP_FP32_NONE else list(keep_fp32)
    unknown = sorted(set(keep) - set(groups))
    if unknown:
        raise InputError(f"--keep-fp32 {','.join(unknown)}: no such layer group; the groups are {', '.join(groups)}")
    return {"mode": "given" if keep else KEEP_FP32_NONE, "kept_fp32": keep, "quantized_groups": len(groups) - len(keep),
            "excluded_nodes": [n for g in keep for n in groups[g]]}


def resolve_keep_fp32(value: str | list[str]) -> str | list[str]:
    """auto, none, a list of layer groups (or "A,B"), or an INT8 graph whose recorded plan is reused."""
    if isinstance(value, list) or value in (KEEP_FP32_AUTO, KEEP_FP32_NONE):
        return value
    if value.endswith(".onnx"):
        recipe = read_manifest(Path(value)).recipe
        if recipe is None or recipe.mixed_precision is None:
            raise InputError(f"keep-fp32 {value}: its manifest records no mixed-precision plan")
        return list(recipe.mixed_precision.kept_fp32) or KEEP_FP32_NONE
    return [g for g in value.split(",") if g]


def plot_mixed_precision(plan: MixedPrecisionPlan, path: Path, title: str = "INT8 sensitivity") -> None:
    """Bar chart of a mixed-precision plan: probe PSNR with only each layer group quantized, kept groups marked."""
    matplotlib = require("matplotlib", extra="dev", purpose="the sensitivity plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sensitivity = plan.sensitivity_psnr_db
    if not sensitivity or plan.target_probe_psnr_db is None:
        raise InputError("the sensitivity plot needs --keep-fp32 auto (no search was run)")
    groups = sorted(sensitivity, key=lambda g: sensitivity[g])
    kept = set(plan.kept_fp32)
    fig, ax = plt.subplots(figsize=(7.5, 0.22 * len(groups) + 1.4))
    ax.barh(groups, [sensitivity[g] for g in groups], color=["#c0392b" if g in kept else "#5d8aa8" for g in groups])
    target = plan.target_probe_psnr_db
    ax.axvline(target, color="k", ls="--", lw=0.8, label=f"target {target:g} dB")
    ax.invert_yaxis()
    ax.set_xlabel("probe PSNR vs FP32 with only this group in INT8 (dB; higher = less sensitive)")
    ax.set_xlim(min(30.0, min(sensitivity.values()) - 2), 80)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(handles=[*ax.get_legend_handles_labels()[0],
                       plt.Rectangle((0, 0), 1, 1, color="#c0392b", label="kept in FP32"),
                       plt.Rectangle((0, 0), 1, 1, color="#5d8aa8", label="INT8")], fontsize=7, loc="lower right")
    before, after = plan.all_int8_probe_psnr_db or 0.0, plan.probe_psnr_db or 0.0
    ax.set_title(f"{title}: all-INT8 {before:.1f} dB -> mixed {after:.1f} dB ({len(kept)} of {len(groups)} groups "
                 "in FP32)", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
