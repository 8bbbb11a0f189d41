"""Fuzz the record reader under a memory cap: every record type, fed random and mutated JSON and YAML (bit
flips, cuts, insertions of brackets, quotes, anchors, aliases, huge numbers, tags), must give a record or one
RecordError line; anything else (another exception, a crash, the memory cap hit) is counted as a crash.

    python benchmarks/fuzz_records.py --cases 50000 --seed 1 [--memory-mib 1024]

The cases run in a child process whose address space is capped (RLIMIT_AS), so an expansion the reader failed to
bound would end it with a MemoryError, not slow the machine down.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEEDS = {
    "dmfnet-edge-weights": REPO / "dmfnet_edge" / "weights" / "dmfnet-edge.json",
    "dmfnet-edge-onnx": REPO / "dmfnet_edge" / "weights" / "dmfnet-edge-int8-onnxruntime.onnx.json",
    "dmfnet-edge-engine": REPO / "docs" / "engines" / "dmfnet-edge-int8-tensorrt.engine.json",
    "dmfnet-edge-calibration": REPO / "calibration" / "harvard-train-16.json",
    "dmfnet-edge-recipe": REPO / "export" / "jetson-orin-int8.yaml",
    "dmfnet-edge-training-state": REPO / "checkpoints" / "edge-stage2" / "last.json",
}
PIECES = [b"", b"{", b"[", b"]", b"}", b'"', b"\\", b"&a ", b"*a", b"9" * 5000, b"1e999", b"-1", b"null", b"\xff",
          b":", b"\n  - ", b"!!python/object:os.system", b"[" * 5000, b"\x00", b"\t", b"NaN", b"true", b"'"]


def made_seeds() -> dict[str, bytes]:
    """Valid records of the types no shipped file holds, made through their classes."""
    from dmfnet_edge.records import record_type

    h = "ab" * 32
    source = {"path": "/data/mr", "format": "dicom", "sha256": h, "slices": 3}
    made = {
        "dmfnet-edge-provenance": {
            "inputs": {"mri": {**source, "spacing_mm": [2.0, 1.0, 1.0]}, "other": {**source, "modality": "CT"}},
            "model": {"backend": "onnxruntime"}, "intensity": {"mri": "auto"}, "outputs": ["/out/fused.nii.gz"],
            "seconds": {"total": 1.5}, "versions": {"dmfnet-edge": "0.1.0"}, "created_utc": "2026-12-07T20:00:00Z"},
        "dmfnet-edge-triton-repository": {
            "model": "dmfnet_edge", "platform": "onnxruntime_onnx", "source": "g.onnx", "source_sha256": h,
            "source_manifest": {"format": "dmfnet-edge-onnx"}, "config_checked_against_triton_schema": True},
        "dmfnet-edge-ort-cache": {
            "key": h, "source_sha256": h, "onnxruntime": "1.32.0", "cpu": "AMD EPYC; flags 0123456789abcdef",
            "settings": "simulate_qdq=0", "graph_sha256": h, "graph_bytes": 7163897},
    }
    return {fmt: record_type(fmt).convert(data, fmt).encode() for fmt, data in made.items()}


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not out:
            out += rng.choice(PIECES)
            continue
        at, kind = rng.randrange(len(out)), rng.random()
        if kind < 0.3:
            out[at] ^= 1 << rng.randrange(8)
        elif kind < 0.5:
            del out[at:at + rng.randint(1, 64)]
        elif kind < 0.9:
            out[at:at] = rng.choice(PIECES)
        else:
            del out[at:]
    return bytes(out)


def run(cases: int, seed: int) -> int:
    from dmfnet_edge.errors import RecordError
    from dmfnet_edge.records import RECORD_TYPES, parse_yaml, record_type

    rng = random.Random(seed)
    seeds = {**{fmt: path.read_bytes() for fmt, path in SEEDS.items()}, **made_seeds()}
    counts: Counter[tuple[str, str]] = Counter()
    crashes = []
    start = time.perf_counter()
    for k in range(cases):
        fmt = rng.choice(sorted(RECORD_TYPES))
        base = seeds.get(fmt) or rng.choice(list(seeds.values()))
        data = mutate(rng, base) if rng.random() < 0.9 else rng.randbytes(rng.randint(0, 256))
        as_yaml = fmt == "dmfnet-edge-recipe" or rng.random() < 0.2
        cls = record_type(fmt)
        try:
            if as_yaml:
                cls.convert(parse_yaml(data, "case.yaml", cls.DEPTH), "case.yaml")
            else:
                cls.decode(data, "case.json")
            counts[(fmt, "record")] += 1
        except RecordError as exc:
            counts[(fmt, "RecordError")] += 1
            if "\n" in str(exc):
                crashes.append((k, fmt, "a message of several lines"))
        except Exception as exc:  # noqa: BLE001 (what the fuzzer is looking for)
            counts[(fmt, "crash")] += 1
            crashes.append((k, fmt, f"{type(exc).__name__}: {str(exc)[:120]}"))
    seconds = time.perf_counter() - start
    print(f"{cases} cases in {seconds:.0f} s ({cases / seconds:.0f}/s), seed {seed}")
    print(f"{'record type':30} {'record':>7} {'RecordError':>12} {'crash':>6}")
    for fmt in sorted(RECORD_TYPES):
        print(f"{fmt:30} {counts[(fmt, 'record')]:7} {counts[(fmt, 'RecordError')]:12} {counts[(fmt, 'crash')]:6}")
    for k, fmt, what in crashes[:20]:
        print(f"crash at case {k} ({fmt}): {what}")
    print(f"crashes: {len(crashes)}")
    return 1 if crashes else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--memory-mib", type=int, default=1024, help="address-space cap of the fuzzing process")
    args = parser.parse_args()
    cap = args.memory_mib << 20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return run(args.cases, args.seed)


if __name__ == "__main__":
    sys.exit(main())
