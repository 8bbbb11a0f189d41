"""Bad-input cases of the TensorRT plugin path: a `--trt-plugins` graph given to the precision recipes."""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.bad_inputs import REPO, Case, _grey, _img


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


CASES = [
    Case("quantize --precision fp16 of a --trt-plugins graph", lambda d, m: _quantize(d, "--precision", "fp16"), 2,
         "TensorRT plugin nodes", tool="dmfnet-export", model=False),
    Case("quantize --precision int8 --target tensorrt of a --trt-plugins graph",
         lambda d, m: _quantize_int8(d), 2, "TensorRT plugin nodes",
         tool="dmfnet-export", model=False),
]
