"""The native kernels: CMake configures and compiles them (nvcc, no GPU, no TensorRT needed), and the CPU
reference built from the kernels' own per-element math matches the PyTorch CrossModalAttention module.
The CUDA launches run where a GPU is present: the gpu backend's conformance run (tests/runtime/test_conformance.py,
marker gpu: the fused CUDA op against the torch reference) and benchmarks/gpu_check.py (max abs error and
compute-sanitizer memcheck of the op) on a lent GPU."""

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from dmfnet_edge.models.fusion import CrossModalAttention

REPO = Path(__file__).resolve().parents[2]
F32P = ctypes.POINTER(ctypes.c_float)


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    out = tmp_path_factory.mktemp("build")
    configured = subprocess.run(["cmake", "-S", str(REPO), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release"], check=True,
                                capture_output=True, text=True)
    (out / "configure.log").write_text(configured.stdout)
    subprocess.run(["cmake", "--build", str(out), "-j", "2"], check=True, capture_output=True)
    return out


def test_cmake_builds_the_cuda_kernels_without_a_gpu(build_dir):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed, only the CPU reference was built")
    assert (build_dir / "libdmfnet_kernels.so").is_file()
    assert (build_dir / "dmfnet_cma_check").is_file()  # the GPU check's kernel program (benchmarks/gpu_check.py)


def test_cmake_builds_the_plugin_library_only_with_tensorrt_headers(build_dir):
    """libdmfnet_trt_plugins.so (what --plugin-lib loads) is a target where TensorRT's headers are found; elsewhere
    CMake says it skipped it, and why."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed, only the CPU reference was built")
    log = (build_dir / "configure.log").read_text()
    if "building libdmfnet_trt_plugins.so" in log:
        assert (build_dir / "libdmfnet_trt_plugins.so").is_file()
    else:
        assert "NvInferRuntime.h) or libnvinfer not found: skipping libdmfnet_trt_plugins.so" in log
        assert not (build_dir / "libdmfnet_trt_plugins.so").exists()


@pytest.fixture
def plugin_compiler(monkeypatch):
    """The pinned nvcc where its wheels are installed, else (told so) the nvcc on PATH."""
    from dmfnet_edge.engines import qdp_plugin

    if qdp_plugin.pinned_nvcc() is None:
        if shutil.which("nvcc") is None:
            pytest.skip("needs nvcc: pip install 'dmfnet-edge[trt-plugins]'")
        monkeypatch.setenv(qdp_plugin.UNPINNED, "1")
    return qdp_plugin


def test_plugin_ptx_has_the_aot_entry_point(plugin_compiler):
    entries = plugin_compiler.ptx_entries(plugin_compiler.compile_ptx())
    assert list(entries) == [plugin_compiler.KERNEL_NAME]  # the plugin's own source: its entry and nothing else
    assert entries[plugin_compiler.KERNEL_NAME] == ["u64"] * 6 + ["u32"] * 4 + ["u64"]  # inputs, c h w per_item, out


def test_the_plugin_record_names_ptx_isa_target_and_compiler(plugin_compiler):
    from dmfnet_edge.runtime.engine_manifest import PluginUsed

    record = PluginUsed(**plugin_compiler.plugin_record())  # the manifest's typed record takes every field
    assert record.op == "dmfnet::DmfnetPixelAttentionFuse" and record.ptx_target == "sm_80"
    if record.nvcc_pinned:
        assert (record.ptx_isa, record.nvcc_version) == (plugin_compiler.PTX_ISA_PIN, plugin_compiler.NVCC_PIN)
    else:
        assert record.nvcc_version and record.ptx_isa


def _fake_nvcc(folder: Path, version: str, entry: str) -> Path:
    """An nvcc on PATH that says it is `version` and writes a PTX module with one entry named `entry`."""
    folder.mkdir(parents=True, exist_ok=True)
    nvcc = folder / "nvcc"
    release = version.rsplit(".", 1)[0]
    nvcc.write_text(f"""#!/bin/sh
if [ "$1" = "--version" ]; then echo "Cuda compilation tools, release {release}, V{version}"; exit 0; fi
while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done
printf '.version 9.5\\n.target sm_80\\n.address_size 64\\n' > "$out"
printf '.visible .entry {entry}(\\n\\t.param .u64 p0\\n)\\n{{ret;}}\\n' >> "$out"
""")
    nvcc.chmod(0o755)
    return nvcc


@pytest.fixture
def without_pinned_wheels(monkeypatch):
    from dmfnet_edge.engines import qdp_plugin

    monkeypatch.setattr(qdp_plugin, "_wheel_version", lambda name: None)
    monkeypatch.delenv(qdp_plugin.UNPINNED, raising=False)
    return qdp_plugin


def test_an_unpinned_nvcc_is_refused_in_one_line_unless_asked_for(without_pinned_wheels, monkeypatch, tmp_path):
    from dmfnet_edge.errors import EnvironmentProblem

    qdp_plugin = without_pinned_wheels
    nvcc = _fake_nvcc(tmp_path / "bin", "13.5.37", qdp_plugin.KERNEL_NAME)
    monkeypatch.setenv("PATH", str(nvcc.parent))
    with pytest.raises(EnvironmentProblem) as refused:
        qdp_plugin.compile_ptx()
    message = str(refused.value)
    assert "\n" not in message and "nvcc 13.5.37 on PATH" in message and "dmfnet-edge[trt-plugins]" in message
    assert f"{qdp_plugin.UNPINNED}=1" in message
    monkeypatch.setenv(qdp_plugin.UNPINNED, "1")
    assert qdp_plugin.find_nvcc() == qdp_plugin.Nvcc(nvcc, "13.5.37", False)
    record = qdp_plugin.plugin_record()
    assert (record["ptx_isa"], record["nvcc_version"], record["nvcc_pinned"]) == ("9.5", "13.5.37", False)


def test_the_pinned_nvcc_needs_its_nvvm_at_the_pin_too(monkeypatch):
    """cicc (nvidia-nvvm) writes the PTX: nvcc 13.0.88 driving a newer cicc writes a newer PTX ISA."""
    from dmfnet_edge.engines import qdp_plugin

    versions = {"nvidia-cuda-nvcc": qdp_plugin.NVCC_PIN, "nvidia-nvvm": "13.5.37"}
    monkeypatch.setattr(qdp_plugin, "_wheel_version", versions.get)
    assert qdp_plugin.pinned_nvcc() is None


def test_the_plugin_entry_is_found_by_its_exact_name(without_pinned_wheels, monkeypatch, tmp_path):
    """A PTX whose only entry merely starts with the kernel's name is not the plugin's kernel (TensorRT looks the
    entry up by its exact name)."""
    qdp_plugin = without_pinned_wheels
    nvcc = _fake_nvcc(tmp_path / "bin", "13.0.88", qdp_plugin.KERNEL_NAME + "_v2")
    monkeypatch.setenv("PATH", str(nvcc.parent))
    monkeypatch.setenv(qdp_plugin.UNPINNED, "1")
    with pytest.raises(RuntimeError, match="is not an entry of the compiled PTX"):
        qdp_plugin.compile_ptx()


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(F32P)


def _module_and_inputs(c: int, h: int, w: int, seed: int = 0):
    torch.manual_seed(seed)
    module = CrossModalAttention(c, 4).eval()
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x, y = torch.randn(2, c, h, w), torch.randn(2, c, h, w)
    return module, x, y


def _weights(module: CrossModalAttention) -> dict[str, np.ndarray]:
    conv1, conv2 = module.channel[1], module.channel[3]
    return {k: np.ascontiguousarray(v.detach().numpy(), np.float32) for k, v in {
        "w1": conv1.weight, "b1": conv1.bias, "w2": conv2.weight, "b2": conv2.bias, "sw": module.spatial.weight,
        "pw": module.pixel.weight, "pb": module.pixel.bias}.items()}


@pytest.mark.parametrize("shape", [(8, 16, 16), (16, 4, 6), (4, 5, 9)])
def test_whole_module_reference_matches_pytorch(build_dir, shape):
    c, h, w = shape
    module, x, y = _module_and_inputs(c, h, w)
    with torch.no_grad():
        expected = module(x, y).numpy()
    lib = ctypes.CDLL(str(build_dir / "libdmfnet_cma_reference.so"))
    wt = _weights(module)
    xs, ys = (np.ascontiguousarray(t.numpy()) for t in (x, y))
    out = np.zeros_like(xs)
    reduced = module.channel[1].out_channels
    code = lib.dmfnet_cma_reference(_ptr(xs), _ptr(ys), _ptr(out), 2, c, h, w, reduced, _ptr(wt["w1"]),
                                    _ptr(wt["b1"]), _ptr(wt["w2"]), _ptr(wt["b2"]), _ptr(wt["sw"]),
                                    ctypes.c_float(float(module.spatial.bias.detach())), _ptr(wt["pw"]), _ptr(wt["pb"]))
    assert code == 0
    assert np.abs(out - expected).max() < 1e-4


def test_pixel_stage_reference_matches_pytorch(build_dir):
    from dmfnet_edge.models.kernels import attention_maps

    module, x, y = _module_and_inputs(8, 12, 10, seed=3)
    with torch.no_grad():
        expected = module(x, y).numpy()
        a_s, a_c = attention_maps(module, x + y)
    lib = ctypes.CDLL(str(build_dir / "libdmfnet_cma_reference.so"))
    wt = _weights(module)
    arrays = [np.ascontiguousarray(t.numpy(), np.float32) for t in (x, y, a_s, a_c)]
    out = np.zeros_like(arrays[0])
    assert lib.dmfnet_pixel_attention_fuse_reference(*map(_ptr, arrays), _ptr(wt["pw"]), _ptr(wt["pb"]), _ptr(out),
                                                     2, 8, 12, 10) == 0
    assert np.abs(out - expected).max() < 1e-4
