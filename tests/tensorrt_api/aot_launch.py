"""Drive the project's AOT plugin through TensorRT 11.4's own `tensorrt.plugin` plugin class, in the order a build
calls it, for concrete input shapes; print what TensorRT would launch. Run with the stub libnvinfer on
LD_LIBRARY_PATH (see tests/engines/test_tensorrt_api.py):

    python aot_launch.py SPEC.json      SPEC: [{"fields": [[name, onnx_type, value], ...], "inputs": [shape, ...]}]

For each spec: the plugin is created by its registered creator from the node's attributes (as the ONNX parser
passes them: every attribute but plugin_namespace and plugin_version), then asked, as TensorRT asks it, for its
output types, its output shapes, its type/format combinations, its tactics, its launch parameters and extra
arguments, and its kernel. Printed (one JSON object): per spec the output shape, the combinations, the kernel
name, the launch (grid, block, shared memory) and the extra arguments with their types, and the PTX once.

The native expression type and two native carriers of it are replaced by Python ones, because they can only be
made by TensorRT's libraries: `trt.IDimensionExpr` (an expression: here one that holds an int, made by a Python
expression builder that evaluates every operation, as TensorRT does for a concrete shape), `trt.DimsExprs` (the
output shape) and `SymExprImpl` (a launch parameter or extra argument handed to TensorRT). Everything else
(argument order, attributes, type checks, the kernel map) is TensorRT's own code.
"""

import json
import sys
from types import SimpleNamespace

import numpy as np
import stub_registry

registry = stub_registry.registry  # tensorrt importable now, the Python plugin registry in place
import tensorrt as trt  # noqa: E402
import tensorrt.plugin  # noqa: E402, F401
from tensorrt.plugin import _tensor  # noqa: E402

from dmfnet_edge.contract import PLUGIN_NAMESPACE, PLUGIN_OP  # noqa: E402
from dmfnet_edge.engines import qdp_plugin  # noqa: E402

OPS = {
    trt.DimensionOperation.SUM: lambda a, b: a + b,
    trt.DimensionOperation.SUB: lambda a, b: a - b,
    trt.DimensionOperation.PROD: lambda a, b: a * b,
    trt.DimensionOperation.MAX: max,
    trt.DimensionOperation.MIN: min,
    trt.DimensionOperation.FLOOR_DIV: lambda a, b: a // b,
    trt.DimensionOperation.CEIL_DIV: lambda a, b: -(-a // b),
    trt.DimensionOperation.EQUAL: lambda a, b: int(a == b),
    trt.DimensionOperation.LESS: lambda a, b: int(a < b),
}


class Dim:
    """An IDimensionExpr of a concrete shape."""

    def __init__(self, value: int):
        self.value = int(value)

    def is_constant(self) -> bool:
        return True

    def get_constant_value(self) -> int:
        return self.value

    def is_size_tensor(self) -> bool:
        return False


class ExprBuilder:
    def constant(self, value):
        return Dim(value)

    def operation(self, op, first, second):
        return Dim(OPS[op](first.value, second.value))


class SymExprRecord:
    """What a SymExprImpl hands to TensorRT: the value and its argument type."""

    def __init__(self, expr):
        types = {_tensor.SymInt32: "int32", _tensor.SymInt16: "int16", _tensor.SymInt8: "int8"}
        self.dtype = types.get(type(expr))
        if self.dtype is None:
            raise ValueError(f"Unknown SymIntExpr type {type(expr)}")  # as SymExprImpl refuses it
        self.value = expr._expr.value


class SymExprSetter:
    def __init__(self):
        self.nbSymExprs, self.args = 0, {}

    def __setitem__(self, index, record):
        self.args[index] = record


trt.IDimensionExpr = Dim
trt.DimsExprs = lambda n: [None] * n
_tensor.SymExprImpl = SymExprRecord


def plugin_fields(fields):
    """The PluginFields the ONNX parser makes of a node's attributes."""
    made = []
    for name, kind, value in fields:
        if kind in ("INT", "INTS"):
            made.append(trt.PluginField(name, np.array(np.atleast_1d(value), np.int32), trt.PluginFieldType.INT32))
        elif kind in ("FLOAT", "FLOATS"):
            made.append(trt.PluginField(name, np.array(np.atleast_1d(value), np.float32),
                                        trt.PluginFieldType.FLOAT32))
        else:
            made.append(trt.PluginField(name, str(value).encode(), trt.PluginFieldType.CHAR))
    return trt.PluginFieldCollection(made)


def tensor_desc(shape):
    desc = trt.DynamicPluginTensorDesc()
    desc.desc.dims = trt.Dims(shape)
    desc.desc.type = trt.float32
    desc.desc.format = trt.TensorFormat.LINEAR
    desc.min = desc.opt = desc.max = trt.Dims(shape)
    return desc


def drive(creator, spec):
    shapes = spec["inputs"]
    plugin = creator.create_plugin(PLUGIN_OP, PLUGIN_NAMESPACE, plugin_fields(spec["fields"]), trt.TensorRTPhase.BUILD,
                                   trt.QuickPluginCreationRequest.UNKNOWN)
    output_types = plugin.get_output_data_types([trt.float32] * len(shapes), [len(s) for s in shapes])
    builder = ExprBuilder()
    _tensor.SymIntExpr._exprBuilder = builder  # the input dimensions as the parser's builder would make them
    dims = [[_tensor.SymIntExpr(d) for d in shape] for shape in shapes]
    out_shapes = [[d.value for d in exprs] for exprs in plugin.get_output_shapes(dims, [], builder)]
    in_out = [tensor_desc(s) for s in shapes] + [tensor_desc(s) for s in out_shapes]
    supported = plugin.get_supported_format_combinations(in_out, len(shapes))
    combinations = [[str(t) for t in c.types] for a in plugin.autotune_combs for c in a._get_combinations()]
    plugin.configure_plugin(in_out[:len(shapes)], in_out[len(shapes):])
    tactics = plugin.get_valid_tactics()
    plugin.set_tactic(tactics[0] if tactics else 0)
    launch, setter = SimpleNamespace(), SymExprSetter()
    plugin.get_launch_params(dims, in_out, len(shapes), launch, setter, builder)
    name, ptx = plugin.get_kernel([d.desc for d in in_out[:len(shapes)]], [d.desc for d in in_out[len(shapes):]])
    return {"output_types": [str(t) for t in output_types], "output_shapes": out_shapes,
            "supported": len(supported), "io": len(in_out), "combinations": combinations,
            "kernel": name.decode() if isinstance(name, bytes) else name,
            "launch": {k: v.value for k, v in vars(launch).items()},
            "extras": [[setter.args[i].dtype, setter.args[i].value] for i in range(setter.nbSymExprs)]}, ptx


def main():
    with open(sys.argv[1]) as handle:
        specs = json.load(handle)
    qdp_plugin.register()
    creator = registry.get_creator(PLUGIN_OP, "1", PLUGIN_NAMESPACE)
    results, ptx = [], b""
    for spec in specs:
        result, ptx = drive(creator, spec)
        results.append(result)
    print(json.dumps({"launches": results, "ptx": ptx.decode() if isinstance(ptx, bytes) else ptx}))


if __name__ == "__main__":
    main()
