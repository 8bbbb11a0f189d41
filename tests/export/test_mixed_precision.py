"""GroupNorm accuracy rewrite of the exported graph, and the INT8 mixed-precision search."""

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dmfnet_edge.contract import layer_group
from dmfnet_edge.export.onnx_export import accurate_group_norms
from dmfnet_edge.export.quantize.mixed_precision import plan_mixed_precision


def _group_norm_graph(groups: int, affine: bool = False) -> onnx.ModelProto:
    """x (N, G, L) -> InstanceNormalization with unit scale / zero bias: the exporter's GroupNorm core."""
    scale = np.full(groups, 2.0 if affine else 1.0, np.float32)
    graph = helper.make_graph(
        [helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], name="/ups.3/block1/norm/IN",
                          epsilon=1e-5)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", groups, "L"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", groups, "L"])],
        [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(np.zeros(groups, np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_group_norm_rewrite_is_the_same_function_and_accurate_over_large_groups():
    # a full-resolution group of the edge UNet: 6 channels x 256 x 256 values, mean -1, std 3.4
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 2, 6 * 256 * 256)) * 3.4 - 1.0).astype(np.float32)
    x64 = x.astype(np.float64)
    exact = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    model = _group_norm_graph(2)
    assert accurate_group_norms(model) == 1 and accurate_group_norms(model) == 0  # idempotent
    assert [n.op_type for n in model.graph.node] == ["LayerNormalization"]
    assert {t.name for t in model.graph.initializer} == {"group_norm/unit_scale", "group_norm/zero_bias"}
    onnx.checker.check_model(model, full_check=True)
    assert np.abs(_run(model, x) - exact).max() < 2e-6
    small = rng.standard_normal((3, 2, 50)).astype(np.float32)  # and any other shape, batch included
    s64 = small.astype(np.float64)
    ref = (s64 - s64.mean(-1, keepdims=True)) / np.sqrt(s64.var(-1, keepdims=True) + 1e-5)
    assert np.abs(_run(model, small) - ref).max() < 1e-5


def test_group_norm_rewrite_leaves_an_affine_instance_norm_alone():
    model = _group_norm_graph(2, affine=True)
    assert accurate_group_norms(model) == 0 and model.graph.node[0].op_type == "InstanceNormalization"


def test_layer_groups_follow_the_module_tree():
    assert layer_group("/ups.12/block1/conv/Conv") == "ups.12"
    assert layer_group("/downs.0/emb/Gemm") == "downs.0"
    assert layer_group("/fusion/attention.4/pixel/Conv") == "fusion/attention.4"
    assert layer_group("/fusion/Resize") == "fusion"
    assert layer_group("/Concat_12") == "graph"


def _fake(sensitivity_db: dict[str, float], interaction_db: float = 0.0):
    """quantize_only/measure pair over a fake network whose group errors add as independent noise (MSE sum),
    optionally made worse by `interaction_db` when several groups are quantized together."""
    mse = {g: 255.0**2 * 10 ** (-db / 10) for g, db in sensitivity_db.items()}
    groups = {g: [f"/{g}/Conv"] for g in sensitivity_db}

    def quantize_only(names):
        return frozenset(n.strip("/").split("/")[0] for n in names)

    def measure(chosen):
        total = sum(mse[g] for g in chosen) * (10 ** (interaction_db / 10) if len(chosen) > 1 else 1)
        return 10 * math.log10(255.0**2 / total)

    return groups, quantize_only, measure


def test_mixed_precision_keeps_the_most_sensitive_groups():
    groups, quantize_only, measure = _fake({"a": 60, "b": 36, "c": 55, "d": 39, "e": 58})
    plan = plan_mixed_precision(groups, quantize_only, measure, target_db=40.0)
    assert plan["kept_fp32"] == ["b", "d"] and plan["quantized_groups"] == 3
    assert plan["probe_psnr_db"] >= 40.0 and list(plan["sensitivity_psnr_db"]) == ["b", "d", "c", "e", "a"]
    groups, quantize_only, measure = _fake({"a": 60, "b": 36, "c": 55, "d": 41, "e": 58})
    assert plan_mixed_precision(groups, quantize_only, measure, target_db=40.0)["kept_fp32"] == ["b"]


def test_mixed_precision_widens_the_plan_when_the_real_graph_falls_short():
    # predicted after keeping b, d: 52 dB; the "real" graph loses 13 dB more, so c is kept as well
    groups, quantize_only, measure = _fake({"a": 60, "b": 36, "c": 55, "d": 39, "e": 58}, interaction_db=13.0)
    plan = plan_mixed_precision(groups, quantize_only, measure, target_db=40.0)
    assert plan["kept_fp32"] == ["b", "d", "c"] and plan["probe_psnr_db"] >= 40.0


def test_mixed_precision_keeps_nothing_when_everything_is_accurate():
    groups, quantize_only, measure = _fake({"a": 70, "b": 66})
    plan = plan_mixed_precision(groups, quantize_only, measure, target_db=40.0)
    assert plan["kept_fp32"] == [] and plan["quantized_groups"] == 2


@pytest.mark.parametrize("target, kept, probe", [
    (50.0, ["b"], 50.0),  # at the best PSNR any INT8 plan reaches (only a quantized): a stays INT8
    (50.01, ["b", "a"], 99.0),  # just above it: only keeping every group meets it
    (99.0, ["b", "a"], 99.0),  # at the all-FP32 ceiling: met with every group kept
    (99.5, ["b", "a"], 99.0),  # above anything reachable: the search ends with every group kept, short of it
])
def test_mixed_precision_may_keep_everything(target, kept, probe):
    groups, quantize_only, measure = _fake({"a": 50, "b": 45})  # both quantized: 43.8 dB
    plan = plan_mixed_precision(groups, quantize_only, measure, target_db=target)
    assert plan["kept_fp32"] == kept and plan["quantized_groups"] == 2 - len(kept)
    assert plan["probe_psnr_db"] == probe and plan["target_probe_psnr_db"] == target
    assert plan["sensitivity_psnr_db"] == {"b": 45.0, "a": 50.0}
