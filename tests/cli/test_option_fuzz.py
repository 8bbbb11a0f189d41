"""Fuzzing every option of the `dmfnet` commands that run locally in seconds, read from the real parser: a valid
command line plus options with hostile values (out of range, non-finite, empty, huge, wrong type, odd paths,
every choice). Whatever is given, the command either succeeds or refuses with one `dmfnet: error:` line and
exit 2 or 3; no exception escapes, no input changes, and a refused run leaves no output.

* every (command, option, value) is parsed (cheap: all of them);
* every one the parser accepts is run (slow-marked: several hundred runs);
* property-based combinations of up to four such options (hypothesis);
* a fixed sample of those combinations in fresh processes, where a traceback or a crash shows."""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmfnet_edge.cli.main import build_parser, main
from dmfnet_edge.io.images import write_image
from tests.bad_inputs import snapshot
from tests.conftest import smooth_image
from tests.volume_fixtures import write_nifti

REPO = Path(__file__).resolve().parents[2]
# --server/--server-model would contact a network address (their errors are tested in tests/serving/test_serving.py)
NOT_FUZZED = {"-h", "--help", "--server", "--server-model"}
HOSTILE = ["-1", "0", "1", "2", "65", "99999999999999999999", "1e309", "nan", "inf", "-inf", "", " ", "abc",
           "x" * 300, "\N{SNOWMAN}", "1,2", "40,400", "nan,400", "0,0", "-5,-5", "@fifo", "@folder",
           "..", "cuda", "cuda:7", "banana", "edge", "tiny", "hot", "jet"]
COMMANDS = ["fuse", "fuse-dir", "baseline", "eval", "info", "fuse-volume"]
# stand-ins for /dev/null and /dev/full inside the inputs folder: a root user's output over a device node would
# replace it for the whole machine, which is exactly what must never happen, so the fuzzer uses its own
# (the FIFO lies among the inputs, so replacing it shows as a changed input; the empty folder lies outside them,
# since writing a folder output into an empty folder is fine)
SPECIAL = {"@fifo": "special/pipe", "@folder": "../empty-folder"}


def _value(value: str, root: Path) -> str:
    return str((root / SPECIAL[value]).resolve()) if value in SPECIAL else value


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_base) -> dict[str, list[str]]:
    """Valid base command lines over small inputs, keyed by command."""
    root = tmp_path_factory.mktemp("fuzz-inputs")
    rng = np.random.default_rng(3)
    write_image(root / "mri.png", smooth_image(rng, 64, 64))
    write_image(root / "ct.png", smooth_image(rng, 64, 64))
    for name in ("a", "b"):
        write_image(root / "pairs" / "MRI-CT" / "MRI" / f"{name}.png", smooth_image(rng, 64, 64))
        write_image(root / "pairs" / "MRI-CT" / "CT" / f"{name}.png", smooth_image(rng, 64, 64))
        write_image(root / "fused" / "MRI-CT" / f"{name}.png", smooth_image(rng, 64, 64))
    stack = np.stack([smooth_image(rng, 64, 64) for _ in range(2)])
    write_nifti(root / "mri.nii.gz", stack)
    write_nifti(root / "ct.nii.gz", stack[::-1].copy())
    (root / "special").mkdir()
    os.mkfifo(root / "special" / "pipe")
    (root.parent / "empty-folder").mkdir()
    model = str(tiny_model_base)
    return {
        "root": [str(root)],
        "fuse": ["fuse", "--mri", f"{root}/mri.png", "--other", f"{root}/ct.png", "--model", model],
        "fuse-dir": ["fuse-dir", "--pairs", f"{root}/pairs", "--model", model],
        "baseline": ["baseline", "--method", "max", "--pairs", f"{root}/pairs"],
        "eval": ["eval", "--pairs", f"{root}/pairs", "--fused", f"{root}/fused"],
        "info": ["info", "--model", model],
        "fuse-volume": ["fuse-volume", "--mri", f"{root}/mri.nii.gz", "--other", f"{root}/ct.nii.gz",
                        "--model", model],
    }


def _options(command: str) -> list[argparse.Action]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices[command]._actions
            if a.option_strings and not set(a.option_strings) & NOT_FUZZED]


OUTPUT_OPTIONS = {"-o": "fused.png", "--output": "fused.png", "--out": "outdir", "--json": "m.json"}
COUNTER = itertools.count()


def _base_line(inputs: dict[str, list[str]], command: str, tag: str) -> tuple[list[str], Path]:
    """The command's valid line with its output options pointing into a fresh folder (returned too)."""
    out = Path(inputs["root"][0]).parent / f"{tag}-{next(COUNTER)}"
    argv = list(inputs[command])
    flags = {a.option_strings[0] for a in _options(command)}
    for opt, name in OUTPUT_OPTIONS.items():
        if opt in flags and opt != "--json":
            argv += [opt, str(out / name)]
    return argv, out


