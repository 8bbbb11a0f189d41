"""Runner conformance, walked over the backend registry (as timm's tests walk its models): every backend that can
run here opens through `open_runner`, fuses a batch of the contract's shape to the reference within its tolerance,
describes itself, and closes (also as a context manager). A backend needs an entry in HOW below (where it is
tested); the GPU ones run under the `gpu` marker, the Triton client against a live server (tests/serving)."""

from __future__ import annotations

import numpy as np
import pytest

from dmfnet_edge.config import ModelSpec
from dmfnet_edge.errors import DmfnetError
from dmfnet_edge.runtime.backends import BACKEND_CHOICES, BACKENDS, REGISTRY, open_runner, pick_backend

# backend -> how its conformance is checked: "here" (this module, on this machine), or where and why not
HOW = {
    "onnxruntime": "here",
    "torch": "here",
    "gpu": "here, under the gpu marker (skipped without a CUDA GPU; benchmarks/gpu_check.py runs it on a lent GPU)",
    "tensorrt": "an engine needs a GPU to load (tests/runtime/test_gpu_runners.py drives its runner "
                "with a fake CUDA layer here)",
    "triton": "tests/serving/test_serving.py: against a live dmfnet serve",
}
TOLERANCE = {"onnxruntime": 1e-4, "torch": 0.0, "gpu": 1e-3}  # max abs error against the torch FP32 reference
HERE = [pytest.param(b.name, id=f"backend-{b.name}", marks=[pytest.mark.gpu] if b.device == "cuda" else [])
        for b in REGISTRY if HOW[b.name].startswith("here")]


def test_every_backend_says_how_it_is_tested():
    assert set(HOW) == set(BACKENDS)
    assert ("auto", *(b.name for b in REGISTRY if b.choosable)) == BACKEND_CHOICES
    for backend in REGISTRY:
        assert backend.accepts and backend.extra and backend.module
        assert backend.stage_split in (None, "torch", "onnxruntime")


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory, tiny_model_base):
    from dmfnet_edge.cli.main import export_main

    out = tmp_path_factory.mktemp("graph")
    assert export_main(["onnx", "--model", str(tiny_model_base), "-o", str(out), "--dynamic", "--name", "t"]) == 0
    return out / "t.onnx"


def _model_for(backend: str, tiny_model_base, tiny_graph) -> str:
    return str(tiny_graph) if backend == "onnxruntime" else str(tiny_model_base)


@pytest.mark.parametrize("name", HERE)
def test_the_runner_conforms(name, tiny_model_base, tiny_graph):
    from dmfnet_edge.runtime.torch_backend import TorchRunner

    rng = np.random.default_rng(0)
    mri, other = (rng.uniform(-1, 1, (2, 1, 64, 80)).astype(np.float32) for _ in range(2))
    reference = TorchRunner.load(str(tiny_model_base), threads=1).fuse(mri, other)
    precision = "fp32" if name == "gpu" else None  # the gpu backend's default is fp16
    with open_runner(name, _model_for(name, tiny_model_base, tiny_graph), threads=1, precision=precision) as runner:
        assert runner.backend == name
        out = runner.fuse(mri, other)
        assert out.shape == mri.shape and out.dtype == np.float32
        assert float(np.abs(out - reference).max()) <= TOLERANCE[name]
        described = runner.describe()
        assert described["backend"] == name and "weights_sha256" in described
    runner.close()  # a second close is a no-op


@pytest.mark.parametrize("name", [b.name for b in REGISTRY if b.choosable], ids=lambda n: f"backend-{n}")
def test_a_model_of_another_kind_is_one_clear_refusal(name, tiny_graph):
    backend = BACKENDS[name]
    other = next(k for k in ("engine", "onnx", "weights") if k not in backend.accepts)
    model = {"engine": "m.engine", "onnx": str(tiny_graph), "weights": "some/weights"}[other]
    with pytest.raises(DmfnetError, match=f"--model {model}: the {name} backend runs"):
        open_runner(name, model)


def test_auto_picks_by_the_model_kind(tiny_graph):
    assert pick_backend("auto", ModelSpec.parse("edge")).name == "onnxruntime"
    assert pick_backend("auto", ModelSpec.parse(str(tiny_graph))).name == "onnxruntime"
    assert pick_backend("auto", ModelSpec.parse("m.engine")).name == "tensorrt"
    assert pick_backend("auto", ModelSpec.parse("tiny")).name == "torch"
    assert pick_backend("auto", ModelSpec.parse("x", server="http://127.0.0.1:8000")).name == "triton"
    with pytest.raises(DmfnetError, match="unknown backend 'triton'"):
        pick_backend("triton", ModelSpec.parse("edge"))  # chosen by --server, not --backend


def test_precisions_are_checked_against_the_backend():
    with pytest.raises(DmfnetError, match="--precision fp16: the onnxruntime backend runs fp32, int8"):
        open_runner("onnxruntime", "edge", precision="fp16")
    with pytest.raises(DmfnetError, match="the tensorrt backend runs the precision its model was built with"):
        open_runner("tensorrt", "m.engine", precision="int8")
