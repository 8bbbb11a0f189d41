"""One runner shared by several threads gives the same outputs as serial use, and repeated runs (same runner or a
freshly opened one) are bit-identical, on ONNX Runtime and torch."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from dmfnet_edge.contract import IOContract
from dmfnet_edge.export.onnx_export import export_onnx
from dmfnet_edge.models.checkpoint import build_model
from dmfnet_edge.pipeline import fuse_pixels
from dmfnet_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner
from dmfnet_edge.runtime.torch_backend import TorchRunner
from tests.conftest import smooth_image


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(build_model("tiny"), path, IOContract.dynamic())
    return {"onnxruntime": OnnxRuntimeRunner(path, threads=1), "torch": TorchRunner(build_model("tiny")),
            "path": path}


def fresh(runners, backend):
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(runners["path"], threads=2)
    return TorchRunner(build_model("tiny"))


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_repeated_runs_are_bit_identical(runners, backend):
    rng = np.random.default_rng(4)
    mri, other = smooth_image(rng, 96, 80), smooth_image(rng, 96, 80, colour=True)
    first = fuse_pixels(runners[backend], mri, other)
    again = fuse_pixels(runners[backend], mri, other)
    other_runner = fuse_pixels(fresh(runners, backend), mri, other)
    for result in (again, other_runner):
        assert result.luma.tobytes() == first.luma.tobytes()
        assert result.pixels.tobytes() == first.pixels.tobytes()


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_threads_match_serial(runners, backend):
    runner = runners[backend]
    rng = np.random.default_rng(9)
    pairs = [(smooth_image(rng, 64, 64), smooth_image(rng, 64, 64, colour=i % 2 == 1)) for i in range(12)]
    serial = [fuse_pixels(runner, m, o).pixels for m, o in pairs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda p: fuse_pixels(runner, *p).pixels, pairs * 2))
    for i, out in enumerate(threaded):
        assert np.array_equal(out, serial[i % len(pairs)])
