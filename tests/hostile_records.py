"""Bad-input cases of the records every command reads (weights sidecars, ONNX and engine manifests, calibration
manifests, recipes, training checkpoints, feature-cache keys, volume provenance) and of the outputs checked
against every input a record names: each read through the one bounded reader, as a user runs the command."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from tests.bad_inputs import Case, _grey, _img, _pair

REPO = Path(__file__).resolve().parents[1]
SHIPPED_FP32 = REPO / "dmfnet_edge" / "weights" / "dmfnet-edge-fp32.onnx"
CALIBRATION = REPO / "calibration" / "harvard-train-16.json"


def _special(path: Path, kind: str) -> Path:
    """`path` made a FIFO, a link to /dev/zero, a file nested 30,000 levels deep or a sparse terabyte."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    elif kind == "deep":
        path.write_text("[" * 30_000 + "]" * 30_000)
    elif kind == "huge":
        with open(path, "wb") as handle:
            handle.truncate(1 << 40)
    return path


def _json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


# ---- ONNX manifests (fuse --model G.onnx reads the manifest before the graph) ------------------------------------
def _graph_with_manifest(folder: Path, manifest: str | dict) -> list[str]:
    graph = folder / "g.onnx"
    graph.write_bytes(SHIPPED_FP32.read_bytes()[:4096])  # never parsed: the manifest is refused first
    sidecar = folder / "g.onnx.json"
    if isinstance(manifest, str):
        _special(sidecar, manifest)
    else:
        _json(sidecar, manifest)
    return [*_pair(folder), "--model", str(graph)]


def _shipped_manifest(**changes: object) -> dict:
    data = json.loads((SHIPPED_FP32.parent / (SHIPPED_FP32.name + ".json")).read_text())
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


# ---- weights sidecars ------------------------------------------------------------------------------------------
def _sidecar(folder: Path, model: Path, change) -> str:
    (folder / "m.safetensors").write_bytes(model.with_suffix(".safetensors").read_bytes())
    data = json.loads(model.with_suffix(".json").read_text())
    if isinstance(change, str):
        _special(folder / "m.json", change)
    else:
        _json(folder / "m.json", change(data))
    return str(folder / "m")


def _with(**changes: object):
    return lambda data: {**data, **changes}


def _without(key: str):
    return lambda data: {k: v for k, v in data.items() if k != key}


# ---- calibration manifests -------------------------------------------------------------------------------------
def _quantize(folder: Path, calibration: Path) -> list[str]:
    return ["quantize", "--onnx", str(SHIPPED_FP32), "--precision", "int8", "--calibration", str(calibration),
            "-o", str(folder / "out" / "q.onnx")]


def _calibration(folder: Path, change) -> Path:
    data = json.loads(CALIBRATION.read_text())
    return _json(folder / "cal.json", change(data))


def _climbing(data: dict) -> dict:
    data["pairs"][0]["mri"] = "../../../../etc/passwd"
    return data


# ---- recipes ---------------------------------------------------------------------------------------------------
def _recipe(folder: Path, body: str | None = None, kind: str | None = None) -> list[str]:
    path = folder / "r.yaml"
    if kind:
        _special(path, kind)
    else:
        path.write_text(body or "")
    return ["recipe", "--list", str(path)]


