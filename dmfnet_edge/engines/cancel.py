"""SIGTERM and Ctrl-C while TensorRT builds: the build is cancelled and the signal delivered when it returns.

A Python signal handler runs only when the interpreter runs Python code. During `build_serialized_network` that
is only inside TensorRT's callbacks into Python (the logger, the progress monitor), and TensorRT swallows any
exception raised there: the CLI's handler raised its `Terminated` inside the logger, TensorRT dropped it, the
build finished and the command exited 0 with the engine written. So while a build runs, SIGTERM and SIGINT are
only recorded; the progress monitor (`IProgressMonitor`, TensorRT 10 and TensorRT for RTX) answers 'stop' at
its next step, and when the native call has returned the recorded signal is raised again under the handler
that was installed before, which stops the command as everywhere else (exit 143 or 130, nothing written).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PendingSignals:
    """The signals that arrived while native code ran, in order."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def record(self, signum: int, frame: object) -> None:
        self.received.append(signum)

    def __bool__(self) -> bool:
        return bool(self.received)


@contextlib.contextmanager
def signals_deferred() -> Iterator[PendingSignals]:
    """Record SIGTERM and SIGINT for the duration instead of acting on them; afterwards restore the handlers and
    raise the first one recorded, so that it takes its usual course outside the native call (the CLI's handlers
    raise; the default ones end the process). Signal handlers belong to the main thread: elsewhere nothing is
    changed."""
    pending = PendingSignals()
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return
    # an ignored signal stays ignored; a handler installed outside Python (None) cannot be put back: left alone
    acting = [s for s in SIGNALS if signal.getsignal(s) not in (signal.SIG_IGN, None)]
    previous = {signum: signal.signal(signum, pending.record) for signum in acting}
    try:
        yield pending
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if pending:
        signal.raise_signal(pending.received[0])


def progress_monitor(trt: Any, pending: PendingSignals) -> Any:
    """A TensorRT progress monitor that cancels the build once a signal is pending (None where the installed
    TensorRT has no progress monitor: the signal then waits for the build to end)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class CancelOnSignal(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            pass

        def step_complete(self, phase_name: str, step: int) -> bool:
            return not pending  # False cancels the build

        def phase_finish(self, phase_name: str) -> None:
            pass

    return CancelOnSignal()
