"""Run the bad-input catalogue (tests/bad_inputs.py), every case in a fresh `dmfnet` process, and print a Markdown
table of what each produced: exit code, the one-line message, whether any output file was left behind and
whether every input is byte-identical afterwards. Used for docs/RELIABILITY.md.

    python benchmarks/reliability_report.py [--model PATH]   (default: a seeded tiny model)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dmfnet_edge.models.checkpoint import build_model, save_model  # noqa: E402
from tests.bad_inputs import catalogue, run_case_process  # noqa: E402

PYDICOM_TEST_FILES = Path(__import__("pydicom").__file__).parent / "data" / "test_files"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, help="weights base path (default: a seeded tiny model)")
    args = parser.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            tiny = build_model("tiny")
            model = Path(tmp) / "tiny"
            save_model(tiny, tiny.cfg, model, "dmfnet", {})
        print("| bad input | exit | message (paths shortened) | output left | inputs unchanged |")
        print("|---|---|---|---|---|")
        for i, case in enumerate(catalogue()):
            folder = Path(tmp) / f"case{i}"
            folder.mkdir()
            outcome = run_case_process(case, folder, model)
            code, stderr, left = outcome.code, outcome.stderr, outcome.left
            same = outcome.inputs_after == outcome.inputs_before
            ok = code == case.exit_code and (case.message in stderr) and (not left or code == 0) and same \
                and "Traceback" not in stderr and (code == 0 or stderr.count("\n") == 1)
            failures += not ok
            message = stderr.strip().replace(str(folder) + "/", "").replace(str(folder), ".")
            message = message.replace(str(PYDICOM_TEST_FILES) + "/", "pydicom test file ")
            message = message.replace("dmfnet: error: ", "") or "(fused; exit 0)"
            print(f"| {case.name} | {code} | {message.replace('|', '/')} | "
                  f"{'no' if not left or code == 0 else 'YES'} | {'yes' if same else 'NO'} |"
                  f"{'' if ok else ' **unexpected**'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
