"""The GPU runners' resource handling without a GPU: the TensorRT runner over a fake CUDA runtime (the module
cuda-python provides, `rt`) that counts every allocation and release, and a fake engine that computes
fused = (mri + other) / 2 on the fake device memory. A runner used in `with` frees everything it allocated, also
when a call or a capture raises; captures are thread-local and ended when they fail; a dynamic profile runs each
call at its own shape with at most eight CUDA graphs kept; the runner's device is current during its work and the
caller's afterwards. Also: the graph cache, --device plumbing, plugin libraries found by name and hash, and the
gpu backend's prebuilt-or-refused extension. The gpu-marked tests run the gpu backend itself where there is one."""

from __future__ import annotations

import ctypes
import hashlib
import itertools

import msgspec
import numpy as np
import pytest

from dmfnet_edge.errors import EnvironmentProblem, InputError, ModelFileError
from dmfnet_edge.runtime.engine_manifest import EngineManifest
from dmfnet_edge.runtime.graph_cache import GraphCache
from dmfnet_edge.runtime.tensorrt_backend import (
    CudaMemory,
    TensorRTRunner,
    engine_io,
    plugin_libraries,
)
from dmfnet_edge.runtime.toolchain import check_device, cuda_index, use_device

THREAD_LOCAL = 1


class FakeCudart:
    """The cuda-python runtime calls CudaMemory makes, on host memory: every handle it hands out is 'live' until
    released; copies and engine runs issued while a stream is capturing are recorded into the graph instead."""

    cudaStreamNonBlocking = 1

    class cudaMemcpyKind:  # noqa: N801 (cuda-python's names)
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    class cudaStreamCaptureMode:  # noqa: N801
        cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal, cudaStreamCaptureModeRelaxed = 0, 1, 2

    def __init__(self, devices: int = 1) -> None:
        self.devices, self.current = devices, 0
        self.live: dict[int, tuple[str, int]] = {}  # handle -> (kind, device it was made on)
        self.device_memory: dict[int, bytearray] = {}
        self._host: dict[int, ctypes.Array] = {}
        self.recorded: dict[int, list] = {}  # graph or executable graph -> its operations
        self.capturing: list | None = None
        self.capture_modes: list[int] = []
        self._ids = itertools.count(0x1000, 0x1000)

    def _new(self, kind: str) -> int:
        handle = next(self._ids)
        self.live[handle] = (kind, self.current)
        return handle

    def _free(self, handle: int, kind: str) -> tuple[int]:
        if self.live.get(handle, (None,))[0] != kind:
            return (400,)  # cudaErrorInvalidResourceHandle: never made, or released twice
        del self.live[handle]
        return (0,)

    def kinds(self) -> list[str]:
        return sorted(kind for kind, _ in self.live.values())

    def issue(self, operation) -> None:
        """Run an operation now, or record it into the graph being captured."""
        if self.capturing is not None:
            self.capturing.append(operation)
        else:
            operation()

    # devices
    def cudaGetDeviceCount(self):  # noqa: N802
        return 0, self.devices

    def cudaGetDevice(self):  # noqa: N802
        return 0, self.current

    def cudaSetDevice(self, device):  # noqa: N802
        if not 0 <= device < self.devices:
            return (101,)  # cudaErrorInvalidDevice
        self.current = device
        return (0,)

    # memory
    def cudaMalloc(self, nbytes):  # noqa: N802
        ptr = self._new("device")
        self.device_memory[ptr] = bytearray(nbytes)
        return 0, ptr

    def cudaFree(self, ptr):  # noqa: N802
        self.device_memory.pop(ptr, None)
        return self._free(ptr, "device")

    def cudaMallocHost(self, nbytes):  # noqa: N802
        buffer = (ctypes.c_byte * nbytes)()
        ptr = ctypes.addressof(buffer)
        self._host[ptr] = buffer
        self.live[ptr] = ("host", self.current)
        return 0, ptr

    def cudaFreeHost(self, ptr):  # noqa: N802
        result = self._free(ptr, "host")
        self._host.pop(ptr, None)
        return result

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):  # noqa: N802
        def copy():
            if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
                self.device_memory[dst][:nbytes] = ctypes.string_at(src, nbytes)
            else:
                ctypes.memmove(dst, bytes(self.device_memory[src][:nbytes]), nbytes)

        self.issue(copy)
        return (0,)

    # streams and graphs
    def cudaStreamCreateWithFlags(self, flags):  # noqa: N802
        return 0, self._new("stream")

    def cudaStreamDestroy(self, stream):  # noqa: N802
        return self._free(stream, "stream")

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        return (0,)

    def cudaStreamBeginCapture(self, stream, mode):  # noqa: N802
        self.capture_modes.append(mode)
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, stream):  # noqa: N802
        graph = self._new("graph")
        self.recorded[graph], self.capturing = self.capturing, None
        return 0, graph

    def cudaGraphInstantiate(self, graph, flags):  # noqa: N802
        executable = self._new("graph exec")
        self.recorded[executable] = list(self.recorded[graph])
        return 0, executable

    def cudaGraphDestroy(self, graph):  # noqa: N802
        return self._free(graph, "graph")

    def cudaGraphExecDestroy(self, executable):  # noqa: N802
        return self._free(executable, "graph exec")

    def cudaGraphLaunch(self, executable, stream):  # noqa: N802
        for operation in self.recorded[executable]:
            operation()
        return (0,)


