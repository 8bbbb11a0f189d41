"""The one output rule for results of several files: staged whole, then renamed with Ctrl-C and SIGTERM held,
the completeness marker last. A full disk or an interrupt leaves either the whole new result or nothing new; the
commands that write such results (dmfnet-export onnx, quantize and verify, dmfnet fuse-dir) are run as a user
runs them, in a child process with the failure injected."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dmfnet_edge.errors import EnvironmentProblem
from dmfnet_edge.files import write_together

REPO = Path(__file__).resolve().parents[1]


def _full_disk_at(monkeypatch, marker: str) -> None:
    """The disk fills when the staging file whose name starts with `marker` is created."""
    import tempfile

    real = tempfile.mkstemp

    def full(*args, **kwargs):
        if marker in kwargs.get("prefix", ""):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", full)


def test_a_full_disk_while_staging_changes_nothing(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(b"old a")
    (tmp_path / "a.json").write_bytes(b"old json")
    _full_disk_at(monkeypatch, ".a.json.")
    with pytest.raises(EnvironmentProblem, match="cannot write here"):
        write_together([(tmp_path / "a.png", b"new a"), (tmp_path / "a.json", b"new json")])
    assert (tmp_path / "a.png").read_bytes() == b"old a" and (tmp_path / "a.json").read_bytes() == b"old json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.png"]  # no staging file left


def test_ctrl_c_during_the_renames_waits_for_the_whole_result(tmp_path, monkeypatch):
    real = os.replace
    calls = []

    def replace_then_interrupt(src, dst):
        real(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the first and the second rename

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    # Ctrl-C as a terminal delivers it (a shell without job control starts a background pytest with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            write_together([(tmp_path / "x.png", b"x"), (tmp_path / "x.json", b"{}")])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (tmp_path / "x.png").read_bytes() == b"x" and (tmp_path / "x.json").read_bytes() == b"{}"


CHILD = """
import errno, sys, tempfile
real = tempfile.mkstemp
def full(*args, **kwargs):
    if kwargs.get("prefix", "").startswith({marker!r}):
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(*args, **kwargs)
tempfile.mkstemp = full
from dmfnet_edge.cli.main import {entry}
sys.exit({entry}({argv!r}))
"""


def _run_with_full_disk(marker: str, entry: str, argv: list[str]) -> subprocess.CompletedProcess:
    code = textwrap.dedent(CHILD.format(marker=marker, entry=entry, argv=argv))
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_onnx_export_full_disk_at_the_manifest_leaves_no_graph(tmp_path):
    done = _run_with_full_disk(".g.onnx.json.", "export_main",
                               ["onnx", "--model", "tiny", "--size", "64", "-o", str(tmp_path), "--name", "g"])
    assert done.returncode == 3 and done.stderr.count("\n") == 1 and "No space left" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []  # the graph was written before its manifest: a graph without one


def test_fuse_dir_full_disk_at_the_report_text_leaves_no_part_of_the_report(tmp_path):
    from tests.bad_inputs import _grey, _img

    pairs = tmp_path / "pairs"
    _img(pairs, "MRI-CT/MRI/a.png", _grey())
    _img(pairs, "MRI-CT/CT/a.png", _grey(seed=1))
    out = tmp_path / "out"
    done = _run_with_full_disk(".report.md.", "main", ["fuse-dir", "--pairs", str(pairs), "--out", str(out)])
    assert done.returncode == 3 and "No space left" in done.stderr, done.stderr
    left = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert left == ["a.png"], left  # the fused pair is complete and kept; overview.png and report.md are not


def test_verify_report_full_disk_at_the_picture_leaves_no_json(tmp_path, monkeypatch):
    import numpy as np

    from dmfnet_edge.reporting import gate as verify

    class Side:
        pixels = np.zeros((64, 64), np.uint8)

    worst = type("Worst", (), {"ref": Side, "test": Side, "diff": np.zeros((64, 64), np.float32)})
    _full_disk_at(monkeypatch, ".g.worst.png.")
    with pytest.raises(EnvironmentProblem):
        verify.write_report({"precision": "fp32", "worst_pair": "MRI-CT/a", "passed": True}, worst, tmp_path, "g")
    assert list(tmp_path.iterdir()) == []
