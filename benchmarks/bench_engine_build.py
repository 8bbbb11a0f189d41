"""TensorRT engine builds of the edge model's recipes: build time, engine size, per-layer precisions and
byte-identical rebuilds, with any TensorRT flavour (TensorRT for RTX builds without a GPU).

Every graph is built --repeats times, interleaved round by round, each time into a fresh folder (no cache hit).
Printed: median build time and its ratio to the FP32 build measured in the same run, engine size, convolutions by
precision as TensorRT reports them, and whether all rebuilds were byte-identical. `--manifests DIR` keeps the
first build's engine manifest of every graph (engines are not kept).

    python benchmarks/bench_engine_build.py [--repeats 3] [--toolchain tensorrt-rtx] [--shapes 1x256x256]
        [--fp32 F.onnx] [--fp16 F.onnx] [--int8 F.onnx] [--manifests docs/engines]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import msgspec

from dmfnet_edge.engines.trt_builder import BuildOptions, build_engine
from dmfnet_edge.export.recipes import load_recipe
from dmfnet_edge.profiling import cpu_description
from dmfnet_edge.runtime.engine_manifest import parse_targets

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ROOT / "out" / "export"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fp32", type=Path, default=ROOT / "dmfnet_edge" / "weights" / "dmfnet-edge-fp32.onnx")
    parser.add_argument("--fp16", type=Path, default=EXPORT / "workstation-rtx-fp16" / "dmfnet-edge-fp16.onnx")
    parser.add_argument("--int8", type=Path, default=EXPORT / "jetson-orin-int8" / "dmfnet-edge-int8-tensorrt.onnx")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--toolchain", default="tensorrt-rtx")
    parser.add_argument("--compute-capability")
    parser.add_argument("--shapes")
    parser.add_argument("--manifests", type=Path, help="folder for the first build's engine manifest of every graph")
    args = parser.parse_args()
    graphs = {"fp32": args.fp32, "fp16": args.fp16, "int8-tensorrt": args.int8}
    missing = [str(p) for p in graphs.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"missing graphs (run 'make export' first): {', '.join(missing)}")
    options = BuildOptions(args.toolchain, parse_targets(args.compute_capability), args.shapes)
    # the INT8 graph's declared fallbacks are its recipe's (export/jetson-orin-int8.yaml), as `make export` builds it
    from dmfnet_edge.targets import fallback_allowance

    step = load_recipe(ROOT / "export" / "jetson-orin-int8.yaml").engine
    int8 = dataclasses.replace(options, allowed_int8_fallbacks=fallback_allowance(
        step.allowed_int8_fallbacks if step else None, "the recipe's allowed_int8_fallbacks"))
    seconds: dict[str, list[float]] = {name: [] for name in graphs}
    manifests: dict[str, list[dict]] = {name: [] for name in graphs}
    for _ in range(args.repeats):
        for name, graph in graphs.items():
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                manifests[name].append(build_engine(graph, Path(tmp), int8 if name == "int8-tensorrt" else options))
                seconds[name].append(time.perf_counter() - start)
    first = manifests["fp32"][0]
    print(f"{first.toolchain.flavour} {first.toolchain.version}, targets "
          f"{', '.join(first.compute_capabilities)}, profile {first.build.profile.opt}; "
          f"{cpu_description()}; {args.repeats} builds per graph, interleaved")
    base = statistics.median(seconds["fp32"])
    print(f"{'graph':<14} {'build s (median)':>16} {'vs fp32':>8} {'MiB':>6}  {'identical':>9}  convolutions")
    for name, runs in seconds.items():
        built = manifests[name]
        identical = len({m.engine_sha256 for m in built}) == 1
        median = statistics.median(runs)
        print(f"{name:<14} {median:>10.1f} ({min(runs):.1f}-{max(runs):.1f}) {median / base:>7.2f}x "
              f"{built[0].engine_bytes / 2**20:>6.1f}  {'yes' if identical else 'no':>9}  "
              f"{built[0].layer_precisions.convolutions}")
        if args.manifests:
            args.manifests.mkdir(parents=True, exist_ok=True)
            record = msgspec.structs.replace(built[0], build_seconds_all=[round(s, 2) for s in runs],
                                             rebuilds_identical=identical)
            record.write(args.manifests / f"dmfnet-edge-{name}.engine.json")
    if args.manifests:
        print(f"manifests: {args.manifests}/")


if __name__ == "__main__":
    main()
