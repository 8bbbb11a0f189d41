"""Both command lines, `dmfnet` and `dmfnet-export`, built from one registry of small commands (cli/registry.py).

User and environment problems (`DmfnetError`) print one line on stderr and exit with 2 (input) or 3
(environment), never a traceback; anything else is a bug and keeps its traceback. The line is flattened here,
for every command (a file name or a third-party message may hold line breaks), and third-party warnings are
held back while the command runs (shown if it succeeds, dropped if it fails: see `_quiet.HeldWarnings`).
Standard streams the caller closed (`>&-`) are reopened on /dev/null before anything else is opened; a command
that then needs to print fails with one line (exit 3).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from dmfnet_edge import __version__
from dmfnet_edge._optional import missing_package_message
from dmfnet_edge._quiet import HeldWarnings
from dmfnet_edge.cli.registry import TOOLS, Command, load
from dmfnet_edge.errors import DmfnetError, one_line

LINE_LIMIT = 4000  # characters of one error line: flattened, not cut short where a message is merely long


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        tool, _, command = self.prog.partition(" ")  # every error line starts 'TOOL: error: ', as at run time
        where = f"{command}: " if command else ""
        self.exit(2, one_line(f"{tool}: error: {where}{message} (see {self.prog} --help)", LINE_LIMIT) + "\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default after its help (unless it has none or the help already says it); the examples
    epilog kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default in (None, False, argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: {default})"


def _epilog(prog: str, name: str) -> str | None:
    from dmfnet_edge.cli.examples import EXAMPLES

    lines = EXAMPLES.get(prog, {}).get(name)
    return "examples:\n" + "\n".join(f"  {line}" for line in lines) if lines else None


def build_parser(prog: str = "dmfnet", only: list[Command] | None = None,
                 command: str | None = None) -> argparse.ArgumentParser:
    """The tool's parser: every registered command (or `only` these). With `command`, only that command's
    module is imported and configured; the others are listed with their help (what `--help` needs) and are
    never imported, so one command's failing import cannot break another's, and a run imports one module."""
    parser = _Parser(prog=prog, description=TOOLS[prog].description, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    if only is not None:
        chosen = only
    else:
        chosen = [load(e) if command in (None, e.name) else Command(e.name, e.help, _unconfigured, _unconfigured)
                  for e in TOOLS[prog].entries]
    for name, help_text, configure, run in chosen:
        cmd = sub.add_parser(name, help=help_text, description=help_text, epilog=_epilog(prog, name),
                             formatter_class=_HelpFormatter)
        cmd.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log progress details (also accepted before the command)")
        configure(cmd)
        cmd.set_defaults(run=run)
    return parser


def _unconfigured(*args: object) -> None:
    """The options of a command that is not the one being run (never parsed)."""


def _command_in(argv: Sequence[str]) -> str | None:
    """The command a command line names: its first word that is not an option (None: --help or --version)."""
    return next((a for a in argv if not a.startswith("-")), None)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every half-written output is removed on the way out."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


class _ClosedStdout(io.TextIOBase):
    """sys.stdout of a process started with standard output closed (`>&-`): the first thing printed fails
    (one line, exit 3); a command that prints nothing is unaffected."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not text:
            return 0
        raise OSError(errno.EBADF, "is closed (the command was started with >&-), so nothing could be printed; "
                                   "redirect it to a file or to /dev/null instead")


def _guard_standard_streams() -> None:
    """Descriptors 0-2 that the caller closed are opened on /dev/null: otherwise the next file this command opens
    would take that number, and what a library prints there (native code writes to fd 2) would land in it.
    Python set sys.stdout/sys.stderr to None for them."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one, unless a lower one was free
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = _ClosedStdout()
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (kept open until exit)


def run_cli(argv: Sequence[str] | None, prog: str, only: list[Command] | None = None) -> int:
    _guard_standard_streams()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog, only, _command_in(argv)).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    held = [] if args.verbose else [HeldWarnings(h) for h in logging.getLogger().handlers]
    logging.captureWarnings(bool(held))  # Python warnings become records, held like the rest
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    try:
        return _run(args, prog, held)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        for hold in held:  # after success, or before a bug's traceback; a failure dropped them already
            hold.release()
            hold.handler.removeFilter(hold)
        logging.captureWarnings(False)


def _kept(args: argparse.Namespace) -> str:
    """What a command that stopped part-way kept (`args.kept_note`, set by commands whose outputs are
    complete one by one, like fuse-dir's pairs), as a clause for its one error line."""
    note = getattr(args, "kept_note", None)
    text = note() if callable(note) else ""
    return f"; {text}" if text else ""


def _say(held: list[HeldWarnings], line: str) -> None:
    """The one line a stopped command prints: held third-party warnings dropped, line breaks flattened."""
    for hold in held:
        hold.drop()
    print(one_line(line, LINE_LIMIT), file=sys.stderr)


def _run(args: argparse.Namespace, prog: str, held: list[HeldWarnings]) -> int:
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a full disk or closed pipe behind stdout shows here, not as a traceback at exit
        return code
    except DmfnetError as exc:
        _say(held, f"{prog}: error: {exc}{_kept(args)}")
        return exc.exit_code
    except Terminated:
        _say(held, f"{prog}: terminated; no partial outputs were kept{_kept(args)}")
        return 143
    except KeyboardInterrupt:
        _say(held, f"{prog}: interrupted; no partial outputs were kept{_kept(args)}")
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`
        for hold in held:
            hold.drop()
        sys.stderr.close()
        return 0
    except ModuleNotFoundError as exc:  # an optional package a code path imports directly
        if (exc.name or "").split(".")[0] == "dmfnet_edge":
            raise  # an internal module that does not exist is a bug: it keeps its traceback
        _say(held, f"{prog}: error: {missing_package_message(exc.name or str(exc))}")
        return 3
    except OSError as exc:  # the operating system refused: a full disk, a name too long, no permission
        if exc.filename is None:  # the one unnamed file we write: standard output
            _detach_stdout()
        where = exc.filename if exc.filename is not None else "standard output"
        _say(held, f"{prog}: error: {where}: {exc.strerror or exc}")
        return 3


def _detach_stdout() -> None:
    """After a failed write to stdout, point it at /dev/null so that the interpreter's flush at exit stays quiet."""
    with contextlib.suppress(OSError):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (kept open until exit)


def main(argv: Sequence[str] | None = None) -> int:
    """`dmfnet`: fuse, evaluate, train, serve."""
    return run_cli(argv, "dmfnet")


def export_main(argv: Sequence[str] | None = None) -> int:
    """`dmfnet-export`: export, quantize, gate, build, profile."""
    return run_cli(argv, "dmfnet-export")


if __name__ == "__main__":
    sys.exit(main())
