"""Real TensorRT engines, built on this CPU-only machine with TensorRT for RTX (ahead of time, explicit compute
capabilities), and the toolchain rules that hold for both TensorRT flavours.

Every engine test checks the per-layer precisions TensorRT itself reports (the builder's DETAILED layer dump)
against what the ONNX graph prescribes, the manifest beside the engine, and a byte-identical rebuild. Loading and
running an engine needs a GPU and is not done here (tests/engines/test_build.py has the GPU-marked round trip).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import msgspec
import onnx
import pytest

from dmfnet_edge.cli.main import export_main
from dmfnet_edge.contract import layer_group, manifest_path
from dmfnet_edge.engines import trt_builder
from dmfnet_edge.engines.build_targets import (
    RTX_PORTABLE_TARGETS,
    build_targets,
    check_graph,
    check_profile,
    check_timing_cache,
    network_flags,
)
from dmfnet_edge.engines.precision import FallbackAllowance, PrecisionMismatch, expected_convolutions
from dmfnet_edge.engines.trt_builder import BuildOptions, build_engine, shape_profile
from dmfnet_edge.errors import EnvironmentProblem, InputError, MissingDependency, ModelFileError
from dmfnet_edge.runtime.engine_manifest import engine_manifest_path, parse_targets, read_engine_manifest
from dmfnet_edge.runtime.toolchain import FLAVOURS, Toolchain, load_toolchain
from tests.conftest import REPO, SAMPLES, onnx_manifest

WEIGHTS = REPO / "dmfnet_edge" / "weights"
RTX = BuildOptions(toolchain="tensorrt-rtx")
# TensorRT for RTX 1.7 runs the 1x1 convolutions on the pooled channel vector of some channel attentions unfused in
# FP32 (INT8 does not pay there); the INT8 builds declare them
CHANNEL_ATTENTION = tuple(f"/fusion/attention.{i}/channel/channel.{j}/Conv" for i in range(5) for j in (1, 3))
RTX_INT8 = BuildOptions(toolchain="tensorrt-rtx", allowed_int8_fallbacks=FallbackAllowance(names=CHANNEL_ATTENTION))


def _fake(flavour: str, version: str) -> Toolchain:
    flag = SimpleNamespace(STRONGLY_TYPED=3)
    return Toolchain(FLAVOURS[flavour], SimpleNamespace(__version__=version, NetworkDefinitionCreationFlag=flag))


def test_targets_and_flags_per_flavour():
    rtx, trt10, trt11 = _fake("tensorrt-rtx", "1.7.1.116"), _fake("tensorrt", "10.13.0"), _fake("tensorrt", "11.4.0")
    assert build_targets(rtx, None) == (list(RTX_PORTABLE_TARGETS), None)  # no GPU query for ahead-of-time targets
    assert build_targets(rtx, ["sm86"]) == (["sm86"], None)
    with pytest.raises(InputError, match="no Hopper target: use --toolchain tensorrt"):
        build_targets(rtx, ["sm90"])
    with pytest.raises(InputError, match="builds for the GPU it runs on; named targets need --toolchain tensorrt-rtx"):
        build_targets(trt11, ["sm86"])
    assert (network_flags(trt10), network_flags(trt11), network_flags(rtx)) == (1 << 3, 0, 0)
    with pytest.raises(EnvironmentProblem, match="builds on the GPU it targets: .* --toolchain tensorrt-rtx"):
        _no_gpu(trt11)
    assert parse_targets("8.6, sm80,86") == ["sm80", "sm86"] and parse_targets(None) is None
    with pytest.raises(InputError, match="'ampere' is not a compute capability"):
        parse_targets("ampere")


def _no_gpu(toolchain: Toolchain) -> None:
    from unittest import mock

    with mock.patch("dmfnet_edge.engines.build_targets.current_device",
                    side_effect=EnvironmentProblem("no usable CUDA device 0 (cudaGetDeviceProperties error 35)")):
        build_targets(toolchain, None)


def test_flavour_refusals_name_the_fix(tmp_path):
    rtx, trt = _fake("tensorrt-rtx", "1.7.1.116"), _fake("tensorrt", "11.4.0")
    plugin_graph = onnx_manifest(tensorrt_plugins=[{"op": "DmfnetPixelAttentionFuse", "name": "p",
                                                    "namespace": "dmfnet", "version": "1"}])
    with pytest.raises(InputError, match="no plugin layers; build it with --toolchain tensorrt"):
        check_graph(rtx, "m.onnx", plugin_graph)
    check_graph(trt, "m.onnx", plugin_graph)
    for graph in (rtx, trt):
        with pytest.raises(InputError, match="--target tensorrt"):
            check_graph(graph, "m.onnx", onnx_manifest(precision="int8-onnxruntime"))
    with pytest.raises(InputError, match="timing cache is deprecated in tensorrt-rtx 1.7.1.116 and has no effect"):
        check_timing_cache(rtx, tmp_path / "tc.bin", False)
    with pytest.raises(InputError, match="timing cache is deprecated"):
        check_timing_cache(rtx, None, True)
    check_timing_cache(trt, tmp_path / "tc.bin", True)


def test_auto_without_any_tensorrt_names_both_extras(monkeypatch):
    monkeypatch.setattr("dmfnet_edge.runtime.toolchain.available", lambda module: False)
    with pytest.raises(MissingDependency, match=r"dmfnet-edge\[trt\].*dmfnet-edge\[trt-rtx\]"):
        load_toolchain("auto")
    with pytest.raises(InputError, match="--toolchain banana"):
        load_toolchain("banana")


def test_the_onnxruntime_int8_graph_is_refused_before_any_toolchain(tmp_path, capsys):
    out = tmp_path / "engines"
    code = export_main(["build", "--onnx", str(WEIGHTS / "dmfnet-edge-int8-onnxruntime.onnx"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--target tensorrt" in err[0] and not out.exists()


def test_an_engine_that_cannot_be_deserialised_is_an_error_not_a_crash():
    """Full TensorRT reads precisions through the inspector of the deserialised engine: None is refused."""
    runtime = SimpleNamespace(deserialize_cuda_engine=lambda plan: None)
    trt = SimpleNamespace(__version__="11.4.0", Runtime=lambda logger: runtime)
    logger = SimpleNamespace(errors=lambda: "IRuntime::deserializeCudaEngine: version tag mismatch")
    with pytest.raises(ModelFileError, match="cannot deserialise the engine it just built: .*version tag mismatch"):
        trt_builder._layer_records(Toolchain(FLAVOURS["tensorrt"], trt), b"plan", logger)


def test_shape_profiles():
    dynamic = onnx_manifest()
    static = onnx_manifest(inputs={"mri": [2, 1, 128, 128], "other": [2, 1, 128, 128]})
    assert shape_profile(dynamic, None) == {"min": [1, 1, 256, 256], "opt": [1, 1, 256, 256], "max": [1, 1, 256, 256]}
    assert shape_profile(dynamic, "1x64x64:1x256x256:4x512x512")["max"] == [4, 1, 512, 512]
    assert shape_profile(static, None)["opt"] == [2, 1, 128, 128] == shape_profile(static, "2x128x128")["min"]
    for bad, message in (("1x100x100", "multiples of 16"), ("4x512x512:1x64x64:2x256x256", "grow from MIN"),
                         ("1x64", "NxHxW"), ("1x64x64:1x256x256", "one shape or MIN:OPT:MAX")):
        with pytest.raises(InputError, match=message):
            shape_profile(dynamic, bad)
    with pytest.raises(InputError, match="the graph is static"):
        shape_profile(static, "1x256x256")


# ---- real engines: TensorRT for RTX, CPU-only ahead-of-time builds ----------------------------------------------

def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_engine(onnx_path: Path, out: Path, options: BuildOptions = RTX) -> dict:
    """Build, then check: manifest beside the engine, hashes, and every convolution as its graph prescribes."""
    manifest = build_engine(onnx_path, out, options)
    engine = out / manifest.engine_file
    assert engine_manifest_path(engine).is_file() and read_engine_manifest(engine) == manifest
    assert manifest.engine_bytes == engine.stat().st_size > 0 and manifest.toolchain.flavour == "tensorrt-rtx"
    expected = expected_convolutions(onnx.load(str(onnx_path)).graph)
    fallbacks = set(manifest.layer_precisions.int8_fallbacks_fp32)
    found = manifest.layer_precisions.convolution_precisions
    assert found == {n: "fp32" if n in fallbacks else p for n, p in expected.items()}
    layers = manifest.layer_precisions  # synchronisation pseudo-layers are counted apart, never as layers
    assert sum(layers.layers_by_type.values()) == layers.layers and layers.synchronisation_layers > 0
    assert not {"signal", "wait"} & set(layers.layers_by_type)
    return manifest


@pytest.fixture(scope="module")
def tiny_graphs(tmp_path_factory, tensorrt_rtx):
    """The tiny model's dynamic FP32 graph and its FP16 (AutoCast) and INT8 (TensorRT Q/DQ) recipes."""
    pytest.importorskip("modelopt", reason="the FP16 and TensorRT INT8 recipes need the [quantize] extra")
    root = tmp_path_factory.mktemp("tiny-graphs")
    assert export_main(["onnx", "--model", "tiny", "-o", str(root), "--dynamic", "--name", "tiny-fp32"]) == 0
    fp32 = root / "tiny-fp32.onnx"
    assert export_main(["quantize", "--onnx", str(fp32), "--precision", "fp16",
                        "-o", str(root / "tiny-fp16.onnx")]) == 0
    assert export_main(["calibrate", "--pairs", str(SAMPLES), "--per-modality", "1", "-o", str(root / "cal.json")]) == 0
    assert export_main(["quantize", "--onnx", str(fp32), "--precision", "int8", "--target", "tensorrt",
                        "--method", "max",
                        "--calibration", str(root / "cal.json"), "--keep-fp32", "fusion/head",
                        "-o", str(root / "tiny-int8.onnx")]) == 0
    return {"fp32": fp32, "fp16": root / "tiny-fp16.onnx", "int8-tensorrt": root / "tiny-int8.onnx"}


