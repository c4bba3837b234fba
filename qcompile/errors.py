"""User-facing errors.

Anything a user can cause (a bad flag, a mistyped recipe key, a missing dataset directory, a
foreign checkpoint) is raised as :class:`QCompileError`. The CLI prints its message as one line
on stderr and exits non-zero; tracebacks are kept for real bugs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class QCompileError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Suffix suggesting the closest valid choice, e.g. " (did you mean 'wbits'?)"."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice(kind: str, name: str, valid: Iterable[str]) -> QCompileError:
    """Error for a name that is not in a registry; lists every valid name."""
    valid = sorted(valid)
    return QCompileError(
        f"unknown {kind} '{name}'{did_you_mean(name, valid)}; valid: {', '.join(valid)}"
    )