@st.composite
def command_lines(draw, inputs: dict[str, list[str]]) -> tuple[list[str], Path]:
    command = draw(st.sampled_from(COMMANDS))
    argv, out = _base_line(inputs, command, "out")
    for action in draw(st.lists(st.sampled_from(_options(command)), max_size=4, unique_by=lambda a: a.dest)):
        option = draw(st.sampled_from(action.option_strings))
        if action.nargs == 0:
            argv.append(option)
            continue
        values = HOSTILE + [str(c) for c in action.choices or []]
        if option in OUTPUT_OPTIONS:
            values += [str(out / OUTPUT_OPTIONS[option])]
        argv += [option, _value(draw(st.sampled_from(values)), Path(inputs["root"][0]))]
    return argv, out


def _single_option_lines(inputs: dict[str, list[str]]):
    """(argv, out folder) for every command x option x value, on the command's valid base line."""
    root = Path(inputs["root"][0])
    for command in COMMANDS:
        for action in _options(command):
            values = [None] if action.nargs == 0 else HOSTILE + [str(c) for c in action.choices or []]
            for value in values:
                argv, out = _base_line(inputs, command, "single")
                yield argv + [action.option_strings[0]] + ([] if value is None else [_value(value, root)]), out


@contextlib.contextmanager
def _working_folder(root: Path):
    """Relative output paths drawn by the fuzzer ('0', 'nan', '') land in a scratch folder beside the inputs,
    never in the repository."""
    work = root.parent / "cwd"
    work.mkdir(exist_ok=True)
    previous = os.getcwd()
    os.chdir(work)
    try:
        yield work
    finally:
        os.chdir(previous)


def _run_in_process(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    return code, err.getvalue()


def test_every_option_value_parses_or_is_a_one_line_usage_error(inputs):
    parser = build_parser()
    counts = {"parsed": 0, "refused": 0}
    for argv, _ in _single_option_lines(inputs):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                parser.parse_args(argv)
                counts["parsed"] += 1
                continue
            except SystemExit as exc:
                code = exc.code
        counts["refused"] += 1
        lines = err.getvalue().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("dmfnet: error: "), (argv, err.getvalue())
    assert counts["parsed"] > 500 and counts["refused"] > 400, counts


@pytest.mark.slow
def test_every_accepted_option_value_runs_or_is_refused_in_one_line(inputs):
    root = Path(inputs["root"][0])
    before = snapshot(root)
    parser = build_parser()
    runs = 0
    with _working_folder(root):
        for argv, out in _single_option_lines(inputs):
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    parser.parse_args(argv)
            except SystemExit:
                continue  # refused at parse time: the test above
            code, err = _run_in_process(argv)
            runs += 1
            _check(code, err, out, before, root, argv)
    assert runs > 500, runs


def _check(code: int, err: str, out: Path, before: dict, root: Path, argv: list[str] | None = None) -> None:
    lines = err.splitlines()
    assert code in (0, 2, 3), (argv, code, err[-2000:])
    if code:
        assert len(lines) == 1 and lines[0].startswith("dmfnet: error: "), (argv, err[-2000:])
        left = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
        assert left == [], (argv, left)
    assert snapshot(root) == before, (argv, "an input changed")


@pytest.mark.usefixtures("inputs")
def test_every_option_value_is_accepted_or_refused_in_one_line(inputs):
    root = Path(inputs["root"][0])
    before = snapshot(root)
    seen = {"runs": 0, "refused": 0}

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(command_lines(inputs))
    def run(case):
        argv, out = case
        code, err = _run_in_process(argv)
        seen["runs"] += 1
        seen["refused"] += code != 0
        _check(code, err, out, before, root, argv)

    with _working_folder(root):
        run()
    assert seen["runs"] >= 100 and 0 < seen["refused"] < seen["runs"], seen  # both outcomes were exercised


def test_a_sample_of_fuzzed_command_lines_in_fresh_processes(inputs):
    """The outside view on 12 fixed draws: no traceback or crash can hide behind an in-process harness."""
    root = Path(inputs["root"][0])
    before = snapshot(root)
    draws: list[tuple[list[str], Path]] = []

    @settings(max_examples=12, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(command_lines(inputs))
    def collect(case):
        draws.append(case)

    collect()
    with _working_folder(root) as work:
        runs = [subprocess.run([sys.executable, "-m", "dmfnet_edge.cli.main", *argv], cwd=work, capture_output=True,
                               text=True, timeout=300, stdin=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": str(REPO)}) for argv, _ in draws]
    for (argv, out), done in zip(draws, runs):
        assert done.returncode >= 0, f"{argv}: killed by signal {-done.returncode}"
        assert "Traceback" not in done.stderr, (argv, done.stderr[-2000:])
        _check(done.returncode, done.stderr, out, before, root, argv)
