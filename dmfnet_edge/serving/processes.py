"""The processes a server runs (tritonserver, its Python backend stub), read from /proc (Linux).

`dmfnet serve` uses them to find what Triton leaves behind when it dies (the folder it copied the Python model
to), and the hostile-request soak (benchmarks/soak_serve.py) to sample the resident memory of the whole tree.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PROC = Path("/proc")
# Triton copies a model that was loaded with its files in the request (as PyTriton loads its Python model) to a
# folder made from this fixed template (TMPDIR is not read), and removes it only when the model is unloaded.
TRITON_MODEL_FOLDER = re.compile(r"/tmp/folder[A-Za-z0-9]{6}")


def _parent(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after its last ')'
    return int(stat.rpartition(")")[2].split()[1])


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            parent = _parent(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def command_line(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [os.fsdecode(part) for part in raw.split(b"\0") if part]


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 once it has gone)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def triton_model_folders(pid: int) -> list[Path]:
    """The folders Triton copied Python models to for the server below `pid`, read from the backend stubs'
    command lines (`triton_python_backend_stub /tmp/folderXXXXXX/1/model.py ...`)."""
    folders = []
    for child in descendants(pid):
        argv = command_line(child)
        if len(argv) > 1 and argv[0].endswith("triton_python_backend_stub"):
            folder = Path(argv[1]).parent.parent
            if TRITON_MODEL_FOLDER.fullmatch(str(folder)):
                folders.append(folder)
    return folders
