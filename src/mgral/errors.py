"""Exceptions that reach the user.

Library code raises :class:`InputError` for anything a user can fix (a malformed file, a missing image,
a bad option). The CLI turns it into one line on stderr and exit code 2; a traceback is a bug.
"""

from __future__ import annotations


class MgralError(Exception):
    """Base class of every error mgral raises on purpose."""


class InputError(MgralError):
    """Bad input: the message names the file (or option) and what is wrong with it."""

    def __init__(self, source: object, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source else problem)
