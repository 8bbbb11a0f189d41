"""TensorRT path without TensorRT: engine cache keys, manifests and the rebuild check for both flavours, per-layer
precisions from the inspector (10.x and 11.x schema) and from a real TensorRT for RTX layer dump, the precision
check against the graph, the plugin-node graph, and the runner's buffer logic against a fake engine and fake
device memory. Real engine builds: tests/engines/test_tensorrt_engines.py."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest

from dmfnet_edge.cli.main import export_main
from dmfnet_edge.contract import OnnxManifest, read_manifest
from dmfnet_edge.engines.precision import (
    FallbackAllowance,
    PrecisionMismatch,
    check_precision,
    expected_convolutions,
    int8_fallbacks,
    precision_summary,
    records_from_inspector,
    records_from_layer_dump,
    tensor_precision,
)
from dmfnet_edge.errors import EnvironmentProblem, InputError, ModelFileError
from dmfnet_edge.runtime.engine_manifest import (
    BuildTarget,
    DeviceInfo,
    PlanSettings,
    PluginUsed,
    ShapeProfile,
    ToolchainUsed,
    build_engine_manifest,
    check_compatible,
    engine_file_name,
    engine_manifest_path,
    read_engine_manifest,
)
from dmfnet_edge.runtime.tensorrt_backend import IOTensor, TensorRTRunner
from tests.conftest import REPO

H100 = DeviceInfo("NVIDIA H100 80GB HBM3", (9, 0), 132, "10.13.0")
ORIN = DeviceInfo("Orin", (8, 7), 16, "10.3.0")
RTX_4090 = DeviceInfo("NVIDIA GeForce RTX 4090", (8, 9), 128, "1.7.1.116")
ON_H100 = BuildTarget("tensorrt", "10.13.0", ("sm90",), H100)
RTX_AOT = BuildTarget("tensorrt-rtx", "1.7.1.116", ("sm80", "sm86", "sm89", "sm120"))
DUMPS = (REPO / "tests" / "fixtures" / "rtx_layer_dump.txt").read_text().split("== fp16\n")


def test_engine_file_name_reads_recipe_target_profile_then_the_cache_key():
    name = engine_file_name("dmfnet-edge", ON_H100, "int8-tensorrt", "1x256x256", "0123456789abcdef")
    assert name == ("dmfnet-edge.int8-tensorrt.nvidia-h100-80gb-hbm3.cc90.sm132.trt10.13.0.1x256x256.0123456789abcdef"
                    ".engine")
    assert engine_file_name("dmfnet-edge", RTX_AOT, "fp16", "1x256x256", "0123456789abcdef") == (
        "dmfnet-edge.fp16.sm80-sm86-sm89-sm120.rtx1.7.1.116.1x256x256.0123456789abcdef.engine")


STATIC = ShapeProfile([1, 1, 256, 256], [1, 1, 256, 256], [1, 1, 256, 256])
PLAN = PlanSettings(onnx_sha256="ab" * 32, precision="fp16", toolchain=ToolchainUsed("tensorrt", "10.13.0"),
                    compute_capabilities=("sm90",), device=H100, profile=STATIC, builder_optimization_level=3,
                    workspace_mib=2048, strongly_typed=True, strip_weights=False, timing_cache_sha256="cd" * 32,
                    timing_cache_locked=False, plugins=(PluginUsed(sha256="ef" * 32),))
CHANGED = {  # one other value for every setting of the key
    "onnx_sha256": "ba" * 32, "precision": "int8-tensorrt", "toolchain": ToolchainUsed("tensorrt", "11.4.0"),
    "compute_capabilities": ("sm87",), "device": ORIN, "profile": ShapeProfile([1, 1, 64, 64], [1, 1, 256, 256],
                                                                               [2, 1, 256, 256]),
    "builder_optimization_level": 5, "workspace_mib": 64, "strongly_typed": False, "strip_weights": True,
    "timing_cache_sha256": None, "timing_cache_locked": True, "plugins": (PluginUsed(sha256="fe" * 32),)}


def test_every_setting_that_changes_the_plan_changes_the_cache_key():
    """The key was the ONNX hash, precision, target and profile: '--opt-level 5 --workspace-mib 64' into the same
    --out was answered with the default engine."""
    import msgspec

    assert set(CHANGED) == set(PlanSettings.__struct_fields__)
    keys = {PLAN.key()}
    for name, value in CHANGED.items():
        other = msgspec.structs.replace(PLAN, **{name: value})
        assert other.differences(PLAN) == [name]
        keys.add(other.key())
    assert len(keys) == len(CHANGED) + 1 and all(len(k) == 16 for k in keys)
    moved = msgspec.structs.replace(PLAN, plugins=(PluginUsed(library="/elsewhere/lib.so", sha256="ef" * 32),))
    from dmfnet_edge.runtime.engine_manifest import plugin_keys

    assert msgspec.structs.replace(moved, plugins=plugin_keys(moved.plugins)).key() == PLAN.key()  # path not keyed


SETTINGS = {"builder_optimization_level": 3, "strongly_typed": True, "workspace_mib": 2048, "build_seconds": 1.0,
            "profile": {"min": [1, 1, 256, 256], "opt": [1, 1, 256, 256], "max": [1, 1, 256, 256]}}
LAYERS = {"layers": 120, "layers_by_output": {"fp16": 120}, "convolutions": {"fp16": 40},
          "convolution_precisions": {"/c/Conv": "fp16"}}


def _engine(tmp_path, target):
    plan = b"serialized plan"
    onnx_manifest = OnnxManifest.convert({
        "onnx_file": "m.onnx", "onnx_sha256": "cd" * 32, "precision": "fp16", "model": "edge",
        "weights_sha256": "ef" * 32, "inputs": {"mri": [1, 1, 256, 256], "other": [1, 1, 256, 256]},
        "output": "fused", "package_version": "0.1.0"}, "test")
    manifest = build_engine_manifest("m.engine", plan, tmp_path / "m.onnx", onnx_manifest, target, SETTINGS,
                                     LAYERS, [])
    path = tmp_path / "m.engine"
    path.write_bytes(plan)
    manifest.write(engine_manifest_path(path))
    return path


COMPATIBILITY = [  # built for, this machine (flavour, version, GPU), refusal (None: accepted)
    (ON_H100, ("tensorrt", "10.13.0", H100), None),
    (ON_H100, ("tensorrt", "10.13.0", ORIN), r"built for NVIDIA H100.*this is Orin \(cc 8.7"),
    (ON_H100, ("tensorrt", "11.4.0", H100), r"with tensorrt 10.13.0, this is .* with tensorrt 11.4"),
    (ON_H100, ("tensorrt-rtx", "10.13.0", H100), "with tensorrt-rtx 10.13.0"),
    (RTX_AOT, ("tensorrt-rtx", "1.7.1.116", RTX_4090), None),  # sm89 is a target; the GPU model does not matter
    (RTX_AOT, ("tensorrt-rtx", "1.7.1.116", H100), r"built for sm80, sm86, sm89, sm120 with tensorrt-rtx .*\(sm90\)"),
    (RTX_AOT, ("tensorrt-rtx", "1.8.0", RTX_4090), "this is .* with tensorrt-rtx 1.8.0"),
    (RTX_AOT, ("tensorrt", "1.7.1.116", RTX_4090), "with tensorrt 1.7.1.116"),
]


@pytest.mark.parametrize("built, here, refusal", COMPATIBILITY)
def test_manifest_is_checked_before_deserialising(tmp_path, built, here, refusal):
    meta = read_engine_manifest(_engine(tmp_path, built))
    if refusal is None:
        check_compatible(meta, *here)
    else:
        with pytest.raises(ModelFileError, match=f"rebuild needed: .*{refusal}"):
            check_compatible(meta, *here)


def test_a_swapped_engine_is_refused(tmp_path):
    engine = _engine(tmp_path, ON_H100)
    engine.write_bytes(b"swapped")
    with pytest.raises(ModelFileError, match="damaged or was swapped"):
        read_engine_manifest(engine)


def test_old_engine_manifests_are_refused_with_a_rebuild_hint(tmp_path):
    engine = _engine(tmp_path, ON_H100)
    meta = json.loads(engine_manifest_path(engine).read_text())
    meta["manifest_version"] = 1
    engine_manifest_path(engine).write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="an engine manifest of manifest_version 1; this release reads "
                                             "manifest_version 2; rebuild the engine"):
        read_engine_manifest(engine)


def _tensor(datatype, split=True):
    """One I/O tensor of the inspector JSON: TensorRT 11.x splits 'Datatype' and 'Format'; 10.x joins them."""
    if split:
        return {"Name": "t", "Dimensions": [1, 16, 64, 64], "Datatype": datatype, "Format": "(NHWC) Channel major"}
    return {"Name": "t", "Dimensions": [1, 16, 64, 64], "Format/Datatype": f"Channel major {datatype} format"}


def test_inspector_json_of_tensorrt_11_and_10():
    v11 = {"Layers": [
        {"Name": "c1", "LayerType": "correlation", "Inputs": [_tensor("Int8")], "Constants": [_tensor("Int8")],
         "Outputs": [_tensor("Float")], "Metadata": "[ONNX Layer: /ups.3/block1/conv/Conv][ONNX Layer: q]"},
        {"Name": "c2", "LayerType": "correlation", "Inputs": [_tensor("Half")], "Constants": [_tensor("Half")],
         "Outputs": [_tensor("Half")], "Metadata": "[ONNX Layer: /ups.12/block1/conv/Conv]"},
        {"Name": "n", "LayerType": "kgen", "Inputs": [_tensor("Float")], "Outputs": [_tensor("Float")]},
        "a layer described without detail"]}
    summary = precision_summary(records_from_inspector(json.dumps(v11)))
    assert summary["convolution_precisions"] == {"/ups.3/block1/conv/Conv": "int8", "/ups.12/block1/conv/Conv": "fp16"}
    assert summary["layers_by_output"] == {"fp16": 1, "fp32": 2}  # by output, the INT8 convolution looks FP32
    v10 = {"Layers": [{"Name": "conv", "LayerType": "CaskConvolution", "Inputs": [_tensor("Int8", split=False)],
                       "Outputs": [_tensor("FP32", split=False)], "Weights": {"Type": "Int8", "Count": 2304},
                       "Metadata": "[ONNX Layer: /downs.2/skip/Conv]"}]}
    assert precision_summary(records_from_inspector(v10))["convolution_precisions"] == {"/downs.2/skip/Conv": "int8"}
    assert tensor_precision("Half") == "fp16" and tensor_precision("BFloat16 linear") == "bf16"


def test_real_tensorrt_rtx_layer_dump():
    int8 = precision_summary(records_from_layer_dump(DUMPS[0]))
    assert int8["convolution_precisions"] == {
        "/init_conv/Conv": "int8",  # Int8 input and weights, Float output: the dequantization is fused in
        "/fusion/attention.0/spatial/Conv": "fp32",
        "/fusion/head/conv1/Conv": "fp32"}  # a convolution fused with its neighbours (runtime_fusion)
    # the 'signal' pseudo-layer (a cross-stream event: no inputs, outputs or kernel) is counted apart
    assert int8["layers"] == 3 and int8["synchronisation_layers"] == 1 and int8["layers_by_output"] == {"fp32": 3}
    assert int8["layers_by_type"] == {"correlation": 2, "runtime_fusion": 1}
    fp16 = precision_summary(records_from_layer_dump(DUMPS[1]))
    assert fp16["convolution_precisions"] == {"/downs.0/block1/conv/Conv": "fp16",
                                              "/fusion/attention.4/channel/channel.3/Conv": "fp16"}
    assert records_from_layer_dump("no dump in this log") == []


def _conv_graph():
    """Three convolutions: Q/DQ on data and weights (int8), float16 weights (fp16), plain float (fp32)."""
    from onnx import TensorProto, helper, numpy_helper

    w32 = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w32")
    w16 = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float16), "w16")
    wq = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.int8), "wq")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s"], ["xd"], name="dq"),
             helper.make_node("DequantizeLinear", ["wq", "s"], ["wd"], name="wdq"),
             helper.make_node("Conv", ["xd", "wd"], ["a"], name="/downs.1/conv/Conv"),
             helper.make_node("Conv", ["a", "w32"], ["b"], name="/ups.12/block1/conv/Conv"),
             helper.make_node("Cast", ["b"], ["b16"], to=TensorProto.FLOAT16, name="cast"),
             helper.make_node("Conv", ["b16", "w16"], ["y"], name="/fusion/head/conv1/Conv")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 1, 8, 8])
    return helper.make_graph(nodes, "g", [x], [y], [w32, w16, wq, scale])


def test_expected_convolutions_and_the_precision_check():
    expected = expected_convolutions(_conv_graph())
    assert expected == {"/downs.1/conv/Conv": "int8", "/ups.12/block1/conv/Conv": "fp32",
                        "/fusion/head/conv1/Conv": "fp16"}
    good = {"convolution_precisions": dict(expected), "convolutions": {}}
    check_precision("int8-tensorrt", good, expected)
    unfused = {"convolution_precisions": {**expected, "/downs.1/conv/Conv": "fp32"}, "convolutions": {}}
    assert int8_fallbacks(unfused, expected) == ["/downs.1/conv/Conv"]  # the same values, only slower
    with pytest.raises(PrecisionMismatch, match="no convolution runs in int8"):
        check_precision("int8-tensorrt", unfused, expected)
    lower = {"convolution_precisions": {**expected, "/ups.12/block1/conv/Conv": "fp16"}, "convolutions": {}}
    with pytest.raises(PrecisionMismatch,
                       match=r"1 convolutions do not run as the graph says \(e.g. /ups.12/block1/conv"
                                                r"/Conv: fp16 instead of fp32"):
        check_precision("int8-tensorrt", lower, expected)
    lost = {"convolution_precisions": {"/downs.1/conv/Conv": "int8"}, "convolutions": {}}
    with pytest.raises(PrecisionMismatch, match="2 of the graph's 3 convolutions are not in the engine"):
        check_precision("int8-tensorrt", lost, expected)
    all_fp32 = {n: "fp32" for n in expected}
    with pytest.raises(PrecisionMismatch, match="asked to be fp16 but no convolution runs in fp16"):
        check_precision("fp16", {"convolution_precisions": all_fp32, "convolutions": {"fp32": 3}}, all_fp32)


def _fallen_back(total: int, fallen: int) -> tuple[dict, dict]:
    """A graph of `total` Q/DQ convolutions, each in a layer group of its own, whose first `fallen` TensorRT ran
    unfused in FP32."""
    expected = {f"/downs.{i}/conv/Conv": "int8" for i in range(total)}
    found = {n: "fp32" if i < fallen else "int8" for i, n in enumerate(expected)}
    return expected, {"convolution_precisions": found, "convolutions": {"fp32": fallen, "int8": total - fallen}}


def test_88_of_89_int8_convolutions_in_fp32_is_not_an_int8_engine():
    """Any number of FP32 fallbacks passed the check as long as one convolution ran in INT8."""
    expected, summary = _fallen_back(89, 88)
    refusal = (r"TensorRT runs 88 of its 89 INT8 \(Q/DQ\) convolutions unfused in FP32, 88 of them undeclared "
               r"\(declared: none\); .*--allow-int8-fallbacks.*: /downs.0/conv/Conv, /downs.1/conv/Conv, "
               r".*/downs.9/conv/Conv$")  # every name, sorted
    with pytest.raises(PrecisionMismatch, match=refusal):
        check_precision("int8-tensorrt", summary, expected)
    check_precision("int8-tensorrt", summary, expected, FallbackAllowance(count=88))
    with pytest.raises(PrecisionMismatch, match="88 of them undeclared"):
        check_precision("int8-tensorrt", summary, expected, FallbackAllowance(count=87))
    kept = FallbackAllowance(groups=tuple(f"downs.{i}" for i in range(80)), names=("/downs.80/conv/Conv",), count=7)
    check_precision("int8-tensorrt", summary, expected, kept)  # 80 kept groups, one named, seven counted
    with pytest.raises(PrecisionMismatch, match=r"8 of them undeclared .*: /downs.80/conv/Conv, "):
        check_precision("int8-tensorrt", summary, expected, FallbackAllowance(kept.groups, (), 7))


def test_fallbacks_of_a_real_layer_dump_pass_only_where_declared():
    """The real TensorRT for RTX dump, read as the engine of a graph with Q/DQ on all three convolutions: two of
    them ran in FP32."""
    summary = precision_summary(records_from_layer_dump(DUMPS[0]))
    expected = dict.fromkeys(summary["convolution_precisions"], "int8")
    with pytest.raises(PrecisionMismatch, match=r"runs 2 of its 3 INT8 \(Q/DQ\) convolutions unfused in FP32, 2 of "
                                                r"them undeclared \(declared: none\); .*: "
                                                r"/fusion/attention.0/spatial/Conv, /fusion/head/conv1/Conv$"):
        check_precision("int8-tensorrt", summary, expected)
    head = FallbackAllowance(groups=("fusion/head",))  # the graph's quantization plan kept fusion/head in FP32
    with pytest.raises(PrecisionMismatch, match=r"1 of them undeclared \(declared: layer groups kept FP32 "
                                                r"fusion/head\); .*: /fusion/attention.0/spatial/Conv$"):
        check_precision("int8-tensorrt", summary, expected, head)
    for names in (("fusion/attention.0",), ("/fusion/attention.0/spatial/Conv",)):  # a layer group or a node
        check_precision("int8-tensorrt", summary, expected, FallbackAllowance(head.groups, names))
    check_precision("int8-tensorrt", summary, expected, FallbackAllowance(count=2))


def test_allowed_fallbacks_from_the_command_line_and_recipes():
    from dmfnet_edge.targets import fallback_allowance

    assert fallback_allowance("fusion/attention.4, /ups.3/conv/Conv,2", "--allow-int8-fallbacks") == \
        FallbackAllowance(names=("fusion/attention.4", "/ups.3/conv/Conv"), count=2)
    assert fallback_allowance(3, "r.yaml: allowed_int8_fallbacks") == FallbackAllowance(count=3)
    assert fallback_allowance(["fusion/head"], "r.yaml") == FallbackAllowance(names=("fusion/head",))
    assert fallback_allowance(None, "x") == FallbackAllowance()
    for bad in ("1,2", ",", ""):
        with pytest.raises(InputError, match="at most one count"):
            fallback_allowance(bad, "--allow-int8-fallbacks")


def test_an_fp16_engine_of_tensorrt_11_passes_its_check():
    """TensorRT 11.x inspector output (Datatype and Format apart): the 10.x-only parser counted every layer as
    'unknown' and refused every FP16 and INT8 engine."""
    layers = [{"Name": f"c{i}", "LayerType": "correlation", "Inputs": [_tensor("Half")],
               "Constants": [_tensor("Half")], "Outputs": [_tensor("Half")],
               "Metadata": f"[ONNX Layer: /downs.{i}/conv/Conv]"} for i in range(3)]
    summary = precision_summary(records_from_inspector({"Layers": layers}))
    check_precision("fp16", summary, {f"/downs.{i}/conv/Conv": "fp16" for i in range(3)})
    assert summary["convolutions"] == {"fp16": 3}


def test_tensorrt_only_graph_carries_plugin_nodes(tmp_path, capsys):
    assert export_main(["onnx", "--model", "tiny", "-o", str(tmp_path), "--size", "64", "--trt-plugins"]) == 0
    path = tmp_path / "dmfnet-tiny-fp32-trtplugins.onnx"
    graph = onnx.load(str(path))
    plugins = [n for n in graph.graph.node if n.op_type == "DmfnetPixelAttentionFuse"]
    assert len(plugins) == 5  # one cross-modal attention per scale
    attrs = {a.name: a.s.decode() for a in plugins[0].attribute}
    assert attrs == {"plugin_namespace": "dmfnet", "plugin_version": "1"} and len(plugins[0].input) == 6
    manifest = read_manifest(path)
    assert manifest.onnxruntime_runnable is False and len(manifest.plugins) == 5
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
        def get(k):
            return np.frombuffer(self.memory.device[self.addresses[k]][:n].tobytes(), np.float32)
        out = (get("mri") + get("other")) / 2
        self.memory.device[self.addresses["fused"]][:n] = np.frombuffer(out.tobytes(), np.uint8)
        return True


def test_runner_buffers_addresses_graph_and_contract(tmp_path):
    shape = (2, 1, 96, 96)
    memory = FakeMemory()
    context = FakeContext(memory, shape)
    tensors = [IOTensor(n, n != "fused", np.dtype(np.float32), shape) for n in ("mri", "other", "fused")]
    runner = TensorRTRunner(tensors, context, memory, read_engine_manifest(_engine(tmp_path, RTX_AOT)))
    assert set(context.addresses) == {"mri", "other", "fused"} and len(set(context.addresses.values())) == 3
    assert runner.graph == "graph" and context.streams == [7]  # the warm-up ran; capture only records
    rng = np.random.default_rng(0)
    mri, other = (rng.random((3, 1, 64, 80), dtype=np.float32) for _ in range(2))  # smaller, odd batch
    out = runner.fuse(mri, other)
    assert out.shape == (3, 1, 64, 80) and np.allclose(out, (mri + other) / 2)
    assert memory.launches == 2  # 3 pairs in static batches of 2
    with pytest.raises(Exception, match="--dynamic"):
        runner.fuse(np.zeros((1, 1, 112, 96), np.float32), np.zeros((1, 1, 112, 96), np.float32))


def test_runner_shared_by_threads_matches_serial_use(tmp_path):
    shape = (1, 1, 64, 64)
    memory = FakeMemory()
    tensors = [IOTensor(n, n != "fused", np.dtype(np.float32), shape) for n in ("mri", "other", "fused")]
    manifest = read_engine_manifest(_engine(tmp_path, RTX_AOT))
    runner = TensorRTRunner(tensors, FakeContext(memory, shape), memory, manifest)
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
    assert export_main(["build", "--onnx", str(onnx_path), "--out", str(tmp_path / "engines"), "--toolchain",
                        "tensorrt", "--timing-cache", str(tmp_path / "tc.bin")]) == 0
    engine = next((tmp_path / "engines").glob("*.engine"))
    from dmfnet_edge.models.checkpoint import build_model
    from dmfnet_edge.runtime.torch_backend import TorchRunner

    mri = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    out = TensorRTRunner.load(engine).fuse(mri, mri)
    assert np.abs(out - TorchRunner(build_model("tiny")).fuse(mri, mri)).max() < 1e-3


def test_an_engine_profile_must_fit_the_pixel_budget(monkeypatch):
    """A static profile's whole batch, a dynamic profile's largest image: checked before TensorRT plans memory."""
    from dmfnet_edge.engines.trt_builder import check_pixel_budget
    from dmfnet_edge.errors import InputError

    def profile(low, high):
        return {"min": low, "opt": high, "max": high}

    check_pixel_budget(profile([1, 1, 1024, 1024], [1, 1, 1024, 1024]), None)  # exactly the default budget
    check_pixel_budget(profile([1, 1, 256, 256], [16, 1, 512, 512]), "1x256x256:8x256x256:16x512x512")  # cut
    with pytest.raises(InputError, match=r"the graph's static input 1x1000000x1000000: 1,000,000,000,000 pixels per "
                                         "call exceed the pixel budget of 1,048,576"):
        check_pixel_budget(profile([1, 1, 10**6, 10**6], [1, 1, 10**6, 10**6]), None)
    with pytest.raises(InputError, match="--shapes 4x512x512: 1,048,576 pixels per call"):
        monkeypatch.setenv("DMFNET_MAX_PIXELS", "1000000")
        check_pixel_budget(profile([4, 1, 512, 512], [4, 1, 512, 512]), "4x512x512")
    with pytest.raises(InputError, match="--shapes 1x64x64:1x64x64:1x1024x1024: 1,048,576 pixels per image"):
        check_pixel_budget(profile([1, 1, 64, 64], [1, 1, 1024, 1024]), "1x64x64:1x64x64:1x1024x1024")


def test_a_signal_during_a_native_call_waits_for_it_and_then_takes_its_course():
    """TensorRT swallows what a handler raises inside its callbacks: inside the block a signal is only recorded
    (and the progress monitor then answers 'stop'); it is raised under the earlier handler once the block ends."""
    import os
    import signal
    from types import SimpleNamespace

    from dmfnet_edge.engines.cancel import progress_monitor, signals_deferred

    class Monitor:
        def __init__(self) -> None:
            pass

    fake_trt = SimpleNamespace(IProgressMonitor=Monitor)
    calls = []

    def terminate(signum, frame):  # as the CLI's handler does
        calls.append(signum)
        raise KeyboardInterrupt

    before, sigint = signal.signal(signal.SIGTERM, terminate), signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt), signals_deferred() as pending:
            monitor = progress_monitor(fake_trt, pending)
            assert monitor.step_complete("build", 0) is True
            os.kill(os.getpid(), signal.SIGTERM)
            assert pending.received == [signal.SIGTERM] and not calls  # recorded, not acted on yet
            assert monitor.step_complete("build", 1) is False  # the build is cancelled
        assert calls == [signal.SIGTERM]  # then delivered to the handler installed before
        with signals_deferred():
            pass
        assert calls == [signal.SIGTERM] and signal.getsignal(signal.SIGINT) is sigint  # both put back
    finally:
        signal.signal(signal.SIGTERM, before)
    assert progress_monitor(SimpleNamespace(), pending) is None  # a TensorRT without progress monitors


def test_a_graph_with_its_data_beside_it_builds(tmp_path, tensorrt_rtx):
    """External data inside the graph's folder is what the checked loader lets through, and TensorRT's parser
    finds it from the checked bytes and the graph's real path (the build reads the graph through a link)."""
    import hashlib

    assert export_main(["onnx", "--model", "tiny", "-o", str(tmp_path), "--size", "64"]) == 0
    source = tmp_path / "dmfnet-tiny-fp32.onnx"
    folder = tmp_path / "graph"
    folder.mkdir()
    onnx.save_model(onnx.load(str(source)), str(folder / "g.onnx"), save_as_external_data=True,
                    location="g.onnx.data", size_threshold=1024)
    meta = json.loads(source.with_name(source.name + ".json").read_text())
    meta.update(onnx_file="g.onnx", onnx_sha256=hashlib.sha256((folder / "g.onnx").read_bytes()).hexdigest())
    (folder / "g.onnx.json").write_text(json.dumps(meta))
    (tmp_path / "g.onnx").symlink_to(folder / "g.onnx")
    (tmp_path / "g.onnx.json").symlink_to(folder / "g.onnx.json")
    assert export_main(["build", "--onnx", str(tmp_path / "g.onnx"), "--out", str(tmp_path / "engines"),
                        "--toolchain", "tensorrt-rtx", "--compute-capability", "sm86"]) == 0
    engine = next((tmp_path / "engines").glob("*.engine"))
    assert read_engine_manifest(engine).layer_precisions.convolutions == {"fp32": 111}