class FakeContext:
    """An execution context whose engine computes fused = (mri + other) / 2 at the input shape it is set to."""

    def __init__(self, rt: FakeCudart, shape: tuple[int, ...], fail_on_run: int | None = None,
                 fail_in_capture: bool = False) -> None:
        self.rt, self.shape, self.addresses = rt, shape, {}
        self.fail_on_run, self.fail_in_capture, self.runs, self.devices = fail_on_run, fail_in_capture, 0, []

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def set_input_shape(self, name, shape):
        self.shape = tuple(shape)
        return True

    def execute_async_v3(self, stream):
        self.runs += 1
        self.devices.append(self.rt.current)
        if self.fail_in_capture and self.rt.capturing is not None:
            raise RuntimeError("not capturable")
        if self.fail_on_run == self.runs:
            return False
        nbytes, memory = int(np.prod(self.shape)) * 4, self.rt.device_memory

        def run():
            def get(name):
                return np.frombuffer(bytes(memory[self.addresses[name]][:nbytes]), np.float32)

            memory[self.addresses["fused"]][:nbytes] = ((get("mri") + get("other")) / 2).tobytes()

        self.rt.issue(run)
        return True


class FakeEngine:
    """What engine_io reads from an engine: names, modes, types, shapes and profile 0."""

    class trt:  # noqa: N801 (the module's names)
        class TensorIOMode:  # noqa: N801
            INPUT, OUTPUT = "input", "output"

        @staticmethod
        def nptype(dtype):
            return np.float32

    def __init__(self, low: tuple[int, ...], high: tuple[int, ...]) -> None:
        self.low, self.high, self.num_io_tensors = low, high, 3
        self.names = ["mri", "other", "fused"]

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode.OUTPUT if name == "fused" else self.trt.TensorIOMode.INPUT

    def get_tensor_dtype(self, name):
        return "float32"

    def get_tensor_shape(self, name):
        return self.low if self.low == self.high else (-1, 1, -1, -1)

    def get_tensor_profile_shape(self, name, profile):
        assert profile == 0
        return self.low, self.low, self.high


def _manifest(**changes) -> EngineManifest:
    shape = [1, 1, 64, 64]
    fields = {
        "engine_file": "e.engine", "engine_sha256": "ab" * 32, "engine_bytes": 1, "onnx_file": "g.onnx",
        "onnx_sha256": "cd" * 32, "precision": "fp32", "inputs": {"mri": shape, "other": shape}, "output": "fused",
        "toolchain": {"flavour": "tensorrt", "version": "11.4.0"}, "compute_capabilities": ["sm90"],
        "build": {"builder_optimization_level": 3, "strongly_typed": True, "workspace_mib": 2048,
                  "build_seconds": 1.0, "profile": {"min": shape, "opt": shape, "max": shape}},
        "layer_precisions": {"layers": 1, "layers_by_output": {}, "convolutions": {}, "convolution_precisions": {}}}
    return EngineManifest.convert({**fields, **changes}, "test manifest")


def _runner(rt, low, high=None, device=0, **context_options) -> tuple[TensorRTRunner, FakeContext]:
    engine = FakeEngine(low, high or low)
    context = FakeContext(rt, high or low, **context_options)
    return TensorRTRunner(engine_io(engine, FakeEngine.trt), context, CudaMemory(device, rt), _manifest()), context


def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, shape).astype(np.float32), rng.uniform(-1, 1, shape).astype(np.float32)


