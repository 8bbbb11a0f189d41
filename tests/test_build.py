"""TensorRT path without TensorRT: engine cache keys, manifests and the rebuild check, precision inspection,
the plugin-node graph, and the runner's buffer logic against a fake engine and fake device memory."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest

from dmfnet_edge.build.engine_manifest import (DeviceInfo, build_engine_manifest, check_compatible,
                                               engine_file_name, engine_manifest_path, read_engine_manifest)
from dmfnet_edge.build.precision import PrecisionMismatch, check_precision, layer_precisions, tensor_precision
from dmfnet_edge.cli.export_main import main as export_main
from dmfnet_edge.errors import ModelFileError
from dmfnet_edge.export.contract import read_manifest
from dmfnet_edge.runtime.tensorrt_backend import IOTensor, TensorRTRunner

H100 = DeviceInfo("NVIDIA H100 80GB HBM3", (9, 0), 132, "10.13.0")
ORIN = DeviceInfo("Orin", (8, 7), 16, "10.3.0")


def test_engine_key_names_gpu_capability_sms_version_hash_and_recipe():
    name = engine_file_name("dmfnet-edge", H100, "ab" * 32, "int8-tensorrt")
    assert name == "dmfnet-edge.int8-tensorrt.nvidia-h100-80gb-hbm3.cc90.sm132.trt10.13.0.abababababab.engine"
    assert engine_file_name("dmfnet-edge", ORIN, "ab" * 32, "int8-tensorrt") != name


@pytest.fixture
def engine(tmp_path):
    path = tmp_path / "m.engine"
    path.write_bytes(b"serialized plan")
    onnx_manifest = {"onnx_sha256": "cd" * 32, "precision": "fp16", "model": "edge", "weights_sha256": "ef" * 32,
                     "inputs": {"mri": [1, 1, 256, 256], "other": [1, 1, 256, 256]}, "output": "fused"}
    manifest = build_engine_manifest(path, tmp_path / "m.onnx", onnx_manifest, H100, {"opt": 3}, {"fp16": 40}, [])
    engine_manifest_path(path).write_text(json.dumps(manifest))
    return path


def test_manifest_is_checked_before_deserialising(engine):
    meta = read_engine_manifest(engine)
    check_compatible(meta, H100)
    with pytest.raises(ModelFileError, match=r"rebuild needed: .*built for NVIDIA H100.*this is Orin \(cc 8.7"):
        check_compatible(meta, ORIN)
    with pytest.raises(ModelFileError, match="rebuild needed"):
        check_compatible(meta, DeviceInfo(H100.gpu_name, H100.compute_capability, H100.sm_count, "11.4.0"))
    engine.write_bytes(b"swapped")
    with pytest.raises(ModelFileError, match="damaged or was swapped"):
        read_engine_manifest(engine)


INSPECTOR = {"Layers": [
    {"Name": "conv1", "Outputs": [{"Name": "a", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}
                                  ]},
    {"Name": "conv2", "Outputs": [{"Name": "b", "Format/Datatype": "Row major linear Int8 format"}]},
    {"Name": "norm", "Outputs": [{"Name": "c", "Format/Datatype": "Row major linear FP32"}]},
    {"Name": "q", "Outputs": [{"Name": "d", "Format/Datatype": "Row major linear Int8 format"}]},
    "a layer described without detail"]}


def test_layer_precisions_from_the_engine_inspector():
    counts = layer_precisions(json.dumps(INSPECTOR))
    assert counts == {"fp16": 1, "int8": 2, "fp32": 1}
    assert tensor_precision("Half") == "fp16" and tensor_precision("BFloat16 linear") == "bf16"
    check_precision("int8-tensorrt", counts)
    with pytest.raises(PrecisionMismatch, match="no layer runs in fp16"):
        check_precision("fp16", {"fp32": 120})


def test_tensorrt_only_graph_carries_plugin_nodes(tmp_path, capsys):
    assert export_main(["onnx", "--model", "tiny", "-o", str(tmp_path), "--size", "64", "--trt-plugins"]) == 0
    path = tmp_path / "dmfnet-tiny-fp32-trtplugins.onnx"
    graph = onnx.load(str(path))
    plugins = [n for n in graph.graph.node if n.op_type == "DmfnetPixelAttentionFuse"]
    assert len(plugins) == 5  # one cross-modal attention per scale
    attrs = {a.name: a.s.decode() for a in plugins[0].attribute}
    assert attrs == {"plugin_namespace": "dmfnet", "plugin_version": "1"} and len(plugins[0].input) == 6
    manifest = read_manifest(path)
    assert manifest["onnxruntime_runnable"] is False and len(manifest["tensorrt_plugins"]) == 5
    from dmfnet_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner

    with pytest.raises(ModelFileError, match="TensorRT plugin nodes"):
        OnnxRuntimeRunner(path)


class FakeMemory:
    """Host-side stand-in for device memory: 'device' buffers are numpy arrays keyed by fake addresses."""

    def __init__(self):
        self.device: dict[int, np.ndarray] = {}
        self.captured = None
        self.launches = 0

    def alloc(self, nbytes):
        address = 4096 * (len(self.device) + 1)
        self.device[address] = np.zeros(nbytes, np.uint8)
        return address

    def host(self, shape, dtype):
        return np.zeros(shape, dtype)

    def to_device(self, dst, src):
        self.device[dst][: src.nbytes] = np.frombuffer(src.tobytes(), np.uint8)

    def to_host(self, dst, src):
        dst[...] = np.frombuffer(self.device[src][: dst.nbytes].tobytes(), dst.dtype).reshape(dst.shape)

    def stream(self):
        return 7

    def synchronize(self):
        pass

    def capture(self, work):
        self.captured = work
        return "graph"

    def launch(self, graph):
        assert graph == "graph"
        self.launches += 1
        self.captured()
        time.sleep(0.002)  # widen the window between the engine run and the copy back: races would show



class FakeContext:
    """Executes 'the engine' as fused = (mri + other) / 2 on the fake device buffers."""

    def __init__(self, memory, shape):
        self.memory, self.shape, self.addresses, self.streams = memory, shape, {}, []

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def execute_async_v3(self, stream):
        self.streams.append(stream)
        n = int(np.prod(self.shape)) * 4
        get = lambda k: np.frombuffer(self.memory.device[self.addresses[k]][:n].tobytes(), np.float32)
        out = (get("mri") + get("other")) / 2
        self.memory.device[self.addresses["fused"]][:n] = np.frombuffer(out.tobytes(), np.uint8)
        return True


def test_runner_buffers_addresses_graph_and_contract():
    shape = (2, 1, 96, 96)
    memory = FakeMemory()
    context = FakeContext(memory, shape)
    tensors = [IOTensor(n, n != "fused", np.dtype(np.float32), shape) for n in ("mri", "other", "fused")]
    runner = TensorRTRunner(tensors, context, memory, {"model": "edge", "precision": "fp16", "engine_file": "x"})
    assert set(context.addresses) == {"mri", "other", "fused"} and len(set(context.addresses.values())) == 3
    assert runner.graph == "graph" and context.streams == [7]  # the warm-up ran; capture only records
    rng = np.random.default_rng(0)
    mri, other = (rng.random((3, 1, 64, 80), dtype=np.float32) for _ in range(2))  # smaller, odd batch
    out = runner.fuse(mri, other)
    assert out.shape == (3, 1, 64, 80) and np.allclose(out, (mri + other) / 2)
    assert memory.launches == 2  # 3 pairs in static batches of 2
    with pytest.raises(Exception, match="--dynamic"):
        runner.fuse(np.zeros((1, 1, 112, 96), np.float32), np.zeros((1, 1, 112, 96), np.float32))


def test_runner_shared_by_threads_matches_serial_use():
    shape = (1, 1, 64, 64)
    memory = FakeMemory()
    tensors = [IOTensor(n, n != "fused", np.dtype(np.float32), shape) for n in ("mri", "other", "fused")]
    runner = TensorRTRunner(tensors, FakeContext(memory, shape), memory, {"model": "edge", "engine_file": "x"})
    rng = np.random.default_rng(3)
    pairs = [tuple(rng.random(shape, dtype=np.float32) for _ in range(2)) for _ in range(8)]
    serial = [runner.fuse(*p) for p in pairs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda p: runner.fuse(*p), pairs * 3))
    for i, out in enumerate(threaded):
        assert np.array_equal(out, serial[i % len(pairs)])


@pytest.mark.trt
@pytest.mark.gpu
def test_real_engine_build_and_run(tmp_path):
    assert export_main(["onnx", "--model", "tiny", "-o", str(tmp_path), "--size", "64"]) == 0
    onnx_path = tmp_path / "dmfnet-tiny-fp32.onnx"
    assert export_main(["build", "--onnx", str(onnx_path), "--out", str(tmp_path / "engines"),
                        "--timing-cache", str(tmp_path / "tc.bin")]) == 0
    engine = next((tmp_path / "engines").glob("*.engine"))
    from dmfnet_edge.models.checkpoint import build_model
    from dmfnet_edge.runtime.torch_backend import TorchRunner

    mri = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    out = TensorRTRunner.load(engine).fuse(mri, mri)
    assert np.abs(out - TorchRunner(build_model("tiny")).fuse(mri, mri)).max() < 1e-3
