"""TensorRT API conformance, against the real modules: every TensorRT attribute the project's TensorRT code uses
exists in the TensorRT 11.4 Python bindings and in TensorRT for RTX, and the fused pixel-attention plugin
registers under the real tensorrt.plugin validators.

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

import pytest
from conftest import REPO

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
    source = (REPO / "dmfnet_edge" / "build" / "trt_builder.py").read_text()
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
