"""The record written beside a fused volume (NAME.provenance.json), as a type: what every reader of it (the
`--overwrite` check, a console tracing an output back) may rely on. `reporting/provenance.py` fills it in."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from msgspec import Meta, Struct

from dmfnet_edge.records import SHA256, Record


class SourceVolume(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """One input volume: where it was, its format and content hash, its slices (and the MRI's spacing)."""

    path: str
    format: str
    sha256: Annotated[str, SHA256] | None = None
    slices: Annotated[int, Meta(ge=1)]
    spacing_mm: list[float] | None = None
    modality: str | None = None


class ProvenanceInputs(Struct, forbid_unknown_fields=True, frozen=True):
    mri: SourceVolume
    other: SourceVolume


class Provenance(Record, kw_only=True):
    """Everything needed to trace a fused volume back to its inputs, model, intensity mapping and software, and
    the files written (`fuse-volume --overwrite` replaces only outputs whose record names every file there).
    Records written before the format field existed are read as version 1."""

    KIND: ClassVar[str] = "provenance record"
    ALWAYS: ClassVar[tuple[str, ...]] = ("format", "version")
    FIX: ClassVar[str] = "it is damaged or not an output of dmfnet fuse-volume"

    format: Literal["dmfnet-edge-provenance"] = "dmfnet-edge-provenance"
    version: Literal[1] = 1
    inputs: ProvenanceInputs
    model: dict[str, Any]  # the runner's own description (backend, precision, graph or engine and their hashes)
    intensity: dict[str, Any]
    outputs: Annotated[list[Annotated[str, Meta(min_length=1, max_length=4096)]], Meta(min_length=1)]
    seconds: dict[str, float]
    versions: dict[str, str]
    created_utc: str
    geometry: dict[str, Any] | None = None
