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
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from msgspec import Meta, Struct

from dmfnet_edge import __version__
from dmfnet_edge.artifacts import sha256_file
from dmfnet_edge.errors import InputError, ModelFileError
from dmfnet_edge.io.images import IMAGE_SUFFIXES, read_image
from dmfnet_edge.io.pairs import ImagePair, find_pairs
from dmfnet_edge.pipeline import prepare_pair
from dmfnet_edge.records import SHA256, Record, RelativePath

CALIBRATION_FORMAT = "dmfnet-edge-calibration"


def _evenly_spaced(pairs: list[ImagePair], count: int) -> list[ImagePair]:
    if count >= len(pairs):
        return pairs
    picks = np.round(np.linspace(0, len(pairs) - 1, count)).astype(int)
    return [pairs[i] for i in picks]


def _image_hashes(folder: Path) -> set[str]:
    return {sha256_file(p) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


class CalibrationPair(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One pair of the set: its task (MRI-CT, MRI-PET, MRI-SPECT), name, paths below the set's source folder
    and the SHA-256 of both images."""

    task: Annotated[str, Meta(pattern="^MRI-[A-Z]{2,5}$")]
    name: Annotated[str, Meta(min_length=1, max_length=255)]
    mri: RelativePath
    other: RelativePath
    mri_sha256: Annotated[str, SHA256]
    other_sha256: Annotated[str, SHA256]


class Disjointness(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    checked: bool
    excluded_split: str | None = None
    excluded_images: Annotated[int, Meta(ge=0)] | None = None
    overlap: Annotated[int, Meta(ge=0)] | None = None


class CalibrationManifest(Record, kw_only=True):
    """calibration/NAME.json: a reproducible, hashed selection of training pairs for INT8 calibration."""

    KIND: ClassVar[str] = "calibration manifest"
    ALWAYS: ClassVar[tuple[str, ...]] = ("format", "version")
    FIX: ClassVar[str] = "write a new one with 'dmfnet-export calibrate'"

    format: Literal["dmfnet-edge-calibration"] = CALIBRATION_FORMAT
    version: Literal[1] = 1
    source: Annotated[str, Meta(min_length=1, max_length=4096)]
    package_version: str
    selection: str
    per_modality: dict[str, Annotated[int, Meta(ge=0)]]
    pairs: Annotated[list[CalibrationPair], Meta(min_length=1, max_length=100_000)]
    set_sha256: Annotated[str, SHA256]
    disjoint_from_validation: Disjointness

    def __post_init__(self) -> None:
        if self.set_sha256 != set_digest(self.pairs):
            raise ValueError("set_sha256 does not match the pairs' hashes (the list was edited)")

    def pair_paths(self, base: Path) -> list[tuple[Path, Path]]:
        return [(base / p.mri, base / p.other) for p in self.pairs]


def set_digest(pairs: list[CalibrationPair]) -> str:
    return hashlib.sha256("".join(p.mri_sha256 + p.other_sha256 for p in pairs).encode()).hexdigest()


def select_calibration_set(pairs_dir: Path, per_modality: int, exclude: Path | None) -> CalibrationManifest:
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
    return CalibrationManifest.convert({
        "source": str(pairs_dir), "package_version": __version__,
        "selection": f"{per_modality} evenly spaced pairs per task (sorted by name)", "per_modality": counts,
        "pairs": entries, "set_sha256": digest, "disjoint_from_validation": disjoint},
        f"the calibration set of {pairs_dir}")


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def calibration_root(meta: CalibrationManifest, manifest_file: Path, root: Path | None = None) -> Path:
    """Where the set's images are: `root` if given, else its recorded source (relative to the working folder,
    or failing that to the manifest's folder)."""
    if root is not None:
        return root
    base = Path(meta.source)
    return (manifest_file.parent / base) if not base.is_absolute() and not base.exists() else base


def load_calibration(manifest_file: Path, root: Path | None = None
                     ) -> tuple[CalibrationManifest, list[ImagePair]]:
    """Read a calibration manifest and check every image against its hash; `root` overrides the source."""
    meta = CalibrationManifest.read(manifest_file)
    base = calibration_root(meta, manifest_file, root)
    pairs = []
    for e, (mri, other) in zip(meta.pairs, meta.pair_paths(base)):
        for path, expected in ((mri, e.mri_sha256), (other, e.other_sha256)):
            if not path.is_file():
                raise InputError(f"{path}: calibration image missing; pass --calibration-root to locate the set")
            if sha256_file(path) != expected:
                raise ModelFileError(f"{path}: does not match the calibration manifest's SHA-256")
        pairs.append(ImagePair(e.task, e.task[4:], e.name, mri, other))
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
    record = {"manifest": manifest_file.name, "set_sha256": meta.set_sha256, "per_modality": meta.per_modality}
    return list(network_batches(pairs)), record
