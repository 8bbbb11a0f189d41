"""A clean virtual environment with the runtime only (no torch) fuses with the shipped model on ONNX Runtime."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "dmfnet_edge" / "samples" / "MRI-PET"


@pytest.mark.slow
def test_runtime_install_without_torch(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                              f"{REPO}[onnx]"], capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stderr[-2000:]
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0, "torch must not be installed by the runtime extra"
    out = tmp_path / "fused.png"
    run = subprocess.run([str(venv / "bin" / "dmfnet"), "fuse", "--mri", str(SAMPLE / "MRI" / "11.png"), "--other",
                          str(SAMPLE / "PET" / "11.png"), "-o", str(out)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "onnxruntime" in run.stdout and out.stat().st_size > 0