def test_a_runner_used_in_with_frees_everything_it_allocated():
    rt = FakeCudart()
    with _runner(rt, (2, 1, 64, 64))[0] as runner:
        mri, other = _pair((3, 1, 64, 64))
        assert np.allclose(runner.fuse(mri, other), (mri + other) / 2)
        assert rt.kinds() == ["device"] * 3 + ["graph exec", "host", "host", "host", "stream"]
    assert rt.live == {}
    runner.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        runner.fuse(mri, other)


def test_a_runner_frees_everything_when_a_call_raises():
    rt = FakeCudart()
    with pytest.raises(RuntimeError, match="execute_async_v3 failed"), \
            _runner(rt, (1, 1, 64, 64), fail_on_run=3)[0] as runner:  # warm-up, capture, then the failing call
        runner.cuda_graph = False
        runner.fuse(*_pair((1, 1, 64, 64)))
    assert rt.live == {}


def test_a_failing_capture_is_ended_and_released_and_thread_local():
    rt = FakeCudart()
    memory = CudaMemory(0, rt)
    engine = FakeEngine((1, 1, 64, 64), (1, 1, 64, 64))
    context = FakeContext(rt, (1, 1, 64, 64), fail_in_capture=True)
    with pytest.raises(RuntimeError, match="not capturable"):
        TensorRTRunner(engine_io(engine, FakeEngine.trt), context, memory, _manifest())
    assert rt.capture_modes == [THREAD_LOCAL] and rt.capturing is None  # the capture was ended
    assert "graph" not in rt.kinds()  # and its partial graph destroyed
    memory.close()
    assert rt.live == {}


def test_a_dynamic_profile_runs_each_call_at_its_shape_within_the_profile():
    rt = FakeCudart()
    runner, context = _runner(rt, (1, 1, 96, 96), (4, 1, 256, 256))
    with runner:
        assert runner.dynamic and runner.graph is None and context.runs == 0  # nothing captured before a call
        for shape in ((1, 1, 96, 96), (3, 1, 128, 80), (6, 1, 256, 256)):
            mri, other = _pair(shape)
            assert np.allclose(runner.fuse(mri, other), (mri + other) / 2)
        assert context.shape == (2, 1, 256, 256)  # 6 = 4 + 2: the last piece at its own batch
        mri, other = _pair((1, 1, 64, 64))  # below MIN: mirror-padded to 96x96, cropped back
        assert np.allclose(runner.fuse(mri, other), (mri + other) / 2) and context.shape == (1, 1, 96, 96)
        with pytest.raises(InputError, match="up to 256x256, this one needs 272x256.*--shapes"):
            runner.fuse(*_pair((1, 1, 256, 272)))


def test_at_most_eight_cuda_graphs_are_kept():
    rt = FakeCudart()
    with _runner(rt, (1, 1, 64, 64), (1, 1, 64 + 16 * 12, 64))[0] as runner:
        for k in range(12):
            runner.fuse(*_pair((1, 1, 64 + 16 * k, 64)))
        assert rt.kinds().count("graph exec") == 8
    assert rt.live == {}


def test_the_runner_works_on_its_device_and_gives_the_caller_its_own_back():
    rt = FakeCudart(devices=2)
    runner, context = _runner(rt, (1, 1, 64, 64), device=1)
    assert rt.current == 0
    runner.fuse(*_pair((1, 1, 64, 64)))
    assert rt.current == 0 and set(context.devices) == {1}
    assert {device for _, device in rt.live.values()} == {1}
    runner.close()
    assert rt.live == {}


def test_device_choices_and_devices_this_machine_lacks():
    assert (cuda_index("cuda:3"), cuda_index("cuda"), cuda_index("cpu")) == (3, 0, 0)
    rt = FakeCudart(devices=2)
    check_device(1, rt)
    with pytest.raises(EnvironmentProblem, match="--device cuda:2: this machine has cuda:0 to cuda:1"):
        check_device(2, rt)
    with pytest.raises(EnvironmentProblem, match="no CUDA device is visible here"):
        check_device(0, FakeCudart(devices=0))
    with use_device(1, rt):
        assert rt.current == 1
    assert rt.current == 0


def test_open_runner_passes_the_device_to_the_tensorrt_runner(monkeypatch):
    from dmfnet_edge.runtime import open_runner
    from dmfnet_edge.runtime.tensorrt_backend import TensorRTRunner

    seen = {}
    monkeypatch.setattr(TensorRTRunner, "load", classmethod(lambda cls, path, **kw: seen.update(kw, path=path)))
    open_runner("tensorrt", "m.engine", device="cuda:1")
    assert seen == {"path": "m.engine", "device": 1}


