"""The package's import DAG (pyproject.toml [tool.importlinter], docs/ARCHITECTURE.md) holds, and is live: an
upward import injected into a copy of the package breaks it."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(root), "PATH": ""})


def test_the_import_contracts_are_kept():
    out = _lint(REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in out.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    shutil.copytree(REPO / "dmfnet_edge", tmp_path / "dmfnet_edge",
                    ignore=shutil.ignore_patterns("__pycache__", "*.onnx", "*.safetensors", "samples"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    tensor = tmp_path / "dmfnet_edge" / "preprocess" / "tensor.py"
    tensor.write_text(tensor.read_text() + "\nfrom dmfnet_edge.runtime import base  # noqa: E402 (injected)\n")
    out = _lint(tmp_path)
    assert out.returncode == 1
    assert "layers: commands on top, errors and the graph contract at the bottom BROKEN" in out.stdout
    assert "dmfnet_edge.preprocess.tensor -> dmfnet_edge.runtime.base" in out.stdout