BOMB = "name: r\ndescription: x\ngraph: {precision: fp32}\ngate:\n  pairs: &a0 val\n" + "".join(
    f"  x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))


def _recipe_out_in_gate_pairs(folder: Path) -> list[str]:
    pairs = folder / "val"
    _img(pairs, "MRI-CT/MRI/a.png", _grey())
    _img(pairs, "MRI-CT/CT/a.png", _grey(seed=1))
    (folder / "recipes").mkdir()
    (folder / "recipes" / "g.yaml").write_text(f"name: g\ndescription: d\ngraph: {{precision: fp32}}\n"
                                               f"gate: {{pairs: {pairs}}}\n")
    return ["recipe", str(folder / "recipes" / "g.yaml"), "--out", str(pairs / "out"), "--onnx", str(SHIPPED_FP32)]


def _quantize_into_calibration_images(folder: Path) -> list[str]:
    source = folder / "train"
    for k in range(2):
        _img(source, f"MRI-CT/MRI/{k}.png", _grey(seed=k))
        _img(source, f"MRI-CT/CT/{k}.png", _grey(seed=10 + k))
    from dmfnet_edge.export.calibration import select_calibration_set

    select_calibration_set(source, 2, None).write(folder / "cal.json")
    return ["quantize", "--onnx", str(SHIPPED_FP32), "--precision", "int8", "--calibration", str(folder / "cal.json"),
            "-o", str(source / "MRI-CT" / "q.onnx")]


# ---- engine manifests, training checkpoints, feature caches, provenance ------------------------------------------
def _engine(folder: Path, kind: str) -> list[str]:
    (folder / "e.engine").write_bytes(b"ftrt" + bytes(64))
    _special(folder / "e.engine.json", kind)
    return [*_pair(folder), "--backend", "tensorrt", "--model", str(folder / "e.engine")]


def _train_dir(folder: Path) -> Path:
    for k in range(2):
        _img(folder / "train", f"MRI-CT/MRI/{k}.png", _grey(seed=k))
        _img(folder / "train", f"MRI-CT/CT/{k}.png", _grey(seed=5 + k))
    return folder / "train"


def _resume(folder: Path, kind: str) -> list[str]:
    run = folder / "run"
    run.mkdir()
    (run / "last.safetensors").write_bytes(b"\0" * 16)
    _special(run / "last.json", kind)
    return ["train", "stage1", "--preset", "tiny", "--data", str(_train_dir(folder)), "--out", str(run), "--steps",
            "1", "--batch", "1", "--crop", "64", "--resume"]


def _feature_cache(folder: Path, model: Path, kind: str) -> list[str]:
    cache = folder / "cache" / "train"
    cache.mkdir(parents=True)
    (cache / "level0.npy").write_bytes(b"")
    _special(cache / "cache.json", kind)
    return ["train", "stage2", "--unet", str(model), "--data", str(_train_dir(folder)), "--out", str(folder / "run"),
            "--feature-cache", str(folder / "cache"), "--steps", "1", "--batch", "1", "--crop", "64"]


def _stage2_option(folder: Path, model: Path, option: str, value: str) -> list[str]:
    return ["train", "stage2", "--unet", str(model), "--data", str(_train_dir(folder)), "--out", str(folder / "run"),
            "--steps", "1", "--batch", "1", "--crop", "64", option, value]


def _ort_cache_entry(folder: Path, graph: str | None, record: str | None) -> list[str]:
    """`fuse` on the shipped FP32 graph with a planted entry in its ONNX Runtime cache (the case's own cache
    folder): graph/record each 'fifo', 'zero' (a link to /dev/zero), 'tampered' (valid bytes of another graph,
    with a record that claims them) or None (absent)."""
    import hashlib

    import onnxruntime as ort

    from dmfnet_edge.contract import read_manifest
    from dmfnet_edge.runtime import shipped_onnx
    from dmfnet_edge.runtime.ort_cache import GRAPH_LIMIT, OrtCacheRecord, _describe
    from tests.bad_inputs import case_cache

    fields = _describe(ort, read_manifest(shipped_onnx("edge", "fp32")).onnx_sha256, "simulate_qdq=0")
    cache = case_cache(folder) / "onnxruntime"
    cache.mkdir(parents=True)
    other = shipped_onnx("edge", "int8").read_bytes()
    for kind, path in ((graph, cache / f"{fields['key']}.onnx"), (record, cache / f"{fields['key']}.json")):
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "zero":
            path.symlink_to("/dev/zero")
        elif kind == "tampered" and path.suffix == ".onnx":
            path.write_bytes(other)
        elif kind == "tampered":
            path.write_bytes(OrtCacheRecord(graph_sha256=hashlib.sha256(b"x").hexdigest(), graph_bytes=len(other),
                                            **fields).encode())
        elif kind == "huge":
            path.write_bytes(OrtCacheRecord(graph_sha256=hashlib.sha256(b"x").hexdigest(), graph_bytes=GRAPH_LIMIT,
                                            **fields).encode())
    return [*_pair(folder), "--model", "edge", "--backend", "onnxruntime"]


@contextlib.contextmanager
def _file_size_limit(limit: int = 3 << 20):
    """Files larger than `limit` cannot be written (EFBIG; Python ignores SIGXFSZ): the full-disk class for the
    ONNX Runtime cache, whose optimised graph (6 MB) does not fit while the fused PNG does."""
    import resource

    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)


