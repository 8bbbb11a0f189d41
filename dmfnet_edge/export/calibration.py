"""Calibration sets for INT8: a reproducible, hashed selection of real training pairs, disjoint from validation.

The manifest (JSON, under calibration/) lists every pair with the SHA-256 of both images, the per-modality
counts, the selection rule, and the result of the disjointness check against the validation split. Loading it
re-hashes every file, so a changed or swapped image is refused.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge import __version__
from dmfnet_edge.artifacts import read_json, sha256_file
from dmfnet_edge.errors import InputError, ModelFileError
from dmfnet_edge.io.images import IMAGE_SUFFIXES, read_image
from dmfnet_edge.io.pairs import ImagePair, find_pairs
from dmfnet_edge.pipeline import prepare_pair

CALIBRATION_FORMAT = "dmfnet-edge-calibration"


def _evenly_spaced(pairs: list[ImagePair], count: int) -> list[ImagePair]:
    if count >= len(pairs):
        return pairs
    picks = np.round(np.linspace(0, len(pairs) - 1, count)).astype(int)
    return [pairs[i] for i in picks]


def _image_hashes(folder: Path) -> set[str]:
    return {sha256_file(p) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def select_calibration_set(pairs_dir: Path, per_modality: int, exclude: Path | None) -> dict[str, Any]:
    """Pick `per_modality` evenly spaced pairs of every task; refuse any image also found under `exclude`."""
    if per_modality < 1:
        raise InputError(f"--per-modality {per_modality}: must be at least 1")
    by_task: dict[str, list[ImagePair]] = {}
    for pair in find_pairs(pairs_dir):
        by_task.setdefault(pair.task, []).append(pair)
    chosen = [p for task in sorted(by_task) for p in _evenly_spaced(by_task[task], per_modality)]
    entries = [{"task": p.task, "name": p.name, "mri": _rel(p.mri, pairs_dir), "other": _rel(p.other, pairs_dir),
                "mri_sha256": sha256_file(p.mri), "other_sha256": sha256_file(p.other)} for p in chosen]
    disjoint: dict[str, Any] = {"checked": False}
    if exclude is not None:
        forbidden = _image_hashes(exclude)
        overlap = [e["name"] for e in entries if {e["mri_sha256"], e["other_sha256"]} & forbidden]
        if overlap:
            raise InputError(f"calibration pairs {overlap[:3]} also appear under {exclude}; choose another split")
        disjoint = {"checked": True, "excluded_split": str(exclude), "excluded_images": len(forbidden),
                    "overlap": 0}
    counts = {task: sum(e["task"] == task for e in entries) for task in sorted(by_task)}
    digest = hashlib.sha256("".join(e["mri_sha256"] + e["other_sha256"] for e in entries).encode()).hexdigest()
    return {"format": CALIBRATION_FORMAT, "version": 1, "source": str(pairs_dir), "package_version": __version__,
            "selection": f"{per_modality} evenly spaced pairs per task (sorted by name)", "per_modality": counts,
            "pairs": entries, "set_sha256": digest, "disjoint_from_validation": disjoint}


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def load_calibration(manifest_file: Path, root: Path | None = None) -> tuple[dict[str, Any], list[ImagePair]]:
    """Read a calibration manifest and check every image against its hash; `root` overrides the source."""
    meta = read_json(manifest_file)
    if meta.get("format") != CALIBRATION_FORMAT:
        raise ModelFileError(f"{manifest_file}: not a {CALIBRATION_FORMAT} manifest")
    base = Path(root or meta["source"])
    if not base.is_absolute() and root is None:
        base = (manifest_file.parent / base) if not base.exists() else base
    pairs = []
    for e in meta["pairs"]:
        mri, other = base / e["mri"], base / e["other"]
        for path, expected in ((mri, e["mri_sha256"]), (other, e["other_sha256"])):
            if not path.is_file():
                raise InputError(f"{path}: calibration image missing; pass --calibration-root to locate the set")
            if sha256_file(path) != expected:
                raise ModelFileError(f"{path}: does not match the calibration manifest's SHA-256")
        pairs.append(ImagePair(e["task"], e["task"][4:], e["name"], mri, other))
    return meta, pairs


def network_batches(pairs: list[ImagePair]) -> Iterator[dict[str, np.ndarray]]:
    """Network inputs for every calibration pair, {'mri': (1,1,H,W), 'other': (1,1,H,W)} float32."""
    for pair in pairs:
        prepared = prepare_pair(read_image(pair.mri), read_image(pair.other), pair.name)
        yield {"mri": prepared.mri[None, None], "other": prepared.other[None, None]}


def calibration_inputs(manifest_file: Path, root: Path | None = None
                       ) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """The network inputs of a calibration manifest's pairs (hash-checked), and the record of the set that a
    quantized graph's manifest keeps."""
    meta, pairs = load_calibration(manifest_file, root)
    record = {"manifest": manifest_file.name, "set_sha256": meta["set_sha256"], "per_modality": meta["per_modality"]}
    return list(network_batches(pairs)), record
