"""Pixel identity of the shipped model: one SHA-256 over every fused pixel of a pair folder, per backend.

Refactors must not change what a user gets. Record the digest before a change, check it after:

    python benchmarks/pixel_identity.py --pairs ../shared/data/harvard/val --record docs/benchmarks/pixels.json
    python benchmarks/pixel_identity.py --pairs ../shared/data/harvard/val --check docs/benchmarks/pixels.json

The digest covers, pair by pair in sorted order, the task/name, the shape and the raw uint8 bytes of the fused
image (`fuse_pixels`, the library path every command uses). Floating-point kernels differ between CPU families,
so a digest is only comparable on the machine class it was recorded on (the record names it); `--check` says
which pairs differ when the digests do not match.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path

from dmfnet_edge.io.images import read_image
from dmfnet_edge.io.pairs import find_pairs
from dmfnet_edge.pipeline import fuse_pixels
from dmfnet_edge.runtime import open_runner


def digests(pairs_root: Path, backend: str, model: str, threads: int) -> dict[str, str]:
    runner = open_runner(backend, model, threads=threads)
    out = {}
    for pair in find_pairs(pairs_root):
        fused = fuse_pixels(runner, read_image(pair.mri), read_image(pair.other), f"{pair.task}/{pair.name}").pixels
        out[f"{pair.task}/{pair.name}"] = hashlib.sha256(repr(fused.shape).encode() + fused.tobytes()).hexdigest()
    return out


def total(per_pair: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(per_pair.items())).encode()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--model", default="edge")
    parser.add_argument("--threads", type=int, default=2)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--record", type=Path)
    group.add_argument("--check", type=Path)
    args = parser.parse_args()
    per_pair = digests(args.pairs, args.backend, args.model, args.threads)
    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    if args.record:
        if args.record.exists():
            sys.exit(f"{args.record}: exists; remove it first to record anew")
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps({"backend": args.backend, "model": args.model, "machine": machine,
                                           "pairs": len(per_pair), "sha256": total(per_pair),
                                           "per_pair": per_pair}, indent=1) + "\n")
        print(f"recorded {len(per_pair)} pairs: {total(per_pair)}")
        return 0
    recorded = json.loads(args.check.read_text())
    differ = sorted(k for k in recorded["per_pair"].keys() | per_pair.keys()
                    if recorded["per_pair"].get(k) != per_pair.get(k))
    print(f"{len(per_pair)} pairs on {args.backend}: {total(per_pair)} (recorded {recorded['sha256']})")
    if differ:
        print(f"{len(differ)} pairs differ: {', '.join(differ[:10])}")
        return 1
    print("identical, bit for bit")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