# ---- build settings without TensorRT: weight stripping, plugins, the timing cache before and after ---------------

class _FakeConfig:
    """The parts of a builder config and builder `configure_builder` touches, recording what was set."""

    def __init__(self):
        self.flags, self.targets, self.shapes = [], [], {}
        self.num_compute_capabilities = 0

    def set_memory_pool_limit(self, pool, size):
        self.workspace = size

    def set_flag(self, flag):
        self.flags.append(flag)

    def set_compute_capability(self, capability, index):
        self.targets.append(capability)

    def create_optimization_profile(self):
        return self

    def set_shape(self, name, low, opt, high):
        self.shapes[name] = (low, opt, high)

    def add_optimization_profile(self, profile):
        pass


def _fake_toolchain(flavour):
    from types import SimpleNamespace

    from dmfnet_edge.runtime.toolchain import FLAVOURS, Toolchain

    flags = SimpleNamespace(STRIP_PLAN="STRIP_PLAN", REFIT="REFIT", REFIT_IDENTICAL="REFIT_IDENTICAL")
    trt = SimpleNamespace(__version__="1.7.1.116" if flavour == "tensorrt-rtx" else "11.4.0", BuilderFlag=flags,
                          MemoryPoolType=SimpleNamespace(WORKSPACE="workspace"),
                          ProfilingVerbosity=SimpleNamespace(DETAILED="detailed"),
                          ComputeCapability=SimpleNamespace(SM86="SM86"))
    return Toolchain(FLAVOURS[flavour], trt)


