"""`dmfnet-export build`: a TensorRT engine (strongly typed, static profile, cached, checked), from options or
from a deployment recipe's engine step, options given here overriding the recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

from dmfnet_edge.cli.types import int_range
from dmfnet_edge.errors import InputError


def configure(p: argparse.ArgumentParser) -> None:
    from dmfnet_edge.runtime.toolchain import RTX_PORTABLE_TARGETS, TOOLCHAIN_CHOICES

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


def run(args: argparse.Namespace) -> int:
    from dmfnet_edge.build.trt_builder import BuildOptions, build_engine
    from dmfnet_edge.runtime.toolchain import parse_targets

    toolchain, targets, shapes = args.toolchain, parse_targets(args.compute_capability), args.shapes
    if args.recipe is not None:
        from dmfnet_edge.export.recipes import load_recipe

        engine = load_recipe(args.recipe).engine
        if engine is None:
            raise InputError(f"--recipe {args.recipe}: the recipe has no engine (its graph runs on ONNX Runtime)")
        toolchain = toolchain or engine.toolchain
        targets = targets or engine.targets
        shapes = shapes or engine.shapes
    options = BuildOptions(toolchain or "auto", targets, shapes, args.opt_level, args.workspace_mib,
                           args.timing_cache, args.lock_timing_cache, args.plugin_lib)
    manifest = build_engine(args.onnx, args.out, options)
    layers = manifest.layer_precisions
    print(f"{args.out / manifest.engine_file}: {manifest.precision}, {manifest.toolchain.flavour} "
          f"{manifest.toolchain.version} for {', '.join(manifest.compute_capabilities)}, "
          f"{manifest.engine_bytes / 2**20:.1f} MiB, built in {manifest.build.build_seconds:.1f} s")
    print(f"  convolutions by precision {layers.convolutions} (all as the graph prescribes); "
          f"{layers.layers} engine layers")
    return 0


COMMANDS = {"build": (configure, run)}
