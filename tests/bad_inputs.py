"""The bad-input catalogue: every case builds its inputs in a folder, runs one CLI command and states the exit
code and the message it must produce. `run_case_process` runs it as a user would, in a fresh `dmfnet` or
`dmfnet-export` process (a traceback, a crash or a hang can only be seen from outside), and hashes every input
before and after. Used by tests/cli/test_bad_inputs.py and by benchmarks/reliability_report.py (which prints the
observed errors for docs/RELIABILITY.md).

This module holds the runner and the cases of the image readers; every other surface keeps its cases in a
module of its own, `tests/hostile_<surface>.py` with a `CASES` list, and `catalogue()` gathers them all.

    python -m tests.bad_inputs CASE-NAME FOLDER MODEL   the child process of a case with a patch (disk full)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import cv2
import numpy as np

PYDICOM_FILES = None


def _pydicom_file(name: str) -> Path:
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files" / name


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path, Path], list[str]]  # (folder, model base) -> argv
    exit_code: int
    message: str
    patch: Callable[[], contextlib.AbstractContextManager] | None = None
    tool: str = "dmfnet"  # or "dmfnet-export"
    model: bool = True  # append `--model MODEL` unless the command line names one (dmfnet commands only)


def _img(folder: Path, name: str, pixels: np.ndarray) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), pixels):
        raise RuntimeError(f"could not write fixture {path}")
    return path


def _grey(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _pair(folder: Path, other: Path | None = None, mri: Path | None = None) -> list[str]:
    mri = mri or _img(folder, "mri.png", _grey())
    other = other or _img(folder, "ct.png", _grey(seed=1))
    return ["fuse", "--mri", str(mri), "--other", str(other), "-o", str(folder / "out" / "fused.png")]


def _raw(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _eval(folder: Path, side: int) -> list[str]:
    """`dmfnet eval` of one side x side pair and its fused image."""
    for name in ("MRI-CT/MRI/a.png", "MRI-CT/CT/a.png"):
        _img(folder / "pairs", name, _grey(side, side))
    _img(folder / "fused", "MRI-CT/a.png", _grey(side, side))
    return ["eval", "--pairs", str(folder / "pairs"), "--fused", str(folder / "fused")]


def _fifo(folder: Path) -> Path:
    path = folder / "pipe.png"
    os.mkfifo(path)
    return path


def _link(folder: Path, target: str) -> Path:
    path = folder / "link.png"
    path.symlink_to(target)
    return path


def _huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (the pixel data is a stub that never gets decoded)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _truncated_png(folder: Path) -> Path:
    path = _img(folder, "t.png", _grey(256, 256))
    path.write_bytes(path.read_bytes()[:300])
    return path


def _float_tiff(folder: Path, nan: bool) -> Path:
    values = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    if nan:
        values[3, 3] = np.nan
    return _img(folder, "f.tif", values)


def _series(folder: Path, name: str, slices: int, modality: str, spacing=(2.0, 1.0, 1.0)) -> Path:
    from tests.volume_fixtures import write_series

    write_series(folder / name, np.stack([_grey(seed=i) for i in range(slices)]), modality, spacing=spacing)
    return folder / name


def _volume(folder: Path, mri: Path, other: Path) -> list[str]:
    return ["fuse-volume", "--mri", str(mri), "--other", str(other), "-o", str(folder / "out" / "fused")]


def _nifti(folder: Path, data: np.ndarray) -> Path:
    import nibabel as nib

    path = folder / "v.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _disk_full() -> contextlib.AbstractContextManager:
    real = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    return mock.patch("os.replace", side_effect=full) if real else contextlib.nullcontext()


IMAGE_CASES: list[Case] = [
    Case("missing file", lambda d, m: _pair(d, other=d / "nope.png"), 2, "file not found"),
    Case("folder instead of a file", lambda d, m: _pair(d, other=d), 2, "is a folder"),
    Case("empty file", lambda d, m: _pair(d, other=_raw(d, "e.png", b"")), 2, "file is empty"),
    Case("truncated PNG", lambda d, m: _pair(d, other=_truncated_png(d)), 2, "not a readable image"),
    Case("corrupt bytes named .png", lambda d, m: _pair(d, other=_raw(d, "c.png", os.urandom(4096))), 2,
         "not a readable image"),
    Case("text file named .png", lambda d, m: _pair(d, other=_raw(d, "t.png", b"hello world\n" * 20)), 2,
         "not a readable image"),
    Case("unsupported format (.gif)", lambda d, m: _pair(d, other=_raw(d, "x.gif", b"GIF89a" + b"\0" * 64)), 2,
         "unsupported file type"),
    Case("mismatched shapes", lambda d, m: _pair(d, other=_img(d, "s.png", _grey(48, 64))), 2, "co-registered"),
    Case("two-channel (grey + alpha) image", lambda d, m: _pair(d, other=_grey_alpha(d)), 0, ""),
    Case("16-bit PNG", lambda d, m: _pair(d, other=_img(d, "w.png", (_grey().astype(np.uint16) * 257))), 0, ""),
    Case("float TIFF", lambda d, m: _pair(d, other=_float_tiff(d, nan=False)), 0, ""),
    Case("float TIFF with NaN", lambda d, m: _pair(d, other=_float_tiff(d, nan=True)), 2, "NaN or Inf"),
    Case("all-zero images", lambda d, m: _pair(d, mri=_img(d, "z1.png", np.zeros((64, 64), np.uint8)),
                                               other=_img(d, "z2.png", np.zeros((64, 64), np.uint8))), 0, ""),
    Case("constant images", lambda d, m: _pair(d, mri=_img(d, "k1.png", np.full((64, 64), 77, np.uint8)),
                                               other=_img(d, "k2.png", np.full((64, 64), 200, np.uint8))), 0, ""),
    Case("image too small (8x8)", lambda d, m: _pair(d, mri=_img(d, "a.png", _grey(8, 8)),
                                                     other=_img(d, "b.png", _grey(8, 8))), 2, "too small"),
    Case("enormous image (header 40000x40000)", lambda d, m: _pair(d, other=_raw(
        d, "big.png", _huge_png_header(40000, 40000))), 2, "exceeds the budget"),
    Case("DICOM without pixel data", lambda d, m: _pair(d, other=_pydicom_file("rtplan.dcm")), 2, "no pixel data"),
    Case("truncated DICOM pixel data", lambda d, m: _pair(d, other=_pydicom_file("MR_truncated.dcm")), 2,
         "cannot be decoded"),
    Case("NIfTI volume without --slice", lambda d, m: _pair(d, other=_nifti(d, np.zeros((64, 64, 3), np.float32))),
         2, "--slice"),
    Case("NIfTI with NaN", lambda d, m: [*_pair(d, other=_nifti(d, np.full((64, 64, 2), np.nan, np.float32))),
                                         "--slice", "0"], 2, "NaN or Inf"),
    Case("corrupt NIfTI", lambda d, m: _pair(d, other=_raw(d, "bad.nii", b"\0" * 400)), 2, "not a readable NIfTI"),
    Case("bad --window", lambda d, m: [*_pair(d), "--window-other", "wide"], 2, "CENTER,WIDTH"),
    Case("unknown model", lambda d, m: [*_pair(d), "--model", str(d / "nothing")], 2, "missing"),
    Case("damaged weights", lambda d, m: [*_pair(d), "--model", _damaged_model(d, m)], 2, "does not match"),
    Case("output folder not writable (under a file)", lambda d, m: [*_pair(d)[:-1], str(
        _raw(d, "afile", b"x") / "sub" / "f.png")], 3, "cannot write here"),
    Case("disk full while writing", lambda d, m: _pair(d), 3, "No space left", _disk_full),
    Case("volumes not registered (slice count)", lambda d, m: _volume(d, _series(d, "mri", 4, "MR"),
                                                                      _series(d, "ct", 3, "CT")), 2,
         "slice count differs"),
    Case("volumes not registered (spacing)", lambda d, m: _volume(d, _series(d, "mri", 3, "MR"), _series(
        d, "ct", 3, "CT", spacing=(3.0, 1.0, 1.0))), 2, "spacing differs"),
    Case("wrong modality tags (CT given as MRI)", lambda d, m: _volume(d, _series(d, "ct", 3, "CT"),
                                                                       _series(d, "mri", 3, "MR")), 2, "swap"),
    Case("empty DICOM folder", lambda d, m: _volume(d, _series(d, "mri", 3, "MR"), _empty(d)), 2, "empty folder"),
    Case("a FIFO as input (opening it would block)", lambda d, m: _pair(d, other=_fifo(d)), 2,
         "not a regular file"),
    Case("/dev/zero behind a symlink", lambda d, m: _pair(d, mri=_link(d, "/dev/zero")), 2, "not a regular file"),
    Case("NaN window", lambda d, m: [*_pair(d), "--window-mri", "nan,400"], 2, "must be finite numbers"),
    Case("output name over 255 bytes", lambda d, m: [*_pair(d)[:-1], str(d / "out" / ("f" * 300 + ".png"))], 2,
         "file systems allow 255"),
    Case("oversized file named .png", lambda d, m: _pair(d, other=_raw(d, "big.png", b"\x89PNG" + bytes(40 << 20))),
         2, "more than an image within the pixel budget can take"),
    Case("eval of 1x1 images", lambda d, m: _eval(d, 1), 2, "too small for the metrics"),
    Case("output over a FIFO (as /dev/null would be for root)", lambda d, m: [
        *_pair(d)[:-1], str(_fifo(d)), "--overwrite"], 2, "is not a regular file (a device, pipe or socket)"),
    Case("--json over a FIFO", lambda d, m: [*_eval(d, 64), "--json", str(_fifo(d))], 2,
         "is not a regular file (a device, pipe or socket)"),
    Case("invalid option value (--batch 0)", lambda d, m: ["fuse-dir", "--pairs", str(d), "--out", str(d / "out"),
                                                           "--batch", "0"], 2, "0 is out of range"),
]


def _grey_alpha(folder: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.dstack([_grey(), _grey(seed=2)]), mode="LA").save(folder / "la.png")
    return folder / "la.png"


def _empty(folder: Path) -> Path:
    (folder / "empty").mkdir()
    return folder / "empty"


def _damaged_model(folder: Path, model: Path) -> str:
    for suffix in (".safetensors", ".json"):
        (folder / f"m{suffix}").write_bytes(model.with_suffix(suffix).read_bytes())
    data = bytearray((folder / "m.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x55
    (folder / "m.safetensors").write_bytes(bytes(data))
    return str(folder / "m")


REPO = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    code: int  # exit status; negative: killed by that signal (a crash)
    stderr: str
    left: list[Path]  # files under folder/out afterwards
    inputs_before: dict[str, str]
    inputs_after: dict[str, str]
    seconds: float


def snapshot(folder: Path, skip: tuple[str, ...] = ("out",)) -> dict[str, str]:
    """Every entry under `folder` (outside the top-level folders named in `skip`, the catalogue's outputs):
    regular files by SHA-256, links by target, other entries (FIFOs, folders) by type; nothing is opened that
    could block or never end."""
    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0] in skip:
            continue
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            out[str(rel)] = "link -> " + os.readlink(path)
        elif stat.S_ISREG(mode):
            out[str(rel)] = _file_digest(path)
        else:
            out[str(rel)] = "folder" if stat.S_ISDIR(mode) else f"special {stat.S_IFMT(mode):o}"
    return out


def _file_digest(path: Path, whole: int = 64 << 20) -> str:
    """SHA-256 of a file; one over `whole` bytes (a sparse terabyte a case declares) by its size, modification
    time and first and last MiB, so that taking the snapshot stays cheap."""
    info = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if info.st_size <= whole:
            digest.update(handle.read())
            return digest.hexdigest()
        digest.update(handle.read(1 << 20))
        handle.seek(-(1 << 20), os.SEEK_END)
        digest.update(handle.read())
    return f"{info.st_size}:{info.st_mtime_ns}:{digest.hexdigest()}"


def case_cache(folder: Path) -> Path:
    """The cache folder (DMFNET_CACHE_DIR) a case's process uses: beside its folder, never inside its inputs."""
    return folder.parent / f"{folder.name}.cache"


def run_case_process(case: Case, folder: Path, model: Path, timeout: float = 300) -> Outcome:
    """Run one case in a fresh process: `python -m dmfnet_edge.cli.main ARGV`, or this module as the child for
    a case that patches the library (it cannot be set up from outside)."""
    import time

    argv = case.build(folder, model)
    if case.model and case.tool == "dmfnet" and "--model" not in argv and argv[0] != "eval":
        argv += ["--model", str(model)]
    (folder / "argv.json").write_text(json.dumps(argv))
    entry = {"dmfnet": "main", "dmfnet-export": "export_main"}[case.tool]
    # the runtime-only tier (make test-runtime) runs every case with torch unimportable, as on a console
    block = "import tests.no_torch; " if os.environ.get("DMFNET_TIER") == "runtime" else ""
    command = [sys.executable, "-m", "tests.bad_inputs", case.name, str(folder), str(model)] if case.patch \
        else [sys.executable, "-c", f"import sys; {block}from dmfnet_edge.cli.main import {entry}; "
                                    f"sys.exit({entry}())", *argv]
    before = snapshot(folder)
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMFNET_") or k == "DMFNET_TIER"}
    env["DMFNET_CACHE_DIR"] = str(case_cache(folder))  # each case's own cache, outside its inputs
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    out = folder / "out"
    left = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    return Outcome(done.returncode, done.stderr, left, before, snapshot(folder), seconds)


# tests/hostile_<surface>.py, each with a CASES list
HOSTILE_MODULES = ("hostile_series", "hostile_export", "hostile_serving", "hostile_records", "hostile_plugins")


def catalogue() -> list[Case]:
    """Every case: the image readers' here, then each surface's module's."""
    import importlib

    cases = list(IMAGE_CASES)
    for name in HOSTILE_MODULES:
        cases += importlib.import_module(f"tests.{name}").CASES
    names = [c.name for c in cases]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"catalogue case names must be unique: {duplicated}")
    return cases


def _child(name: str, folder: Path) -> int:
    if os.environ.get("DMFNET_TIER") == "runtime":
        import tests.no_torch  # noqa: F401 (torch unimportable, as on a runtime-only install)
    from dmfnet_edge.cli.main import export_main, main

    case = next(c for c in catalogue() if c.name == name)
    argv = json.loads((folder / "argv.json").read_text())
    with case.patch() if case.patch else contextlib.nullcontext():
        return (main if case.tool == "dmfnet" else export_main)(argv)


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], Path(sys.argv[2])))