def _request(**changes):
    from dmfnet_edge.engines.engine_cache import PlanRequest
    from tests.conftest import onnx_manifest

    shapes = {"min": [1, 1, 64, 64], "opt": [1, 1, 64, 64], "max": [1, 1, 64, 64]}
    base = dict(onnx=onnx_manifest(), toolchain=ToolchainUsed("tensorrt-rtx", "1.7.1.116"), targets=("sm86",),
                device=None, profile=shapes, opt_level=3, workspace_mib=2048, strip_weights=False, timing_cache=None,
                timing_cache_locked=False, plugins=())
    return PlanRequest(**{**base, **changes})


@pytest.mark.parametrize("flavour, flags", [("tensorrt-rtx", ["STRIP_PLAN", "REFIT"]),
                                            ("tensorrt", ["STRIP_PLAN", "REFIT_IDENTICAL"])])
def test_strip_weights_sets_the_flavours_flags(flavour, flags):
    from dmfnet_edge.engines.trt_builder import configure_builder

    config = _FakeConfig()
    configure_builder(_fake_toolchain(flavour), config, config, _request(strip_weights=True))
    assert config.flags == flags and config.builder_optimization_level == 3 and config.workspace == 2048 << 20
    plain = _FakeConfig()
    configure_builder(_fake_toolchain(flavour), plain, plain, _request())
    assert plain.flags == [] and plain.shapes["mri"] == ([1, 1, 64, 64],) * 3


