"""The package's import DAG (pyproject.toml [tool.importlinter], docs/ARCHITECTURE.md) holds, and is live: an
upward import injected into a copy of the package breaks it."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
LAYERS_BROKEN = "layers: the import DAG, commands on top, errors at the bottom BROKEN"


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(root), "PATH": ""})


def test_the_import_contracts_are_kept():
    out = _lint(REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in out.stdout


def _inject(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess:
    shutil.copytree(REPO / "dmfnet_edge", tmp_path / "dmfnet_edge",
                    ignore=shutil.ignore_patterns("__pycache__", "*.onnx", "*.safetensors", "samples"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    target = tmp_path / "dmfnet_edge" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa: E402 (injected)\n")
    return _lint(tmp_path)


def test_an_upward_import_breaks_the_layers(tmp_path):
    out = _inject(tmp_path, "preprocess/tensor.py", "from dmfnet_edge.runtime import base")
    assert out.returncode == 1
    assert LAYERS_BROKEN in out.stdout
    assert "dmfnet_edge.preprocess.tensor -> dmfnet_edge.runtime.base" in out.stdout


def test_an_import_between_siblings_of_one_layer_breaks_it(tmp_path):
    """export and build share a layer but may not import each other (that is how the old cycle grew)."""
    out = _inject(tmp_path, "export/calibration.py", "from dmfnet_edge.build import precision")
    assert out.returncode == 1
    assert LAYERS_BROKEN in out.stdout
    assert "dmfnet_edge.export.calibration -> dmfnet_edge.build.precision" in out.stdout
