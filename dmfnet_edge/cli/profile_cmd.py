"""`dmfnet-export profile`: latency percentiles, the stage breakdown and a budget gate for any backend."""

from __future__ import annotations

import argparse
from pathlib import Path

from dmfnet_edge.cli.common import add_model_options, runner_from
from dmfnet_edge.cli.progress import bar
from dmfnet_edge.cli.types import int_range, positive_float


def configure(p: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    from dmfnet_edge.io.images import read_image
    from dmfnet_edge.profiling import (
        budget_verdict,
        device_sync,
        network_stage_split,
        profile_runner,
        sample_pair,
        write_outputs,
    )

    mri_path, other_path = args.pair or sample_pair()
    mri, other = read_image(mri_path), read_image(other_path)
    runner = runner_from(args)
    split = network_stage_split(runner, args.threads, mri, other, max(3, min(args.repeats, 10)), args.batch)
    with bar(args.warmup + args.repeats, f"profiling {runner.backend}", "run") as progress:
        report = profile_runner(runner, mri, other, args.repeats, args.warmup, args.batch, split,
                                device_sync(runner), lambda: progress.update(1))
    ok, verdict = budget_verdict(report, args.budget_ms)
    report["budget"] = {"budget_ms": args.budget_ms, "passed": ok, "verdict": verdict}
    write_outputs(report, args.json, args.csv, args.plot)
    lat = report["latency_ms"]
    print(f"{runner.backend} {report['backend'].get('precision', 'fp32')} batch {args.batch}: "
          f"p50 {lat['p50']:.2f} p90 {lat['p90']:.2f} p99 {lat['p99']:.2f} max {lat['max']:.2f} ms, "
          f"{report['throughput_pairs_per_s']:.2f} pairs/s, peak RSS {report['peak_rss_mib']:.0f} MiB")
    stages = {**report["stages_ms_median"], **(split or {})}
    print("stages (median ms): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
          + ("" if split else " (the network's two stages are one call on this backend)"))
    print(f"budget: {verdict}")
    written = [str(p) for p in (args.json, args.csv, args.plot) if p is not None]
    if written:
        print(f"wrote {', '.join(written)}")
    return 0 if ok else 1


COMMANDS = {"profile": (configure, run)}