def test_strip_weights_is_refused_before_the_build_without_a_gpu(monkeypatch):
    """Without a GPU every REFIT/STRIP_PLAN build failed inside TensorRT for RTX's code generator (MyelinCheckException
    CHECK(status == CUDA_SUCCESS)); the GPU is asked first."""
    from dmfnet_edge.engines import trt_builder

    options = trt_builder.BuildOptions(toolchain="tensorrt-rtx", strip_weights=True)
    monkeypatch.setattr(trt_builder, "gpu_visible", lambda: (False, "cudaGetDeviceCount: cudaErrorNoDevice"))
    with pytest.raises(EnvironmentProblem, match=r"--strip-weights: no GPU is visible here \(cudaGetDeviceCount: "
                                                 r"cudaErrorNoDevice\); tensorrt-rtx 1.7.1.116 compiles"):
        trt_builder.check_strip_weights(_fake_toolchain("tensorrt-rtx"), options)
    trt_builder.check_strip_weights(_fake_toolchain("tensorrt-rtx"), trt_builder.BuildOptions())  # not asked
    monkeypatch.setattr(trt_builder, "gpu_visible", lambda: (True, "1 CUDA device(s)"))
    trt_builder.check_strip_weights(_fake_toolchain("tensorrt-rtx"), options)