def _overwrite_with_provenance(folder: Path, kind: str) -> list[str]:
    from tests.bad_inputs import _nifti

    mri = _nifti(folder, np.random.default_rng(0).random((64, 64, 2)).astype(np.float32))
    other = mri.rename(folder / "ct.nii.gz")
    mri = _nifti(folder, np.random.default_rng(1).random((64, 64, 2)).astype(np.float32))
    out = folder / "fused.nii.gz"
    out.write_bytes(b"an earlier output of someone else")
    _special(folder / "fused.nii.gz.provenance.json", kind)
    return ["fuse-volume", "--mri", str(mri), "--other", str(other), "-o", str(out), "--other-modality", "CT",
            "--overwrite"]



CASES = [
    # ONNX manifests
    Case("ONNX manifest: /dev/zero behind a link", lambda d, m: _graph_with_manifest(d, "zero"), 2,
         "is not a regular file", model=False),
    Case("ONNX manifest: a FIFO", lambda d, m: _graph_with_manifest(d, "fifo"), 2, "is not a regular file",
         model=False),
    Case("ONNX manifest: nested 30,000 deep", lambda d, m: _graph_with_manifest(d, "deep"), 2,
         "nested 30,000 levels deep", model=False),
    Case("ONNX manifest: a sparse terabyte", lambda d, m: _graph_with_manifest(d, "huge"), 2,
         "is more than an ONNX manifest can be", model=False),
    Case("ONNX manifest: a missing key", lambda d, m: _graph_with_manifest(d, _shipped_manifest(precision=None)), 2,
         "Object missing required field `precision`", model=False),
    Case("ONNX manifest: a hash that is a number", lambda d, m: _graph_with_manifest(
        d, _shipped_manifest(onnx_sha256=12)), 2, "Expected `str`, got `int` - at `$.onnx_sha256`", model=False),
    Case("ONNX manifest: inputs of the wrong type", lambda d, m: _graph_with_manifest(
        d, _shipped_manifest(inputs=["mri", "other"])), 2, "at `$.inputs`", model=False),
    Case("ONNX manifest: an engine manifest given for a graph", lambda d, m: _graph_with_manifest(
        d, _shipped_manifest(format="dmfnet-edge-engine")), 2, "not an ONNX manifest", model=False),
    # weights sidecars
    Case("weights sidecar: a hash that is a number", lambda d, m: [*_pair(d), "--model", _sidecar(
        d, m, _with(weights_sha256=123))], 2, "Expected `str | null`, got `int` - at `$.weights_sha256`"),
    Case("weights sidecar: a FIFO", lambda d, m: [*_pair(d), "--model", _sidecar(d, m, "fifo")], 2,
         "is not a regular file"),
    Case("weights sidecar: no config", lambda d, m: [*_pair(d), "--model", _sidecar(d, m, _without("config"))], 2,
         "Object missing required field `config`"),
    Case("weights sidecar: config of the wrong type", lambda d, m: [*_pair(d), "--model", _sidecar(
        d, m, _with(config=[1, 2]))], 2, "Expected `object`, got `array` - at `$.config`"),
    # calibration manifests
    Case("calibration manifest: /dev/zero behind a link", lambda d, m: _quantize(d, _special(d / "cal.json", "zero")),
         2, "is not a regular file", tool="dmfnet-export"),
    Case("calibration manifest: a FIFO", lambda d, m: _quantize(d, _special(d / "cal.json", "fifo")), 2,
         "is not a regular file", tool="dmfnet-export"),
    Case("calibration manifest: a pair path climbing out of its folder", lambda d, m: _quantize(
        d, _calibration(d, _climbing)), 2, "at `$.pairs[0].mri`", tool="dmfnet-export"),
    Case("calibration manifest: pairs of the wrong type", lambda d, m: _quantize(
        d, _calibration(d, lambda c: {**c, "pairs": "all"})), 2, "at `$.pairs`", tool="dmfnet-export"),
    # recipes
    Case("recipe: a YAML alias bomb", lambda d, m: _recipe(d, BOMB), 2, "YAML anchors and aliases are not allowed",
         tool="dmfnet-export"),
    Case("recipe: nested 30,000 deep", lambda d, m: _recipe(d, "name: r\ngate: " + "[" * 30_000 + "]" * 30_000), 2,
         "nested", tool="dmfnet-export"),
    Case("recipe: a FIFO", lambda d, m: _recipe(d, kind="fifo"), 2, "is not a regular file", tool="dmfnet-export"),
    Case("recipe: /dev/zero behind a link", lambda d, m: _recipe(d, kind="zero"), 2, "is not a regular file",
         tool="dmfnet-export"),
    Case("recipe: an integer of 5,000 digits", lambda d, m: _recipe(
        d, "name: r\ndescription: x\ngraph: {precision: fp32}\ngate: {pairs: v, per_modality: " + "9" * 5000 + "}\n"),
        2, "a value cannot be read", tool="dmfnet-export"),
    # outputs against the inputs records name
    Case("recipe --out inside its gate's validation pairs", lambda d, m: _recipe_out_in_gate_pairs(d), 2,
         "lies inside the input folder", tool="dmfnet-export"),
    Case("quantize -o inside the calibration set's images", lambda d, m: _quantize_into_calibration_images(d), 2,
         "lies inside the input folder", tool="dmfnet-export"),
    # engine manifests, training checkpoints, feature caches, provenance
    Case("engine manifest: /dev/zero behind a link", lambda d, m: _engine(d, "zero"), 2, "is not a regular file",
         model=False),
    Case("engine manifest: nested 30,000 deep", lambda d, m: _engine(d, "deep"), 2, "nested 30,000 levels deep",
         model=False),
    Case("training checkpoint: a FIFO as last.json", lambda d, m: _resume(d, "fifo"), 2, "is not a regular file",
         model=False),
    Case("training checkpoint: /dev/zero as last.json", lambda d, m: _resume(d, "zero"), 2, "is not a regular file",
         model=False),
    Case("train: --grad-gain nan", lambda d, m: _stage2_option(d, m, "--grad-gain", "nan"), 2,
         "nan is out of range: give a number between 1 and 3", model=False),
    Case("train: --grad-gain below 1 (a blur target)", lambda d, m: _stage2_option(d, m, "--grad-gain", "0.5"), 2,
         "0.5 is out of range", model=False),
    Case("train: --timesteps with a repeated level", lambda d, m: _stage2_option(d, m, "--timesteps", "5,5"), 2,
         "give distinct levels in increasing order", model=False),
    Case("train: --timesteps with 5,000 levels", lambda d, m: _stage2_option(d, m, "--timesteps",
                                                                             ",".join(map(str, range(1, 5001)))),
         2, "give 1 to 8 noise levels", model=False),
    Case("train: --w-contrast inf", lambda d, m: _stage2_option(d, m, "--w-contrast", "inf"), 2,
         "inf is out of range: give a number between 0 and 10", model=False),
    Case("train: --w-contrast on stage1", lambda d, m: ["train", "stage1", "--preset", "tiny", "--data",
                                                       str(_train_dir(d)), "--out", str(d / "run"), "--steps", "1",
                                                       "--w-contrast", "1"], 2,
         "--w-contrast: stage2 options", model=False),
    Case("ORT cache: a FIFO as the entry's record (ignored, graph optimised in-process)",
         lambda d, m: _ort_cache_entry(d, None, "fifo"), 0, ""),
    Case("ORT cache: /dev/zero as the cached graph, its record claiming the 256 MiB limit",
         lambda d, m: _ort_cache_entry(d, "zero", "huge"), 0, ""),
    Case("ORT cache: another graph's bytes under the key (hash mismatch: rebuilt)",
         lambda d, m: _ort_cache_entry(d, "tampered", "tampered"), 0, ""),
    Case("ORT cache: the optimised graph cannot be written (file-size limit: falls back, same output)",
         lambda d, m: _ort_cache_entry(d, None, None), 0, "", patch=_file_size_limit),
    Case("ORT cache: a FIFO as the cached graph, no record", lambda d, m: _ort_cache_entry(d, "fifo", None), 0, ""),
    Case("feature cache key: a FIFO", lambda d, m: _feature_cache(d, m, "fifo"), 2, "is not a regular file",
         model=False),
    Case("provenance record: a FIFO beside the output (--overwrite)", lambda d, m: _overwrite_with_provenance(
        d, "fifo"), 2, "is not an output of 'dmfnet fuse-volume'"),
]
