"""`dmfnet-export build`: a TensorRT engine (strongly typed, static profile, cached, checked), from options or
from a deployment recipe's engine step, options given here overriding the recipe. The success line says whether
the engine was built now ("built in X s") or reused from --out ("reused (cache hit)")."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from dmfnet_edge.cli.types import int_range
from dmfnet_edge.errors import InputError

if TYPE_CHECKING:
    pass


def configure(p: argparse.ArgumentParser) -> None:
    from dmfnet_edge.engines.build_targets import RTX_PORTABLE_TARGETS
    from dmfnet_edge.runtime.toolchain import TOOLCHAIN_CHOICES

    p.add_argument("--onnx", required=True, type=Path,
                   help="fp32, fp16 or int8-tensorrt graph with its manifest (not the ONNX Runtime INT8 graph)")
    p.add_argument("--out", required=True, type=Path, help="engine cache folder")
    p.add_argument("--recipe", type=Path, metavar="export/NAME.yaml",
                   help="take toolchain, compute capabilities and shapes from a deployment recipe's engine "
                        "(options given here override it)")
    p.add_argument("--toolchain", choices=TOOLCHAIN_CHOICES,
                   help="tensorrt (TensorRT 10/11: Jetson, data-centre and workstation GPUs; builds on the GPU it "
                        "targets), tensorrt-rtx (TensorRT for RTX: builds ahead of time, no GPU needed) or auto "
                        "(the first installed, in that order; default)")
    p.add_argument("--compute-capability", metavar="SM[,SM...]",
                   help=f"tensorrt-rtx targets (default {','.join(RTX_PORTABLE_TARGETS)}: Ampere, Ada, Blackwell)")
    p.add_argument("--shapes", metavar="NxHxW[:NxHxW:NxHxW]",
                   help="optimisation profile of a dynamic graph: one shape, or MIN:OPT:MAX (default 1x256x256)")
    p.add_argument("--opt-level", type=int, default=3, choices=range(6), help="builder optimisation level (pinned)")
    p.add_argument("--timing-cache", type=Path, help="tensorrt: persisted timing cache file (read, then updated)")
    p.add_argument("--lock-timing-cache", action="store_true",
                   help="tensorrt: never update the cache; fail on cache misses where TensorRT supports it")
    p.add_argument("--workspace-mib", type=int_range(1, 1 << 20), default=2048,
                   help="builder workspace (scratch memory) limit")
    p.add_argument("--plugin-lib", type=Path, action="append", default=[],
                   help="tensorrt: plugin library to load (libdmfnet_trt_plugins.so), recorded in the manifest")
    p.add_argument("--strip-weights", action="store_true",
                   help="a weight-stripped, refittable engine (weights refitted from the same ONNX file on load); "
                        "needs a GPU to build, with either toolchain")
    p.add_argument("--allow-int8-fallbacks", metavar="NAME|GROUP|COUNT[,...]",
                   help="INT8 (Q/DQ) convolutions TensorRT may run unfused in FP32 besides those of the graph's "
                        "kept-FP32 layer groups: ONNX node names, layer groups (e.g. fusion/attention.4) or a count "
                        "(default: none; any other fallback is refused)")


def run(args: argparse.Namespace) -> int:
    from dmfnet_edge.engines.trt_builder import build_or_reuse
    from dmfnet_edge.targets import engine_options

    step = None
    if args.recipe is not None:
        from dmfnet_edge.export.recipes import load_recipe

        step = load_recipe(args.recipe).engine
        if step is None:
            raise InputError(f"--recipe {args.recipe}: the recipe has no engine (its graph runs on ONNX Runtime)")
    options = engine_options(step, toolchain=args.toolchain, compute_capability=args.compute_capability,
                             shapes=args.shapes, opt_level=args.opt_level, workspace_mib=args.workspace_mib,
                             timing_cache=args.timing_cache, lock_timing_cache=args.lock_timing_cache,
                             plugin_libraries=args.plugin_lib, strip_weights=args.strip_weights,
                             allow_int8_fallbacks=args.allow_int8_fallbacks)
    built = build_or_reuse(args.onnx, args.out, options)
    manifest, layers = built.manifest, built.manifest.layer_precisions
    how = "reused (cache hit)" if built.reused else f"built in {manifest.build.build_seconds:.1f} s"
    stripped = ", weights stripped (refit on load)" if manifest.build.strip_weights else ""
    print(f"{built.path}: {manifest.precision}, {manifest.toolchain.flavour} {manifest.toolchain.version} for "
          f"{', '.join(manifest.compute_capabilities)}, {manifest.engine_bytes / 2**20:.1f} MiB{stripped}, {how}")
    fallbacks = f", {len(layers.int8_fallbacks_fp32)} declared INT8 fallbacks in FP32" \
        if layers.int8_fallbacks_fp32 else ""
    print(f"  convolutions by precision {layers.convolutions} (all as the graph prescribes{fallbacks}); "
          f"{layers.layers} engine layers")
    return 0


COMMANDS = {"build": (configure, run)}
