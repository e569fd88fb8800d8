"""User-facing errors.

A :class:`UserError` is a mistake the user can fix (a wrong option, a missing file, a bad target
file). The CLI prints its message as one line and exits with status 2; anything else is a bug and
keeps its traceback. Keeping the distinction in one exception type means no layer of the code has
to know how the CLI reports problems.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input, reported as ``error: <message>`` with exit status 2."""

    exit_code = 2


def summarize(exc: BaseException, limit: int = 160) -> str:
    """``exc``'s message on one line of at most ``limit`` characters (its type when empty).

    For the parenthesis in a one-line error that wraps a library's exception (torch, TVM, RPC):
    their messages span lines and can be pages long.
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TrainingDivergedError(UserError):
    """The loss became NaN or infinite: the weights are lost, and resuming would diverge again."""


class CheckFailedError(UserError):
    """A compiled module differs from its reference beyond the tolerance: a result the user
    acts on (exit status 1, like a failed ``verify``), not a crash."""

    exit_code = 1
