"""The ``apprentice-hw`` command group and its entry point: errors, Ctrl-C and exit codes.

User mistakes (:class:`UserError`, bad options) end with one ``error: ...`` line on stderr and
exit status 2; ``--debug`` anywhere on the command line shows the traceback instead. Each
command lives in its own module of this package; it parses options, calls the public API
(``apprentice_hw.api``) and formats the result.
"""

from __future__ import annotations

import errno
import signal
import sys
import threading
import traceback

import click

from apprentice_hw.errors import UserError
from apprentice_hw.version import __version__

DEBUG_FLAG = "--debug"
# What Ctrl-C leaves behind, per command (the rest write nothing until they have finished).
INTERRUPTED = {
    "build": "no output was half-written (an interrupted build continues with --resume)",
    "compile": "no output was half-written",
    "train": "the last finished epoch is saved (continue with 'train --resume')",
    "tune": "the settings measured so far are kept in the tuning database",
    "deploy": "nothing was written to the build",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="apprentice-hw")
def cli() -> None:
    """Distil low-precision students (Apprentice, ICLR 2018) and deploy them with TVM.

    Add --debug anywhere to see full tracebacks.
    """


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


class _Interrupts:
    """Notices Ctrl-C (SIGINT) while a command runs.

    A KeyboardInterrupt raised inside one of TVM's Python callbacks (a pass, MetaSchedule's
    worker pool) comes back out of TVM as a RuntimeError, and a worker killed by the same
    Ctrl-C as a failed build: after a Ctrl-C, whatever the command fails with is reported as
    the interruption, in one line.
    """

    def __init__(self) -> None:
        self.seen = False
        self._previous = None

    def _handler(self, _signum, _frame) -> None:
        self.seen = True
        raise KeyboardInterrupt

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *_exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def ignore_further(self) -> None:
        """Once an interruption is reported, ignore Ctrl-C: a second one, or the first one
        delivered late (after TVM's C++ code returns), would otherwise escape ``main`` during
        shutdown and end the process by SIGINT instead of exit status 130 (seen once in three
        runs of the verify interruption test)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self._previous = None  # leave it ignored on exit


def _report_interrupt(args: list[str], debug: bool, interrupts: _Interrupts) -> int:
    interrupts.ignore_further()
    _forget_unhandled_interrupt()
    if debug:
        traceback.print_exc()
    command = next((a for a in args if not a.startswith("-")), "")
    click.echo(f"error: interrupted; {INTERRUPTED.get(command, 'nothing was written')}", err=True)
    return 130


def _forget_unhandled_interrupt() -> None:
    """Clear CPython's "unhandled KeyboardInterrupt" flag before exiting with status 130.

    CPython 3.11 sets that flag whenever a KeyboardInterrupt leaves an ``exec`` of a string
    (``dataclasses`` builds every ``__init__`` that way, so a Ctrl-C during an import does it),
    even when the exception is caught further up; under ``python -m`` the interpreter then ends
    itself by SIGINT after ``main`` returned 130 (the verify interruption test failed so, 1 run
    in 12). Each ``exec`` of a string resets the flag before it runs, so an empty one clears it.
    """
    exec("")  # a constant empty string: resets the flag, runs nothing


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args
    args = [a for a in args if a != DEBUG_FLAG]
    with _Interrupts() as interrupts:
        try:
            result = cli.main(args=args, prog_name="apprentice-hw", standalone_mode=False)
            if interrupts.seen:  # swallowed on the way (a TVM callback's fallback): still one
                return _report_interrupt(args, debug, interrupts)
            return result if isinstance(result, int) else 0
        except click.exceptions.Exit as exc:
            return exc.exit_code
        except (KeyboardInterrupt, click.Abort):
            return _report_interrupt(args, debug, interrupts)
        except Exception as exc:
            if interrupts.seen:
                return _report_interrupt(args, debug, interrupts)
            if debug:
                raise
            return _report_error(exc)


def _report_error(exc: Exception) -> int:
    """One ``error:`` line for a user's mistake (exit 2); anything else keeps its traceback."""
    if isinstance(exc, click.UsageError):
        command = exc.ctx.command_path if exc.ctx else "apprentice-hw"
        click.echo(f"error: {_one_line(exc.format_message())} (see '{command} --help')", err=True)
        return 2
    if isinstance(exc, UserError):
        click.echo(f"error: {_one_line(str(exc))}", err=True)
        return exc.exit_code
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        where = f" writing {exc.filename}" if exc.filename else ""
        click.echo(f"error: no space left on the device{where} ({exc.strerror}); free some space "
                   "or choose another --out; nothing was left half-written", err=True)  # fmt: skip
        return 2
    raise exc


def echo_lines(lines: list[str], err: bool = False) -> None:
    for line in lines:
        click.echo(line, err=err)