def test_the_graph_cache_releases_the_least_recently_used():
    released = []
    cache = GraphCache(released.append, capacity=2)
    for key in ("a", "b", "a", "c"):  # 'a' used again: 'b' is the oldest when 'c' comes
        cache.get(key, lambda key=key: f"graph {key}")
    assert released == ["graph b"] and "a" in cache and "c" in cache

    def failing(graph):
        released.append(graph)
        if graph == "graph a":
            raise RuntimeError("release failed")

    cache._release = failing
    with pytest.raises(RuntimeError, match="release failed"):
        cache.clear()
    assert released[-2:] == ["graph a", "graph c"] and len(cache) == 0  # the rest released anyway


# ---- plugin libraries: by name beside the engine (or DMFNET_PLUGIN_PATH), with the recorded SHA-256 ------------
def _plugin_engine(tmp_path, content=b"library", library="/build/machine/libdmfnet_trt_plugins.so"):
    engine = tmp_path / "engines" / "e.engine"
    engine.parent.mkdir(parents=True)
    record = {"library": library, "sha256": hashlib.sha256(content).hexdigest()}
    return engine, _manifest(plugins=[record])


def test_a_plugin_library_is_found_by_name_beside_the_engine_or_on_the_plugin_path(tmp_path, monkeypatch):
    engine, manifest = _plugin_engine(tmp_path)
    beside = engine.parent / "libdmfnet_trt_plugins.so"
    beside.write_bytes(b"library")
    assert plugin_libraries(manifest, engine) == [beside]
    elsewhere = tmp_path / "plugins"
    elsewhere.mkdir()
    (elsewhere / beside.name).write_bytes(b"library")
    monkeypatch.setenv("DMFNET_PLUGIN_PATH", str(elsewhere))
    assert plugin_libraries(manifest, engine) == [elsewhere / beside.name]
    assert plugin_libraries(manifest, engine, [engine.parent]) == [beside]  # an explicit folder first
    aot = msgspec.structs.replace(manifest, plugins=[msgspec.structs.replace(manifest.plugins[0], library=None)])
    assert plugin_libraries(aot, engine) == []  # an AOT plugin is embedded: nothing to load


def test_a_plugin_library_of_another_hash_or_missing_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("DMFNET_PLUGIN_PATH", raising=False)
    engine, manifest = _plugin_engine(tmp_path)
    with pytest.raises(ModelFileError, match="libdmfnet_trt_plugins.so .* not found beside the engine"):
        plugin_libraries(manifest, engine)
    (engine.parent / "libdmfnet_trt_plugins.so").write_bytes(b"another library")
    with pytest.raises(ModelFileError, match="SHA-256 differs from the plugin library e.engine was built with"):
        plugin_libraries(manifest, engine)
    engine, manifest = _plugin_engine(tmp_path / "x", library="..")
    with pytest.raises(ModelFileError, match="not a file name"):
        plugin_libraries(manifest, engine)


# ---- the gpu backend ---------------------------------------------------------------------------------------------
def test_the_fused_kernel_extension_is_loaded_prebuilt_or_refused_never_compiled(tmp_path, monkeypatch):
    import torch.utils.cpp_extension

    from dmfnet_edge.models import cuda_extension

    def compile_at_run_time(*args, **kwargs):
        raise AssertionError("the extension was compiled at run time")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", compile_at_run_time)
    monkeypatch.setenv(cuda_extension.FOLDER, str(tmp_path))
    cuda_extension.load.cache_clear()
    with pytest.raises(EnvironmentProblem) as refused:
        cuda_extension.load()
    message = str(refused.value)
    assert "\n" not in message and "python -m dmfnet_edge.models.cuda_extension" in message
    assert cuda_extension.extension_key().startswith(f"torch{torch.__version__}-cu")
    cuda_extension.load.cache_clear()


@pytest.mark.gpu
def test_the_gpu_runner_releases_its_graphs_and_keeps_eight():
    import torch

    from dmfnet_edge.runtime.gpu_backend import GpuRunner

    with GpuRunner("tiny", precision="fp32", fused_kernels=False, allow_random=True) as runner:
        for k in range(10):
            runner.fuse(*_pair((1, 1, 64 + 16 * k, 64)))
        assert len(runner._graphs) == 8
    assert runner.closed and len(runner._graphs) == 0 and runner.model is None
    torch.cuda.synchronize()


