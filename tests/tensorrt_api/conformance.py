"""Every TensorRT attribute the project's TensorRT code uses, found in its source, looked up in a real module.

The TensorRT modules are scanned with `ast` for attribute chains rooted at the TensorRT module (`trt`, also
reached as `tc.trt` / `self.trt`), at `trtp` (tensorrt.plugin), or at variables whose names the project uses
for TensorRT objects only (`builder`, `config`, `network`, ...). Each chain is resolved step by step on the
real module or class; what does not resolve is reported as 'Class.attr.sub'.

Run inside a process where the module under test is importable (for TensorRT 11.4: the real bindings over a
stub libnvinfer; for TensorRT for RTX: `tensorrt_rtx` as installed).
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TENSORRT_SOURCES = ["dmfnet_edge/runtime/toolchain.py", "dmfnet_edge/engines/trt_builder.py",
                    "dmfnet_edge/engines/qdp_plugin.py", "dmfnet_edge/runtime/tensorrt_backend.py",
                    "dmfnet_edge/engines/engine_info.py", "dmfnet_edge/engines/build_targets.py"]
PLUGIN_SOURCES = {"dmfnet_edge/engines/qdp_plugin.py"}  # full TensorRT only: TensorRT for RTX has no plugins
MODULE_ROOTS = {"trt": (), "trtp": ("plugin",)}
OBJECT_TYPES = {"builder": "Builder", "config": "IBuilderConfig", "network": "INetworkDefinition",
                "parser": "OnnxParser", "engine": "ICudaEngine", "context": "IExecutionContext", "runtime": "Runtime",
                "profile": "IOptimizationProfile", "inspector": "EngineInspector", "cache": "ITimingCache",
                "refitter": "Refitter", "refit_parser": "OnnxParserRefitter"}
HOLDERS = {"self", "tc", "toolchain"}  # objects that hold the TensorRT module or objects as attributes


def _chain(node: ast.Attribute) -> tuple[str, ...] | None:
    parts: list[str] = []
    current: ast.AST = node
    while isinstance(current, ast.Attribute):
        parts.append(current.attr)
        current = current.value
    if not isinstance(current, ast.Name):
        return None
    parts.append(current.id)
    parts.reverse()
    while len(parts) > 1 and parts[0] in HOLDERS:
        parts = parts[1:]
    return tuple(parts)


def attribute_chains(source: str) -> set[tuple[str, ...]]:
    """All attribute chains with a TensorRT root, e.g. ('trt', 'ILogger', 'Severity', 'ERROR')."""
    chains = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain and len(chain) > 1 and (chain[0] in MODULE_ROOTS or chain[0] in OBJECT_TYPES):
                chains.add(chain)
    return chains


def unresolved(chains: set[tuple[str, ...]], module: Any) -> list[str]:
    """The chains that do not resolve on `module`, written as 'Class.attr' or 'module.attr.sub'."""
    missing = []
    for root, *rest in sorted(chains):
        if root in MODULE_ROOTS:
            obj, path, label = module, [*MODULE_ROOTS[root], *rest], ["tensorrt"]
        else:
            obj, path, label = module, [OBJECT_TYPES[root], *rest], []
        for attr in path:
            label.append(attr)
            if not hasattr(obj, attr):
                missing.append(".".join(label))
                break
            obj = getattr(obj, attr)
    return sorted(set(missing))


def check_sources(module: Any, with_plugins: bool, sources: dict[str, str] | None = None) -> list[str]:
    """Unresolved attributes of the project's TensorRT sources (or of `sources`: path -> text) on `module`."""
    if sources is None:
        names = [s for s in TENSORRT_SOURCES if with_plugins or s not in PLUGIN_SOURCES]
        sources = {name: (REPO / name).read_text() for name in names}
    chains = set().union(*(attribute_chains(text) for text in sources.values()))
    return unresolved(chains, module)


if __name__ == "__main__":  # python conformance.py tensorrt|tensorrt_rtx [FILE...] -> JSON list on stdout
    which = sys.argv[1]
    if which == "tensorrt":
        import tensorrt_bindings

        sys.modules["tensorrt"] = tensorrt_bindings  # the bindings wheel alone ships no 'tensorrt' module
        import tensorrt.plugin  # noqa: F401  (the plugin package must import too)

        module = tensorrt_bindings
    else:
        import tensorrt_rtx as module
    given = {name: Path(name).read_text() for name in sys.argv[2:]} or None
    print(json.dumps(check_sources(module, which == "tensorrt", given)))
