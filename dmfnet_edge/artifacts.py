"""Model artefacts on disk, without torch: hashing, sidecar JSON and locating shipped weights.

A model is two files side by side: NAME.safetensors (tensors only, never pickle) and NAME.json (the model
config, what the file holds, its SHA-256 and how it was made). Loaders check the hash before use.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from dmfnet_edge.errors import ModelFileError
from dmfnet_edge.files import atomic_write_bytes

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED = ("edge",)


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: expected a JSON object")
    return data


def read_versioned_manifest(path: Path, fmt: str, version: int) -> dict[str, Any]:
    """A manifest sidecar (plain JSON) whose `format` and `manifest_version` must be exactly these."""
    meta = read_json(path)
    if meta.get("format") != fmt or meta.get("manifest_version") != version:
        raise ModelFileError(f"{path}: not a {fmt} manifest version {version}")
    return meta


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
        if not path.is_file():
            raise ModelFileError(f"{path}: missing; a model is NAME.safetensors + NAME.json "
                                 f"(or a shipped name: {', '.join(SHIPPED)})")
    return tensors, sidecar


def load_sidecar(tensors: Path, sidecar: Path, verify: bool = True) -> dict[str, Any]:
    """Read the sidecar and check the weights file against its recorded SHA-256."""
    meta = read_json(sidecar)
    expected = meta.get("weights_sha256")
    if verify:
        if not expected:
            raise ModelFileError(f"{sidecar}: no 'weights_sha256' recorded; the weights cannot be verified")
        actual = sha256_file(tensors)
        if actual != expected:
            raise ModelFileError(f"{tensors}: SHA-256 {actual[:12]}... does not match {expected[:12]}... recorded "
                                 f"in {sidecar.name}; the file is damaged or was swapped")
    return meta


def json_bytes(data: dict[str, Any]) -> bytes:
    """A JSON record as every sidecar of the project is written: sorted keys, indented, one final newline."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, json_bytes(data))