@pytest.mark.parametrize("recipe", ["fp32", "fp16", "int8-tensorrt"])
def test_tiny_engines_build_with_the_precisions_of_their_graph(tiny_graphs, recipe, tmp_path):
    options = RTX_INT8 if recipe == "int8-tensorrt" else RTX
    manifest = _check_engine(tiny_graphs[recipe], tmp_path / "a", options)
    convs = manifest.layer_precisions.convolutions
    if recipe == "int8-tensorrt":
        assert convs["int8"] > 0
        kept = {n: p for n, p in manifest.layer_precisions.convolution_precisions.items()
                if layer_group(n) == "fusion/head"}
        assert kept and set(kept.values()) == {"fp32"}
    else:
        assert set(convs) == {recipe}
    assert manifest.compute_capabilities == list(RTX_PORTABLE_TARGETS) and manifest.device is None
    again = build_engine(tiny_graphs[recipe], tmp_path / "b", options)
    assert _sha(tmp_path / "b" / again.engine_file) == again.engine_sha256
    if recipe == "int8-tensorrt":
        # TensorRT for RTX 1.7 numbers some internal INT8 tensors in a varying order (seen: two names swapped and
        # the generated kernel source reordered), so Q/DQ rebuilds differ in bytes: same size, same layers
        assert again.engine_bytes == manifest.engine_bytes
        assert again.layer_precisions == manifest.layer_precisions
    else:
        assert again.engine_sha256 == manifest.engine_sha256  # FP32 and FP16 rebuilds are byte-identical
    assert build_engine(tiny_graphs[recipe], tmp_path / "a", options) == manifest  # cache hit: the same manifest


