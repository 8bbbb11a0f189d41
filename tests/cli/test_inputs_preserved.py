"""Inputs are sacred: no command writes over a file or folder it reads or one that holds them, whatever path
spelling leads there ('..', symlinks, hard links), and --overwrite replaces only a previous output of the same
command. Every case hashes every input file before and after, and checks the one-line error and exit code 2."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dmfnet_edge.cli.main import export_main, main
from dmfnet_edge.io.images import write_image
from tests.bad_inputs import snapshot
from tests.conftest import smooth_image
from tests.volume_fixtures import write_nifti, write_series


@pytest.fixture
def data(tmp_path) -> Path:
    """tmp/data: a pair of PNGs, a pairs folder, NIfTI volumes and a DICOM series, all inputs."""
    rng = np.random.default_rng(7)
    root = tmp_path / "data"
    write_image(root / "mri.png", smooth_image(rng, 64, 64))
    write_image(root / "ct.png", smooth_image(rng, 64, 64))
    for name in ("01", "02"):
        write_image(root / "pairs" / "MRI-CT" / "MRI" / f"{name}.png", smooth_image(rng, 64, 64))
        write_image(root / "pairs" / "MRI-CT" / "CT" / f"{name}.png", smooth_image(rng, 64, 64))
    stack = np.stack([smooth_image(rng, 64, 64) for _ in range(3)])
    write_nifti(root / "mri.nii.gz", stack)
    write_nifti(root / "ct.nii.gz", stack[::-1].copy())
    write_series(root / "series" / "mri", stack, "MR")
    write_series(root / "series" / "ct", stack[::-1].copy(), "CT")
    return root


def _refused(capsys, data: Path, argv: list[str], message: str, entry=main) -> None:
    before = snapshot(data, skip=())
    code = entry(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert snapshot(data, skip=()) == before  # every input byte-identical, nothing added


def _fuse(data: Path, model: Path, output: str, *extra: str) -> list[str]:
    return ["fuse", "--mri", str(data / "mri.png"), "--other", str(data / "ct.png"), "-o", output, "--model",
            str(model), "--backend", "torch", *extra]


def test_fuse_never_writes_over_its_inputs(capsys, data, tiny_model_base, tmp_path):
    (tmp_path / "link.png").symlink_to(data / "mri.png")
    os.link(data / "ct.png", tmp_path / "hard.png")
    for output in (data / "mri.png", data / "pairs" / ".." / "ct.png", tmp_path / "link.png", tmp_path / "hard.png"):
        _refused(capsys, data, _fuse(data, tiny_model_base, str(output), "--overwrite"), "that is the input")


def test_fuse_replaces_an_existing_output_only_when_asked(capsys, data, tiny_model_base, tmp_path):
    out = tmp_path / "fused.png"
    assert main(_fuse(data, tiny_model_base, str(out))) == 0
    first = out.read_bytes()
    _refused(capsys, data, _fuse(data, tiny_model_base, str(out)), "exists; pass --overwrite")
    assert out.read_bytes() == first
    assert main(_fuse(data, tiny_model_base, str(out), "--overwrite")) == 0


@pytest.mark.parametrize("command", ["fuse-dir", "baseline", "compare"])
def test_folder_commands_keep_out_of_the_pairs_folder(capsys, data, tiny_model_base, command):
    extra = ["--method", "max"] if command == "baseline" else ["--model", str(tiny_model_base), "--backend", "torch"]
    pairs = data / "pairs"
    for out, message in ((pairs, "that is the input"), (data, "holds the input"), (pairs / "fused", "lies inside")):
        _refused(capsys, data, [command, "--pairs", str(pairs), "--out", str(out), *extra], message)


def _volume(data: Path, model: Path, mri: str, other: str, output: Path, *extra: str) -> list[str]:
    return ["fuse-volume", "--mri", str(data / mri), "--other", str(data / other), "-o", str(output),
            "--other-modality", "CT", "--model", str(model), "--backend", "torch", "--batch", "2", *extra]


def test_fuse_volume_overwrite_never_deletes_inputs(capsys, data, tiny_model_base, monkeypatch):
    nifti = ("mri.nii.gz", "ct.nii.gz")
    series = ("series/mri", "series/ct")
    cases = [(nifti, data / "mri.nii.gz", "that is the input"), (nifti, data, "holds the input"),
             (series, data / "series" / "mri", "that is the input"), (series, data / "series", "holds the input"),
             (series, data / "series" / "ct" / "fused", "lies inside")]
    for inputs, output, message in cases:
        _refused(capsys, data, _volume(data, tiny_model_base, *inputs, output, "--overwrite"), message)
    monkeypatch.chdir(data)
    _refused(capsys, data, _volume(data, tiny_model_base, *nifti, Path("."), "--overwrite"), "holds the input")


def test_overwrite_replaces_only_a_previous_fuse_volume_output(capsys, data, tiny_model_base, tmp_path):
    users = tmp_path / "users-folder"
    users.mkdir()
    (users / "notes.txt").write_text("keep me")
    args = ("series/mri", "series/ct")
    _refused(capsys, data, _volume(data, tiny_model_base, *args, users, "--overwrite"), "not an output of")
    assert (users / "notes.txt").read_text() == "keep me"
    out = tmp_path / "fused-series"
    assert main(_volume(data, tiny_model_base, *args, out)) == 0
    first = sorted(p.name for p in out.iterdir())
    (out / "extra.dcm").write_bytes(b"a file fuse-volume did not write")
    _refused(capsys, data, _volume(data, tiny_model_base, *args, out, "--overwrite"), "did not write (e.g. extra.dcm)")
    (out / "extra.dcm").unlink()
    capsys.readouterr()
    assert main(_volume(data, tiny_model_base, *args, out, "--overwrite")) == 0
    assert sorted(p.name for p in out.iterdir()) == first and not list(tmp_path.glob(".fused-series.*"))


def test_quantize_never_writes_over_its_input_graph(capsys, data, tmp_path):
    assert export_main(["onnx", "--model", "tiny", "-o", str(data / "graphs"), "--size", "64"]) == 0
    graph = data / "graphs" / "dmfnet-tiny-fp32.onnx"
    _refused(capsys, data, ["quantize", "--onnx", str(graph), "--precision", "fp16", "-o", str(graph)],
             "that is the input --onnx", entry=export_main)
