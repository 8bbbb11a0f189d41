"""Shared fixtures: generated tiny models and images; the atlas data at ../shared/data when present."""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLES = REPO / "dmfnet_edge" / "samples"


RUNTIME_TIER = os.environ.get("DMFNET_TIER") == "runtime"  # make test-runtime: torch unimportable


def pytest_configure(config):
    # a loaded 2-core CI machine can take over 10 s for one bar; its plain progress line would then be a second
    # stderr line in the tests that check for exactly one (error) line, in this process and in its children
    os.environ.setdefault("DMFNET_PROGRESS_SECONDS", "100000")
    # the ONNX Runtime cache of the tests (and of the processes they start) is their own, not the user's
    if "DMFNET_CACHE_DIR" not in os.environ:
        import tempfile

        os.environ["DMFNET_CACHE_DIR"] = tempfile.mkdtemp(prefix="dmfnet-test-cache-")
    if RUNTIME_TIER:
        import tests.no_torch  # noqa: F401 (any `import torch` now raises ImportError)


def pytest_ignore_collect(collection_path, config):
    """In the runtime tier, test modules without a `runtime` mark are not even imported (most import torch)."""
    if RUNTIME_TIER and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return "mark.runtime" not in collection_path.read_text()
    return None


def pytest_collection_modifyitems(config, items):
    import importlib.util

    if RUNTIME_TIER:
        outside = [item for item in items if "runtime" not in item.keywords]
        config.hook.pytest_deselected(items=outside)
        items[:] = [item for item in items if "runtime" in item.keywords]
        has_gpu = False
    else:
        import torch

        has_gpu = torch.cuda.is_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch here"))
        if "trt" in item.keywords and not has_trt:
            item.add_marker(pytest.mark.skip(reason="needs TensorRT; the 'tensorrt' package is not installed"))


def needs(module: str, extra: str):
    """The optional package `module` (of the `extra`), imported; one policy for every test that needs an extra:
    skipped where it is not installed, a failure in CI (`make test` installs every extra, so a test cannot pass
    there by not running)."""
    if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
        reason = f"needs {module}: pip install 'dmfnet-edge[{extra}]'"
        if os.environ.get("CI"):
            pytest.fail(f"CI installs every extra, but {module} is missing ({reason})", pytrace=False)
        pytest.skip(reason, allow_module_level=True)
    return importlib.import_module(module)


@pytest.fixture(scope="session")
def tensorrt_rtx():
    """TensorRT for RTX, which builds real engines without a GPU. `make test` installs it; in CI its absence is a
    failure, not a skip, so engine tests cannot pass by not running."""
    return needs("tensorrt_rtx", "trt-rtx")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = SHARED / "data" / "harvard"
    if not root.is_dir():
        pytest.skip(f"the atlas data is not at {root}")
    return root


@pytest.fixture(scope="session")
def metric_fixtures() -> Path:
    path = SHARED / "reference" / "metric_fixtures.json"
    if not path.is_file():
        pytest.skip(f"metric fixtures not at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_model_base(tmp_path_factory) -> Path:
    """A randomly initialised tiny DMFNet saved as safetensors + JSON; returns the base path (no suffix)."""
    import torch

    from dmfnet_edge.config import preset
    from dmfnet_edge.models.checkpoint import save_model
    from dmfnet_edge.models.dmfnet import DMFNet

    torch.manual_seed(0)
    model = DMFNet(preset("tiny")).eval()
    base = tmp_path_factory.mktemp("model") / "tiny"
    save_model(model, model.cfg, base, "dmfnet", {"weights": "seeded random tiny model for tests"})
    return base


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def smooth_image(rng: np.random.Generator, h: int, w: int, colour: bool = False) -> np.ndarray:
    """A uint8 test image with structure (blurred noise + a gradient), grey or RGB."""
    import cv2

    base = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 3)
    base = (base - base.min()) / (np.ptp(base) + 1e-9)
    base = 0.7 * base + 0.3 * np.linspace(0, 1, w, dtype=np.float32)[None, :]
    grey = np.round(base * 255).astype(np.uint8)
    if not colour:
        return grey
    return cv2.applyColorMap(grey, cv2.COLORMAP_JET)[:, :, ::-1].copy()


def onnx_manifest(**fields):
    """A valid ONNX manifest record with these fields over a dynamic fp32 graph's (for tests of code that reads
    one without needing its graph)."""
    from dmfnet_edge.contract import OnnxManifest

    base = {"onnx_file": "m.onnx", "onnx_sha256": "ab" * 32, "precision": "fp32", "output": "fused",
            "inputs": {"mri": ["N", 1, "H", "W"], "other": ["N", 1, "H", "W"]}, "package_version": "0.1.0"}
    return OnnxManifest.convert({**base, **fields}, "test manifest")
