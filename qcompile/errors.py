"""User-facing errors.

Anything a user can cause (a bad flag, a mistyped recipe key, a missing dataset directory, a
foreign checkpoint) is raised as :class:`QCompileError`. The CLI prints its message as one line
on stderr and exits non-zero; tracebacks are kept for real bugs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class QCompileError(Exception):
    """An error caused by the user's input, reported as one line without a traceback; the
    command exits with ``exit_code``."""

    exit_code = 2


class Disagreement(QCompileError):
    """Implementations of one model gave different outputs: `simulate` exits 1."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Suffix suggesting the closest valid choice, e.g. " (did you mean 'wbits'?)"."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1)
    close = close or [c for c in choices if len(word) >= 3 and c.startswith(word)][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice(kind: str, name: str, valid: Iterable[str]) -> QCompileError:
    """Error for a name that is not in a registry; lists every valid name."""
    valid = sorted(valid)
    return QCompileError(
        f"unknown {kind} {clip(repr(name), 60)}{did_you_mean(name, valid)}; "
        f"valid: {', '.join(valid)}"
    )


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out: user strings
    (paths, names, values) stay readable inside a one-line message.

    >>> clip("x" * 100, 10)
    'xxxxxxxxxx... (90 more characters)'
    """
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def one_line(message: str, limit: int = 1000) -> str:
    """``message`` as one printable line: control characters escaped (a newline inside a
    user's file name must not start a second line), the whole capped at ``limit``.

    >>> one_line("bad name 'a\\nb'")
    "bad name 'a\\\\nb'"
    """
    text = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message
    )
    return clip(text, limit)
