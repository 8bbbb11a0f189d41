"""Typed, versioned records: one class per kind of file the toolkit writes and reads back.

A record is a `msgspec.Struct` subclass of `Record`: its fields are typed (unknown keys, wrong types and values
out of range are refused with the key's path named), it names its format and version, and `__post_init__`
holds the checks that span fields. Code reads attributes, never `dict.get`. Every record is read through the
bounded reader (`Record.read`, `Record.from_yaml`) and written through the one output rule (`Record.write`:
sorted keys, indented, staged beside the target and renamed into place). Its JSON Schema is `Record.schema()`
(published under docs/schemas/ for consoles in other languages).

Why msgspec: typed structs with unknown-field and range checks, decoding straight from bytes with the failing
key's path in the message, and JSON Schema generation, in one dependency-free wheel of a few hundred kB (the
runtime-only install stays small and torch-free; pydantic would add pydantic-core and typing-inspection).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import msgspec

from dmfnet_edge.errors import RecordError, one_line
from dmfnet_edge.files import atomic_write_bytes
from dmfnet_edge.records.reader import DEFAULT_LIMIT, MAX_DEPTH, check_json_depth, parse_yaml, read_bounded

R = TypeVar("R", bound="Record")
SHA256 = msgspec.Meta(pattern="^[0-9a-f]{64}$", description="SHA-256 in lowercase hex")


class Record(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """Base of every on-disk record. Subclasses declare `format` (a Literal with its one value as default) and
    a version field, and set the class variables below."""

    KIND: ClassVar[str] = "record"  # how messages name it: "ONNX manifest", "recipe", ...
    LIMIT: ClassVar[int] = DEFAULT_LIMIT  # largest file accepted, in bytes
    DEPTH: ClassVar[int] = MAX_DEPTH  # deepest nesting accepted
    ALWAYS: ClassVar[tuple[str, ...]] = ("format",)  # fields written even when they hold their default
    FIX: ClassVar[str] = ""  # what the user can do about a refused file, appended to the message

    # ---- reading ----------------------------------------------------------------------------------------------
    @classmethod
    def read(cls: type[R], path: str | os.PathLike[str]) -> R:
        """The record in the JSON file `path`, through the bounded reader."""
        data = read_bounded(path, cls.LIMIT, cls.KIND)
        return cls.decode(data, str(path))

    @classmethod
    def decode(cls: type[R], data: bytes, source: str) -> R:
        check_json_depth(data, source, cls.DEPTH)
        try:
            return msgspec.json.decode(data, type=cls, strict=True)
        except msgspec.ValidationError as exc:
            raise cls._refusal(source, exc, _json_format(data)) from None
        except (msgspec.DecodeError, RecursionError) as exc:
            raise RecordError(f"{source}: not a readable {cls.KIND} (not valid JSON: {one_line(str(exc), 100)})"
                              ) from None

    @classmethod
    def from_yaml(cls: type[R], path: str | os.PathLike[str]) -> R:
        """The record in the YAML file `path` (anchors, aliases and deep nesting refused before composing)."""
        source = str(path)
        data = parse_yaml(read_bounded(path, cls.LIMIT, cls.KIND), source, cls.DEPTH)
        return cls.convert(data, source)

    @classmethod
    def convert(cls: type[R], data: Any, source: str) -> R:
        """The record from already-parsed plain data (a YAML document, a request body)."""
        try:
            return msgspec.convert(data, type=cls, strict=True)
        except msgspec.ValidationError as exc:
            fmt = data.get("format") if isinstance(data, dict) else None
            raise cls._refusal(source, exc, fmt) from None

    @classmethod
    def _refusal(cls, source: str, exc: Exception, fmt: Any) -> RecordError:
        expected = _default(cls, "format")
        if expected is not None and isinstance(fmt, str) and fmt != expected:
            text = f"{source}: not a {cls.KIND} (its format is {fmt!r:.60}, expected {expected!r})"
        else:
            text = f"{source}: not a valid {cls.KIND}: {one_line(str(exc), 200)}"
        return RecordError(f"{text}; {cls.FIX}" if cls.FIX else text)

    # ---- writing ----------------------------------------------------------------------------------------------
    def to_builtins(self) -> dict[str, Any]:
        data = msgspec.to_builtins(self)
        for name in self.ALWAYS:
            data[name] = msgspec.to_builtins(getattr(self, name))
        return data

    def encode(self) -> bytes:
        """The record as every record of the project is written: sorted keys, indented, one final newline."""
        return json_bytes(self.to_builtins())

    def write(self, path: Path) -> None:
        """Write atomically (a temporary file beside `path`, renamed into place)."""
        atomic_write_bytes(path, self.encode())

    @classmethod
    def schema(cls) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) of this record's files."""
        schema = msgspec.json.schema(cls)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = cls.KIND
        return schema


def json_bytes(data: Any) -> bytes:
    """JSON as every record of the project is written: sorted keys, indented, one final newline."""
    return (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def _default(cls: type[Record], name: str) -> Any:
    fields = {f.name: f for f in msgspec.structs.fields(cls)}
    field = fields.get(name)
    return None if field is None or field.default is msgspec.NODEFAULT else field.default


def _json_format(data: bytes) -> Any:
    """The top-level "format" of a JSON object, for a clearer refusal of a record of another kind."""
    class _Probe(msgspec.Struct):
        format: Any = None

    try:
        return msgspec.json.decode(data, type=_Probe).format
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
