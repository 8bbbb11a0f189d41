"""Progress bars for long CLI work (tqdm on stderr; silent when stderr is not a terminal unless forced)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def bar(total: int, desc: str, unit: str = "it") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=None if not sys.stderr.isatty() else False, mininterval=0.5)


def track(items: Iterable[T], total: int, desc: str, unit: str = "it") -> Iterator[T]:
    with bar(total, desc, unit) as progress:
        for item in items:
            yield item
            progress.update(1)