def test_gpu_visible_answers_without_a_driver(monkeypatch):
    from types import SimpleNamespace

    from dmfnet_edge.engines import trt_builder

    monkeypatch.setattr(trt_builder, "cudart", lambda: SimpleNamespace(cudaGetDeviceCount=lambda: (35, None)))
    assert trt_builder.gpu_visible() == (False, "cudaGetDeviceCount: 35")

    def missing():
        raise OSError("libcudart.so: cannot open shared object file")

    monkeypatch.setattr(trt_builder, "cudart", missing)
    assert trt_builder.gpu_visible()[0] is False
    monkeypatch.setattr(trt_builder, "cudart", lambda: SimpleNamespace(cudaGetDeviceCount=lambda: (0, 2)))
    assert trt_builder.gpu_visible() == (True, "2 CUDA device(s)")


def test_plugin_libraries_are_regular_files_hashed_into_the_key(tmp_path):
    import os

    from dmfnet_edge.engines.trt_builder import _load_plugins, plugin_records
    from tests.conftest import onnx_manifest

    library = tmp_path / "libplugins.so"
    library.write_bytes(b"not really a library")
    trt = _fake_toolchain("tensorrt")
    (record,) = plugin_records(trt, onnx_manifest(), [library])
    assert record.library == "libplugins.so" and len(record.sha256) == 64  # by name: found beside the engine
    plugin_graph = onnx_manifest(tensorrt_plugins=[{"op": "DmfnetPixelAttentionFuse", "name": "p",
                                                    "namespace": "dmfnet", "version": "1"}])
    records = plugin_records(trt, plugin_graph, [library])
    assert [r.library for r in records] == ["libplugins.so"]  # the library provides the op: not embedded as well
    os.mkfifo(tmp_path / "fifo.so")
    for bad in (tmp_path / "fifo.so", tmp_path / "missing.so", tmp_path):
        with pytest.raises(InputError, match="not a regular file"):
            plugin_records(trt, onnx_manifest(), [bad])
    with pytest.raises(InputError, match=r"--plugin-lib .*libplugins.so: cannot be loaded \(.*\); give a plugin"):
        _load_plugins(onnx_manifest(), [library])  # ctypes' OSError was a traceback
    with pytest.raises(InputError, match="has no plugin layers"):
        plugin_records(_fake_toolchain("tensorrt-rtx"), onnx_manifest(), [library])


