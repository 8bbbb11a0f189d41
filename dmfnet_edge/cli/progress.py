"""Progress for long CLI work: a tqdm bar on a terminal; off a terminal (pipes, CI logs) a plain line every
PLAIN_EVERY_S seconds (or every $DMFNET_PROGRESS_SECONDS), so that long runs are never silent and short ones add
nothing to stderr."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from tqdm import tqdm

T = TypeVar("T")
PLAIN_EVERY_S = 10.0
ENV_EVERY_S = "DMFNET_PROGRESS_SECONDS"


def plain_interval() -> float:
    """Seconds between plain progress lines: $DMFNET_PROGRESS_SECONDS when it is a positive number."""
    try:
        value = float(os.environ.get(ENV_EVERY_S, ""))
    except ValueError:
        return PLAIN_EVERY_S
    return value if value > 0 else PLAIN_EVERY_S


class PlainProgress:
    """tqdm's `update` / context-manager interface, printing 'DESC: N/TOTAL UNITs (P %), S s' lines."""

    def __init__(self, total: int, desc: str, unit: str, every_s: float | None = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.every_s = plain_interval() if every_s is None else every_s
        self.n, self.lines, self.postfix = 0, 0, ""
        self.start = self.last = time.monotonic()

    def _line(self) -> None:
        share = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}s{share}, {time.monotonic() - self.start:.0f} s"
              f"{self.postfix}", file=sys.stderr, flush=True)
        self.lines += 1

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._line()

    def set_postfix(self, values: dict[str, Any], refresh: bool = False) -> None:
        self.postfix = "; " + ", ".join(f"{k} {v}" for k, v in values.items()) if values else ""

    def close(self) -> None:
        if self.lines and self.n >= self.total:  # a long job that reported along the way also reports its end
            self._line()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def bar(total: int, desc: str, unit: str = "it") -> tqdm | PlainProgress:
    if not sys.stderr.isatty():
        return PlainProgress(total, desc, unit)
    from tqdm import tqdm  # imported on first use: a one-pair `dmfnet fuse` never draws a bar

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


def track(items: Iterable[T], total: int, desc: str, unit: str = "it") -> Iterator[T]:
    with bar(total, desc, unit) as progress:
        for item in items:
            yield item
            progress.update(1)
