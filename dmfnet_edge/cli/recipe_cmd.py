"""`dmfnet-export recipe`: make deployment targets from their recipes (export/NAME.yaml): graph, engine, gate."""

from __future__ import annotations

import argparse
from pathlib import Path

from dmfnet_edge.cli.progress import bar
from dmfnet_edge.cli.types import POSITIVE
from dmfnet_edge.errors import InputError
from dmfnet_edge.reporting.gate import verdict_lines


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipes", nargs="+", type=Path, metavar="RECIPE",
                   help="export/NAME.yaml files, or a folder of them (e.g. export: every target)")
    p.add_argument("--list", action="store_true", help="print the recipes (checked) and stop")
    p.add_argument("--out", type=Path, help="output folder: one subfolder per recipe (graph, engine, gate report)")
    p.add_argument("--onnx", type=Path, help="the FP32 graph the recipes start from (default: the shipped one)")
    p.add_argument("--model", default="edge", help="the PyTorch reference of the gates (default: the shipped model)")
    p.add_argument("--pairs", type=Path, help="validation pairs of the gates (default: each recipe's gate.pairs)")
    p.add_argument("--per-modality", type=POSITIVE, help="gates on the first N pairs of every modality only")
    p.add_argument("--no-gate", action="store_true", help="make the graphs and engines only")


def run(args: argparse.Namespace) -> int:
    from dmfnet_edge.engines.build_targets import check_named_targets
    from dmfnet_edge.export.recipes import load_recipe, recipes_in

    recipes = []
    for path in args.recipes:
        recipes += recipes_in(path) if path.is_dir() else [load_recipe(path)]
    names = [r.name for r in recipes]
    if len(set(names)) != len(names):
        raise InputError(f"recipe {next(n for n in names if names.count(n) > 1)} is given twice")
    for recipe in recipes:  # what the installed toolchains cannot target is refused, listed or not
        if recipe.engine is not None:
            check_named_targets(recipe.engine.toolchain, recipe.engine.targets,
                                f"{recipe.source}: engine.compute_capabilities")
    if args.list:
        for recipe in recipes:
            print(f"{recipe.summary()}\n    {recipe.description}  ({recipe.source})")
        return 0
    if args.out is None:
        raise InputError("recipe needs --out DIR (or --list)")
    return _make(args, recipes)


def _make(args: argparse.Namespace, recipes: list) -> int:
    from dmfnet_edge import targets
    from dmfnet_edge.io.output_guard import refuse_overlap
    from dmfnet_edge.runtime import shipped_onnx
    from dmfnet_edge.runtime.onnx_file import open_with_manifest

    fp32 = args.onnx or shipped_onnx("edge", "fp32")
    inputs = {"--onnx": fp32}
    for recipe in recipes:
        inputs.update(recipe.inputs())
    refuse_overlap("--out", args.out, inputs)
    open_with_manifest(fp32)  # checked (bounded, external data in its folder, as labelled) before a quantizer opens it
    from dmfnet_edge.evaluation.verify import gate_graph, gate_pairs, reference_runner

    ok, reference = True, None  # the PyTorch reference, loaded once for every recipe gated
    for recipe in recipes:
        folder = args.out / recipe.name
        graph, manifest = targets.make_graph(recipe, fp32, folder)
        print(f"{recipe.name}: graph {graph} ({manifest.precision})")
        if recipe.engine is not None:
            engines = folder / "engines"
            why = targets.engine_unbuildable(recipe.engine)
            if why:
                command = targets.build_command(recipe, graph, engines)
                print(f"  engine: not built here: {why}; on the target: {command}")
            else:
                built = targets.make_engine(recipe, graph, engines)
                print(f"  engine: {engines / built.engine_file} ({built.toolchain.flavour} "
                      f"{built.toolchain.version} for {', '.join(built.compute_capabilities)}, "
                      f"{built.engine_bytes / 2**20:.1f} MiB)")
        pairs = args.pairs or (recipe.gate.pairs if recipe.gate else None)
        if args.no_gate or pairs is None:
            print("  gate: not run" + (" (--no-gate)" if args.no_gate else " (the recipe names no gate pairs)"))
            continue
        per = args.per_modality or (recipe.gate.per_modality if recipe.gate else None)
        chosen = gate_pairs(pairs, per)
        reference = reference or reference_runner(args.model)
        with bar(len(chosen), f"gate {recipe.name}", "pair") as progress:
            report, (json_path, png_path) = gate_graph(graph, args.model, reference, chosen, folder,
                                                       lambda: progress.update(1))
        print("\n".join(verdict_lines(graph.name, report, json_path, png_path)))
        ok &= report["passed"]
    return 0 if ok else 1


COMMANDS = {"recipe": (configure, run)}
