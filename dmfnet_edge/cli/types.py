"""argparse types that check ranges at parse time, so a bad value is a one-line usage error (exit 2), not a
traceback deep inside a command."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An int in [low, high] (no upper bound when high is None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: give a number {bound}")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def int_multiple(multiple: int, low: int, high: int) -> Callable[[str], int]:
    """An int in [low, high] that is a multiple of `multiple` (a network side)."""
    bounded = int_range(low, high)

    def parse(text: str) -> int:
        value = bounded(text)
        if value % multiple:
            raise argparse.ArgumentTypeError(f"{value} is not a multiple of {multiple}")
        return value

    parse.__name__ = "int"
    return parse


POSITIVE = int_range(1)
NON_NEGATIVE = int_range(0)
THREADS = int_range(1, 1024)  # torch and ONNX Runtime take a C int; more threads than this is a typo


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive finite number")
    return value


def float_range(low: float, high: float) -> Callable[[str], float]:
    """A finite float in [low, high]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not low <= value <= high:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a number between {low:g} and {high:g}")
        return value

    parse.__name__ = "float"
    return parse


def torch_device(text: str) -> str:
    """cpu | cuda | cuda:N."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"'{text}' is not a device: use cpu, cuda or cuda:N")
    return text
