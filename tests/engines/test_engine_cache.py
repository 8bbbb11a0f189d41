"""The engine cache of an --out folder, with real TensorRT for RTX builds of small graphs (a few seconds each): a
cached engine is reused only when every setting that changes the plan is the same, the command says truthfully
whether it built or reused, a hit is held to the build's precision check, and an FP16 export is the same bytes
every time (so its engine is found again)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmfnet_edge.cli.main import export_main
from dmfnet_edge.runtime.engine_manifest import engine_manifest_path, read_engine_manifest
from tests.conftest import REPO
from tests.hostile_export import CHANNEL_CONV, INIT_CONV, _graph, qdq

BUILD = ["--toolchain", "tensorrt-rtx", "--compute-capability", "sm86"]


@pytest.fixture(scope="module")
def tiny_fp32(tmp_path_factory, tensorrt_rtx) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    assert export_main(["onnx", "--model", "tiny", "-o", str(folder), "--size", "64"]) == 0
    return folder / "dmfnet-tiny-fp32.onnx"


def _build(capsys, graph: Path, out: Path, *options: str) -> tuple[int, str, str]:
    code = export_main(["build", "--onnx", str(graph), "--out", str(out), *BUILD, *options])
    printed = capsys.readouterr()
    return code, printed.out, printed.err


def test_build_settings_are_part_of_the_cache_key(tiny_fp32, tmp_path, capsys):
    """'--opt-level 5 --workspace-mib 64' into the --out of a default build was answered with the default engine,
    and the command printed 'built in 9.7 s' (the old engine's build time)."""
    code, first, _ = _build(capsys, tiny_fp32, tmp_path)
    assert code == 0 and "built in" in first and "reused" not in first
    code, again, _ = _build(capsys, tiny_fp32, tmp_path)
    assert code == 0 and "reused (cache hit)" in again and "built in" not in again
    code, other, _ = _build(capsys, tiny_fp32, tmp_path, "--opt-level", "5", "--workspace-mib", "64")
    assert code == 0 and "built in" in other
    engines = sorted(tmp_path.glob("*.engine"))
    assert len(engines) == 2
    settings = {(m.build.builder_optimization_level, m.build.workspace_mib): m
                for m in map(read_engine_manifest, engines)}
    assert set(settings) == {(3, 2048), (5, 64)}
    for manifest in settings.values():  # the key ends the file name and is recorded with the settings it hashes
        assert manifest.engine_file.endswith(f".{manifest.build.cache_key}.engine")
        assert manifest.plan_settings.key() == manifest.build.cache_key and manifest.build.strip_weights is False
    code, other_again, _ = _build(capsys, tiny_fp32, tmp_path, "--opt-level", "5", "--workspace-mib", "64")
    assert code == 0 and "reused (cache hit)" in other_again


def test_a_cache_entry_recorded_with_other_settings_is_rebuilt(tiny_fp32, tmp_path, capsys):
    """The file name's key matches, the recorded settings do not (a collision or an edited manifest): rebuilt."""
    assert _build(capsys, tiny_fp32, tmp_path)[0] == 0
    engine = next(tmp_path.glob("*.engine"))
    sidecar = engine_manifest_path(engine)
    meta = json.loads(sidecar.read_text())
    meta["build"]["workspace_mib"] = 64
    sidecar.write_text(json.dumps(meta))
    code, printed, _ = _build(capsys, tiny_fp32, tmp_path)
    assert code == 0 and "built in" in printed
    assert read_engine_manifest(engine).build.workspace_mib == 2048 and len(list(tmp_path.glob("*.engine"))) == 1


@pytest.fixture(scope="module")
def int8_graph(tmp_path_factory, tensorrt_rtx) -> Path:
    """The shipped FP32 graph with Q/DQ on two convolutions: one runs in INT8, TensorRT runs the other in FP32."""
    return _graph(tmp_path_factory.mktemp("int8"), qdq(INIT_CONV, CHANNEL_CONV), precision="int8-tensorrt")


def test_declared_fallbacks_build_and_a_cache_hit_is_held_to_the_declaration(int8_graph, tmp_path, capsys):
    code, printed, _ = _build(capsys, int8_graph, tmp_path, "--allow-int8-fallbacks", "fusion/attention.4")
    assert code == 0 and "1 declared INT8 fallbacks in FP32" in printed
    manifest = read_engine_manifest(next(tmp_path.glob("*.engine")))
    assert manifest.layer_precisions.int8_fallbacks_fp32 == [CHANNEL_CONV]
    assert manifest.layer_precisions.convolution_precisions[INIT_CONV] == "int8"
    code, _, err = _build(capsys, int8_graph, tmp_path)  # the same plan, asked without the declaration
    assert code == 1 and err.count("\n") == 1 and "1 of them undeclared (declared: none)" in err
    assert err.rstrip().endswith(CHANNEL_CONV)
    code, printed, _ = _build(capsys, int8_graph, tmp_path, "--allow-int8-fallbacks", "1")
    assert code == 0 and "reused (cache hit)" in printed


def _fp16(fp32: Path, out: Path, hash_seed: str) -> bytes:
    """`dmfnet-export quantize --precision fp16` in a process of its own with this PYTHONHASHSEED."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    code = "import sys; from dmfnet_edge.cli.main import export_main; sys.exit(export_main())"
    subprocess.run([sys.executable, "-c", code, "quantize", "--onnx", str(fp32), "--precision", "fp16", "-o",
                    str(out)], cwd=REPO, env=env, check=True, capture_output=True)
    return out.read_bytes()


@pytest.mark.slow  # over 5 s: in make test and CI, out of the edit loop (make test-fast)
def test_two_fp16_exports_of_one_graph_are_the_same_bytes_and_share_an_engine(tiny_fp32, tmp_path, capsys):
    """AutoCast ordered the graph's value_info by Python's string hashing: every export had another SHA-256, and
    no FP16 engine was ever found in the cache again (seeds 3 and 4 differed)."""
    pytest.importorskip("modelopt", reason="the FP16 recipe needs the [quantize] extra")
    first = _fp16(tiny_fp32, tmp_path / "a" / "tiny-fp16.onnx", "3")
    second = _fp16(tiny_fp32, tmp_path / "b" / "tiny-fp16.onnx", "4")
    assert first == second
    assert _build(capsys, tmp_path / "a" / "tiny-fp16.onnx", tmp_path / "engines")[0] == 0
    code, printed, _ = _build(capsys, tmp_path / "b" / "tiny-fp16.onnx", tmp_path / "engines")
    assert code == 0 and "reused (cache hit)" in printed