@pytest.mark.gpu
def test_the_gpu_runner_refuses_a_device_this_machine_lacks():
    import torch

    from dmfnet_edge.runtime.gpu_backend import GpuRunner

    with pytest.raises(EnvironmentProblem, match=f"--device cuda:{torch.cuda.device_count()}"):
        GpuRunner("tiny", device=f"cuda:{torch.cuda.device_count()}", fused_kernels=False, allow_random=True)


# ---- the GPU check, prepared for a lent GPU machine: its dry run here -----------------------------------------
def test_the_gpu_check_dry_run_imports_plans_and_fits_what_travels(tmp_path):
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run", "--out",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    dry = report["steps"]["dry_run"]
    assert report["dry_run"] and dry["status"] == "ok"
    assert set(dry["imports"].values()) == {"ok"}, dry["imports"]
    assert list(dry["plan"]) == ["machine", "extension", "op_vs_module", "sanitizer", "timings", "tensorrt"]
    assert 0 < dry["carried_bytes"] < 64 << 20 and dry["fits"]
    assert "nothing was run on a GPU" in (tmp_path / "gpu_check.md").read_text()


# ---- a weight-stripped engine is refitted on load, from its own graph only --------------------------------------
class FakeRefitTensorRT:
    """The refit half of the TensorRT API (Refitter, OnnxParserRefitter), recording what was refitted from where."""

    def __init__(self, ok: bool = True) -> None:
        self.refitted_from: list[str] = []
        self.ok = ok
        outer = self

        class Logger:
            WARNING = 2

            def __init__(self, level: int) -> None:
                pass

        class Refitter:
            def __init__(self, engine: object, logger: object) -> None:
                self.engine = engine

            def refit_cuda_engine(self) -> bool:
                return outer.ok

        class OnnxParserRefitter:
            num_errors = 0

            def __init__(self, refitter: object, logger: object) -> None:
                pass

            def refit_from_file(self, path: str) -> bool:
                outer.refitted_from.append(path)
                return True

            def get_error(self, index: int) -> str:
                return ""

        self.Logger, self.Refitter, self.OnnxParserRefitter = Logger, Refitter, OnnxParserRefitter


def _stripped_manifest(graph_bytes: bytes):
    import hashlib

    from dmfnet_edge.runtime.engine_manifest import EngineManifest

    return EngineManifest.convert({
        "engine_file": "m.engine", "engine_sha256": "ab" * 32, "engine_bytes": 10, "onnx_file": "m.onnx",
        "onnx_sha256": hashlib.sha256(graph_bytes).hexdigest(), "precision": "fp16", "output": "fused",
        "inputs": {"mri": [1, 1, 64, 64], "other": [1, 1, 64, 64]},
        "toolchain": {"flavour": "tensorrt-rtx", "version": "1.7.1.116"}, "compute_capabilities": ["sm89"],
        "build": {"builder_optimization_level": 3, "strongly_typed": True, "workspace_mib": 64, "build_seconds": 1.0,
                  "strip_weights": True, "profile": {"min": [1, 1, 64, 64], "opt": [1, 1, 64, 64],
                                                     "max": [1, 1, 64, 64]}},
        "layer_precisions": {"layers": 1, "layers_by_output": {}, "convolutions": {}, "convolution_precisions": {}},
    }, "test")


def test_a_stripped_engine_is_refitted_from_its_own_graph_only(tmp_path):
    from dmfnet_edge.errors import ModelFileError
    from dmfnet_edge.runtime.tensorrt_backend import refit_from_graph

    graph = tmp_path / "m.onnx"
    graph.write_bytes(b"the graph the engine was built from")
    manifest = _stripped_manifest(graph.read_bytes())
    trt = FakeRefitTensorRT()
    refit_from_graph(trt, object(), manifest, graph)
    assert trt.refitted_from == [str(graph)]
    other = tmp_path / "other.onnx"
    other.write_bytes(b"retrained weights without a rebuilt engine")
    with pytest.raises(ModelFileError, match="is not the graph m.engine was built from"):
        refit_from_graph(trt, object(), manifest, other)
    with pytest.raises(ModelFileError, match="which is missing"):
        refit_from_graph(trt, object(), manifest, tmp_path / "gone.onnx")
    with pytest.raises(ModelFileError, match="refitting m.engine from it failed"):
        refit_from_graph(FakeRefitTensorRT(ok=False), object(), manifest, graph)
    assert trt.refitted_from == [str(graph)]  # nothing was refitted from a refused graph
