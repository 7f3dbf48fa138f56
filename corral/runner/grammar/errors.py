"""``SchemaError``, the one exception conversion raises, and how its messages show values."""

from __future__ import annotations


class SchemaError(ValueError):
    """The JSON schema cannot be turned into a grammar; the message says why."""


def show(value: object) -> str:
    """A short, safe rendering of a schema value for error messages."""
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    return f"a {type(value).__name__}"
