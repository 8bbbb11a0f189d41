"""Third-party chatter kept off the user's terminal.

Model Optimizer and ONNX Runtime's quantizer print hundreds of lines per run (progress bars, per-node INFO,
warnings from native code) on stdout and stderr. Around their calls the process's file descriptors 1 and 2 go
to a temporary file, dropped when the call succeeds and passed on to stderr when it fails. With logging at INFO
(`-v`) nothing is held back.
"""

from __future__ import annotations

import contextlib
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
def third_party_output() -> Iterator[None]:
    """Around a third-party call: its printing and logging held back unless -v."""
    if logging.getLogger().isEnabledFor(logging.INFO):
        yield
        return
    with _quiet_logging(), _captured_descriptors():
        yield


@contextlib.contextmanager
def _captured_descriptors() -> Iterator[None]:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    failed = False
    with tempfile.TemporaryFile() as sink:
        for fd in saved:
            os.dup2(sink.fileno(), fd)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            if failed:  # what it printed is the diagnosis: hand it on
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))
