"""The runtime-only install: what a console runs (ONNX Runtime, the readers, the records, the reports) works with
torch unimportable. Marked `runtime`: `make test-runtime` runs these (and every other `runtime` test) in a
process where `import torch` fails, and each command below runs in a child where it fails too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bad_inputs import IMAGE_CASES, run_case_process

pytestmark = pytest.mark.runtime
REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "dmfnet_edge" / "samples"
NO_TORCH = "import sys; import tests.no_torch\n"
RUNTIME_MODULES = ("dmfnet_edge.cli.main", "dmfnet_edge.pipeline", "dmfnet_edge.runtime.onnxruntime_backend",
                   "dmfnet_edge.io.loader", "dmfnet_edge.records", "dmfnet_edge.reporting.report",
                   "dmfnet_edge.contract", "dmfnet_edge.artifacts", "dmfnet_edge.precisions")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH + code], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_the_runtime_modules_import_without_torch():
    loaded = "sorted(m for m, v in sys.modules.items() if m.split('.')[0] == 'torch')"
    done = _python("\n".join(f"import {m}" for m in RUNTIME_MODULES) + f"\nprint({loaded})")
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]


def test_fuse_dir_of_the_samples_on_the_shipped_graph(tmp_path):
    done = _python(f"from dmfnet_edge.cli.main import main\nsys.exit(main(['fuse-dir', '--pairs', {str(SAMPLES)!r}, "
                   f"'--out', {str(tmp_path)!r}, '--metrics', '--json']))")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["pairs"] == 3 and summary["backend"]["backend"] == "onnxruntime"
    assert set(summary["metrics"]) == {"MRI-CT", "MRI-PET", "MRI-SPECT"}
    assert (tmp_path / "report.json").is_file() and (tmp_path / "overview.png").is_file()


def test_the_shipped_records_read_without_torch():
    done = _python("from dmfnet_edge.contract import read_manifest\nfrom dmfnet_edge.runtime import shipped_onnx\n"
                   "from dmfnet_edge.artifacts import WeightsSidecar, WEIGHTS_DIR\n"
                   "print(read_manifest(shipped_onnx('edge', 'int8')).precision, "
                   "WeightsSidecar.read(WEIGHTS_DIR / 'dmfnet-edge.json').kind)")
    assert done.returncode == 0 and done.stdout.split() == ["int8-onnxruntime", "dmfnet"], done.stderr[-2000:]


# the image readers' bad inputs with the shipped model on ONNX Runtime (the damaged-weights case copies a
# safetensors checkpoint, which the runtime install never reads)
CASES = [c for c in IMAGE_CASES if c.name != "damaged weights"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_on_the_runtime_install(case, tmp_path, monkeypatch):
    monkeypatch.setenv("DMFNET_TIER", "runtime")
    outcome = run_case_process(case, tmp_path, Path("edge"))
    assert outcome.code == case.exit_code, outcome.stderr
    assert "Traceback" not in outcome.stderr and outcome.inputs_after == outcome.inputs_before
    if case.exit_code:
        assert outcome.stderr.count("\n") == 1 and case.message in outcome.stderr, outcome.stderr