def test_inspect_describes_a_real_engine_from_its_manifest_and_plan(tiny_graphs, tmp_path, capsys):
    manifest = build_engine(tiny_graphs["fp32"], tmp_path, RTX)
    engine = tmp_path / manifest.engine_file
    assert export_main(["inspect", str(engine)]) == 0
    table = dict(re.fullmatch(r"(.+?) {2,}(.*)", line).groups() for line in capsys.readouterr().out.splitlines())
    layers = manifest.layer_precisions
    assert table["toolchain"] == "tensorrt-rtx 1.7.1.116" and table["precision"] == "fp32"
    assert table["targets"] == "sm80, sm86, sm89, sm120; built ahead of time (no GPU)"
    assert table["layers"].startswith(f"{layers.layers} (+{layers.synchronisation_layers} synchronisation): ")
    assert f"cache key {manifest.build.cache_key}" in table["settings"] and table["convolutions"] == "fp32 111"
    assert "plan tag is tensorrt-rtx's" in table["checked"]
    assert table["engine loaded"].startswith("no: no GPU visible here")  # never loaded on this machine
    assert export_main(["inspect", str(engine), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["manifest"]["build"]["cache_key"] == manifest.build.cache_key and report["loaded"] is False


def test_undeclared_int8_fallbacks_of_a_model_optimizer_graph_are_refused(tiny_graphs, tmp_path):
    """The tiny model's Q/DQ graph (Model Optimizer, fusion/head kept FP32): TensorRT runs some channel-attention
    convolutions in FP32. Only the kept group was declared, so the engine is refused, naming each one."""
    with pytest.raises(PrecisionMismatch, match=r"undeclared \(declared: layer groups kept FP32 fusion/head\);.*: "
                                                r"/fusion/attention.\d/channel/channel.\d/Conv"):
        build_engine(tiny_graphs["int8-tensorrt"], tmp_path, RTX)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_dynamic_profile_and_explicit_targets(tiny_graphs, tmp_path, capsys):
    code = export_main(["build", "--onnx", str(tiny_graphs["fp32"]), "--out", str(tmp_path), "--toolchain",
                        "tensorrt-rtx", "--compute-capability", "sm86,sm120",
                        "--shapes", "1x256x128:2x256x256:4x256x512"])
    printed = capsys.readouterr().out
    assert code == 0 and "tensorrt-rtx 1.7.1.116 for sm86, sm120" in printed and "as the graph prescribes" in printed
    engine = next(tmp_path.glob("*.engine"))
    assert ".sm86-sm120.rtx1.7.1.116.1x256x128-2x256x256-4x256x512." in engine.name
    manifest = read_engine_manifest(engine)
    assert msgspec.to_builtins(manifest.build.profile) == {"min": [1, 1, 256, 128], "opt": [2, 1, 256, 256],
                                                           "max": [4, 1, 256, 512]}


def test_a_range_of_heights_is_refused_before_tensorrt_rtx_tries(tiny_graphs, tmp_path, capfd):
    """TensorRT for RTX 1.7 fails on this graph for every range of heights tried (Myelin std::bad_alloc), and once
    crashed the process doing so: the build is refused before it starts."""
    code = export_main(["build", "--onnx", str(tiny_graphs["fp32"]), "--out", str(tmp_path), "--toolchain",
                        "tensorrt-rtx", "--shapes", "1x128x128:1x256x256:1x256x256"])
    err = capfd.readouterr().err.strip().splitlines()  # file descriptor 2: TensorRT's native prints too
    assert code == 2 and len(err) == 1 and "vary batch and width only" in err[0] and not list(tmp_path.iterdir())
    rtx = _fake("tensorrt-rtx", "1.8.0")  # a later version is let through to try
    check_profile(rtx, {"min": [1, 1, 128, 128], "max": [1, 1, 256, 256]}, "1x128x128:1x256x256:1x256x256")


def test_a_failed_precision_check_writes_nothing(tiny_graphs, tmp_path, capsys):
    """A graph whose manifest claims fp16 while its convolutions are fp32: a mislabelled input, refused (exit 2)
    before TensorRT builds anything."""
    lying = tmp_path / "lying.onnx"
    shutil.copy(tiny_graphs["fp32"], lying)
    meta = json.loads(manifest_path(tiny_graphs["fp32"]).read_text())
    manifest_path(lying).write_text(json.dumps({**meta, "precision": "fp16"}))
    out = tmp_path / "engines"
    code = export_main(["build", "--onnx", str(lying), "--out", str(out), "--toolchain", "tensorrt-rtx"])
    err = capsys.readouterr().err
    assert code == 2 and "says fp16, but the graph is fp32" in err and err.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())


def test_an_engine_never_lies_on_disk_without_its_manifest(tiny_graphs, tmp_path, monkeypatch):
    real_write = trt_builder.atomic_write_bytes

    def disk_full_for_engines(path, data):
        if path.suffix == ".engine":
            raise EnvironmentProblem(f"{path.parent}: cannot write here (No space left on device)")
        real_write(path, data)

    monkeypatch.setattr(trt_builder, "atomic_write_bytes", disk_full_for_engines)
    with pytest.raises(EnvironmentProblem, match="No space left"):
        build_engine(tiny_graphs["fp32"], tmp_path, RTX)
    assert list(tmp_path.iterdir()) == []  # the manifest written first was taken back


def test_rtx_refuses_plugin_graphs_and_the_timing_cache(tmp_path, tensorrt_rtx, capsys):
    assert export_main(["onnx", "--model", "tiny", "-o", str(tmp_path), "--size", "64", "--trt-plugins"]) == 0
    graph = tmp_path / "dmfnet-tiny-fp32-trtplugins.onnx"
    assert export_main(["build", "--onnx", str(graph), "--out", str(tmp_path / "e"),
                        "--toolchain", "tensorrt-rtx"]) == 2
    assert "has no plugin layers" in capsys.readouterr().err
    assert export_main(["onnx", "--model", "tiny", "-o", str(tmp_path), "--size", "64"]) == 0
    plain = tmp_path / "dmfnet-tiny-fp32.onnx"
    assert export_main(["build", "--onnx", str(plain), "--out", str(tmp_path / "e"), "--toolchain", "tensorrt-rtx",
                        "--timing-cache", str(tmp_path / "tc.bin")]) == 2
    assert "timing cache is deprecated" in capsys.readouterr().err
    assert export_main(["build", "--onnx", str(plain), "--out", str(tmp_path / "e"), "--toolchain", "tensorrt-rtx",
                        "--compute-capability", "sm90"]) == 2
    assert "no Hopper target" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_engine_validity_is_asked_before_deserialising(tensorrt_rtx):
    toolchain = load_toolchain("tensorrt-rtx")
    runtime = tensorrt_rtx.Runtime(tensorrt_rtx.Logger(tensorrt_rtx.Logger.ERROR))
    with pytest.raises(ModelFileError, match=r"rebuild needed: .*cannot run junk.engine .*\(malformed_engine"):
        toolchain.check_engine(runtime, b"not an engine" * 64, "junk.engine")


# ---- the shipped edge model ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def edge_graphs(tmp_path_factory, tensorrt_rtx, shared_data):
    """The shipped dynamic FP32 graph, and FP16 / INT8 (TensorRT Q/DQ, the shipped mixed-precision plan) recipes
    of it calibrated on two training pairs per modality."""
    pytest.importorskip("modelopt", reason="the FP16 and TensorRT INT8 recipes need the [quantize] extra")
    root = tmp_path_factory.mktemp("edge-graphs")
    fp32 = WEIGHTS / "dmfnet-edge-fp32.onnx"
    assert export_main(["quantize", "--onnx", str(fp32), "--precision", "fp16", "-o", str(root / "fp16.onnx")]) == 0
    assert export_main(["calibrate", "--pairs", str(shared_data / "train"), "--exclude", str(shared_data / "val"),
                        "--per-modality", "2", "-o", str(root / "cal.json")]) == 0
    assert export_main(["quantize", "--onnx", str(fp32), "--precision", "int8", "--target", "tensorrt",
                        "--calibration", str(root / "cal.json"),
                        "--keep-fp32", str(WEIGHTS / "dmfnet-edge-int8-onnxruntime.onnx"),
                        "-o", str(root / "int8-tensorrt.onnx")]) == 0
    return {"fp32": fp32, "fp16": root / "fp16.onnx", "int8-tensorrt": root / "int8-tensorrt.onnx"}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["fp32", "fp16", "int8-tensorrt"])
