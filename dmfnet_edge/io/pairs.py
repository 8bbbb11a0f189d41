"""Discovery of image pairs in the dataset layout DIR/MRI-X/{MRI,X}/NAME.ext (X = CT, PET, SPECT, ...).

Pairs share their file stem. A name present on one side only is an error naming both folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dmfnet_edge.errors import InputError, PairingError
from dmfnet_edge.io.images import IMAGE_SUFFIXES


@dataclass(frozen=True)
class ImagePair:
    """One co-registered pair: the MRI and the other-modality image of the same slice."""

    task: str  # e.g. "MRI-CT"
    modality: str  # e.g. "CT"
    name: str  # file stem shared by both images
    mri: Path
    other: Path


def _images(folder: Path) -> dict[str, Path]:
    """Images of a folder by stem; hidden files (macOS '._NAME.png' resource forks, editors' '.NAME') skipped."""
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    return {p.stem: p for p in files}


def _case_hint(parent: Path, wanted: str) -> str:
    """'; did you mean ...' when a folder differs from the expected name only in letter case."""
    if not parent.is_dir():
        return ""
    near = sorted(p.name for p in parent.iterdir() if p.is_dir() and p.name.upper() == wanted.upper()
                  and p.name != wanted)
    return f"; found '{near[0]}': folder names are case-sensitive, rename it to '{wanted}'" if near else ""


def task_pairs(task_dir: Path) -> list[ImagePair]:
    """Pairs of one task folder MRI-X/ holding MRI/ and X/."""
    task = task_dir.name
    if not task.startswith("MRI-") or len(task) <= 4:
        raise InputError(f"{task_dir}: expected a folder named MRI-<modality> (e.g. MRI-CT)")
    modality = task[4:]
    mri_dir, other_dir = task_dir / "MRI", task_dir / modality
    for folder in (mri_dir, other_dir):
        if not folder.is_dir():
            raise InputError(f"{folder}: missing; a task folder holds MRI/ and {modality}/ with matching names"
                             f"{_case_hint(task_dir, folder.name)}")
    mri, other = _images(mri_dir), _images(other_dir)
    lonely = sorted(set(mri) ^ set(other))
    if lonely:
        raise PairingError(f"{task_dir}: {len(lonely)} image(s) without a partner (e.g. '{lonely[0]}'); "
                           f"{mri_dir.name}/ and {other_dir.name}/ must hold the same file names")
    return [ImagePair(task, modality, name, mri[name], other[name]) for name in sorted(mri)]


def find_pairs(root: str | Path, tasks: list[str] | None = None) -> list[ImagePair]:
    """All pairs under `root` (a folder of MRI-X task folders, or one task folder), sorted by task and name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; expected DIR/MRI-X/{{MRI,X}}/NAME.png")
    task_dirs = [root] if root.name.startswith("MRI-") else sorted(
        p for p in root.iterdir() if p.is_dir() and p.name.startswith("MRI-"))
    if tasks:
        task_dirs = [d for d in task_dirs if d.name in tasks]
    pairs = [pair for d in task_dirs for pair in task_pairs(d)]
    if not pairs:
        near = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.upper().startswith("MRI-")
                      and not p.name.startswith("MRI-"))
        hint = (f"; found '{near[0]}': folder names are case-sensitive, rename it to 'MRI-{near[0][4:].upper()}'"
                if near else "")
        raise InputError(f"{root}: no image pairs found; expected DIR/MRI-X/{{MRI,X}}/NAME.png{hint}")
    return pairs
