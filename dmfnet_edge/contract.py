"""The contract every stage agrees on, without torch: graph I/O, its manifest, layer groups, the plugin op.

Graph: inputs `mri` and `other`, float32 (N, 1, H, W) in [-1, 1]; output `fused`, float32 (N, 1, H, W) in
(-1, 1). H and W are multiples of 16 and at least 64. The frozen noise is baked into the graph. A static graph
fixes N, H and W (default 1 x 256 x 256); a dynamic graph leaves them symbolic ('N', 'H', 'W').

Every .onnx file has a sidecar `<file>.json` (the manifest): what it is, its SHA-256, the contract it
implements, the precision recipe and where it came from. Loaders check the hash and the contract first.

The TensorRT plugin op of the fused pixel stage: the exporter writes nodes `PLUGIN_NAMESPACE::PLUGIN_OP`
(version PLUGIN_VERSION), the builder registers the plugin under the same name, and engine manifests record it.

Exporters, builders, runtimes, servers and tests all import this module; it imports only the artefact and
tensor-size helpers below it (the import contract in pyproject.toml keeps it that way).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmfnet_edge.artifacts import read_versioned_manifest, sha256_file
from dmfnet_edge.errors import ModelFileError
from dmfnet_edge.preprocess.tensor import MIN_NETWORK_SIDE as MIN_SIDE
from dmfnet_edge.preprocess.tensor import SIZE_MULTIPLE

INPUT_NAMES = ("mri", "other")
OUTPUT_NAME = "fused"
OPSET = 18
DEFAULT_SIZE = 256
MANIFEST_FORMAT = "dmfnet-edge-onnx"
MANIFEST_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8-tensorrt", "int8-onnxruntime")
Dim = int | str

PLUGIN_OP = "DmfnetPixelAttentionFuse"
PLUGIN_NAMESPACE = "dmfnet"
PLUGIN_VERSION = "1"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_OP}"


@dataclass(frozen=True)
class IOContract:
    """Shape of the graph's inputs and output: ints for fixed dimensions, names for symbolic ones."""

    batch: Dim = 1
    height: Dim = DEFAULT_SIZE
    width: Dim = DEFAULT_SIZE

    @property
    def shape(self) -> list[Dim]:
        return [self.batch, 1, self.height, self.width]

    @property
    def static_size(self) -> tuple[int, int] | None:
        if isinstance(self.height, int) and isinstance(self.width, int):
            return self.height, self.width
        return None

    @property
    def static_batch(self) -> int | None:
        return self.batch if isinstance(self.batch, int) else None

    @classmethod
    def dynamic(cls) -> IOContract:
        return cls("N", "H", "W")

    @classmethod
    def from_shape(cls, shape: list[Dim]) -> IOContract:
        if len(shape) != 4 or shape[1] != 1:
            raise ModelFileError(f"graph input shape {shape} is not (N, 1, H, W)")
        return cls(shape[0], shape[2], shape[3])

    def check_static(self) -> None:
        for side in (self.height, self.width):
            if isinstance(side, int) and (side % SIZE_MULTIPLE or side < MIN_SIDE):
                raise ValueError(f"image side {side} must be a multiple of {SIZE_MULTIPLE} and >= {MIN_SIDE}")


def manifest_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".json")


def read_manifest(onnx_path: Path, verify: bool = True) -> dict[str, Any]:
    """Read and check the sidecar of an .onnx file: format, version, SHA-256 and contract names."""
    if not onnx_path.is_file():
        raise ModelFileError(f"{onnx_path}: ONNX file not found")
    sidecar = manifest_path(onnx_path)
    if not sidecar.is_file():
        raise ModelFileError(f"{sidecar}: manifest missing; export with 'dmfnet-export onnx' to get one")
    meta = read_versioned_manifest(sidecar, MANIFEST_FORMAT, MANIFEST_VERSION)
    if verify:
        expected = meta.get("onnx_sha256", "")
        actual = sha256_file(onnx_path)
        if actual != expected:
            raise ModelFileError(f"{onnx_path}: SHA-256 {actual[:12]}... does not match {expected[:12]}... in "
                                 f"{sidecar.name}; the file is damaged or was swapped")
    check_manifest_structure(meta, sidecar)
    if tuple(meta.get("inputs", {})) != INPUT_NAMES or meta.get("output") != OUTPUT_NAME:
        raise ModelFileError(f"{sidecar}: inputs/outputs do not follow the contract {INPUT_NAMES} -> {OUTPUT_NAME}")
    if meta.get("precision") not in PRECISIONS:
        raise ModelFileError(f"{sidecar}: unknown precision '{meta.get('precision')}'")
    return meta


def check_manifest_structure(meta: dict[str, Any], sidecar: Path) -> None:
    """The types and values a loader relies on (valid JSON of another structure is refused, never a traceback)."""
    def bad(field: str, wanted: str) -> ModelFileError:
        return ModelFileError(f"{sidecar}: '{field}' must be {wanted}, got {meta.get(field)!r:.80}; re-export the "
                              "graph with 'dmfnet-export'")

    inputs = meta.get("inputs")
    if not isinstance(inputs, dict):
        raise bad("inputs", "an object of input name -> shape")
    for name, shape in inputs.items():
        if not (isinstance(shape, list) and len(shape) == 4 and shape[1] == 1 and all(
                (isinstance(d, int) and not isinstance(d, bool) and d > 0) or (isinstance(d, str) and d)
                for d in shape)):
            raise ModelFileError(f"{sidecar}: input '{name}' has shape {shape!r:.80}, not (N, 1, H, W) with positive "
                                 "or named dimensions; re-export the graph with 'dmfnet-export'")
    if not isinstance(meta.get("output"), str):
        raise bad("output", "the output's name")
    digest = meta.get("onnx_sha256")
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise bad("onnx_sha256", "a SHA-256 in hex")
    for field, kinds, wanted in (("model_config", (dict,), "an object"), ("recipe", (dict,), "an object or null"),
                                 ("onnxruntime_runnable", (bool,), "true or false"),
                                 ("model", (str,), "a model name")):
        if meta.get(field) is not None and not isinstance(meta[field], kinds):
            raise bad(field, wanted)


def contract_of(meta: dict[str, Any]) -> IOContract:
    return IOContract.from_shape(meta["inputs"]["mri"])


FINE_GROUPED = ("fusion",)  # top-level modules split one level further (the fusion network's per-scale modules)


def layer_group(node_name: str) -> str:
    """The layer group of an exported node: its top-level module ('downs.0', 'ups.12', 'fusion/head', ...);
    nodes of the top-level graph itself (noising, skip concatenations) form the group 'graph'. Mixed-precision
    plans name these groups, and engine checks map TensorRT layers back to them."""
    parts = node_name.strip("/").split("/")
    if len(parts) == 1:
        return "graph"
    if parts[0] in FINE_GROUPED and len(parts) > 2:
        return f"{parts[0]}/{parts[1]}"
    return parts[0]
