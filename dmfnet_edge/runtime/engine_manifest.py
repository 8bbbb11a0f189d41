"""Engine manifests and cache keys, without TensorRT.

An engine is only valid for the TensorRT flavour and exact version that built it, and for its targets: a
TensorRT 10/11 engine for the GPU model, compute capability and SM count it was built on, a TensorRT for RTX
engine for the compute capabilities it was compiled for ahead of time. The engine file is named after all of
them plus the shape profile, the ONNX hash and the precision recipe (as serious deployments key their caches),
and the manifest beside it records them, so the runtime refuses a mismatch before deserialising: "rebuild
needed: built for X, this is Y".
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dmfnet_edge.artifacts import read_versioned_manifest, sha256_file
from dmfnet_edge.errors import ModelFileError

ENGINE_FORMAT = "dmfnet-edge-engine"
ENGINE_MANIFEST_VERSION = 2


@dataclass(frozen=True)
class DeviceInfo:
    gpu_name: str
    compute_capability: tuple[int, int]
    sm_count: int
    tensorrt_version: str

    def describe(self) -> str:
        major, minor = self.compute_capability
        return f"{self.gpu_name} (cc {major}.{minor}, {self.sm_count} SMs, TensorRT {self.tensorrt_version})"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceInfo:
        return cls(str(data["gpu_name"]), tuple(data["compute_capability"]), int(data["sm_count"]),
                   str(data["tensorrt_version"]))


@dataclass(frozen=True)
class BuildTarget:
    """What an engine is built with and for: flavour + version, compute capabilities, and the GPU (if any)."""

    flavour: str
    version: str
    compute_capabilities: tuple[str, ...]
    device: DeviceInfo | None = None

    def describe(self) -> str:
        where = self.device.describe() if self.device else ", ".join(self.compute_capabilities)
        return f"{where} with {self.flavour} {self.version}"

    def key(self) -> str:
        if self.device is not None:
            major, minor = self.device.compute_capability
            return f"{_slug(self.device.gpu_name)}.cc{major}{minor}.sm{self.device.sm_count}.trt{self.version}"
        return f"{'-'.join(self.compute_capabilities)}.rtx{self.version}"


def sm_name(compute_capability: tuple[int, int]) -> str:
    """(8, 6) -> 'sm86', the spelling of targets in manifests, file names and --compute-capability."""
    return f"sm{compute_capability[0]}{compute_capability[1]}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def profile_key(profile: dict[str, list[int]]) -> str:
    """'1x256x256' for a static profile, 'min-opt-max' (each NxHxW) for a dynamic one."""
    shapes = [profile["min"], profile["opt"], profile["max"]]
    names = ["x".join(str(d) for d in (s[0], s[2], s[3])) for s in shapes]
    return names[0] if len(set(names)) == 1 else "-".join(names)


def engine_file_name(stem: str, target: BuildTarget, onnx_sha256: str, recipe: str, profile: str) -> str:
    """e.g. dmfnet-edge.int8-tensorrt.nvidia-h100-80gb-hbm3.cc90.sm132.trt10.13.0.1x256x256.1a2b3c4d5e6f.engine"""
    return f"{stem}.{recipe}.{target.key()}.{profile}.{onnx_sha256[:12]}.engine"


def engine_manifest_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def build_engine_manifest(engine_name: str, plan: bytes, onnx: Path, onnx_manifest: dict[str, Any],
                          target: BuildTarget, settings: dict[str, Any], precisions: dict[str, Any],
                          plugins: list[dict[str, str]]) -> dict[str, Any]:
    """The manifest of an engine still in memory (it is written before the engine: never an engine without one)."""
    return {"format": ENGINE_FORMAT, "manifest_version": ENGINE_MANIFEST_VERSION, "engine_file": engine_name,
            "engine_sha256": hashlib.sha256(plan).hexdigest(), "engine_bytes": len(plan), "onnx_file": onnx.name,
            "onnx_sha256": onnx_manifest["onnx_sha256"], "precision": onnx_manifest["precision"],
            "recipe": onnx_manifest.get("recipe"), "model": onnx_manifest.get("model"),
            "weights_sha256": onnx_manifest.get("weights_sha256"), "inputs": onnx_manifest["inputs"],
            "output": onnx_manifest["output"], "toolchain": {"flavour": target.flavour, "version": target.version},
            "compute_capabilities": list(target.compute_capabilities),
            "device": asdict(target.device) if target.device else None, "build": settings,
            "layer_precisions": precisions, "plugins": plugins}


def read_engine_manifest(engine: Path, verify: bool = True) -> dict[str, Any]:
    sidecar = engine_manifest_path(engine)
    if not engine.is_file():
        raise ModelFileError(f"{engine}: engine file not found")
    meta = read_versioned_manifest(sidecar, ENGINE_FORMAT, ENGINE_MANIFEST_VERSION)
    if verify and sha256_file(engine) != meta.get("engine_sha256"):
        raise ModelFileError(f"{engine}: SHA-256 does not match its manifest; the engine is damaged or was swapped")
    return meta


def built_target(meta: dict[str, Any]) -> BuildTarget:
    try:
        device = DeviceInfo.from_dict(meta["device"]) if meta.get("device") else None
        return BuildTarget(str(meta["toolchain"]["flavour"]), str(meta["toolchain"]["version"]),
                           tuple(meta["compute_capabilities"]), device)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{meta.get('engine_file', 'engine')}: its manifest does not say what the engine was "
                             f"built for ({exc})") from None


def check_compatible(meta: dict[str, Any], flavour: str, version: str, device: DeviceInfo) -> None:
    """Refuse an engine of another TensorRT flavour or version, or built for another GPU, naming both."""
    built = built_target(meta)
    here = f"{device.describe()} ({sm_name(device.compute_capability)}) with {flavour} {version}"
    fits = built.flavour == flavour and built.version == version
    if built.device is not None:
        fits = fits and (built.device.gpu_name, built.device.compute_capability, built.device.sm_count) == (
            device.gpu_name, device.compute_capability, device.sm_count)
    else:
        fits = fits and sm_name(device.compute_capability) in built.compute_capabilities
    if not fits:
        raise ModelFileError(f"rebuild needed: {meta['engine_file']} was built for {built.describe()}, this is "
                             f"{here}; run 'dmfnet-export build' for this machine")