def test_the_timing_cache_is_recorded_before_and_after_the_build(tmp_path):
    """The manifest's one timing_cache_sha256 was the cache before the build, although the build then wrote the
    cache back with new entries: both are recorded, and the one before keys the plan."""
    import hashlib

    from dmfnet_edge.engines.trt_builder import BuildOptions, _settings

    path = tmp_path / "timing.cache"
    before, after = b"cache before", b"cache before + new tactics"
    request = _request(toolchain=ToolchainUsed("tensorrt", "11.4.0"), timing_cache=before)
    settings = _settings(request, BuildOptions(timing_cache=path), 2.0, after)
    assert settings["timing_cache_sha256_before_build"] == hashlib.sha256(before).hexdigest() \
        == request.settings.timing_cache_sha256
    assert settings["timing_cache_sha256_after_build"] == hashlib.sha256(after).hexdigest()
    assert settings["cache_key"] == request.settings.key() and settings["strip_weights"] is False
    locked = _request(toolchain=ToolchainUsed("tensorrt", "11.4.0"), timing_cache=before, timing_cache_locked=True)
    kept = _settings(locked, BuildOptions(timing_cache=path, lock_timing_cache=True), 2.0, None)
    assert kept["timing_cache_sha256_after_build"] == kept["timing_cache_sha256_before_build"]
    assert locked.settings.key() != request.settings.key()
    assert "timing_cache" not in _settings(_request(), BuildOptions(), 1.0, None)  # TensorRT for RTX: none
    in_memory = _request(toolchain=ToolchainUsed("tensorrt", "11.4.0"), timing_cache=b"")  # no --timing-cache
    assert "timing_cache_sha256_after_build" not in _settings(in_memory, BuildOptions(), 1.0, None)


