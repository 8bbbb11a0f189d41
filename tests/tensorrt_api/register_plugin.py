"""Register the project's plugin under the real TensorRT 11.4 `tensorrt.plugin` (run with the stub libnvinfer on
LD_LIBRARY_PATH). The stub's C++ plugin registry is NULL, so a small Python registry stands in for it; the
validators that check the decorated functions are TensorRT's own. Prints one JSON object.
"""

import json
from typing import Tuple

import stub_registry

registry = stub_registry.registry  # tensorrt importable now, the Python plugin registry in place
import tensorrt.plugin as trtp  # noqa: E402
from tensorrt.plugin import _lib  # noqa: E402

from dmfnet_edge.contract import PLUGIN_ID  # noqa: E402
from dmfnet_edge.engines import qdp_plugin  # noqa: E402

qdp_plugin.register()
definition = _lib.QDP_REGISTRY[PLUGIN_ID]


def refused(declare) -> str:
    """The validators' message for a declaration they refuse ('' if they accept it)."""
    try:
        declare()
    except ValueError as exc:
        return str(exc)
    return ""


def untyped_autotune():
    """The autotune declaration as it was before: `-> list` instead of List[AutoTuneCombination]."""
    desc = trtp.TensorDesc

    def shape(x: desc) -> desc:
        return x.like()

    trtp.register("dmfnet_test::Untyped")(shape)

    def formats(x: desc, outputs: Tuple[desc]) -> list:
        return []

    trtp.autotune("dmfnet_test::Untyped")(formats)


def string_annotations():
    """Signatures whose annotations are strings (what `from __future__ import annotations` produces)."""

    def shape(x: "trtp.TensorDesc") -> "trtp.TensorDesc":
        return x.like()

    trtp.register("dmfnet_test::Strings")(shape)


print(json.dumps({
    "registered": sorted(f"{ns}::{name}" for name, ns in registry.creators),
    "inputs": definition.input_tensor_names, "outputs": definition.num_outputs,
    "aot": definition.aot_impl_func is not None, "autotune": definition.autotune_func is not None,
    "refused_untyped_autotune": refused(untyped_autotune), "refused_string_annotations": refused(string_annotations),
}))
