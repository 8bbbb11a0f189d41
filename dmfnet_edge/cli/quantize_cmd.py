"""`dmfnet-export quantize`: an fp16 or int8 precision recipe written into the ONNX graph, from options or from a
deployment recipe's graph step (export/NAME.yaml), options given here overriding the recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

from dmfnet_edge.errors import InputError
from dmfnet_edge.precisions import DEFAULT_FLAVOUR, FLAVOURS, METHODS, QUANTIZED_NUMERICS


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", required=True, type=Path, help="the fp32 graph from 'dmfnet-export onnx'")
    p.add_argument("--recipe", type=Path, metavar="export/NAME.yaml",
                   help="take precision, flavour, method, calibration and FP32 plan from a deployment recipe "
                        "(options given here override it)")
    p.add_argument("--precision", choices=QUANTIZED_NUMERICS, help="the recipe to write (required without --recipe)")
    p.add_argument("--target", choices=FLAVOURS,
                   help="int8 flavour: explicit Q/DQ for TensorRT, or ONNX Runtime's fast CPU graph (default)")
    p.add_argument("--calibration", type=Path, help="calibration manifest (int8)")
    p.add_argument("--calibration-root", type=Path, help="where the manifest's images are (default: its source)")
    p.add_argument("--method", choices=METHODS,
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
    """The graph step to write: the recipe's (if any) with every option given on the command line over it,
    checked by the recipe schema (so a recipe and the options can never describe different graphs)."""
    import msgspec

    from dmfnet_edge.export.recipes import GraphStep, load_recipe

    given = {"precision": args.precision, "quantization": args.target, "method": args.method,
             "calibration": str(args.calibration) if args.calibration else None,
             "high_precision": args.high_precision, "keep_fp32": args.keep_fp32, "target_psnr_db": args.target_psnr}
    given = {key: value for key, value in given.items() if value is not None}
    if args.recipe is not None:
        step = load_recipe(args.recipe).graph
        if step.precision == "fp32":
            raise InputError(f"--recipe {args.recipe}: an fp32 recipe has nothing to quantize (its graph is the "
                             "FP32 export)")
        given = {**msgspec.to_builtins(step), **given}
    if "precision" not in given:
        raise InputError("quantize needs --precision fp16|int8 (or a --recipe that names it)")
    if given["precision"] == "int8":
        if "calibration" not in given:
            raise InputError("INT8 needs a calibration set: pass --calibration calibration/<set>.json")
        given.setdefault("quantization", DEFAULT_FLAVOUR)
        keep = given.get("keep_fp32")
        if isinstance(keep, str) and keep not in ("auto", "none") and not keep.endswith(".onnx"):
            given["keep_fp32"] = [group for group in keep.split(",") if group]  # --keep-fp32 A,B
    given["file"] = args.out.name if args.out.suffix == ".onnx" else f"{args.out.name}.onnx"
    try:
        return msgspec.convert(given, GraphStep, strict=True)
    except msgspec.ValidationError as exc:
        raise InputError(f"quantize: the options {_options(str(exc))}") from None


def _options(message: str) -> str:
    """msgspec's 'Expected ... - at `$.target_psnr_db`' in the words of the command line."""
    for key, option in (("target_psnr_db", "--target-psnr"), ("keep_fp32", "--keep-fp32"),
                        ("high_precision", "--high-precision"), ("quantization", "--target")):
        message = message.replace(f"`$.{key}`", option).replace(f"{key}:", f"{option}:")
    return message.replace("`$.", "--").replace("`", "")


def run(args: argparse.Namespace) -> int:
    from dmfnet_edge.export.quantize import quantize_step
    from dmfnet_edge.files import refuse_special_target
    from dmfnet_edge.io.output_guard import refuse_overlap
    from dmfnet_edge.runtime.onnx_file import open_with_manifest

    step = graph_step(args)
    inputs = {"--onnx": args.onnx,
              **{f"--{k.replace('_', '-')}": v for k, v in step.inputs(args.calibration_root).items()}}
    refuse_overlap("-o", args.out, inputs)
    refuse_overlap("-o", args.out.with_name(args.out.name + ".json"), inputs)
    for output in (args.out, args.out.with_name(args.out.name + ".json")):
        refuse_special_target(output)  # before the work, not between the graph and its manifest
    open_with_manifest(args.onnx)  # checked (bounded, external data in its folder, as labelled) before a quantizer
    manifest = quantize_step(step, args.onnx, args.out, args.calibration_root)
    recipe = manifest.recipe
    print(f"{args.out}: {manifest.precision} ({recipe.tool if recipe else 'no recipe recorded'})")
    plan = recipe.mixed_precision if recipe else None
    if plan:
        kept = ", ".join(plan.kept_fp32) or "none"
        probe = f"; probe PSNR vs FP32 {plan.probe_psnr_db:.1f} dB" if plan.probe_psnr_db is not None else ""
        full = plan.all_int8_probe_psnr_db
        full = f" (all-INT8 on ONNX Runtime: {full:.1f} dB)" if full is not None else ""
        print(f"  kept in FP32 ({plan.mode}): {kept}{probe}{full}")
        if args.plot:
            from dmfnet_edge.export.quantize.mixed_precision import plot_mixed_precision

            plot_mixed_precision(plan, args.plot, f"{manifest.model or '?'} {manifest.precision}")
            print(f"  sensitivity plot: {args.plot}")
    return 0


COMMANDS = {"quantize": (configure, run)}
