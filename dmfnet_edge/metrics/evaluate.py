"""Evaluating fused images (files or a model) against their source pairs, per task (MRI-CT, MRI-PET, ...)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge.errors import InputError
from dmfnet_edge.io.images import IMAGE_SUFFIXES, read_image
from dmfnet_edge.io.pairs import ImagePair, find_pairs
from dmfnet_edge.metrics.fusion import CONVENTIONS, METRIC_MIN_SIDE, METRIC_NAMES, fusion_metrics
from dmfnet_edge.preprocess.color import grey_of

log = logging.getLogger(__name__)
FuseFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # uint8 MRI, uint8 other -> uint8 fused pixels


def pair_metrics(pair: ImagePair, fused: np.ndarray, mri: np.ndarray | None = None,
                 other: np.ndarray | None = None) -> dict[str, float]:
    """The eleven metrics of fused pixels (grey or RGB) against the pair's sources."""
    mri = read_image(pair.mri) if mri is None else mri
    other = read_image(pair.other) if other is None else other
    _check_sizes(pair, fused, mri, other)
    if min(mri.shape[:2]) < METRIC_MIN_SIDE:
        raise InputError(f"{pair.task}/{pair.name}: {mri.shape[1]}x{mri.shape[0]} is too small for the metrics "
                         f"(SSIM's window needs at least {METRIC_MIN_SIDE} pixels a side)")
    return fusion_metrics(grey_of(fused), grey_of(mri), grey_of(other))


def _size(pixels: np.ndarray) -> str:
    return f"{pixels.shape[1]}x{pixels.shape[0]}"


def _check_sizes(pair: ImagePair, fused: np.ndarray, mri: np.ndarray, other: np.ndarray) -> None:
    """The three images of a pair must be one size (the metrics compare them pixel by pixel)."""
    if mri.shape[:2] != other.shape[:2]:
        raise InputError(f"{pair.task}/{pair.name}: the sources differ in size (MRI {_size(mri)}, {pair.modality} "
                         f"{_size(other)}: {pair.mri} and {pair.other}); a pair must be co-registered at one size")
    if fused.shape[:2] != mri.shape[:2]:
        raise InputError(f"{pair.task}/{pair.name}: the fused image is {_size(fused)} but its sources are "
                         f"{_size(mri)}; a fused image has its sources' size: fuse this pair again")


def summarise(per_pair: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean of every metric per task."""
    return {task: {m: float(np.mean([row[m] for row in rows])) for m in METRIC_NAMES}
            for task, rows in per_pair.items()}


def evaluate(pairs: Iterable[ImagePair], fused_for: Callable[[ImagePair, np.ndarray, np.ndarray], np.ndarray],
             progress: Callable[[], None] | None = None) -> dict[str, Any]:
    """Metrics for every pair; `fused_for(pair, mri, other)` returns its fused pixels."""
    per_pair: dict[str, list[dict[str, float]]] = {}
    names: dict[str, list[str]] = {}
    for pair in pairs:
        mri, other = read_image(pair.mri), read_image(pair.other)
        per_pair.setdefault(pair.task, []).append(pair_metrics(pair, fused_for(pair, mri, other), mri, other))
        names.setdefault(pair.task, []).append(pair.name)
        if progress:
            progress()
    return {"conventions": CONVENTIONS, "tasks": summarise(per_pair),
            "counts": {t: len(v) for t, v in per_pair.items()},
            "per_pair": {t: dict(zip(names[t], rows)) for t, rows in per_pair.items()}}


def fused_file(fused_dir: Path, pair: ImagePair) -> Path:
    """The fused image written for `pair` under fused_dir/MRI-X/NAME.<image suffix>."""
    folder = fused_dir / pair.task
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{pair.name}{suffix}"
        if candidate.is_file():
            return candidate
    raise InputError(f"{folder}/{pair.name}.png: fused image missing (expected one per pair in --pairs)")


def evaluate_folders(pairs_dir: Path, fused_dir: Path, progress: Callable[[], None] | None = None
                     ) -> dict[str, Any]:
    pairs = find_pairs(pairs_dir)
    for pair in pairs:
        fused_file(fused_dir, pair)  # fail before any work when something is missing
    return evaluate(pairs, lambda pair, _m, _o: read_image(fused_file(fused_dir, pair)), progress)

