"""`dmfnet-export`: ONNX export, calibration sets, precision recipes and accuracy gates."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dmfnet_edge._optional import require
from dmfnet_edge.artifacts import write_json_atomic
from dmfnet_edge.cli import triton_cmd
from dmfnet_edge.cli.main import run_cli
from dmfnet_edge.cli.progress import bar
from dmfnet_edge.cli.types import NON_NEGATIVE, POSITIVE, THREADS, int_range, positive_float
from dmfnet_edge.errors import InputError


def _load_reference(spec: str):
    """A DMFNet for export or as the accuracy reference: shipped/saved weights, or a random preset."""
    require("torch", purpose="this command")
    from dmfnet_edge.models.checkpoint import load_or_build

    return load_or_build(spec, allow_random=True)


def configure_onnx(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="edge", help="edge (shipped), a preset (paper, tiny: random weights) or PATH")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    p.add_argument("--name", help="file stem (default dmfnet-<model>-fp32[-dynamic])")
    p.add_argument("--size", type=int_range(64, 8192), default=256, help="static image side (multiple of 16, >= 64)")
    p.add_argument("--batch", type=int_range(1, 64), default=1, help="static batch size")
    p.add_argument("--dynamic", action="store_true", help="symbolic N, H, W (any multiple of 16)")
    p.add_argument("--opset", type=int_range(17, 21), default=18,
                   help="ONNX opset (17-21: LayerNormalization needs 17; TensorRT 10/11 parse up to 21)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    p.add_argument("--trt-plugins", action="store_true",
                   help="TensorRT-only graph: the cross-modal attention pixel stage as DmfnetPixelAttentionFuse "
                        "plugin nodes (ONNX Runtime cannot run it)")


def run_onnx(args: argparse.Namespace) -> int:
    from dmfnet_edge.contract import IOContract
    from dmfnet_edge.export.onnx_export import export_onnx

    model, meta = _load_reference(args.model)
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
    parity = manifest["parity_max_abs_vs_torch"]
    print(f"{args.out / (stem + '.onnx')}: opset {manifest['opset']}, inputs {manifest['inputs']['mri']}, "
          + (f"parity vs PyTorch {parity:.2e}" if parity is not None else
             f"{len(manifest['tensorrt_plugins'])} TensorRT plugin nodes (TensorRT only)"))
    return 0


def configure_calibrate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, type=Path, help="training split DIR/MRI-X/{MRI,X}/NAME.png")
    p.add_argument("--exclude", type=Path, help="validation split that must not overlap (checked by hash)")
    p.add_argument("--per-modality", type=POSITIVE, default=16, help="calibration pairs per modality")
    p.add_argument("-o", "--out", required=True, type=Path, help="calibration manifest (.json)")


def run_calibrate(args: argparse.Namespace) -> int:
    from dmfnet_edge.export.calibration import select_calibration_set

    manifest = select_calibration_set(args.pairs, args.per_modality, args.exclude)
    write_json_atomic(args.out, manifest)
    print(f"{args.out}: {manifest['per_modality']} pairs, disjoint check: {manifest['disjoint_from_validation']}")
    return 0


def configure_quantize(p: argparse.ArgumentParser) -> None:
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


def _quantize_settings(args: argparse.Namespace) -> None:
    """Fill the quantize options the command line left out: from --recipe, else the defaults."""
    defaults = {"target": "onnxruntime", "method": "entropy", "high_precision": "fp32", "keep_fp32": "auto",
                "target_psnr": 46.0}
    if args.recipe is not None:
        from dmfnet_edge.export.recipes import load_recipe

        graph = load_recipe(args.recipe).graph
        if graph.precision == "fp32":
            raise InputError(f"--recipe {args.recipe}: an fp32 recipe has nothing to quantize (its graph is the "
                             "FP32 export)")
        keep = graph.keep_fp32 if isinstance(graph.keep_fp32, str) else ",".join(graph.keep_fp32) or "none"
        defaults.update(precision=graph.precision, target=graph.quantization or "onnxruntime",
                        method=graph.method, high_precision=graph.high_precision, keep_fp32=keep,
                        target_psnr=graph.target_psnr_db, calibration=graph.calibration)
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.precision is None:
        raise InputError("quantize needs --precision fp16|int8 (or a --recipe that names it)")


def run_quantize(args: argparse.Namespace) -> int:
    from dmfnet_edge.export.calibration import load_calibration, network_batches
    from dmfnet_edge.export.quantize import quantize_onnx
    from dmfnet_edge.io.output_guard import refuse_overlap
    from dmfnet_edge.targets import resolve_keep_fp32

    _quantize_settings(args)
    inputs = {"--onnx": args.onnx, **({"--calibration": args.calibration} if args.calibration else {})}
    refuse_overlap("-o", args.out, inputs)
    refuse_overlap("-o", args.out.with_name(args.out.name + ".json"), inputs)

    batches, calibration = None, None
    if args.calibration is not None:
        meta, pairs = load_calibration(args.calibration, args.calibration_root)
        batches = list(network_batches(pairs))
        calibration = {"manifest": args.calibration.name, "set_sha256": meta["set_sha256"],
                       "per_modality": meta["per_modality"]}
    keep = resolve_keep_fp32(args.keep_fp32)
    manifest = quantize_onnx(args.onnx, args.out, args.precision, args.target, args.method, batches, calibration,
                             args.high_precision, keep, args.target_psnr)
    print(f"{args.out}: {manifest['precision']} ({manifest['recipe']['tool']})")
    plan = manifest["recipe"].get("mixed_precision")
    if plan:
        kept = ", ".join(plan["kept_fp32"]) or "none"
        probe = f"; probe PSNR vs FP32 {plan['probe_psnr_db']:.1f} dB" if "probe_psnr_db" in plan else ""
        full = plan.get("all_int8_probe_psnr_db")
        full = f" (all-INT8 on ONNX Runtime: {full:.1f} dB)" if full is not None else ""
        print(f"  kept in FP32 ({plan['mode']}): {kept}{probe}{full}")
        if args.plot:
            from dmfnet_edge.export.quantize import plot_mixed_precision

            plot_mixed_precision(plan, args.plot, f"{manifest.get('model', '?')} {manifest['precision']}")
            print(f"  sensitivity plot: {args.plot}")
    return 0


def configure_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", required=True, type=Path, nargs="+", help="exported graph(s) to check")
    p.add_argument("--model", default="edge", help="the PyTorch reference the graphs were exported from")
    p.add_argument("--pairs", required=True, type=Path, help="validation split DIR/MRI-X/{MRI,X}/NAME.png")
    p.add_argument("--per-modality", type=POSITIVE, help="use only the first N pairs of every modality")
    p.add_argument("--report", required=True, type=Path, help="folder for <graph>.verify.json and .worst.png")
    p.add_argument("--threads", type=THREADS, help="ONNX Runtime CPU threads (default: its choice)")


def run_verify(args: argparse.Namespace) -> int:
    from dmfnet_edge.evaluation.verify import verify_runner, write_report
    from dmfnet_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner
    from dmfnet_edge.runtime.torch_backend import TorchRunner
    from dmfnet_edge.targets import check_same_weights, gate_pairs

    pairs = gate_pairs(args.pairs, args.per_modality)
    model, meta = _load_reference(args.model)
    reference = TorchRunner(model, meta)
    candidates = [OnnxRuntimeRunner(path, threads=args.threads) for path in args.onnx]
    for runner in candidates:
        check_same_weights(runner, meta, args.model)
    ok, cache = True, {}  # the reference output and metrics of every pair, computed once for all candidates
    for runner in candidates:
        with bar(len(pairs), f"verify {runner.path.name}", "pair") as progress:
            report, worst = verify_runner(runner, runner.precision, reference, pairs, lambda: progress.update(1),
                                          cache)
        json_path, png_path = write_report(report, worst, args.report, runner.path.stem)
        _print_verdict(runner.path.name, report, json_path, png_path)
        ok &= report["passed"]
    return 0 if ok else 1


def _print_verdict(name: str, report: dict, json_path: Path, png_path: Path) -> None:
    print(f"{name} [{report['precision']}]: {'PASS' if report['passed'] else 'FAIL'}")
    for task, s in report["tasks"].items():
        rel = s["metrics_rel_diff"]
        print(f"  {task:<10} n={s['pairs']:<3} max|d|={s['max_abs']:.2e} p99={s['p99_abs']:.2e} "
              f"PSNR={s['psnr_db']:.2f} dB (worst {s['psnr_worst_pair_db']:.2f}) "
              f"dQabf={100 * rel['Qabf']:.2f}% dVIF={100 * rel['VIF']:.2f}% dSSIM={100 * rel['SSIM']:.2f}%")
    for failure in report["failures"]:
        print(f"  gate failed: {failure}")
    print(f"  report: {json_path}  worst pair: {png_path}")


def configure_build(p: argparse.ArgumentParser) -> None:
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


def run_build(args: argparse.Namespace) -> int:
    from dmfnet_edge.runtime.toolchain import parse_targets
    from dmfnet_edge.build.trt_builder import BuildOptions, build_engine

    toolchain, targets, shapes = args.toolchain, parse_targets(args.compute_capability), args.shapes
    if args.recipe is not None:
        from dmfnet_edge.export.recipes import load_recipe

        engine = load_recipe(args.recipe).engine
        if engine is None:
            raise InputError(f"--recipe {args.recipe}: the recipe has no engine (its graph runs on ONNX Runtime)")
        toolchain = toolchain or engine.toolchain
        targets = targets or engine.compute_capabilities
        shapes = shapes or engine.shapes
    options = BuildOptions(toolchain or "auto", targets, shapes, args.opt_level, args.workspace_mib,
                           args.timing_cache, args.lock_timing_cache, args.plugin_lib)
    manifest = build_engine(args.onnx, args.out, options)
    layers = manifest["layer_precisions"]
    print(f"{args.out / manifest['engine_file']}: {manifest['precision']}, {manifest['toolchain']['flavour']} "
          f"{manifest['toolchain']['version']} for {', '.join(manifest['compute_capabilities'])}, "
          f"{manifest['engine_bytes'] / 2**20:.1f} MiB, built in {manifest['build']['build_seconds']:.1f} s")
    print(f"  convolutions by precision {layers['convolutions']} (all as the graph prescribes); "
          f"{layers['layers']} engine layers")
    return 0


def configure_recipe(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipes", nargs="+", type=Path, metavar="RECIPE",
                   help="export/NAME.yaml files, or a folder of them (e.g. export: every target)")
    p.add_argument("--list", action="store_true", help="print the recipes (checked) and stop")
    p.add_argument("--out", type=Path, help="output folder: one subfolder per recipe (graph, engine, gate report)")
    p.add_argument("--onnx", type=Path, help="the FP32 graph the recipes start from (default: the shipped one)")
    p.add_argument("--model", default="edge", help="the PyTorch reference of the gates (default: the shipped model)")
    p.add_argument("--pairs", type=Path, help="validation pairs of the gates (default: each recipe's gate.pairs)")
    p.add_argument("--per-modality", type=POSITIVE, help="gates on the first N pairs of every modality only")
    p.add_argument("--no-gate", action="store_true", help="make the graphs and engines only")


def run_recipe(args: argparse.Namespace) -> int:
    from dmfnet_edge.export.recipes import load_recipe, recipes_in

    recipes = []
    for path in args.recipes:
        recipes += recipes_in(path) if path.is_dir() else [load_recipe(path)]
    names = [r.name for r in recipes]
    if len(set(names)) != len(names):
        raise InputError(f"recipe {next(n for n in names if names.count(n) > 1)} is given twice")
    if args.list:
        for recipe in recipes:
            print(f"{recipe.summary()}\n    {recipe.description}  ({recipe.source})")
        return 0
    if args.out is None:
        raise InputError("recipe needs --out DIR (or --list)")
    return _run_recipes(args, recipes)


def _run_recipes(args: argparse.Namespace, recipes: list) -> int:
    from dmfnet_edge import targets
    from dmfnet_edge.io.output_guard import refuse_overlap
    from dmfnet_edge.runtime import shipped_onnx

    fp32 = args.onnx or shipped_onnx("edge", "fp32")
    inputs = {"--onnx": fp32, **{"RECIPE": r.source for r in recipes}}
    inputs.update({f"{r.name}: calibration": r.graph.calibration for r in recipes if r.graph.calibration})
    refuse_overlap("--out", args.out, inputs)
    ok = True
    for recipe in recipes:
        folder = args.out / recipe.name
        graph, manifest = targets.make_graph(recipe, fp32, folder)
        print(f"{recipe.name}: graph {graph} ({manifest['precision']})")
        if recipe.engine is not None:
            engines = folder / "engines"
            why = targets.engine_unbuildable(recipe.engine)
            if why:
                print(f"  engine: not built here: {why}; on the target: {targets.build_command(recipe, graph, engines)}")
            else:
                built = targets.make_engine(recipe, graph, engines)
                print(f"  engine: {engines / built['engine_file']} ({built['toolchain']['flavour']} "
                      f"{built['toolchain']['version']} for {', '.join(built['compute_capabilities'])}, "
                      f"{built['engine_bytes'] / 2**20:.1f} MiB)")
        pairs = args.pairs or (recipe.gate.pairs if recipe.gate else None)
        if args.no_gate or pairs is None:
            print("  gate: not run" + (" (--no-gate)" if args.no_gate else " (the recipe names no gate pairs)"))
            continue
        per = args.per_modality or (recipe.gate.per_modality if recipe.gate else None)
        chosen = targets.gate_pairs(pairs, per)
        with bar(len(chosen), f"gate {recipe.name}", "pair") as progress:
            report, (json_path, png_path) = targets.run_gate(graph, args.model, chosen, folder,
                                                             lambda: progress.update(1))
        _print_verdict(graph.name, report, json_path, png_path)
        ok &= report["passed"]
    return 0 if ok else 1


def configure_profile(p: argparse.ArgumentParser) -> None:
    from dmfnet_edge.cli.common import add_model_options

    add_model_options(p)
    p.add_argument("--repeats", "--runs", dest="repeats", type=int_range(1, 100_000), default=50, help="timed runs")
    p.add_argument("--warmup", type=int_range(0, 100_000), default=5, help="untimed runs first")
    p.add_argument("--batch", type=int_range(1, 64), default=1, help="pairs per network call")
    p.add_argument("--pair", nargs=2, type=Path, metavar=("MRI", "OTHER"),
                   help="images to fuse (default: the bundled MRI-PET sample)")
    p.add_argument("--budget-ms", type=positive_float, help="fail (exit 1) when the p99 latency exceeds this")
    p.add_argument("--json", type=Path, help="write the full report as JSON")
    p.add_argument("--csv", type=Path, help="write every run's latency as CSV")
    p.add_argument("--plot", type=Path, help="PNG: latency over runs and the stage breakdown")


def run_profile(args: argparse.Namespace) -> int:
    from dmfnet_edge.cli.common import runner_from
    from dmfnet_edge.io.images import read_image
    from dmfnet_edge.profiling import budget_verdict, ort_stage_split, profile_runner, torch_stage_split, \
        write_outputs

    sample = Path(__file__).resolve().parents[1] / "samples" / "MRI-PET"
    mri_path, other_path = args.pair or (sample / "MRI" / "11.png", sample / "PET" / "11.png")
    mri, other = read_image(mri_path), read_image(other_path)
    runner = runner_from(args)
    stages_runs = max(3, min(args.repeats, 10))
    if runner.backend in ("torch", "gpu"):
        split = torch_stage_split(runner, mri, other, stages_runs, args.batch)
    else:
        split = ort_stage_split(runner.path, args.threads, mri, other, stages_runs, args.batch)
    sync = _cuda_sync(runner)
    with bar(args.warmup + args.repeats, f"profiling {runner.backend}", "run") as progress:
        report = profile_runner(runner, mri, other, args.repeats, args.warmup, args.batch, split, sync,
                                lambda: progress.update(1))
    ok, verdict = budget_verdict(report, args.budget_ms)
    report["budget"] = {"budget_ms": args.budget_ms, "passed": ok, "verdict": verdict}
    write_outputs(report, args.json, args.csv, args.plot)
    lat = report["latency_ms"]
    print(f"{runner.backend} {report['backend'].get('precision', 'fp32')} batch {args.batch}: "
          f"p50 {lat['p50']:.2f} p90 {lat['p90']:.2f} p99 {lat['p99']:.2f} max {lat['max']:.2f} ms, "
          f"{report['throughput_pairs_per_s']:.2f} pairs/s, peak RSS {report['peak_rss_mib']:.0f} MiB")
    print("stages (median ms): " + ", ".join(f"{k} {v:.2f}" for k, v in
                                              {**report["stages_ms_median"], **split}.items()))
    print(f"budget: {verdict}")
    written = [str(p) for p in (args.json, args.csv, args.plot) if p is not None]
    if written:
        print(f"wrote {', '.join(written)}")
    return 0 if ok else 1


def _cuda_sync(runner):
    device = getattr(runner, "device", None)
    if device is not None and getattr(device, "type", "") == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


COMMANDS = [
    ("onnx", "export a model to one ONNX graph (fp32) with its manifest", configure_onnx, run_onnx),
    ("calibrate", "select a hashed INT8 calibration set from a training split", configure_calibrate,
     run_calibrate),
    ("quantize", "write an fp16 or int8 precision recipe into the ONNX graph", configure_quantize, run_quantize),
    ("verify", "accuracy gates of exported graphs against the PyTorch reference", configure_verify, run_verify),
    ("recipe", "make a deployment target from its recipe (export/NAME.yaml): graph, engine, gate", configure_recipe,
     run_recipe),
    ("build", "build a TensorRT engine (strongly typed, static profile, cached, checked)", configure_build,
     run_build),
    ("profile", "latency percentiles, stage breakdown and a budget gate for any backend", configure_profile,
     run_profile),
    *triton_cmd.COMMANDS,
]


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(argv, "dmfnet-export", COMMANDS)


if __name__ == "__main__":
    sys.exit(main())
