"""Bad-input cases of the TensorRT plugin path: a `--trt-plugins` graph given to the precision recipes, and engines
whose plugin library (recorded by name and SHA-256 in the engine manifest) is missing beside the engine, swapped
for another file, or present only at the absolute path the build recorded.

The engines are a plan's bytes under a manifest written for them (nothing here deserialises a plan): the checks
under test run before TensorRT is imported."""

from __future__ import annotations

import atexit
import functools
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.bad_inputs import REPO, Case, _grey, _img, _pair

PLUGIN_LIBRARY = "libdmfnet_trt_plugins.so"


@functools.lru_cache(maxsize=1)
def _exported_plugin_graph() -> Path:
    """The tiny model exported once with --trt-plugins (64x64), in a folder of this process's own."""
    folder = Path(tempfile.mkdtemp(prefix="dmfnet-plugin-graph-"))
    atexit.register(shutil.rmtree, folder, True)
    subprocess.run([sys.executable, "-c", "import sys; from dmfnet_edge.cli.main import export_main; "
                    "sys.exit(export_main())", "onnx", "--model", "tiny", "-o", str(folder), "--size", "64",
                    "--trt-plugins"], cwd=REPO, check=True, capture_output=True, timeout=300)
    return next(folder.glob("*.onnx"))


def _plugin_graph(folder: Path) -> Path:
    source = _exported_plugin_graph()
    graph = folder / source.name
    shutil.copyfile(source, graph)
    shutil.copyfile(source.with_name(source.name + ".json"), graph.with_name(graph.name + ".json"))
    return graph


def _quantize(folder: Path, *options: str) -> list[str]:
    return ["quantize", "--onnx", str(_plugin_graph(folder)), *options, "-o", str(folder / "out" / "q.onnx")]


def _quantize_int8(folder: Path) -> list[str]:
    """INT8 with a calibration set of two 64x64 pairs (the graph's static size)."""
    from dmfnet_edge.export.calibration import select_calibration_set

    for k in range(2):
        _img(folder / "train", f"MRI-CT/MRI/{k}.png", _grey(seed=k))
        _img(folder / "train", f"MRI-CT/CT/{k}.png", _grey(seed=10 + k))
    select_calibration_set(folder / "train", 2, None).write(folder / "cal.json")
    return _quantize(folder, "--precision", "int8", "--target", "tensorrt", "--calibration", str(folder / "cal.json"))


def _engine_with_library(folder: Path, recorded: bytes, beside: bytes | None, recorded_at: Path | None = None
                         ) -> list[str]:
    """An engine whose manifest records a plugin library with the SHA-256 of `recorded` (at `recorded_at`, the
    build's absolute path, where those bytes are also written), and beside the engine a library holding `beside`
    (None: none there)."""
    from dmfnet_edge.runtime.engine_manifest import EngineManifest, engine_manifest_path

    plan = b"ftrt" + bytes(64)
    engine = folder / "e.engine"
    engine.write_bytes(plan)
    library = recorded_at or folder / "build" / PLUGIN_LIBRARY
    if recorded_at is not None:
        recorded_at.parent.mkdir(parents=True, exist_ok=True)
        recorded_at.write_bytes(recorded)
    if beside is not None:
        (folder / PLUGIN_LIBRARY).write_bytes(beside)
    shape = [1, 1, 64, 64]
    EngineManifest.convert({
        "engine_file": engine.name, "engine_sha256": hashlib.sha256(plan).hexdigest(), "engine_bytes": len(plan),
        "onnx_file": "g.onnx", "onnx_sha256": "ab" * 32, "precision": "fp32",
        "inputs": {"mri": shape, "other": shape}, "output": "fused",
        "toolchain": {"flavour": "tensorrt", "version": "11.4.0"}, "compute_capabilities": ["sm90"],
        "device": {"gpu_name": "NVIDIA H100", "compute_capability": [9, 0], "sm_count": 132,
                   "tensorrt_version": "11.4.0"},
        "build": {"builder_optimization_level": 3, "strongly_typed": True, "workspace_mib": 2048,
                  "build_seconds": 1.0, "profile": {"min": shape, "opt": shape, "max": shape}},
        "layer_precisions": {"layers": 1, "layers_by_output": {}, "convolutions": {}, "convolution_precisions": {}},
        "plugins": [{"library": str(library), "sha256": hashlib.sha256(recorded).hexdigest()}],
    }, "the test engine").write(engine_manifest_path(engine))
    return [*_pair(folder), "--backend", "tensorrt", "--model", str(engine)]


CASES = [
    Case("quantize --precision fp16 of a --trt-plugins graph", lambda d, m: _quantize(d, "--precision", "fp16"), 2,
         "TensorRT plugin nodes", tool="dmfnet-export", model=False),
    Case("quantize --precision int8 --target tensorrt of a --trt-plugins graph",
         lambda d, m: _quantize_int8(d), 2, "TensorRT plugin nodes",
         tool="dmfnet-export", model=False),
    Case("engine: its plugin library swapped for another file", lambda d, m: _engine_with_library(
        d, b"the library the engine was built with", b"another library"), 2, "SHA-256", model=False),
    Case("engine: its plugin library missing beside it", lambda d, m: _engine_with_library(
        d, b"the library the engine was built with", None), 2, "not found", model=False),
    Case("engine: its plugin library only at the build's absolute path", lambda d, m: _engine_with_library(
        d, b"the library the engine was built with", None, recorded_at=d / "build-machine" / PLUGIN_LIBRARY), 2,
        "not found", model=False),
]
