"""`dmfnet-export quantize`: an fp16 or int8 precision recipe written into the ONNX graph, from options or from a
deployment recipe's graph step (export/NAME.yaml), options given here overriding the recipe."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from dmfnet_edge.errors import InputError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", required=True, type=Path, help="the fp32 graph from 'dmfnet-export onnx'")
    p.add_argument("--recipe", type=Path, metavar="export/NAME.yaml",
                   help="take precision, flavour, method, calibration and FP32 plan from a deployment recipe "
                        "(options given here override it)")
    p.add_argument("--precision", choices=["fp16", "int8"], help="the recipe to write (required without --recipe)")
    p.add_argument("--target", choices=["tensorrt", "onnxruntime"],
                   help="int8 flavour: explicit Q/DQ for TensorRT, or ONNX Runtime's fast CPU graph (default)")
    p.add_argument("--calibration", type=Path, help="calibration manifest (int8)")
    p.add_argument("--calibration-root", type=Path, help="where the manifest's images are (default: its source)")
    p.add_argument("--method", choices=["entropy", "max", "percentile"],
                   help="int8 calibration (default entropy; tensorrt: entropy or max)")
    p.add_argument("--high-precision", choices=["fp32", "fp16"],
                   help="int8 tensorrt: type of the layers left unquantized (default fp32)")
    p.add_argument("--keep-fp32", metavar="auto|none|GROUP[,GROUP...]|INT8.onnx",
                   help="int8: layer groups left in FP32. auto (default): a sensitivity search on calibration "
                        "pairs keeps the fewest groups that reach --target-psnr against FP32; none: quantize "
                        "everything; named groups (e.g. ups.12,fusion/head); or an INT8 graph of the same model "
                        "whose recorded plan to reuse (e.g. the ONNX Runtime flavour for the TensorRT one)")
    p.add_argument("--target-psnr", type=float,
                   help="int8 --keep-fp32 auto: probe PSNR vs FP32 (dB) the search must reach (default 46)")
    p.add_argument("--plot", type=Path, help="int8 with --keep-fp32 auto: PNG bar chart of the sensitivity search")
    p.add_argument("-o", "--out", required=True, type=Path, help="output .onnx")


def graph_step(args: argparse.Namespace):
    """The graph step to write: the recipe's (if any) with every option given on the command line over it."""
    from dmfnet_edge.export.recipes import GraphStep, load_recipe

    given = {"precision": args.precision, "quantization": args.target, "method": args.method,
             "calibration": args.calibration, "high_precision": args.high_precision, "keep_fp32": args.keep_fp32,
             "target_psnr_db": args.target_psnr}
    given = {key: value for key, value in given.items() if value is not None}
    if args.recipe is not None:
        step = load_recipe(args.recipe).graph
        if step.precision == "fp32":
            raise InputError(f"--recipe {args.recipe}: an fp32 recipe has nothing to quantize (its graph is the "
                             "FP32 export)")
        return dataclasses.replace(step, **given)
    if "precision" not in given:
        raise InputError("quantize needs --precision fp16|int8 (or a --recipe that names it)")
    return GraphStep(**given)


def run(args: argparse.Namespace) -> int:
    from dmfnet_edge.export.quantize import quantize_step
    from dmfnet_edge.io.output_guard import refuse_overlap

    step = graph_step(args)
    inputs = {"--onnx": args.onnx, **({"--calibration": step.calibration} if step.calibration else {})}
    refuse_overlap("-o", args.out, inputs)
    refuse_overlap("-o", args.out.with_name(args.out.name + ".json"), inputs)
    manifest = quantize_step(step, args.onnx, args.out, args.calibration_root)
    print(f"{args.out}: {manifest['precision']} ({manifest['recipe']['tool']})")
    plan = manifest["recipe"].get("mixed_precision")
    if plan:
        kept = ", ".join(plan["kept_fp32"]) or "none"
        probe = f"; probe PSNR vs FP32 {plan['probe_psnr_db']:.1f} dB" if "probe_psnr_db" in plan else ""
        full = plan.get("all_int8_probe_psnr_db")
        full = f" (all-INT8 on ONNX Runtime: {full:.1f} dB)" if full is not None else ""
        print(f"  kept in FP32 ({plan['mode']}): {kept}{probe}{full}")
        if args.plot:
            from dmfnet_edge.export.quantize.mixed_precision import plot_mixed_precision

            plot_mixed_precision(plan, args.plot, f"{manifest.get('model', '?')} {manifest['precision']}")
            print(f"  sensitivity plot: {args.plot}")
    return 0


COMMANDS = [("quantize", "write an fp16 or int8 precision recipe into the ONNX graph", configure, run)]
