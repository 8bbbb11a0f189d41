"""Write the JSON Schema of every record the toolkit reads or writes to docs/schemas/<format>.schema.json, so a
console in another language can validate what it reads (tests/test_records.py checks they are current).

    python benchmarks/record_schemas.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dmfnet_edge.records import RECORD_TYPES, json_bytes, record_type  # noqa: E402

OUT = REPO / "docs" / "schemas"


def schemas() -> dict[Path, bytes]:
    return {OUT / f"{fmt}.schema.json": json_bytes(record_type(fmt).schema()) for fmt in sorted(RECORD_TYPES)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report schemas that are missing or stale")
    args = parser.parse_args()
    stale = [path for path, data in schemas().items() if not path.is_file() or path.read_bytes() != data]
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(REPO)}")
        return 1 if stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for path, data in schemas().items():
        path.write_bytes(data)
        print(path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
