"""Exceptions that reach the user.

Library code raises :class:`InputError` for anything a user can fix (a malformed file, a missing image,
a bad option). The CLI turns it into one line on stderr and exit code 2; a traceback is a bug.
"""

from __future__ import annotations


class MgralError(Exception):
    """Base class of every error mgral raises on purpose."""


#: what ``str.splitlines`` breaks lines at
_LINE_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


def one_line(text: str) -> str:
    """``text`` with its line breaks written as escapes (``\\n``), so a message stays one line even when
    a file name or a value from a file holds a newline."""
    return text.translate(_LINE_BREAKS)


class InputError(MgralError):
    """Bad input: the message names the file (or option) and what is wrong with it, on one line."""

    def __init__(self, source: object, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        text = f"{self.source}: {problem}" if self.source else problem
        super().__init__(one_line(text))
