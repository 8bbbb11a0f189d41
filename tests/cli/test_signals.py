"""SIGTERM and Ctrl-C in the middle of a run: the process stops with one line and a distinct exit code, every
output already written is complete (earlier pairs are kept), nothing half-written is left, inputs untouched."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dmfnet_edge.io.images import read_image, write_image
from tests.bad_inputs import snapshot
from tests.conftest import smooth_image


def _default_sigint() -> None:
    """In the child: SIGINT back to its default, so that Python installs its Ctrl-C handler. A suite started in
    the background (nohup, `&`) runs with SIGINT ignored, which the child would inherit and keep."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_a_signal_mid_fuse_dir_keeps_the_pairs_already_fused(tmp_path, sig, code, word):
    rng = np.random.default_rng(4)
    pairs = tmp_path / "pairs"
    for name in range(24):
        write_image(pairs / "MRI-CT" / "MRI" / f"{name:02d}.png", smooth_image(rng, 256, 256))
        write_image(pairs / "MRI-CT" / "CT" / f"{name:02d}.png", smooth_image(rng, 256, 256))
    before = snapshot(pairs, skip=())
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "dmfnet_edge.cli.main", "fuse-dir", "--pairs", str(pairs), "--out",
                             str(out), "--threads", "1"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                            preexec_fn=_default_sigint)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(list(out.glob("MRI-CT/*.png"))) < 2:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"dmfnet: {word}; no partial outputs were kept; ") and "pairs were fused before it" in last
    written = sorted(out.glob("MRI-CT/*.png"))
    assert 2 <= len(written) < 24  # stopped mid-run, the earlier pairs kept
    assert f"; {len(written)} of 24 pairs were fused before it and are complete in {out}" in last  # and said so
    for png in written:
        assert read_image(png).shape == (256, 256)  # each one complete
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files left behind
    assert snapshot(pairs, skip=()) == before


_BUILD_SIGNALLED = """
import os, signal, sys, threading
from dmfnet_edge.engines import trt_builder
from dmfnet_edge.cli.main import export_main

real = trt_builder.captured  # entered right around TensorRT's build_serialized_network


def signalled(*args, **kwargs):
    threading.Timer(float(sys.argv[1]), os.kill, (os.getpid(), int(sys.argv[2]))).start()
    return real(*args, **kwargs)


trt_builder.captured = signalled
sys.exit(export_main(sys.argv[3:]))
"""


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_a_signal_mid_build_stops_it_and_writes_no_engine(tmp_path, tensorrt_rtx, sig, code, word):
    """The signal arrives while TensorRT builds in native code (its callbacks swallowed the handler's exception:
    the command went on, wrote the engine and exited 0). Now the build is cancelled and the command stops as
    every other does."""
    from dmfnet_edge.runtime import shipped_onnx

    out = tmp_path / "engines"
    graph = shipped_onnx("edge", "fp32")  # about 2 s to build, most of it in one native step
    argv = ["build", "--onnx", str(graph), "--out", str(out), "--toolchain", "tensorrt-rtx"]
    done = subprocess.run([sys.executable, "-c", _BUILD_SIGNALLED, "0.3", str(int(sig)), *argv], capture_output=True,
                          text=True, timeout=300, preexec_fn=_default_sigint)
    assert done.returncode == code, done.stderr
    assert done.stderr.strip().splitlines() == [f"dmfnet-export: {word}; no partial outputs were kept"]
    assert not out.exists() or not list(out.iterdir())  # no engine, no manifest, no temporary file
