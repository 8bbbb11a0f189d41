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
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec

from dmfnet_edge.errors import RecordError, one_line
from dmfnet_edge.files import atomic_write_bytes
from dmfnet_edge.records.reader import DEFAULT_LIMIT, MAX_DEPTH, article, check_json_depth, parse_yaml, read_bounded

R = TypeVar("R", bound="Record")
SHA256 = msgspec.Meta(pattern="^[0-9a-f]{64}$", description="SHA-256 in lowercase hex")
# A path a record names relative to a folder of its own: never absolute, never climbing out with '..'.
RelativePath = Annotated[str, msgspec.Meta(
    min_length=1, max_length=4096, pattern=r"^(?![/\\])(?!(.*[/\\])?\.\.([/\\]|$))[^\x00]+$",
    description="relative path inside its folder (no leading /, no '..')")]


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
            raise cls._refusal(source, exc, _json_probe(data, cls.ALWAYS)) from None
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
            found = {k: data.get(k) for k in cls.ALWAYS[:2]} if isinstance(data, dict) else {}
            raise cls._refusal(source, exc, found) from None

    @classmethod
    def _refusal(cls, source: str, exc: Exception, found: dict[str, Any]) -> RecordError:
        """The clearest line for a refused record: another kind of record, another version, or what is wrong."""
        fmt, expected = found.get("format"), _default(cls, "format")
        version_field = cls.ALWAYS[1] if len(cls.ALWAYS) > 1 else None
        version, supported = found.get(version_field), _default(cls, version_field) if version_field else None
        if expected is not None and isinstance(fmt, str) and fmt != expected:
            text = f"{source}: not {article(cls.KIND)} (its format is {fmt!r:.60}, expected {expected!r})"
        elif supported is not None and isinstance(version, int) and version != supported:
            text = (f"{source}: {article(cls.KIND)} of {version_field} {version}; this release reads {version_field} "
                    f"{supported}")
        else:
            text = f"{source}: not a valid {cls.KIND}: {one_line(_readable(str(exc)), 200)}"
        return RecordError(f"{text}; {cls.FIX}" if cls.FIX else text)

    # ---- writing ----------------------------------------------------------------------------------------------
    def to_builtins(self) -> dict[str, Any]:
        data = msgspec.to_builtins(self, enc_hook=_plain)
        for name in self.ALWAYS:
            data[name] = msgspec.to_builtins(getattr(self, name), enc_hook=_plain)
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


def json_bytes(data: Any, strict: bool = True) -> bytes:
    """JSON as every record of the project is written: sorted keys, indented, one final newline. Records are
    strict JSON (no NaN or Infinity, which other languages' parsers refuse); reports of measurements pass
    `strict=False`, where an infinite PSNR of identical images is a result (written `Infinity`)."""
    return (json.dumps(data, indent=2, sort_keys=True, allow_nan=not strict) + "\n").encode()


def _plain(value: Any) -> Any:
    """Values of free-form fields that are plain data in disguise: a version string subclass (torch's), a path,
    a numpy scalar."""
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not plain data and cannot be written into a record")


def _readable(message: str) -> str:
    """msgspec's message with a long regular expression replaced by a pointer to the schema."""
    return re.sub(r"matching regex '.{24,}?' - at", "in the form its JSON Schema gives (docs/schemas) - at", message)


def _default(cls: type[Record], name: str) -> Any:
    fields = {f.name: f for f in msgspec.structs.fields(cls)}
    field = fields.get(name)
    return None if field is None or field.default is msgspec.NODEFAULT else field.default


def _json_probe(data: bytes, names: tuple[str, ...]) -> dict[str, Any]:
    """The top-level format and version of a JSON object (plain values only), for a clearer refusal."""
    try:
        found = msgspec.json.decode(data, type=dict[str, Any])
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return {}
    return {k: found.get(k) for k in names[:2] if isinstance(found.get(k), (str, int))}
