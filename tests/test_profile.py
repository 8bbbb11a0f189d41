"""`dmfnet-export profile`: percentiles, stage breakdown, outputs and the budget gate on CPU backends."""

import csv
import json

import pytest

from dmfnet_edge.cli.main import export_main
from dmfnet_edge.profiling import budget_verdict, latency_stats


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    assert export_main(["onnx", "--model", "tiny", "-o", str(out), "--dynamic"]) == 0
    return out / "dmfnet-tiny-fp32-dynamic.onnx"


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("torch", marks=pytest.mark.slow)])
def test_profile_reports_percentiles_stages_and_files(backend, tiny_onnx, tiny_model_base, tmp_path, capsys):
    model = str(tiny_onnx) if backend == "onnxruntime" else str(tiny_model_base)
    code = export_main(["profile", "--backend", backend, "--model", model, "--repeats", "4", "--warmup", "1",
                        "--batch", "2", "--json", str(tmp_path / "p.json"), "--csv", str(tmp_path / "p.csv"),
                        "--plot", str(tmp_path / "p.png"), "--budget-ms", "100000"])
    assert code == 0 and "p99" in capsys.readouterr().out
    report = json.loads((tmp_path / "p.json").read_text())
    lat = report["latency_ms"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] and report["batch"] == 2
    assert set(report["network_stages_ms"]) >= {"stage1_unet", "stage2_fusion"}
    assert report["network_stages_ms"]["stage1_unet"] > 0 and report["budget"]["passed"]
    rows = list(csv.reader((tmp_path / "p.csv").open()))
    assert rows[0][0] == "run" and len(rows) == 5
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_budget_gate_fails_with_exit_1(tiny_onnx, capsys):
    assert export_main(["profile", "--model", str(tiny_onnx), "--runs", "2", "--warmup", "0",
                        "--budget-ms", "0.001"]) == 1
    assert "> budget" in capsys.readouterr().out


def test_statistics():
    stats = latency_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["p50"] == 3.0 and stats["max"] == 100.0 and stats["min"] == 1.0
    assert budget_verdict({"latency_ms": {"p99": 5.0, "max": 9.0}}, 4.0)[0] is False
    assert budget_verdict({"latency_ms": {"p99": 5.0, "max": 9.0}}, None)[0] is True


class _OpaqueRunner:
    """A runner whose network is one call that cannot be split into its two stages (an engine, a server)."""

    backend, model_name = "triton", "tiny"

    def fuse(self, mri, other):
        return (mri + other) / 2

    def describe(self):
        return {"backend": self.backend, "model": self.model_name}


def test_profile_on_a_backend_whose_stages_cannot_be_split(monkeypatch, tmp_path, capsys):
    import dmfnet_edge.cli.profile_cmd as profile_cmd

    monkeypatch.setattr(profile_cmd, "runner_from", lambda args: _OpaqueRunner())
    assert export_main(["profile", "--runs", "3", "--warmup", "0", "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    assert "triton fp32 batch 1: p50" in out and "one call on this backend" in out
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["network_stages_ms"] is None and report["runs"] == 3
