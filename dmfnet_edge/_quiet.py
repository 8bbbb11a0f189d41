"""Third-party chatter kept off the user's terminal.

Model Optimizer and ONNX Runtime's quantizer print hundreds of lines per run (progress bars, per-node INFO,
warnings from native code) on stdout and stderr. Around their calls the process's file descriptors 1 and 2 go
to a temporary file, dropped when the call succeeds and passed on to stderr when it fails. With logging at INFO
(`-v`) nothing is held back.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator


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
        sys.stderr.write(text.getvalue())
        raise
