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
    # the kernel and plugin sources are package data: found inside the installed package, not the checkout
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "from dmfnet_edge.files import package_path; "
                            "p = package_path('kernels', 'cross_modal_attention'); "
                            "print(p.resolve(), (p / 'cma_kernels.cu').is_file())"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert where.returncode == 0 and where.stdout.split()[1:] == ["True"], where.stdout + where.stderr
    assert str(venv) in where.stdout.split()[0]


def test_the_wheel_ships_the_kernel_and_plugin_sources(tmp_path):
    """dmfnet_edge/kernels links to the top-level kernels/ in a checkout; the wheel must hold the files."""
    import zipfile

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    sources = sorted(p.name for p in (REPO / "kernels" / "cross_modal_attention").iterdir())
    assert [n.rsplit("/", 1)[1] for n in sorted(names) if "/kernels/cross_modal_attention/" in n] == sources
