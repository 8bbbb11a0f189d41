"""`dmfnet-export onnx`: a model to one ONNX graph (fp32) with its manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dmfnet_edge.cli.common import reference_model
from dmfnet_edge.cli.types import int_range
from dmfnet_edge.contract import OPSET
from dmfnet_edge.errors import InputError
from dmfnet_edge.runtime.onnx_file import OPSETS


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="edge", help="edge (shipped), a preset (paper, tiny: random weights) or PATH")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    p.add_argument("--name", help="file stem (default dmfnet-<model>-fp32[-dynamic])")
    p.add_argument("--size", type=int_range(64, 8192), default=256, help="static image side (multiple of 16, >= 64)")
    p.add_argument("--batch", type=int_range(1, 64), default=1, help="static batch size")
    p.add_argument("--dynamic", action="store_true", help="symbolic N, H, W (any multiple of 16)")
    p.add_argument("--opset", type=int_range(OPSETS.start, OPSETS.stop - 1), default=OPSET,
                   help=f"ONNX opset ({OPSETS.start}-{OPSETS.stop - 1}: LayerNormalization needs 17; TensorRT 10/11 "
                        "parse up to 21)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    p.add_argument("--trt-plugins", action="store_true",
                   help="TensorRT-only graph: the cross-modal attention pixel stage as DmfnetPixelAttentionFuse "
                        "plugin nodes (ONNX Runtime cannot run it)")


def run(args: argparse.Namespace) -> int:
    from dmfnet_edge.contract import IOContract
    from dmfnet_edge.engines.trt_builder import refuse_non_folder
    from dmfnet_edge.export.onnx_export import export_onnx

    _check_budget(args)
    refuse_non_folder("-o", args.out)
    model, meta = reference_model(args.model)
    if args.trt_plugins:
        from dmfnet_edge.export.onnx_export import use_plugin_nodes

        use_plugin_nodes(model, args.opset)
    contract = IOContract.dynamic() if args.dynamic else IOContract(args.batch, args.size, args.size)
    try:
        contract.check_static()
    except ValueError as exc:
        raise InputError(f"--size {args.size}: {exc}") from None
    stem = args.name or (f"dmfnet-{model.cfg.name}-fp32{'-dynamic' if args.dynamic else ''}"
                         f"{'-trtplugins' if args.trt_plugins else ''}")
    if model.cfg.name == "paper":
        print("exporting the paper-size model: a few minutes and about 11 GB of memory (tracing, simplification, "
              "parity check)", file=sys.stderr)
    manifest = export_onnx(model, args.out / f"{stem}.onnx", contract, meta, opset=args.opset,
                           simplify=not args.no_simplify)
    parity = manifest.parity_max_abs_vs_torch
    print(f"{args.out / (stem + '.onnx')}: opset {manifest.opset}, inputs {manifest.inputs['mri']}, "
          + (f"parity vs PyTorch {parity:.2e}" if parity is not None else
             f"{len(manifest.plugins)} TensorRT plugin nodes (TensorRT only)"))
    return 0


def _check_budget(args: argparse.Namespace) -> None:
    """A static graph's input must fit the pixel budget (limits.py) before it is traced and checked at that size:
    every call of the graph holds its whole batch."""
    from dmfnet_edge.limits import max_pixels

    pixels = args.batch * args.size * args.size
    if not args.dynamic and pixels > max_pixels():
        raise InputError(f"--batch {args.batch} --size {args.size}: {pixels:,} pixels per call exceed the pixel budget "
                         f"of {max_pixels():,}; export a smaller size or batch (or --dynamic), or raise "
                         "DMFNET_MAX_PIXELS")


COMMANDS = {"onnx": (configure, run)}
