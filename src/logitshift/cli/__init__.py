"""The ``logitshift`` command line: one thin adapter per command (``cli/<command>.py``).

Each adapter declares its flags with the shared vocabulary of :mod:`.flags`,
parses them into the library's typed config and calls the library's
``run_*(config)``; nothing outside this package imports it.

Exit codes: 0 success, 2 any failure (one line on stderr, no traceback;
``--debug``, before or after the command, shows it): a user error, an OS
error (disk full, read-only folder), running out of memory, or an unexpected
exception. Commands with verdicts document their own codes (``audit``: 1 =
shifted, never a failure).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .._version import __version__
from ..core.errors import LogitShiftError
from ..core.names import suggestion
from . import attack, audit, check, demo, evaluate, matrix, report
from .flags import (
    SHARED,
    common_flags,
    device_flag,
    helptext,
    int_at_least,
    model_flags,
    positive_float,
    shift_flags,
    shift_setup,
)

#: the commands, in the order ``--help`` lists them; each module has ``register(subparsers, parser_class)``
COMMANDS = (demo, attack, matrix, audit, evaluate, report, check)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, a did-you-mean for a misspelt flag, and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}{self.suggest(message)} (see {self.prog} --help)\n")
        sys.exit(2)

    def suggest(self, message: str) -> str:
        """``; did you mean --model?`` for each unknown ``--flag`` of an "unrecognized arguments" message (difflib:
        argparse's own ``suggest_on_error`` needs Python 3.14)."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        known = [s for p in self.parsers() for a in p._actions for s in a.option_strings if a.help != argparse.SUPPRESS]
        words = [w.split("=")[0] for w in message.removeprefix("unrecognized arguments:").split() if w.startswith("--")]
        return "".join(suggestion(w, [k for k in known if k.startswith("--")]) for w in words)

    def parsers(self) -> list[argparse.ArgumentParser]:
        """This parser and, when the command line named one, that command's parser."""
        sub = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        command = next((w for w in getattr(self, "argv", []) if sub is not None and w in sub.choices), None)
        return [self] + ([sub.choices[command]] if sub is not None and command else [])


def build_parser() -> Parser:
    parser = Parser(prog="logitshift", description="Show, measure and remove the logit-shift blind spot of gradient explanations.")
    parser.add_argument("--debug", action="store_true", help=helptext("--debug"))
    parser.add_argument("--version", action="version", version=f"logitshift {__version__}", help=helptext("--version"))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        common_flags(command.register(sub), __version__)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser.argv = argv  # type: ignore[attr-defined]  # for the did-you-mean of an unknown flag
    args = parser.parse_args(argv)
    args.argv = argv  # for commands that re-run themselves in a limited child (audit)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        sys.stderr.write(f"logitshift {args.command}: interrupted\n")
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop without a word, as shell tools do
        _drop_stdout()
        return 141  # 128 + SIGPIPE, never 1 (for audit, "shifted")
    except Exception as exc:  # every failure is one line and exit 2 (for audit, 1 means "shifted")
        if args.debug:
            raise
        sys.stderr.write(f"logitshift {args.command}: error: {describe(exc)}\n")
        return 2


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not hit the closed pipe again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture): nothing will be flushed to a pipe
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def describe(exc: BaseException) -> str:
    """One line for any exception: the user error's own message, else what failed and where."""
    if isinstance(exc, LogitShiftError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory (a smaller --batch-size or fewer images may help)"
    if isinstance(exc, OSError) and (exc.filename or exc.strerror):
        name = f"{str(exc.filename)!r}: " if exc.filename else ""
        return f"{name}{exc.strerror or type(exc).__name__}"
    text = " ".join(str(exc).split())[:300] or "no message"
    return f"unexpected {type(exc).__name__}: {text} (run with --debug for the traceback)"


__all__ = [
    "COMMANDS",
    "SHARED",
    "Parser",
    "build_parser",
    "describe",
    "device_flag",
    "int_at_least",
    "main",
    "model_flags",
    "positive_float",
    "shift_flags",
    "shift_setup",
]
