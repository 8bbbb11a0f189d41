"""A Triton Inference Server model repository for an exported graph or a TensorRT engine.

Layout (Triton's standard one; every model is a folder with `config.pbtxt` and numbered versions):

    REPO/
      repository.json                 what was packed, from which files (SHA-256), for which server
      <name>/config.pbtxt             inputs, outputs, batching, instances, warm-up
      <name>/1/model.onnx             platform onnxruntime_onnx (CPU or GPU instances), or
      <name>/1/model.plan             platform tensorrt_plan (a full-TensorRT engine, built on the serving GPU)
      <name>/1/<file>.json            the project's manifest of that file (Triton ignores it)

The configuration follows the graph contract (`dmfnet_edge/contract.py`): inputs `mri` and `other`, output `fused`,
float32 (N, 1, H, W) in [-1, 1]. A graph or engine with a free batch dimension is served with
`max_batch_size` and dynamic batching (Triton then omits the batch dimension from `dims`); one with a fixed
batch is served as it is (`max_batch_size: 0`, full dims, no server-side batching). Free image sides are `-1`.

A TensorRT for RTX engine is refused: Triton's tensorrt backend runs engines of full TensorRT, built on (or
for) the serving GPU. The text is written without Triton's packages; `validate_config` parses it with
Triton's own protobuf schema (`tritonclient`'s `model_config_pb2`) where that is installed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from msgspec import Meta

from dmfnet_edge.artifacts import sha256_file
from dmfnet_edge.contract import INPUT_NAMES, OUTPUT_NAME, manifest_path, read_manifest
from dmfnet_edge.errors import EnvironmentProblem, InputError
from dmfnet_edge.files import FOLDER_MODE, staged_folder
from dmfnet_edge.records import SHA256, Record
from dmfnet_edge.runtime.triton_client import REPOSITORY_RECORD, check_model_name
from dmfnet_edge.serving.model_files import check_engine_file, check_onnx_file

REPOSITORY_FORMAT = "dmfnet-edge-triton-repository"
KINDS = ("cpu", "gpu")


class RepositoryRecord(Record, kw_only=True):
    """REPO/repository.json: what a repository serves (model name, platform), packed from which file (path and
    SHA-256 of the copy) with that file's manifest, and whether its config passed Triton's own schema."""

    KIND: ClassVar[str] = "Triton repository record"
    ALWAYS: ClassVar[tuple[str, ...]] = ("format", "version")
    FIX: ClassVar[str] = "pack the repository again with 'dmfnet-export triton'"

    format: Literal["dmfnet-edge-triton-repository"] = REPOSITORY_FORMAT
    version: Literal[1] = 1
    model: Annotated[str, Meta(min_length=1, max_length=64)]
    platform: Literal["onnxruntime_onnx", "tensorrt_plan"]
    source: str
    source_sha256: Annotated[str, SHA256]
    source_manifest: dict[str, Any]  # the packed file's ONNX or engine manifest, as read (docs/schemas)
    config_checked_against_triton_schema: bool


@dataclass(frozen=True)
class ServingOptions:
    """How Triton should run the model."""

    name: str = "dmfnet_edge"
    max_batch: int = 8  # used where the model's batch dimension is free
    preferred_batches: tuple[int, ...] = (4, 8)
    queue_delay_us: int = 2000
    instances: int = 1
    kind: str = "cpu"  # onnx only; a plan always runs on GPU instances
    threads: int | None = None  # ONNX Runtime intra-op threads per CPU instance
    warmup_size: int = 256


@dataclass(frozen=True)
class ServedModel:
    """The file to serve and what its manifest says about it."""

    path: Path
    platform: str  # onnxruntime_onnx | tensorrt_plan
    manifest: dict[str, Any]
    shape: list[int | str]  # (N, 1, H, W), names for free dimensions
    max_batch_of_file: int | None  # the engine's profile maximum; None = unbounded (ONNX)


def served_onnx(path: Path) -> ServedModel:
    from dmfnet_edge.runtime.onnx_file import open_with_manifest

    open_with_manifest(path)  # bounded, external data kept to its folder, opset, and as its manifest labels it
    meta = read_manifest(path)
    return ServedModel(path, "onnxruntime_onnx", meta.to_builtins(), meta.contract.shape, None)


def served_engine(path: Path) -> ServedModel:
    from dmfnet_edge.runtime.engine_manifest import read_engine_manifest

    meta = read_engine_manifest(path)
    flavour = meta.toolchain.flavour
    if flavour != "tensorrt":
        raise InputError(f"{path}: a {flavour} engine; Triton's tensorrt backend runs full-TensorRT engines only "
                         "(build one on the serving GPU with 'dmfnet-export build --toolchain tensorrt', or serve "
                         "the ONNX graph)")
    lo, hi = meta.build.profile.min, meta.build.profile.max
    shape: list[int | str] = [lo[i] if lo[i] == hi[i] else name for i, name in enumerate(("N", "C", "H", "W"))]
    return ServedModel(path, "tensorrt_plan", meta.to_builtins(), shape, int(hi[0]))


def _dims(values: list[int | str]) -> str:
    return "[ " + ", ".join(str(v) if isinstance(v, int) else "-1" for v in values) + " ]"


def config_text(model: ServedModel, options: ServingOptions) -> str:
    """config.pbtxt for `model` (protobuf text format of Triton's ModelConfig)."""
    batched = isinstance(model.shape[0], str)
    max_batch = options.max_batch
    if batched and model.max_batch_of_file is not None:
        max_batch = min(max_batch, model.max_batch_of_file)
    dims = model.shape[1:] if batched else model.shape
    lines = [f'name: "{options.name}"', f'platform: "{model.platform}"',
             f"max_batch_size: {max_batch if batched else 0}"]
    for kind, names in (("input", INPUT_NAMES), ("output", (OUTPUT_NAME,))):
        entries = [f'  {{\n    name: "{name}"\n    data_type: TYPE_FP32\n    dims: {_dims(dims)}\n  }}'
                   for name in names]
        lines.append(f"{kind} [\n" + ",\n".join(entries) + "\n]")
    if batched:
        preferred = sorted({b for b in options.preferred_batches if 1 <= b <= max_batch})
        lines.append("dynamic_batching {\n" + "".join(f"  preferred_batch_size: {b}\n" for b in preferred)
                     + f"  max_queue_delay_microseconds: {options.queue_delay_us}\n}}")
    kind = "KIND_GPU" if model.platform == "tensorrt_plan" or options.kind == "gpu" else "KIND_CPU"
    lines.append(f"instance_group [\n  {{\n    count: {options.instances}\n    kind: {kind}\n  }}\n]")
    if model.platform == "onnxruntime_onnx" and options.threads:
        lines.append('parameters {\n  key: "intra_op_thread_count"\n  value: { string_value: "'
                     f'{options.threads}" }}\n}}')
    sides = [options.warmup_size if isinstance(d, str) else d for d in model.shape[2:]]
    warm_dims = [1, *sides] if batched else [model.shape[0], 1, *sides]
    inputs = "".join(f'    inputs {{\n      key: "{name}"\n      value: {{\n        data_type: TYPE_FP32\n'
                     f'        dims: {_dims(warm_dims)}\n        zero_data: true\n      }}\n    }}\n'
                     for name in INPUT_NAMES)
    lines.append(f'model_warmup [\n  {{\n    name: "zeros"\n    batch_size: 1\n{inputs}  }}\n]')
    return "\n".join(lines) + "\n"


def validate_config(text: str) -> Any:
    """Parse config.pbtxt with Triton's protobuf schema; returns the ModelConfig message."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise ModuleNotFoundError(exc.name or "tritonclient", name="tritonclient") from None
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def write_repository(model: ServedModel, options: ServingOptions, out: Path, validate: bool = True
                     ) -> tuple[Path, bool]:
    """Write the repository to `out` (which must not exist, or be empty), atomically; returns the model folder
    and whether its config was checked against Triton's schema (only where tritonclient is installed)."""
    check_model_name(options.name)
    if options.kind not in KINDS:
        raise InputError(f"--kind {options.kind}: choose one of {KINDS}")
    _check_new_folder(out)
    check_model_file(model)
    text = config_text(model, options)
    checked = False
    if validate:
        try:
            validate_config(text)
            checked = True
        except ModuleNotFoundError:
            checked = False
    with staged_folder(out) as work:
        version = work / options.name / "1"
        version.mkdir(parents=True)
        filename = "model.onnx" if model.platform == "onnxruntime_onnx" else "model.plan"
        try:
            shutil.copyfile(model.path, version / filename)
            shutil.copyfile(_sidecar(model), version / f"{filename}.json")
            (work / options.name / "config.pbtxt").write_text(text)
        except OSError as exc:  # a full disk: the staged folder goes, nothing is left
            raise EnvironmentProblem(f"{out}: writing the repository failed ({exc.strerror}); nothing was "
                                     "written") from None
        RepositoryRecord(model=options.name, platform=model.platform, source=str(model.path),
                         source_sha256=sha256_file(version / filename), source_manifest=model.manifest,
                         config_checked_against_triton_schema=checked).write(work / REPOSITORY_RECORD)
        for folder in (work / options.name, version):
            os.chmod(folder, FOLDER_MODE)
        if out.is_dir():
            out.rmdir()
        os.replace(work, out)
    return out / options.name, checked


def _check_new_folder(out: Path) -> None:
    """The repository goes to a new or empty real folder (a link would be replaced by the folder, not filled)."""
    try:
        if out.is_symlink():
            raise InputError(f"{out}: is a symbolic link; give the repository's own folder (new or empty)")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InputError(f"{out}: exists and is not empty; give a new folder for the repository")
    except OSError as exc:
        raise EnvironmentProblem(f"{out}: cannot be looked into ({exc.strerror}); give a new folder for the "
                                 "repository") from None


def model_inputs(model: ServedModel) -> dict[str, Path]:
    """Every file packing `model` reads (the graph or engine and its manifest), by the option that named it: no
    output may be one of them or hold one."""
    option = "--onnx" if model.platform == "onnxruntime_onnx" else "--engine"
    return {option: model.path, f"{option}'s manifest": _sidecar(model)}


def _sidecar(model: ServedModel) -> Path:
    return manifest_path(model.path) if model.platform == "onnxruntime_onnx" else \
        model.path.with_name(model.path.name + ".json")


def check_model_file(model: ServedModel) -> None:
    """The file's own bytes must be what the manifest says it is (a manifest can be written for any bytes)."""
    (check_onnx_file if model.platform == "onnxruntime_onnx" else check_engine_file)(model.path)
