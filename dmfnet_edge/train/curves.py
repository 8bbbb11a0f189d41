"""Training curves of a run folder (its last.json) as one PNG: the loss and its parts, the learning rate, the
validation score and the validation loss against the baselines' (matplotlib, from the `dev` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from dmfnet_edge.files import atomic_write_bytes
from dmfnet_edge.train.state import TrainingState


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, title: str) -> Path:
    """Title, lay out and write a figure atomically as PNG; returns `path`."""
    import io

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_training(record: dict[str, Any], path: Path, title: str = "") -> Path:
    """Write the curves of a checkpoint record (RUN/last.json) to `path`; returns it."""
    plt = _pyplot()

    history = record.get("history", [])
    validation = record.get("validation", [])
    panels = 2 + bool(validation)
    fig, axes = plt.subplots(1, panels + bool(validation), figsize=(4.2 * (panels + bool(validation)), 3.4))
    steps = [h["step"] for h in history]
    loss_ax, lr_ax = axes[0], axes[1]
    for key, style in (("loss", "-"), ("int", "--"), ("grad", "--"), ("ssim", "--")):
        if history and key in history[0]:
            loss_ax.plot(steps, [h[key] for h in history], style, lw=1, label=key)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("training loss (window mean)")
    loss_ax.legend(fontsize=7)
    lr_ax.plot(steps, [h["lr"] for h in history], lw=1)
    lr_ax.set_xlabel("step")
    lr_ax.set_ylabel("learning rate")
    if validation:
        vsteps = [v["step"] for v in validation]
        score_ax, vloss_ax = axes[2], axes[3]
        score_ax.plot(vsteps, [v["score"] for v in validation], "o-", ms=3, lw=1)
        best = record.get("best")
        if best:
            score_ax.axvline(best["step"], ls=":", color="grey", label=f"selected: step {best['step']}")
            score_ax.legend(fontsize=7)
        score_ax.set_xlabel("step")
        score_ax.set_ylabel("val mean rank vs 3 baselines (1 = best)")
        for k, task in enumerate(validation[-1].get("loss", {})):
            colour = f"C{k}"
            vloss_ax.plot(vsteps, [v["loss"][task] for v in validation], "-", color=colour, lw=1, label=task)
            vloss_ax.axhline(validation[-1]["baseline_loss"]["max"][task], ls="--", lw=0.8, color=colour)
        vloss_ax.set_xlabel("step")
        vloss_ax.set_ylabel("val hybrid loss (dashed: pixel max)")
        vloss_ax.legend(fontsize=7)
    return _save(fig, path, title)


def plot_run(run: Path, path: Path | None = None) -> Path:
    """RUN/last.json -> RUN/curves.png (or `path`)."""
    record = TrainingState.read(run / "last.json")
    stage = {"unet": "Stage I (UNet)", "dmfnet": "Stage II (fusion network)"}[record.stage]
    title = f"{stage}: {record.step} steps, {record.features or 'features live'}"
    return plot_training(msgspec.to_builtins(record), path or run / "curves.png", title)


def plot_ablation(runs: dict[str, Path], path: Path, title: str = "") -> Path:
    """Validation curves of several runs on one figure (an ablation: same recipe, one change): per modality the
    val hybrid loss of every run against pixel max's (dashed), and the mean rank. `runs`: label -> run folder."""
    plt = _pyplot()

    records = {label: TrainingState.read(run / "last.json").validation for label, run in runs.items()}
    tasks = list(next(v for v in records.values() if v)[-1]["loss"])
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(3.6 * (len(tasks) + 1), 3.2))
    for k, (label, validation) in enumerate(records.items()):
        steps = [v["step"] for v in validation]
        for ax, task in zip(axes, tasks):
            ax.plot(steps, [v["loss"][task] for v in validation], "o-", ms=3, lw=1, color=f"C{k}", label=label)
        axes[-1].plot(steps, [v["score"] for v in validation], "o-", ms=3, lw=1, color=f"C{k}", label=label)
    some = next(v for v in records.values() if v)[-1]
    for ax, task in zip(axes, tasks):
        ax.axhline(some["baseline_loss"]["max"][task], ls="--", lw=0.8, color="grey", label="pixel max")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("val hybrid loss")
        ax.legend(fontsize=7)
    axes[-1].set_title("selection score", fontsize=9)
    axes[-1].set_xlabel("step")
    axes[-1].set_ylabel("val mean rank vs 3 baselines (1 = best)")
    axes[-1].legend(fontsize=7)
    return _save(fig, path, title)
