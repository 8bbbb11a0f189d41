"""Inputs are never touched: no command writes over a file or folder it reads, or over one that holds them, and
`--overwrite` replaces only a previous output of the same command.

Paths are compared after resolving symbolic links and '..' (and by inode where both exist, for hard links), so
`-o ../in/mri.png`, a symlink to an input, or `-o .` around an input series are all recognised.
"""

from __future__ import annotations

import os
from pathlib import Path

from dmfnet_edge.errors import DmfnetError, InputError
from dmfnet_edge.io.provenance import Provenance


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _same(a: Path, b: Path) -> bool:
    if _real(a) == _real(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overlap(option: str, output: Path, inputs: dict[str, Path]) -> None:
    """Refuse an output that is an input, holds an input, or lies inside an input folder."""
    out = _real(output)
    for name, given in inputs.items():
        src = _real(given)
        if _same(output, given):
            raise InputError(f"{option} {output}: that is the input {name} {given}; inputs are never overwritten, "
                             "choose another output")
        if src.is_relative_to(out):
            raise InputError(f"{option} {output}: it holds the input {name} {given}; choose an output outside the "
                             "inputs")
        if given.is_dir() and out.is_relative_to(src):
            raise InputError(f"{option} {output}: it lies inside the input folder {name} {given}; choose an output "
                             "outside the inputs")


def check_replaceable(output: Path, provenance: Path, command: str) -> None:
    """With --overwrite: `output` may be replaced only if its provenance sidecar says `command` wrote it and it
    holds nothing else (a DICOM folder with files of its own is refused)."""
    if not output.exists():
        return
    try:
        written = {Path(p).name for p in Provenance.read(provenance).outputs}
    except DmfnetError as exc:
        raise InputError(f"{output}: exists and is not an output of '{command}' (no readable {provenance.name} "
                         f"beside it: {str(exc).removeprefix(str(provenance) + ': ')}); nothing was replaced: "
                         "remove it yourself or choose another output") from None
    present = {p.name for p in output.iterdir()} if output.is_dir() else {output.name}
    foreign = sorted(present - written)
    if foreign:
        raise InputError(f"{output}: holds {len(foreign)} file(s) '{command}' did not write (e.g. {foreign[0]}); "
                         "nothing was replaced: remove them yourself or choose another output")
