"""How the toolkit writes files and folders: atomically, with the permissions of any Unix tool.

* Permissions: 0666 / 0777 less the umask. Outputs are written through temporary files and folders (mkstemp,
  mkdtemp) and renamed into place; those are created 0600 / 0700, which would leave every result readable by
  its writer only (other users, a PACS bridge). The umask is read once, at import: reading it means setting it,
  which is not safe while other threads create files.
* `atomic_write_bytes`: a temporary file in the target folder, renamed into place; nothing is left on failure.
  A target that is a device, FIFO, socket or folder is refused, never replaced.
* `write_together` / `publish_staged`: a result of several files is staged whole, then renamed into place with
  Ctrl-C and SIGTERM held, its completeness marker last (the one output rule for multi-file results).
* `staged_folder`: a hidden folder beside a target folder to build it in; whatever the block leaves of it
  (an error, Ctrl-C, SIGTERM) is removed, so an interrupted build leaves nothing. The block moves it into place
  under its own rule for what it may replace.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from dmfnet_edge.errors import EnvironmentProblem, InputError


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK
FOLDER_MODE = 0o777 & ~UMASK


def package_path(*parts: str) -> Path:
    """A data folder or file shipped inside the package (wheel or source checkout alike), e.g. the kernel
    sources: `package_path("kernels", "cross_modal_attention")`. In a checkout `dmfnet_edge/kernels` is a link
    to the top-level `kernels/`; a wheel holds a copy."""
    return Path(str(resources.files("dmfnet_edge").joinpath(*parts)))


def _creation_error(exc: OSError, path: Path, where: Path, kind: str = "file") -> Exception:
    if exc.errno == errno.ENAMETOOLONG:
        return InputError(f"{path.name[:40]}...: the output {kind} name is {len(os.fsencode(path.name))} bytes "
                          "long; file systems allow 255: choose a shorter name")
    return EnvironmentProblem(f"{where}: cannot write here ({exc.strerror}); choose a writable output folder")


def refuse_special_target(path: Path) -> None:
    """An output path that names a device, FIFO, socket or folder is refused: renaming a file over it would
    replace `/dev/null` for every program on the machine (a root user's `--json /dev/null`). So is a symbolic
    link that leads nowhere (dangling, or a loop like `ln -s loop loop`): it exists, and is no file to replace."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        if os.path.islink(path):
            raise InputError(f"{path}: is a symbolic link that leads nowhere (dangling or looping); remove it or "
                             "choose another output") from None
        return  # nothing there (or unreadable: the write reports it)
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device, pipe or socket)"
        raise InputError(f"{path}: is {kind}; give the path of a file to write")


def stage_file(path: Path, data: bytes) -> Path:
    """Write `data` to a hidden temporary file beside `path` and return it; the caller renames it into place
    (`os.replace`) or removes it. A failed write (a full disk) removes it and changes nothing."""
    refuse_special_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, FILE_MODE)
    except OSError as exc:
        raise _creation_error(exc, path, path.parent) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise EnvironmentProblem(f"{path}: writing failed ({exc.strerror}); nothing was written") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def staging_path(path: Path) -> Path:
    """A new, empty hidden file beside `path` for a tool that writes its own output by name (the caller renames
    it into place with `publish_staged` or removes it)."""
    return stage_file(path, b"")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename."""
    tmp = stage_file(path, data)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        raise EnvironmentProblem(f"{path}: writing failed ({exc.strerror}); nothing was written") from None
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held back (recorded, not lost) for a few renames, then raised again under the handlers
    that were there before: a result of several files is never cut between two of its renames by Ctrl-C. Python
    runs signal handlers in the main thread only, so elsewhere there is nothing to hold."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])


def publish_staged(staged: list[tuple[Path, Path]]) -> None:
    """Rename staged files (temporary, final) into place as one result, in order, with Ctrl-C and SIGTERM held
    until the last: list the completeness marker (a manifest, a report's JSON) last. Every staged file still
    there afterwards (a rename failed) is removed."""
    try:
        with signals_held():
            for tmp, final in staged:
                try:
                    os.replace(tmp, final)
                except OSError as exc:
                    raise EnvironmentProblem(f"{final}: writing failed ({exc.strerror}); the result is incomplete, "
                                             "write it again") from None
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def write_together(files: list[tuple[Path, bytes]]) -> None:
    """The one output rule for a result of several files (a report and its picture, a graph and its manifest):
    every file is staged beside its target first, so a full disk or an interrupt while writing changes nothing;
    then all are renamed into place, the last one listed (the completeness marker) last."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            staged.append((stage_file(path, data), path))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    publish_staged(staged)


Companion = Callable[[list[Path]], tuple[Path, bytes]]  # output paths -> (sidecar path, its bytes)


@contextmanager
def companion_staged(companion: Companion | None, outputs: list[Path]) -> Iterator[Callable[[], None]]:
    """Stage an output's sidecar (e.g. its provenance record) before the output itself is published; the block
    publishes the output and then calls the yielded function, which renames the sidecar into place. A sidecar
    that cannot be written (a full disk) fails before the output changes; one left unpublished is removed."""
    if companion is None:
        yield lambda: None
        return
    path, data = companion(outputs)
    tmp = stage_file(path, data)
    try:
        yield lambda: os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def staged_folder(target: Path, tag: str = "partial") -> Iterator[Path]:
    """An empty hidden folder `.<name>.<tag>-XXXX` beside `target` (mode FOLDER_MODE) to build `target` in.

    The block fills it and renames it into place; if anything of it is still there when the block ends (it
    failed, was interrupted, or did not move it), it is removed with its contents."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}-", dir=target.parent))
        os.chmod(staging, FOLDER_MODE)
    except OSError as exc:
        raise _creation_error(exc, target, target.parent, "folder") from None
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
