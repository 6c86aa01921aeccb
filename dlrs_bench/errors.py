"""Errors the CLI turns into a one-line message and exit code 2 (invalid user input)."""

from __future__ import annotations


class UserInputError(Exception):
    """Invalid user input: a suite file, a dataset file, a CLI flag.

    The message is complete and shown as is; ``lines`` holds one entry per problem
    (``file:line: field: message``) when several were found at once.
    """

    def __init__(self, message: str, lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.lines = lines or [message]
