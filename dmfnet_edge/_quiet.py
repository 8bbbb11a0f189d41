"""Third-party chatter kept off the user's terminal.

Model Optimizer and ONNX Runtime's quantizer print hundreds of lines per run (progress bars, per-node INFO,
warnings from native code) on stdout and stderr. Around their calls the process's file descriptors 1 and 2 go
to a temporary file, dropped when the call succeeds and logged as one third-party record when it fails.

Third-party warnings that reach logging (other packages' loggers, Python warnings, and records relayed with
`extra=THIRD_PARTY`, such as TensorRT's logger) are held back by `HeldWarnings` while a command runs: shown when
it succeeds, dropped when it stops with its one error line (a `DmfnetError`, a signal: that line is the whole of
stderr), shown before the traceback of a bug. With logging at INFO (`-v`) nothing is held back.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

log = logging.getLogger(__name__)
THIRD_PARTY = {"third_party": True}  # logging's `extra=` for a record that relays another library's message


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """Log records up to WARNING dropped everywhere: Model Optimizer's loggers carry handlers of their own, bound
    to whatever sys.stdout was when it was imported, and reset their levels on every call."""
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(before)


@contextlib.contextmanager
def captured(text: io.StringIO, fds: tuple[int, ...] = (1, 2)) -> Iterator[None]:
    """The process's file descriptors `fds` (what native code prints included) go to a temporary file for the
    duration; its text is appended to `text` afterwards, whether or not the body failed."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    with tempfile.TemporaryFile() as sink:
        for fd in saved:
            os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            text.write(sink.read().decode(errors="replace"))


@contextlib.contextmanager
def third_party_output() -> Iterator[None]:
    """Around a third-party call: its printing and logging held back unless -v, handed on if the call fails
    (then it is the diagnosis)."""
    if logging.getLogger().isEnabledFor(logging.INFO):
        yield
        return
    text = io.StringIO()
    try:
        with _quiet_logging(), captured(text):
            yield
    except BaseException:
        if text.getvalue().strip():
            log.warning("third-party output before the failure:\n%s", text.getvalue().rstrip(), extra=THIRD_PARTY)
        raise


def is_third_party(record: logging.LogRecord) -> bool:
    """A record another package logged, a Python warning, or a third-party message relayed by this package."""
    return getattr(record, "third_party", False) or not record.name.startswith("dmfnet_edge")


class HeldWarnings(logging.Filter):
    """Installed on a log handler: third-party records are held instead of emitted until `release` (emit them
    in order, from then on pass everything) or `drop` (forget them)."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self.handler, self.held, self.passing = handler, [], False
        handler.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.passing or not is_third_party(record):
            return True
        self.held.append(record)
        return False

    def release(self) -> None:
        self.passing = True
        for record in self.held:
            self.handler.handle(record)
        self.held.clear()

    def drop(self) -> None:
        self.held.clear()