def test_a_manifest_gives_back_the_settings_of_its_request(tmp_path):
    from dmfnet_edge.engines.trt_builder import BuildOptions, _settings
    from tests.conftest import onnx_manifest

    request = _request(plugins=(PluginUsed(library="/opt/lib.so", sha256="ef" * 32),))
    target = BuildTarget("tensorrt-rtx", "1.7.1.116", ("sm86",))
    manifest = build_engine_manifest("m.engine", b"plan", tmp_path / "m.onnx", onnx_manifest(), target,
                                     _settings(request, BuildOptions(), 1.0, None), LAYERS,
                                     [{"library": "/elsewhere/lib.so", "sha256": "ef" * 32}])
    recorded = type(manifest).decode(manifest.encode(), "test")
    assert recorded.plan_settings == request.settings and recorded.build.cache_key == request.settings.key()


# ---- inspect: the engine against its manifest, loaded through fakes (no GPU here) -------------------------------

def _inspected(tmp_path, monkeypatch, facts):
    """An engine with a TensorRT for RTX plan tag and its manifest, 'loaded' with the given facts."""
    import hashlib

    from dmfnet_edge.engines import engine_info

    engine = _engine(tmp_path, RTX_AOT)
    plan = b"vtrt" + bytes(60)
    engine.write_bytes(plan)
    meta = json.loads(engine_manifest_path(engine).read_text())
    meta.update(engine_sha256=hashlib.sha256(plan).hexdigest(), engine_bytes=len(plan))
    meta["layer_precisions"]["synchronisation_layers"] = 0
    engine_manifest_path(engine).write_text(json.dumps(meta))
    monkeypatch.setattr(engine_info, "_cannot_load", lambda meta: None)
    monkeypatch.setattr(engine_info, "engine_facts", lambda meta, plan, name: facts)
    return engine_info.inspect_engine(engine)


