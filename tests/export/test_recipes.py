"""Deployment recipes (export/*.yaml): the shipped targets are valid and describe what ships, the schema refuses
what no target can run, and `dmfnet-export recipe` makes a target's graph, engine step and gate from one file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dmfnet_edge._optional import available
from dmfnet_edge.cli.main import export_main
from dmfnet_edge.contract import read_manifest
from dmfnet_edge.errors import InputError
from dmfnet_edge.export.calibration import CalibrationManifest
from dmfnet_edge.export.recipes import load_recipe, recipes_in
from dmfnet_edge.io.images import write_image
from tests.conftest import REPO, smooth_image

TARGETS = REPO / "export"


def test_every_shipped_recipe_is_valid_and_named_after_its_file():
    recipes = recipes_in(TARGETS)
    assert {r.name for r in recipes} == {"cpu-fp32", "cpu-int8", "workstation-rtx-fp16", "jetson-orin-int8",
                                        "datacenter-fp16"}
    by_name = {r.name: r for r in recipes}
    assert by_name["cpu-fp32"].graph.gate == "fp32" and by_name["cpu-fp32"].engine is None
    assert by_name["jetson-orin-int8"].graph.gate == "int8-tensorrt"
    assert by_name["workstation-rtx-fp16"].engine.compute_capabilities == ["sm80", "sm86", "sm89", "sm120"]
    for recipe in recipes:  # every path a recipe names exists in the repository
        if recipe.graph.calibration:
            assert (REPO / recipe.graph.calibration).is_file(), recipe.name
        if isinstance(recipe.graph.keep_fp32, str) and recipe.graph.keep_fp32.endswith(".onnx"):
            assert (REPO / recipe.graph.keep_fp32).is_file(), recipe.name


def test_the_cpu_int8_recipe_is_the_recipe_of_the_shipped_int8_graph():
    recipe = load_recipe(TARGETS / "cpu-int8.yaml").graph
    shipped = read_manifest(REPO / "dmfnet_edge" / "weights" / "dmfnet-edge-int8-onnxruntime.onnx")
    calibration = CalibrationManifest.read(REPO / recipe.calibration)
    assert shipped.precision == recipe.gate
    assert shipped.calibration.set_sha256 == calibration.set_sha256
    plan = shipped.recipe.mixed_precision
    assert plan.mode == recipe.keep_fp32 and plan.target_probe_psnr_db == recipe.target_psnr_db


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("body, message", [
    ("description: x\ngraph: {precision: fp32}\n", "Object missing required field `name`"),
    ("name: r\ndescription: x\ngraph: {precision: fp8}\n", r"Invalid enum value 'fp8' - at `\$.graph.precision`"),
    ("name: r\ndescription: x\ngraph: {precision: fp32}\ncolour: red\n", "Object contains unknown field `colour`"),
    ("name: other\ndescription: x\ngraph: {precision: fp32}\n", "differs from the file name"),
    ("name: r\ndescription: x\ngraph: {precision: int8, quantization: onnxruntime, file: a.onnx}\n",
     "missing key 'calibration'"),
    ("name: r\ndescription: x\ngraph: {precision: fp16, method: max, file: a.onnx}\n",
     "method: only an int8 graph has it"),
    ("name: r\ndescription: x\ngraph: {precision: fp16, file: ../a.onnx}\n", "a plain file name ending in .onnx"),
    ("name: r\ndescription: x\ngraph: {precision: int8, quantization: onnxruntime, calibration: c.json, "
     "file: a.onnx}\nengine: {toolchain: tensorrt-rtx}\n", "no tensorrt-rtx engine builds from the int8-onnxruntime"),
    ("name: r\ndescription: x\ngraph: {precision: fp32}\nengine: {toolchain: tensorrt, compute_capabilities: "
     "[sm87]}\n", "builds for the GPU it runs on"),
    ("name: r\ndescription: x\ngraph: {precision: fp32}\ngate: {pairs: val, per_modality: 0}\n",
     r"Expected `int` >= 1 - at `\$.gate.per_modality`"),
    ("name: r\ndescription: x\ngraph: [precision, fp32]\n", r"Expected `object`, got `array` - at `\$.graph`"),
    ("name: r\ndescription: x\ngraph: {precision: fp32\n", "not a readable YAML file"),
    ("name: r\ndescription: &d x\ngraph: {precision: fp32}\n", "YAML anchors and aliases are not allowed"),
    ("name: r\ndescription: x\ngraph: {precision: fp32}\nengine: {toolchain: tensorrt-rtx, compute_capabilities: "
     "[smXY]}\n", "engine.compute_capabilities: 'smxy' is not a compute capability"),
    ("- a\n- b\n", "Expected `object`, got `array`"),
    ("name: r\ndescription: x\ngraph: {precision: fp32}\n" + "#" * 70_000 + "\n", "more than a recipe can be"),
    ("name: r\ndescription: x\ngraph: {precision: fp32}\ngate: {pairs: " + "[" * 40 + "]" * 40 + "}\n",
     "nested more than 8 levels deep"),
])
def test_the_schema_names_the_file_and_the_key(tmp_path, body, message):
    path = _write(tmp_path, "r", body)
    with pytest.raises(InputError, match=message) as info:
        load_recipe(path)
    assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory, tiny_model_base):
    out = tmp_path_factory.mktemp("onnx")
    assert export_main(["onnx", "--model", str(tiny_model_base), "-o", str(out), "--dynamic", "--name", "tiny"]) == 0
    rng = np.random.default_rng(12)
    pairs = tmp_path_factory.mktemp("pairs")
    for task, modality, colour in [("MRI-CT", "CT", False), ("MRI-PET", "PET", True)]:
        for name in ("1", "2"):
            write_image(pairs / task / "MRI" / f"{name}.png", smooth_image(rng, 64, 64))
            write_image(pairs / task / modality / f"{name}.png", smooth_image(rng, 64, 64, colour))
    calibration = out / "cal.json"
    assert export_main(["calibrate", "--pairs", str(pairs), "--per-modality", "1", "-o", str(calibration)]) == 0
    return out / "tiny.onnx", pairs, calibration


def test_a_recipe_makes_its_graph_runs_its_gate_and_lists(tmp_path, tiny_graph, tiny_model_base, capsys):
    graph, pairs, calibration = tiny_graph
    recipes = tmp_path / "targets"
    _write(recipes, "a-fp32", f"name: a-fp32\ndescription: the FP32 graph on a CPU\ngraph: {{precision: fp32}}\n"
                              f"gate: {{pairs: {pairs}, per_modality: 1}}\n")
    _write(recipes, "b-int8", f"name: b-int8\ndescription: INT8, every layer\ngraph:\n  precision: int8\n"
                              f"  quantization: onnxruntime\n  calibration: {calibration}\n  keep_fp32: none\n"
                              "  file: tiny-int8.onnx\n")
    assert export_main(["recipe", "--list", str(recipes)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0] == "a-fp32: fp32 graph, no engine (ONNX Runtime)" and "INT8, every layer" in listed[3]
    out = tmp_path / "out"
    assert export_main(["recipe", str(recipes), "--out", str(out), "--onnx", str(graph), "--model",
                        str(tiny_model_base)]) == 0
    printed = capsys.readouterr().out
    assert f"a-fp32: graph {graph} (fp32)" in printed and "tiny.onnx [fp32]: PASS" in printed
    assert json.loads((out / "a-fp32" / "tiny.verify.json").read_text())["passed"]
    int8 = out / "b-int8" / "tiny-int8.onnx"
    assert read_manifest(int8).precision == "int8-onnxruntime"
    assert "gate: not run (the recipe names no gate pairs)" in printed
    # quantize --recipe writes the same graph as the recipe command: one definition of the target
    again = tmp_path / "again.onnx"
    assert export_main(["quantize", "--onnx", str(graph), "--recipe", str(recipes / "b-int8.yaml"), "-o",
                        str(again)]) == 0
    assert read_manifest(again).onnx_sha256 == read_manifest(int8).onnx_sha256


@pytest.mark.skipif(available("tensorrt"), reason="full TensorRT is installed here: the engine would be built")
def test_an_engine_that_builds_only_on_its_target_is_left_with_the_command_for_it(tmp_path, tiny_graph, capsys):
    graph, _, _ = tiny_graph
    recipe = _write(tmp_path / "t", "jetson", "name: jetson\ndescription: built on the device\n"
                                               "graph: {precision: fp32}\nengine: {toolchain: tensorrt}\n")
    assert export_main(["recipe", str(recipe), "--out", str(tmp_path / "out"), "--onnx", str(graph)]) == 0
    printed = capsys.readouterr().out
    assert "engine: not built here: tensorrt is not installed here" in printed
    assert f"dmfnet-export build --recipe {recipe} --onnx {graph}" in printed
    assert not (tmp_path / "out" / "jetson" / "engines").exists()


def test_recipe_command_errors(tmp_path, tiny_graph, capsys):
    graph, _, _ = tiny_graph
    recipe = _write(tmp_path / "t", "cpu", "name: cpu\ndescription: d\ngraph: {precision: fp32}\n")
    assert export_main(["recipe", str(recipe)]) == 2
    assert "recipe needs --out DIR" in capsys.readouterr().err
    assert export_main(["recipe", str(recipe), str(recipe), "--list"]) == 2
    assert "recipe cpu is given twice" in capsys.readouterr().err
    assert export_main(["recipe", str(recipe), "--out", str(tmp_path / "t"), "--onnx", str(graph)]) == 2
    assert "--out" in capsys.readouterr().err  # the folder holding the recipe is never an output
    other = _write(tmp_path / "u", "gpu", "name: gpu\ndescription: d\ngraph: {precision: fp32}\n")
    assert export_main(["recipe", str(recipe), str(other), "--out", str(tmp_path / "t"), "--onnx", str(graph)]) == 2
    assert "--out" in capsys.readouterr().err  # nor the folder of any one of several recipes (not only the last)
    assert not (tmp_path / "t" / "cpu").exists()
    assert export_main(["build", "--onnx", str(graph), "--out", str(tmp_path / "e"), "--recipe", str(recipe)]) == 2
    assert "the recipe has no engine" in capsys.readouterr().err
    assert export_main(["quantize", "--onnx", str(graph), "--recipe", str(recipe), "-o",
                        str(tmp_path / "q.onnx")]) == 2
    assert "an fp32 recipe has nothing to quantize" in capsys.readouterr().err
    assert export_main(["quantize", "--onnx", str(graph), "-o", str(tmp_path / "q.onnx")]) == 2
    assert "quantize needs --precision" in capsys.readouterr().err
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "e").exists()


def test_a_recipe_builds_its_tensorrt_rtx_engine_and_says_what_it_built(tmp_path, tiny_graph, tensorrt_rtx, capsys):
    """The engine step end to end where its toolchain builds here (TensorRT for RTX needs no GPU)."""
    graph, _, _ = tiny_graph
    recipe = _write(tmp_path / "r", "rtx", "name: rtx\ndescription: d\ngraph: {precision: fp32}\n"
                                           "engine: {toolchain: tensorrt-rtx, compute_capabilities: [sm86], "
                                           "shapes: 1x64x64}\n")
    assert export_main(["recipe", str(recipe), "--out", str(tmp_path / "out"), "--onnx", str(graph),
                        "--no-gate"]) == 0
    printed = capsys.readouterr().out
    engine = next((tmp_path / "out" / "rtx" / "engines").glob("*.engine"))
    assert f"engine: {engine} (tensorrt-rtx" in printed and "for sm86" in printed
