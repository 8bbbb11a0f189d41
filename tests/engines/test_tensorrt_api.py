"""TensorRT API conformance, against the real modules: every TensorRT attribute the project's TensorRT code uses
exists in the TensorRT 11.4 Python bindings and in TensorRT for RTX, the fused pixel-attention plugin registers
under the real tensorrt.plugin validators, and its AOT implementation, driven by TensorRT's own plugin class for
the shapes of a real plugin graph, makes a launch that is right: the kernel TensorRT looks up is an entry of the
embedded PTX by its exact name, the extra arguments match that entry's parameter list, and the launch (grid,
block, arguments in TensorRT's order) run on the CPU over the kernel's own source computes the PyTorch reference
without touching memory outside any tensor (AddressSanitizer).

Full TensorRT cannot be installed here (its libraries come from an unreachable vendor index), but its bindings
wheel `tensorrt-cu13-bindings` is real: with a stub libnvinfer (compiled by this test from
tests/tensorrt_api/libnvinfer_stub.c) it imports in a subprocess. Nothing is built or run through it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

API = REPO / "tests" / "tensorrt_api"
sys.path.insert(0, str(API))
from conformance import check_sources  # noqa: E402

SONAMES = ("libnvinfer.so.11", "libnvinfer_plugin.so.11", "libnvonnxparser.so.11")
# Used only by the ahead-of-time flavour (Toolchain.set_targets) or behind hasattr (Toolchain.check_engine):
# absent from TensorRT 11.4, present in TensorRT for RTX (checked there).
RTX_ONLY = {"IBuilderConfig.num_compute_capabilities", "IBuilderConfig.set_compute_capability",
            "Runtime.get_engine_validity", "tensorrt.ComputeCapability", "tensorrt.EngineInvalidityDiagnostics",
            "tensorrt.EngineValidity"}


@pytest.fixture(scope="session")
def trt11_env(tmp_path_factory) -> dict[str, str]:
    """Environment in which `import tensorrt_bindings` (TensorRT 11.4) works: a stub libnvinfer on the path."""
    if importlib.util.find_spec("tensorrt_bindings") is None:
        reason = "needs the TensorRT 11.4 bindings wheel: pip install 'dmfnet-edge[dev]'"
        if os.environ.get("CI"):
            pytest.fail(f"CI checks the TensorRT API, but tensorrt_bindings is not installed ({reason})")
        pytest.skip(reason)
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("needs a C compiler for the libnvinfer stub")
    lib = tmp_path_factory.mktemp("libnvinfer-stub")
    for soname in SONAMES:
        subprocess.run([gcc, "-shared", "-fPIC", "-o", str(lib / soname), f"-Wl,-soname,{soname}",
                        str(API / "libnvinfer_stub.c")], check=True, capture_output=True)
    paths = [str(lib), os.environ.get("LD_LIBRARY_PATH", "")]
    return {**os.environ, "LD_LIBRARY_PATH": ":".join(p for p in paths if p), "PYTHONPATH": str(REPO)}


def _json_from(env: dict[str, str], *args: str) -> object:
    result = subprocess.run([sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_used_attribute_exists_in_tensorrt_11(trt11_env):
    missing = set(_json_from(trt11_env, str(API / "conformance.py"), "tensorrt"))
    assert missing == RTX_ONLY  # also fails when an RTX-only attribute is no longer used: keep the list exact


def test_every_used_attribute_exists_in_tensorrt_rtx(tensorrt_rtx):
    assert check_sources(tensorrt_rtx, with_plugins=False) == []


def test_a_misspelt_attribute_is_caught(trt11_env, tensorrt_rtx, tmp_path):
    source = (REPO / "dmfnet_edge" / "engines" / "trt_builder.py").read_text()
    assert "config.set_memory_pool_limit(" in source and "trt.ProfilingVerbosity.DETAILED" in source
    misspelt = tmp_path / "trt_builder.py"
    misspelt.write_text(source.replace("config.set_memory_pool_limit(", "config.set_memory_pool_limits(")
                        .replace("ProfilingVerbosity.DETAILED", "ProfilingVerbosity.DETAIL"))
    wanted = {"IBuilderConfig.set_memory_pool_limits", "tensorrt.ProfilingVerbosity.DETAIL"}
    assert set(_json_from(trt11_env, str(API / "conformance.py"), "tensorrt", str(misspelt))) == wanted
    assert set(check_sources(tensorrt_rtx, False, {"trt_builder.py": misspelt.read_text()})) == wanted


def test_the_plugin_registers_under_the_real_validators(trt11_env):
    result = _json_from(trt11_env, str(API / "register_plugin.py"))
    assert result["registered"] == ["dmfnet::DmfnetPixelAttentionFuse"]
    assert result["inputs"] == ["x", "y", "a_s", "a_c", "weight", "bias"] and result["outputs"] == 1
    assert result["aot"] and result["autotune"]
    # the validators are strict: the two declaration mistakes the plugin module had are refused
    assert "List[AutoTuneCombination]" in result["refused_untyped_autotune"]
    assert "TensorDescs args should come first" in result["refused_string_annotations"]


# ---- the AOT plugin, driven as TensorRT drives it --------------------------------------------------------------
KERNELS = REPO / "kernels" / "cross_modal_attention"
PTX_ARGUMENT_TYPES = {"int32": {"u32", "s32", "b32"}, "int16": {"u16", "s16", "b16"}, "int8": {"u8", "s8", "b8"}}
PARSER_OWN_ATTRIBUTES = {"plugin_namespace", "plugin_version"}  # read by TensorRT's ONNX parser, not passed on


@pytest.fixture(scope="module")
def plugin_graph(tmp_path_factory):
    from dmfnet_edge.cli.main import export_main

    out = tmp_path_factory.mktemp("plugin-graph")
    assert export_main(["onnx", "--model", "tiny", "-o", str(out), "--size", "64", "--trt-plugins"]) == 0
    return next(out.glob("*.onnx"))


@pytest.fixture(scope="module")
def compiler_env() -> dict[str, str]:
    """The pinned nvcc where its wheels are installed, else (told so) the one on PATH; skip without either."""
    from dmfnet_edge.engines import qdp_plugin

    if qdp_plugin.pinned_nvcc() is not None:
        return {}
    if shutil.which("nvcc") is None:
        pytest.skip("needs nvcc: pip install 'dmfnet-edge[trt-plugins]'")
    return {qdp_plugin.UNPINNED: "1"}


@pytest.fixture(scope="module")
def launch_emulator(tmp_path_factory):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("needs g++ for the launch emulator")
    exe = tmp_path_factory.mktemp("emulator") / "aot_launch_emulator"
    subprocess.run([gxx, "-std=c++17", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-I", str(KERNELS), str(API / "aot_launch_emulator.cpp"), "-o", str(exe)], check=True,
                   capture_output=True)
    return exe


def launch_specs(graph) -> list[dict]:
    """Every plugin node of `graph`: its attributes as the ONNX parser passes them, and its inputs' shapes: the
    graph's own (batch 1), and batch 2 with a wider plane (as a dynamic profile may give: every side differs, so
    arguments passed in the wrong order show). x, y (N, C, H, W); A_s (N, 1, H, W); A_c (N, C, 1, 1); the pixel
    convolution's weight (C, 2, 3, 3) and bias (C) are the node's initializers."""
    import onnx

    model = onnx.load(str(graph))
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.value_info}
    shapes.update({i.name: list(i.dims) for i in model.graph.initializer})
    specs = []
    for node in (n for n in model.graph.node if n.domain == "dmfnet"):
        fields = [[a.name, onnx.AttributeProto.AttributeType.Name(a.type), onnx.helper.get_attribute_value(a)]
                  for a in node.attribute if a.name not in PARSER_OWN_ATTRIBUTES]
        _, c, h, side = shapes[node.input[0]]
        for n, w in ((1, side), (2, side + 16)):
            inputs = [[n, c, h, w], [n, c, h, w], [n, 1, h, w], [n, c, 1, 1], shapes[node.input[4]],
                      shapes[node.input[5]]]
            specs.append({"fields": [[k, t, v.decode() if isinstance(v, bytes) else v] for k, t, v in fields],
                          "inputs": inputs})
    assert len(specs) == 10  # the tiny model's five fusion levels
    return specs


def emulate(emulator, folder, launch: dict, inputs: list[np.ndarray]) -> np.ndarray:
    """The launch run on the CPU (every block and thread of its grid) over the kernel's own source."""
    paths = []
    for i, array in enumerate(inputs):
        paths.append(folder / f"in{i}.f32")
        paths[-1].write_bytes(np.ascontiguousarray(array, np.float32).tobytes())
    out = folder / "out.f32"
    grid = [launch["launch"][k] for k in ("grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z",
                                          "shared_mem")]
    extras = ",".join(str(v) for _, v in launch["extras"])
    done = subprocess.run([str(emulator), *map(str, grid), extras, *map(str, paths), str(out),
                           str(inputs[0].size)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"the launch {launch['launch']} with {launch['extras']}: {done.stderr[-3000:]}"
    return np.frombuffer(out.read_bytes(), np.float32).reshape(inputs[0].shape)


def test_the_aot_plugin_launches_its_kernel_as_tensorrt_would(trt11_env, compiler_env, plugin_graph,
                                                               launch_emulator, tmp_path):
    import torch

    from dmfnet_edge.engines.qdp_plugin import ptx_entries
    from dmfnet_edge.models.kernels import pixel_attention_fuse_reference

    specs = launch_specs(plugin_graph)
    (tmp_path / "specs.json").write_text(json.dumps(specs))
    result = _json_from({**trt11_env, **compiler_env}, str(API / "aot_launch.py"), str(tmp_path / "specs.json"))
    entries = ptx_entries(result["ptx"].encode())
    rng = np.random.default_rng(0)
    for spec, launch in zip(specs, result["launches"]):
        x_shape = spec["inputs"][0]
        assert launch["output_shapes"] == [x_shape] and launch["output_types"] == ["DataType.FLOAT"]
        io = launch["io"]  # every combination names a type per input and output, and one is offered
        assert launch["combinations"] and all(len(c) == io for c in launch["combinations"]), launch["combinations"]
        assert launch["supported"] == io * len(launch["combinations"])
        assert launch["kernel"] in entries, f"{launch['kernel']!r} is not an entry of the PTX: {sorted(entries)}"
        wanted = [{"u64"}] * 6 + [PTX_ARGUMENT_TYPES[t] for t, _ in launch["extras"]] + [{"u64"}]
        params = entries[launch["kernel"]]
        assert len(params) == len(wanted) and all(p in w for p, w in zip(params, wanted)), (params, launch["extras"])
        inputs = [rng.standard_normal(s).astype(np.float32) * (0.3 if i == 4 else 1)
                  for i, s in enumerate(spec["inputs"])]
        expected = pixel_attention_fuse_reference(*(torch.from_numpy(a) for a in inputs)).numpy()
        out = emulate(launch_emulator, tmp_path, launch, inputs)
        assert np.isfinite(out).all(), f"{int(np.isnan(out).sum())} elements never written by {launch['launch']}"
        assert np.abs(out - expected).max() < 1e-4
