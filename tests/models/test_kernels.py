"""The native kernels: CMake configures and compiles them (nvcc, no GPU, no TensorRT needed), and the CPU
reference built from the kernels' own per-element math matches the PyTorch CrossModalAttention module.
The CUDA launches themselves run only where a GPU is present (marker gpu)."""

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
    subprocess.run(["cmake", "-S", str(REPO), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release"], check=True,
                   capture_output=True)
    subprocess.run(["cmake", "--build", str(out), "-j", "2"], check=True, capture_output=True)
    return out


def test_cmake_builds_the_cuda_kernels_without_a_gpu(build_dir):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed, only the CPU reference was built")
    assert (build_dir / "libdmfnet_kernels.so").is_file()


def test_plugin_ptx_has_the_aot_entry_point():
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed")
    from dmfnet_edge.build.qdp_plugin import KERNEL_NAME, compile_ptx, plugin_record

    ptx = compile_ptx()
    assert f".visible .entry {KERNEL_NAME}(".encode() in ptx
    assert ptx.count(b".param") >= 11  # 6 inputs, 4 int32 extras, 1 output
    assert plugin_record()["op"] == "dmfnet::DmfnetPixelAttentionFuse"


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
