"""Model artefacts on disk, without torch: hashing, sidecar JSON and locating shipped weights.

A model is two files side by side: NAME.safetensors (tensors only, never pickle) and NAME.json (the model
config, what the file holds, its SHA-256 and how it was made). Loaders check the hash before use.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from dmfnet_edge.errors import ModelFileError
from dmfnet_edge.files import atomic_write_bytes
from dmfnet_edge.records import SHA256, Record, json_bytes

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED = ("edge",)


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(spec: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Turn 'edge', 'path/name', 'path/name.json' or 'path/name.safetensors' into (safetensors, json) paths."""
    text = str(spec)
    if text in SHIPPED:
        base = WEIGHTS_DIR / f"dmfnet-{text}"
    else:
        base = Path(text)
        if base.suffix in (".json", ".safetensors"):
            base = base.with_suffix("")
        if base.name in ("", ".", "..") or not text.strip():  # '', ' ', '/', '..': a folder, never a model
            raise ModelFileError(f"'{text}': not a model; give a shipped name ({', '.join(SHIPPED)}) or "
                                 "PATH/NAME of NAME.safetensors + NAME.json")
    tensors, sidecar = base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")
    for path in (tensors, sidecar):
        if not os.path.lexists(path):
            raise ModelFileError(f"{path}: missing; a model is NAME.safetensors + NAME.json "
                                 f"(or a shipped name: {', '.join(SHIPPED)})")
    if not tensors.is_file():  # hashed before use: a FIFO would block, /dev/zero never end
        raise ModelFileError(f"{tensors}: is not a regular file (a folder, pipe, device or socket); give the weights "
                             "file")
    return tensors, sidecar  # the sidecar is checked by the bounded reader


class WeightsSidecar(Record, kw_only=True):
    """NAME.json beside NAME.safetensors: the model config, what the tensors are, their SHA-256, how they were
    made. Sidecars written before the format field existed (kind, config, hash) are read as version 1."""

    KIND: ClassVar[str] = "weights sidecar"
    ALWAYS: ClassVar[tuple[str, ...]] = ("format", "version")
    FIX: ClassVar[str] = "the sidecar is damaged or belongs to something else; restore NAME.json from its source"

    format: Literal["dmfnet-edge-weights"] = "dmfnet-edge-weights"
    version: Literal[1] = 1
    kind: Literal["dmfnet", "unet"]
    config: dict[str, Any]
    weights_sha256: Annotated[str, SHA256] | None = None  # None only for seeded random weights (never on disk)
    package_version: str | None = None
    training: dict[str, Any] | None = None
    weights: str | None = None  # what the weights are, where they are not a trained file


def load_sidecar(tensors: Path, sidecar: Path, verify: bool = True) -> WeightsSidecar:
    """Read the sidecar and check the weights file against its recorded SHA-256."""
    meta = WeightsSidecar.read(sidecar)
    if verify:
        if meta.weights_sha256 is None:
            raise ModelFileError(f"{sidecar}: no 'weights_sha256' recorded; the weights cannot be verified")
        actual = sha256_file(tensors)
        if actual != meta.weights_sha256:
            raise ModelFileError(f"{tensors}: SHA-256 {actual[:12]}... does not match {meta.weights_sha256[:12]}... "
                                 f"recorded in {sidecar.name}; the file is damaged or was swapped")
    return meta


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """A report of measurements (not a record): NaN and Infinity are written as Python's json writes them."""
    atomic_write_bytes(path, json_bytes(data, strict=False))
