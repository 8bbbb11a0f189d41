"""One error hierarchy for user and environment problems.

Every `DmfnetError` carries a one-line message that says what was expected, what was received and how to fix
it. The CLI prints that line and exits with `exit_code`; anything that is not a `DmfnetError` is a bug and
keeps its traceback.
"""

from __future__ import annotations


class DmfnetError(Exception):
    """Base class for problems the user or the environment can fix."""

    exit_code = 2


class InputError(DmfnetError):
    """Bad input: unreadable, malformed, unsupported or mismatched data, or bad arguments."""

    exit_code = 2


class PairingError(InputError):
    """The two images of a pair (or two volumes) do not match."""


class ModelFileError(InputError):
    """A weights, config or manifest file is missing, damaged or does not match its description."""


class RecordError(ModelFileError):
    """A record (manifest, sidecar, recipe, provenance, repository record) that cannot be read as its type: not
    a regular file, too large, too deep, malformed, or of another structure. The message names the file."""


class EnvironmentProblem(DmfnetError):
    """The machine lacks something: a package, a device, disk space, a writable folder."""

    exit_code = 3


class MissingDependency(EnvironmentProblem):
    """An optional package is needed for this command."""


def one_line(text: str, limit: int = 240) -> str:
    """`text` as one line of at most `limit` characters: every line break and control character becomes a
    space (an error message is one line whatever a file name or a third-party message holds)."""
    flat = "".join(c if c.isprintable() else " " for c in text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe_exception(exc: BaseException, limit: int = 160) -> str:
    """'Type: first line of the message', shortened: how a third-party failure is quoted in a one-line error
    (their messages can embed whole byte strings)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
