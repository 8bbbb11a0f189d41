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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from msgspec import Meta, Struct

from dmfnet_edge.artifacts import sha256_file
from dmfnet_edge.errors import ModelFileError
from dmfnet_edge.precisions import GraphPrecision
from dmfnet_edge.preprocess.tensor import MIN_NETWORK_SIDE as MIN_SIDE
from dmfnet_edge.preprocess.tensor import SIZE_MULTIPLE
from dmfnet_edge.records import SHA256, Record

INPUT_NAMES = ("mri", "other")
OUTPUT_NAME = "fused"
OPSET = 18
DEFAULT_SIZE = 256
MANIFEST_FORMAT = "dmfnet-edge-onnx"
MANIFEST_VERSION = 1
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


Sha256 = Annotated[str, SHA256]
Dimension = Annotated[int, Meta(ge=1, le=1 << 20)] | Annotated[str, Meta(min_length=1, max_length=32)]
InputShape = Annotated[list[Dimension], Meta(min_length=4, max_length=4)]  # (N, 1, H, W); names for free sides


class PluginNode(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A custom-domain node of a graph: a TensorRT plugin layer."""

    op: str
    name: str
    namespace: str
    version: str


class MixedPrecisionPlan(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """Which layer groups an INT8 graph keeps in FP32, and what the search measured."""

    mode: Literal["auto", "none", "given"]
    kept_fp32: list[str]
    quantized_groups: int
    excluded_nodes: list[str] = []
    target_probe_psnr_db: float | None = None
    probe_psnr_db: float | None = None
    all_int8_probe_psnr_db: float | None = None
    probes: int | None = None
    sensitivity_psnr_db: dict[str, float] = {}
    planned_on: str | None = None  # where the plan was searched, when another flavour's search was reused


class QuantizationRecipe(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """How a reduced-precision graph was made: the tool, its version and its settings."""

    tool: str
    tool_version: str
    method: str | None = None
    format: str | None = None
    per_channel: bool | None = None
    activations: str | None = None
    weights: str | None = None
    fp32_thin_convolutions: list[str] = []
    high_precision_dtype: str | None = None
    low_precision: str | None = None
    kept_fp32_op_types: list[str] = []
    keep_io_types: bool | None = None
    mixed_precision: MixedPrecisionPlan | None = None


class CalibrationUsed(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The calibration set an INT8 graph was calibrated on (its manifest's name and set hash)."""

    manifest: str
    set_sha256: Sha256
    per_modality: dict[str, Annotated[int, Meta(ge=0)]]


class OnnxManifest(Record, kw_only=True):
    """The sidecar `<graph>.onnx.json` of every exported graph: what it is, its SHA-256, the contract it
    implements, how it was made. Loaders check the hash and the contract before using the graph."""

    KIND: ClassVar[str] = "ONNX manifest"
    ALWAYS: ClassVar[tuple[str, ...]] = ("format", "manifest_version")
    FIX: ClassVar[str] = "re-export the graph with 'dmfnet-export onnx' or 'dmfnet-export quantize'"

    format: Literal["dmfnet-edge-onnx"] = MANIFEST_FORMAT
    manifest_version: Literal[1] = MANIFEST_VERSION
    onnx_file: Annotated[str, Meta(min_length=1, max_length=255)]
    onnx_sha256: Sha256
    precision: GraphPrecision
    inputs: dict[str, InputShape]
    output: str
    package_version: str
    model: str | None = None
    model_config: dict[str, Any] | None = None
    weights_sha256: Sha256 | None = None
    opset: Annotated[int, Meta(ge=1, le=1000)] | None = None
    parity_max_abs_vs_torch: Annotated[float, Meta(ge=0)] | None = None
    ops: dict[str, Annotated[int, Meta(ge=0)]] = {}
    simplified: bool | None = None
    tensorrt_plugins: list[PluginNode] | None = None
    onnxruntime_runnable: bool | None = None
    tools: dict[str, str] = {}
    recipe: QuantizationRecipe | None = None
    calibration: CalibrationUsed | None = None
    parent_onnx_sha256: Sha256 | None = None

    def __post_init__(self) -> None:
        if tuple(self.inputs) != INPUT_NAMES or self.output != OUTPUT_NAME:
            raise ValueError(f"inputs/outputs do not follow the contract {INPUT_NAMES} -> {OUTPUT_NAME}")
        for name, shape in self.inputs.items():
            if shape[1] != 1:
                raise ValueError(f"input '{name}' has shape {shape}, not (N, 1, H, W)")

    @property
    def contract(self) -> IOContract:
        return IOContract.from_shape(self.inputs["mri"])

    @property
    def runs_on_onnxruntime(self) -> bool:
        """False for a graph with TensorRT plugin nodes (ONNX Runtime has no kernel for them)."""
        return self.onnxruntime_runnable is not False

    @property
    def plugins(self) -> list[PluginNode]:
        return self.tensorrt_plugins or []


def read_manifest(onnx_path: Path, verify: bool = True) -> OnnxManifest:
    """Read and check the sidecar of an .onnx file: format, version, structure, contract and SHA-256."""
    if not os.path.lexists(onnx_path):
        raise ModelFileError(f"{onnx_path}: ONNX file not found")
    if not onnx_path.is_file():  # hashed below: a FIFO would block, /dev/zero never end
        raise ModelFileError(f"{onnx_path}: is not a regular file (a folder, pipe, device or socket); give the "
                             "exported .onnx graph")
    sidecar = manifest_path(onnx_path)
    if not sidecar.exists():
        raise ModelFileError(f"{sidecar}: manifest missing; export with 'dmfnet-export onnx' to get one")
    meta = OnnxManifest.read(sidecar)
    if verify:
        actual = sha256_file(onnx_path)
        if actual != meta.onnx_sha256:
            raise ModelFileError(f"{onnx_path}: SHA-256 {actual[:12]}... does not match {meta.onnx_sha256[:12]}... "
                                 f"in {sidecar.name}; the file is damaged or was swapped")
    return meta


def contract_of(meta: OnnxManifest) -> IOContract:
    return meta.contract


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