def test_edge_engines(edge_graphs, recipe, tmp_path):
    manifest = _check_engine(edge_graphs[recipe], tmp_path, RTX_INT8 if recipe == "int8-tensorrt" else RTX)
    precisions = manifest.layer_precisions.convolution_precisions
    if recipe == "int8-tensorrt":
        kept = set(json.loads(manifest_path(edge_graphs[recipe]).read_text())["recipe"]["mixed_precision"]["kept_fp32"])
        assert {p for n, p in precisions.items() if layer_group(n) in kept} == {"fp32"}
        # every Q/DQ convolution runs in INT8 but where TensorRT keeps one unfused in FP32 because INT8 does not pay:
        # only the channel attention's 1x1 convolutions on the pooled 1x1 vector, and each is listed
        fallbacks = manifest.layer_precisions.int8_fallbacks_fp32
        assert all("/channel/channel." in name and precisions[name] == "fp32" for name in fallbacks), fallbacks
        assert sum(p == "int8" for p in precisions.values()) >= 0.5 * len(precisions)
    else:
        assert set(precisions.values()) == {recipe} and len(precisions) >= 100


@pytest.mark.slow
def test_edge_fp32_static_rebuilds_byte_identically_and_a_dynamic_profile_builds(tmp_path):
    fp32 = WEIGHTS / "dmfnet-edge-fp32.onnx"
    first = build_engine(fp32, tmp_path / "a", RTX)
    assert build_engine(fp32, tmp_path / "b", RTX).engine_sha256 == first.engine_sha256
    options = BuildOptions(toolchain="tensorrt-rtx", shapes="1x256x128:1x256x256:2x256x512", workspace_mib=4096)
    dynamic = _check_engine(fp32, tmp_path / "c", options)
    assert dynamic.build.profile.max == [2, 1, 256, 512] and dynamic.engine_sha256 != first.engine_sha256
