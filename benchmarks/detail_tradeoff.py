"""Detail against fidelity: how the Stage-II runs of a lever study moved the detail metrics (SF, AG, SD, EN) and
the fidelity metrics (MI, VIF, Qabf, SSIM) at each validation, relative to the shipped model scored by the same
validator (the validation split's feature cache, the selection rule's numbers).

    python benchmarks/detail_tradeoff.py --val ../shared/data/harvard/val --cache cache/edge \\
        --run 'label=runs/NAME' [--run ...] [--reference WEIGHTS] --json docs/figures/data/detail_tradeoff.json \\
        --plot docs/figures/detail_tradeoff.png

Prints one table per run (percent change per modality and metric); the JSON keeps the reference and every
validation, so the figure can be redrawn without the runs (`--from-json`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DETAIL = ("SF", "AG", "SD", "EN")
FIDELITY = ("MI", "VIF", "Qabf", "SSIM")


def reference(val: Path, cache: Path, model_spec: str) -> dict:
    from dmfnet_edge.io.pairs import find_pairs
    from dmfnet_edge.models.checkpoint import load_model
    from dmfnet_edge.train.feature_cache import FeatureCache
    from dmfnet_edge.train.selection import Validator

    model, _ = load_model(model_spec)
    pairs = find_pairs(val)
    return Validator(FeatureCache.open_or_build(cache, model, pairs), pairs).evaluate(model)["tasks"]


def changes(tasks: dict, ref: dict) -> dict:
    return {t: {m: round(100 * (tasks[t][m] / ref[t][m] - 1), 2) for m in DETAIL + FIDELITY} for t in tasks}


def plot(study: dict, path: Path) -> None:
    from dmfnet_edge.train.curves import _pyplot, _save

    plt = _pyplot()
    tasks = list(study["reference"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for k, (label, run) in enumerate(study["runs"].items()):
            xs = [(v["change"][task]["SF"] + v["change"][task]["AG"]) / 2 for v in run["validation"]]
            ys = [min(v["change"][task][m] for m in FIDELITY) for v in run["validation"]]
            ax.plot(xs, ys, "o-", ms=3, lw=1, color=f"C{k}", label=label)
            if xs:
                ax.annotate(str(run["validation"][-1]["step"]), (xs[-1], ys[-1]), fontsize=6, color=f"C{k}")
        ax.axhline(-1, ls="--", lw=0.8, color="grey")
        ax.axvline(10, ls="--", lw=0.8, color="grey")
        ax.fill_between([10, max(12, ax.get_xlim()[1])], -1, max(1, ax.get_ylim()[1]), color="green", alpha=0.08,
                        label="the issue's target")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("detail: mean of SF and AG, % vs reference")
        ax.set_ylabel("fidelity: worst of MI, VIF, Qabf, SSIM, %")
        ax.legend(fontsize=6)
    reference = study.get("reference_model", "the reference")
    _save(fig, path, f"detail against fidelity at each validation, relative to {reference} (last step labelled; "
                     "the runs C and D coincide)")


def check_study(study: object, source: str) -> dict:
    """The structure `plot` reads, checked, so that a foreign file is one line, not a traceback."""
    from dmfnet_edge.errors import InputError

    try:
        assert isinstance(study, dict) and isinstance(study["reference"], dict) and study["reference"]
        for run in study["runs"].values():
            for v in run["validation"]:
                assert isinstance(v["step"], int)
                for task in study["reference"]:
                    assert all(isinstance(v["change"][task][m], (int, float)) for m in DETAIL + FIDELITY)
    except (AssertionError, KeyError, TypeError, AttributeError):
        raise InputError(f"{source}: not a study written by this script (reference, runs, validation, change)") \
            from None
    return study


def main() -> int:
    from dmfnet_edge.errors import DmfnetError

    try:
        return run()
    except DmfnetError as exc:
        print(f"detail_tradeoff: error: {exc}", file=sys.stderr)
        return 2


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--val", type=Path)
    parser.add_argument("--cache", type=Path, help="the validation split's feature cache (FOLDER/val)")
    parser.add_argument("--run", action="append", default=[], metavar="LABEL=FOLDER")
    parser.add_argument("--reference", default="edge", help="the model the changes are relative to (its weights)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--from-json", type=Path, help="redraw from a saved study")
    args = parser.parse_args()
    from dmfnet_edge.errors import InputError
    from dmfnet_edge.records import json_bytes, parse_json, read_bounded

    inputs = [p for p in (args.from_json,) if p] + [Path(r.partition("=")[2]) / "last.json" for r in args.run]
    for out in (p for p in (args.json, args.plot) if p):
        if any(out.resolve() == i.resolve() for i in inputs):
            raise InputError(f"{out}: is an input of this command; write the result elsewhere")
    if args.from_json:
        study = check_study(parse_json(read_bounded(args.from_json, 16 << 20, "study"), str(args.from_json)),
                            str(args.from_json))
    else:
        from dmfnet_edge.train.state import TrainingState

        ref = reference(args.val, args.cache, args.reference)
        study = {"reference": ref, "reference_model": Path(args.reference).name, "runs": {}}
        for spec in args.run:
            label, _, folder = spec.partition("=")
            state = TrainingState.read(Path(folder) / "last.json")
            study["runs"][label] = {"settings": state.settings, "validation": [
                {"step": v["step"], "score": v["score"], "change": changes(v["tasks"], ref)} for v in state.validation]}
    for label, run in study["runs"].items():
        print(f"\n{label}")
        for v in run["validation"]:
            print(f"  step {v['step']:>5}, score {v['score']:.3f}")
            for task, row in v["change"].items():
                print(f"    {task:<10} " + " ".join(f"{m} {row[m]:+6.1f}" for m in DETAIL + FIDELITY))
    if args.json and not args.from_json:
        from dmfnet_edge.files import atomic_write_bytes

        atomic_write_bytes(args.json, json_bytes(study))
    if args.plot:
        plot(study, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
