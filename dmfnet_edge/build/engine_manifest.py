"""Engine manifests and cache keys, without TensorRT.

An engine is only valid for the GPU model, compute capability and SM count it was built on and for the exact
TensorRT version that built it. The key below names the engine file after all of them plus the ONNX hash and
the precision recipe (as serious deployments key their caches), and the manifest beside the engine records
them so that the runtime refuses a mismatch before deserialising: "rebuild needed: built for X, this is Y".
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dmfnet_edge.artifacts import read_versioned_manifest, sha256_file
from dmfnet_edge.errors import ModelFileError

ENGINE_FORMAT = "dmfnet-edge-engine"
ENGINE_MANIFEST_VERSION = 1


@dataclass(frozen=True)
class DeviceInfo:
    gpu_name: str
    compute_capability: tuple[int, int]
    sm_count: int
    tensorrt_version: str

    def describe(self) -> str:
        major, minor = self.compute_capability
        return (f"{self.gpu_name} (cc {major}.{minor}, {self.sm_count} SMs, TensorRT {self.tensorrt_version})")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceInfo:
        return cls(str(data["gpu_name"]), tuple(data["compute_capability"]), int(data["sm_count"]),
                   str(data["tensorrt_version"]))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def engine_file_name(stem: str, device: DeviceInfo, onnx_sha256: str, recipe: str) -> str:
    """e.g. dmfnet-edge.int8-tensorrt.nvidia-h100-80gb-hbm3.cc90.sm132.trt10.13.0.1a2b3c4d5e6f.engine"""
    major, minor = device.compute_capability
    return (f"{stem}.{recipe}.{_slug(device.gpu_name)}.cc{major}{minor}.sm{device.sm_count}."
            f"trt{device.tensorrt_version}.{onnx_sha256[:12]}.engine")


def engine_manifest_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def build_engine_manifest(engine: Path, onnx: Path, onnx_manifest: dict[str, Any], device: DeviceInfo,
                          settings: dict[str, Any], layer_precisions: dict[str, int],
                          plugins: list[dict[str, str]]) -> dict[str, Any]:
    return {"format": ENGINE_FORMAT, "manifest_version": ENGINE_MANIFEST_VERSION, "engine_file": engine.name,
            "engine_sha256": sha256_file(engine), "onnx_file": onnx.name, "onnx_sha256": onnx_manifest["onnx_sha256"],
            "precision": onnx_manifest["precision"], "model": onnx_manifest.get("model"),
            "weights_sha256": onnx_manifest.get("weights_sha256"), "inputs": onnx_manifest["inputs"],
            "output": onnx_manifest["output"], "device": asdict(device), "build": settings,
            "layer_precisions": layer_precisions, "plugins": plugins}


def read_engine_manifest(engine: Path, verify: bool = True) -> dict[str, Any]:
    sidecar = engine_manifest_path(engine)
    if not engine.is_file():
        raise ModelFileError(f"{engine}: engine file not found")
    meta = read_versioned_manifest(sidecar, ENGINE_FORMAT, ENGINE_MANIFEST_VERSION)
    if verify and sha256_file(engine) != meta.get("engine_sha256"):
        raise ModelFileError(f"{engine}: SHA-256 does not match its manifest; the engine is damaged or was swapped")
    return meta


def check_compatible(meta: dict[str, Any], here: DeviceInfo) -> None:
    """Refuse an engine built for another GPU or TensorRT version, naming both."""
    built = DeviceInfo.from_dict(meta["device"])
    if built != here:
        raise ModelFileError(f"rebuild needed: {meta['engine_file']} was built for {built.describe()}, this is "
                             f"{here.describe()}; run 'dmfnet-export build' on this machine")