AS_BUILT = {"layers": 120, "convolution_precisions": {"/c/Conv": "fp16"}, "profile": {
    "mri": [[1, 1, 256, 256]] * 3, "other": [[1, 1, 256, 256]] * 3}}


@pytest.mark.parametrize("change, refusal", [
    ({}, None),
    ({"convolution_precisions": {"/c/Conv": "fp32"}}, r"differs from its manifest in 1 convolution precisions "
                                                       r"\(e.g. /c/Conv\)"),
    ({"layers": 121}, r"in 121 layers \(manifest: 120\)"),
    ({"profile": {"mri": [[1, 1, 64, 64]] * 3, "other": [[1, 1, 256, 256]] * 3}}, r"input mri's profile"),
])
def test_inspect_holds_a_loaded_engine_to_its_manifest(tmp_path, monkeypatch, change, refusal):
    from dmfnet_edge.engines.engine_info import EngineMismatch

    facts = {**AS_BUILT, **change}
    if refusal is None:
        report = _inspected(tmp_path, monkeypatch, facts)
        assert report.loaded and report.checks[-1].startswith("loaded: the engine's layers and profile match")
        assert report.to_dict()["manifest"]["manifest_version"] == 2
        return
    with pytest.raises(EngineMismatch, match=refusal):
        _inspected(tmp_path, monkeypatch, facts)


class _Logger:
    WARNING = 2

    def __init__(self, level):
        self.level = level


def _fake_rtx(version, engine):
    from types import SimpleNamespace

    from dmfnet_edge.runtime.toolchain import FLAVOURS, Toolchain

    runtime = SimpleNamespace(deserialize_cuda_engine=lambda plan: engine)
    trt = SimpleNamespace(__version__=version, Runtime=lambda logger: runtime, Logger=_Logger,
                          LayerInformationFormat=SimpleNamespace(JSON="json"))
    toolchain = Toolchain(FLAVOURS["tensorrt-rtx"], trt)
    toolchain.check_engine = lambda runtime, plan, name: None  # TensorRT for RTX's validity: a GPU question
    return toolchain


def test_inspect_reads_the_loaded_engine_through_its_inspector(tmp_path, monkeypatch):
    """What `engine_facts` asks of TensorRT, against fakes: the version, deserialisation, the inspector's JSON
    (11.x schema; the 'signal' event is not a layer) and the profile of each input."""
    from types import SimpleNamespace

    from dmfnet_edge.engines import engine_info

    layers = {"Layers": [{"Name": "c", "LayerType": "correlation", "Inputs": [_tensor("Half")],
                          "Constants": [_tensor("Half")], "Outputs": [_tensor("Half")],
                          "Metadata": "[ONNX Layer: /c/Conv]"},
                         {"Name": "s", "LayerType": "signal", "Inputs": [], "Outputs": []}]}
    engine = SimpleNamespace(
        create_engine_inspector=lambda: SimpleNamespace(get_engine_information=lambda fmt: json.dumps(layers)),
        get_tensor_profile_shape=lambda name, index: ((1, 1, 256, 256),) * 3)
    meta = read_engine_manifest(_engine(tmp_path, RTX_AOT))
    monkeypatch.setattr(engine_info, "load_toolchain", lambda flavour: _fake_rtx("1.7.1.116", engine))
    assert engine_info.engine_facts(meta, b"vtrt", "m.engine") == {
        "layers": 1, "convolution_precisions": {"/c/Conv": "fp16"},
        "profile": {"mri": [[1, 1, 256, 256]] * 3, "other": [[1, 1, 256, 256]] * 3}}
    monkeypatch.setattr(engine_info, "load_toolchain", lambda flavour: _fake_rtx("1.7.1.116", None))
    with pytest.raises(ModelFileError, match="could not deserialise the engine on this GPU"):
        engine_info.engine_facts(meta, b"vtrt", "m.engine")
    monkeypatch.setattr(engine_info, "load_toolchain", lambda flavour: _fake_rtx("1.8.0", engine))
    with pytest.raises(ModelFileError, match="rebuild needed: m.engine was built with tensorrt-rtx 1.7.1.116, this is "
                                             "tensorrt-rtx 1.8.0"):
        engine_info.engine_facts(meta, b"vtrt", "m.engine")
