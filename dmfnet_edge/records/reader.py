"""The one bounded reader: every record the toolkit reads (JSON or YAML) comes in through here.

Reading a file: links and '..' are resolved, the file is opened without blocking (a FIFO never hangs), it must
be a regular file (not a folder, device, pipe or socket: `/dev/zero` is refused before a byte is read), and its
size is capped before reading (and checked again while reading, for a file that grows).

Parsing: JSON nesting is measured before it is parsed; YAML is parsed as events first, with anchors and aliases
refused (no "billion laughs"), nesting and node count capped, and only then composed with the safe loader.
Every failure is one `RecordError` line that names the file; a value from the file is never rendered whole.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.errors import EnvironmentProblem, RecordError, one_line

MAX_DEPTH = 32  # nesting of objects and arrays; the deepest record the toolkit writes has 6
MAX_YAML_NODES = 20_000
DEFAULT_LIMIT = 1 << 20  # bytes; records set their own (a training state with its history is larger)

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def read_bounded(path: str | os.PathLike[str], limit: int, what: str = "record") -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else is one `RecordError` naming `path`."""
    path = Path(path)
    try:
        fd = os.open(os.path.realpath(path), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RecordError(f"{path}: {what} not found") from None
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise EnvironmentProblem(f"{path}: cannot read the {what} ({exc.strerror})") from None
        raise RecordError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise RecordError(f"{path}: is a folder, not {article(what)} file")
        if not stat.S_ISREG(info.st_mode):
            raise RecordError(f"{path}: is not a regular file (a pipe, device or socket); give {article(what)} file")
        if info.st_size > limit:
            raise RecordError(f"{path}: {info.st_size:,} bytes is more than {article(what)} can be ({limit:,} bytes)")
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        raise RecordError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise RecordError(f"{path}: grew past {limit:,} bytes while being read; not {article(what)}")
    return data


def article(noun: str) -> str:
    """'a recipe', 'an ONNX manifest'."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _read_at_most(fd: int, count: int) -> bytes:
    chunks, left = [], count
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def json_depth(data: bytes) -> int:
    """The deepest nesting of objects and arrays in a JSON text (brackets inside strings do not count)."""
    bare = np.frombuffer(_STRINGS.sub(b"", data), dtype=np.uint8)
    steps = (np.isin(bare, (ord("{"), ord("["))).astype(np.int32)
             - np.isin(bare, (ord("}"), ord("]"))).astype(np.int32))
    return int(np.cumsum(steps).max(initial=0))


def check_json_depth(data: bytes, source: str, max_depth: int = MAX_DEPTH) -> None:
    depth = json_depth(data)
    if depth > max_depth:
        raise RecordError(f"{source}: nested {depth:,} levels deep; a record has at most {max_depth}")


def parse_json(data: bytes, source: str, max_depth: int = MAX_DEPTH) -> Any:
    """Untyped JSON (for records of free structure); typed records decode with `base.decode_json`."""
    import msgspec

    check_json_depth(data, source, max_depth)
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise RecordError(f"{source}: not valid JSON ({one_line(str(exc), 120)})") from None


def parse_yaml(data: bytes, source: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_YAML_NODES) -> Any:
    """One YAML document of plain data: no anchors or aliases, no tags beyond the safe loader's, bounded
    nesting and node count; checked on the event stream before anything is composed."""
    yaml = require("yaml", extra="onnx", purpose="YAML records (deployment recipes)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    try:
        _check_yaml_events(yaml, yaml.parse(text, Loader=loader), source, max_depth, max_nodes)
        return yaml.load(text, Loader=loader)  # noqa: S506 (a safe loader; aliases were refused above)
    except yaml.YAMLError as exc:
        raise RecordError(f"{source}: not a readable YAML file ({one_line(_yaml_problem(exc), 160)})") from None
    except (ValueError, RecursionError) as exc:  # an integer of more digits than Python converts
        raise RecordError(f"{source}: a value cannot be read ({one_line(str(exc), 120)})") from None


def _check_yaml_events(yaml: Any, events: Any, source: str, max_depth: int, max_nodes: int) -> None:
    depth = nodes = 0
    for event in events:
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            where = _mark(event)
            raise RecordError(f"{source}: YAML anchors and aliases are not allowed{where}; write each value out")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > max_depth:
                raise RecordError(f"{source}: nested more than {max_depth} levels deep{_mark(event)}")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > max_nodes:
                raise RecordError(f"{source}: more than {max_nodes:,} values; not a record")


def _mark(event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    return f" (line {mark.line + 1})" if mark is not None else ""


def _yaml_problem(exc: Exception) -> str:
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem:
        return f"{problem} at line {mark.line + 1}" if mark is not None else str(problem)
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
