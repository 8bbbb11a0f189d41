"""`dmfnet-export inspect ENGINE`: what an engine is (toolchain, targets, precision, layers by type, plugins,
profile, the hashes it was built from, build settings), from its manifest, checked against the engine itself as
far as this machine can (build/engine_info.py); exit 2 when the two disagree. A table, or `--json`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dmfnet_edge.engines.engine_info import EngineReport
    from dmfnet_edge.runtime.engine_manifest import EngineManifest


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("engine", type=Path, metavar="ENGINE", help="an .engine file written by 'dmfnet-export build'")
    p.add_argument("--json", action="store_true", help="print the manifest and the checks as JSON")


def _shape(shape: list[int]) -> str:
    return "x".join(str(d) for d in shape)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "none recorded"


def _settings(meta: EngineManifest) -> str:
    build = meta.build
    stripped = {True: "weights stripped (refit on load)", False: "weights in the plan", None: "weights in the plan"}
    return (f"optimisation level {build.builder_optimization_level}, workspace {build.workspace_mib} MiB, "
            f"{'strongly typed' if build.strongly_typed else 'weakly typed'}, {stripped[build.strip_weights]}, "
            f"cache key {build.cache_key or 'not recorded'}")


def _timing_cache(meta: EngineManifest) -> str:
    build = meta.build
    if build.timing_cache is None and build.timing_cache_sha256_before_build is None:
        return "none"
    locked = "locked" if build.timing_cache_locked else "updated by the build"
    return (f"{build.timing_cache} ({locked}; sha256 before {(build.timing_cache_sha256_before_build or '-')[:12]}, "
            f"after {(build.timing_cache_sha256_after_build or '-')[:12]})")


def _plugins(meta: EngineManifest) -> str:
    found = [f"{p.library or p.op} (sha256 {(p.sha256 or p.ptx_sha256 or '-')[:12]})" for p in meta.plugins]
    return ", ".join(found) or "none"


def rows(report: EngineReport) -> list[tuple[str, str]]:
    meta, layers = report.manifest, report.manifest.layer_precisions
    profile = meta.build.profile
    kept = meta.recipe.mixed_precision.kept_fp32 if meta.recipe and meta.recipe.mixed_precision else []
    sync = f" (+{layers.synchronisation_layers} synchronisation)" if layers.synchronisation_layers else ""
    where = meta.device.describe() if meta.device else "built ahead of time (no GPU)"
    return [
        ("engine", f"{meta.engine_file} ({meta.engine_bytes / 2**20:.1f} MiB, sha256 {meta.engine_sha256[:12]})"),
        ("toolchain", f"{meta.toolchain.flavour} {meta.toolchain.version}"),
        ("targets", f"{', '.join(meta.compute_capabilities)}; {where}"),
        ("precision", meta.precision + (f" (layer groups kept FP32: {', '.join(kept)})" if kept else "")),
        ("built from", f"{meta.onnx_file} sha256 {meta.onnx_sha256[:12]}, model {meta.model or '?'}, weights "
                       f"sha256 {(meta.weights_sha256 or '-')[:12]}"),
        ("profile", f"min {_shape(profile.min)}, opt {_shape(profile.opt)}, max {_shape(profile.max)}"),
        ("settings", _settings(meta)),
        ("timing cache", _timing_cache(meta)),
        ("plugins", _plugins(meta)),
        ("layers", f"{layers.layers}{sync}: {_counts(layers.layers_by_type)}"),
        ("convolutions", _counts(layers.convolutions)),
        ("INT8 fallbacks", ", ".join(layers.int8_fallbacks_fp32) or "none"),
        ("build time", f"{meta.build.build_seconds:.1f} s"),
        ("checked", "; ".join(report.checks)),
        ("engine loaded", "yes" if report.loaded else f"no: {report.not_loaded_because}"),
    ]


def run(args: argparse.Namespace) -> int:
    from dmfnet_edge.engines.engine_info import inspect_engine

    report = inspect_engine(args.engine)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    table = rows(report)
    width = max(len(k) for k, _ in table)
    for key, value in table:
        print(f"{key:<{width}}  {value}")
    return 0


COMMANDS = {"inspect": (configure, run)}
