"""What an engine is, for `dmfnet-export inspect`: its manifest (toolchain, targets, precision, layers, plugins,
profile, the hashes it was built from, build settings), checked against the engine file itself as far as this
machine can.

Always: the engine's SHA-256 against the manifest, and the plan's own flavour tag (a TensorRT for RTX plan starts
with `vtrt`, a full-TensorRT one with `ftrt`) against the manifest's toolchain. Where a runtime can load the
engine (its TensorRT flavour and version installed, and a GPU visible): its layers from the engine inspector
(convolution precisions, layer count) and its optimisation profile against the manifest. A mismatch is an
`EngineMismatch` (exit 2): the engine is not what its manifest says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from dmfnet_edge._optional import available
from dmfnet_edge.contract import INPUT_NAMES
from dmfnet_edge.engines.precision import precision_summary, records_from_inspector
from dmfnet_edge.engines.trt_builder import gpu_visible
from dmfnet_edge.errors import DmfnetError, InputError, ModelFileError, one_line
from dmfnet_edge.runtime.engine_manifest import EngineManifest, read_engine_manifest
from dmfnet_edge.runtime.toolchain import FLAVOURS, load_toolchain

PLAN_TAGS = {b"ftrt": "tensorrt", b"vtrt": "tensorrt-rtx"}  # the first 4 bytes of a serialised plan


class EngineMismatch(InputError):
    """The engine file is not what its manifest says."""


@dataclass
class EngineReport:
    """The manifest, what was checked against the engine itself, and whether the engine was loaded (and why not)."""

    manifest: EngineManifest
    checks: list[str] = field(default_factory=list)
    loaded: bool = False
    not_loaded_because: str | None = None
    from_engine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"manifest": self.manifest.to_builtins(), "checks": self.checks, "loaded": self.loaded,
                "not_loaded_because": self.not_loaded_because, "from_engine": self.from_engine}


def plan_tag(path: Path) -> str:
    with open(path, "rb") as handle:
        tag = handle.read(4)
    return PLAN_TAGS.get(tag, f"not a TensorRT plan (starts with {tag!r})")


def inspect_engine(path: Path) -> EngineReport:
    """Describe `path` from its manifest and check the engine against it; raises EngineMismatch on a mismatch."""
    if os.path.lexists(path) and not path.is_file():
        raise InputError(f"{path}: is not a regular file (a folder, pipe, device or socket); give an .engine file "
                         "written by 'dmfnet-export build'")
    meta = read_engine_manifest(path)  # the engine's SHA-256 against the manifest, too
    report = EngineReport(meta, [f"engine SHA-256 matches the manifest ({meta.engine_sha256[:12]}...)"])
    flavour = plan_tag(path)
    if flavour != meta.toolchain.flavour:
        raise EngineMismatch(f"{path}: the manifest says a {meta.toolchain.flavour} engine, the plan is "
                             f"{flavour}; the manifest belongs to another engine: rebuild with 'dmfnet-export build'")
    report.checks.append(f"plan tag is {meta.toolchain.flavour}'s")
    why = _cannot_load(meta)
    if why is not None:
        report.not_loaded_because = why
        return report
    report.from_engine = engine_facts(meta, path.read_bytes(), path.name)
    report.loaded = True
    compare(meta, report.from_engine, path)
    report.checks.append("loaded: the engine's layers and profile match the manifest")
    return report


def _cannot_load(meta: EngineManifest) -> str | None:
    """Why this machine cannot load the engine (None when it can try)."""
    flavour = FLAVOURS[meta.toolchain.flavour]
    if not available(flavour.module):
        return f"{flavour.name} is not installed here"
    visible, said = gpu_visible()
    if not visible:
        return f"no GPU visible here ({said}); deserialising a TensorRT engine needs one"
    return None


def engine_facts(meta: EngineManifest, plan: bytes, name: str) -> dict[str, Any]:
    """Layers and profile from the deserialised engine (its inspector at DETAILED verbosity, as built)."""
    tc = load_toolchain(meta.toolchain.flavour)
    if tc.version != meta.toolchain.version:
        raise ModelFileError(f"rebuild needed: {name} was built with {meta.toolchain.flavour} "
                             f"{meta.toolchain.version}, this is {tc.describe()}")
    runtime = tc.trt.Runtime(tc.trt.Logger(tc.trt.Logger.WARNING))
    tc.check_engine(runtime, plan, name)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise ModelFileError(f"{name}: {tc.describe()} could not deserialise the engine on this GPU")
    try:
        info = engine.create_engine_inspector().get_engine_information(tc.trt.LayerInformationFormat.JSON)
        summary = precision_summary(records_from_inspector(info))
        profile = {n: [list(s) for s in engine.get_tensor_profile_shape(n, 0)] for n in INPUT_NAMES}
    except (DmfnetError, RuntimeError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{name}: the engine's own description cannot be read ({one_line(str(exc), 160)})"
                             ) from None
    return {"layers": summary["layers"], "convolution_precisions": summary["convolution_precisions"],
            "profile": profile}


def compare(meta: EngineManifest, facts: dict[str, Any], path: Path) -> None:
    """Refuse an engine whose own layers or profile differ from its manifest's."""
    recorded = meta.layer_precisions
    shapes = msgspec.to_builtins(meta.build.profile)
    wanted = [shapes["min"], shapes["opt"], shapes["max"]]
    differences = [f"input {n}'s profile {p} (manifest: {wanted})" for n, p in facts["profile"].items() if p != wanted]
    if facts["convolution_precisions"] != recorded.convolution_precisions:
        changed = sorted(n for n in set(facts["convolution_precisions"]) | set(recorded.convolution_precisions)
                         if facts["convolution_precisions"].get(n) != recorded.convolution_precisions.get(n))
        differences.append(f"{len(changed)} convolution precisions (e.g. {changed[0]})")
    if recorded.synchronisation_layers is not None and facts["layers"] != recorded.layers:
        differences.append(f"{facts['layers']} layers (manifest: {recorded.layers})")
    if differences:
        raise EngineMismatch(f"{path}: the engine differs from its manifest in {'; '.join(differences)}; the "
                             "manifest belongs to another engine: rebuild with 'dmfnet-export build'")
