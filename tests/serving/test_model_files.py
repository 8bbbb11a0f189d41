"""What a file to be packed for Triton is, from its own bytes (serving/model_files.py): the exported graphs are
ONNX graphs of the contract, read without loading them; random bytes, other files and other graphs are not."""

import io
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmfnet_edge.errors import InputError
from dmfnet_edge.runtime import shipped_onnx
from dmfnet_edge.serving.model_files import NotOnnx, check_engine_file, check_onnx_file, graph_io
from tests.conftest import needs

CONTRACT = ([("mri", 1, 4), ("other", 1, 4)], [("fused", 1, 4)])


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_shipped_graphs_are_graphs_of_the_contract(precision):
    path = shipped_onnx("edge", precision)
    with open(path, "rb") as handle:
        inputs, outputs = graph_io(handle, path.stat().st_size)
    assert (sorted(inputs), outputs) == CONTRACT
    check_onnx_file(path)


def test_a_graph_of_another_contract_is_refused(tmp_path):
    onnx = needs("onnx", "onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    path = tmp_path / "other.onnx"
    onnx.save(model, path)
    with pytest.raises(InputError, match=r"not of the contract .* it has x \(type 1, rank 2\), y"):
        check_onnx_file(path)


def test_other_files_are_not_graphs_or_engines(tmp_path):
    weights = shipped_onnx("edge", "fp32").with_name("dmfnet-edge.safetensors")
    random = tmp_path / "random.bin"
    random.write_bytes(os.urandom(4096))
    for path in (weights, Path(f"{shipped_onnx('edge', 'fp32')}.json"), random):
        with pytest.raises(InputError, match="not an ONNX graph"):
            check_onnx_file(path)
        with pytest.raises(InputError, match="not a TensorRT engine"):
            check_engine_file(path)
    rtx = tmp_path / "rtx.engine"
    rtx.write_bytes(b"vtrt" + bytes(60))
    with pytest.raises(InputError, match="a TensorRT for RTX engine"):
        check_engine_file(rtx)
    plan = tmp_path / "plan.engine"
    plan.write_bytes(b"ftrt" + bytes(60))
    check_engine_file(plan)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_are_never_taken_for_a_graph_of_the_contract(data):
    try:
        inputs, outputs = graph_io(io.BytesIO(data), len(data))
    except NotOnnx:
        return
    assert (sorted(inputs), outputs) != CONTRACT
