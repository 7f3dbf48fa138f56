"""How a process ended, in the words every part of corral uses: ``exit status N`` or
``killed by signal N (NAME)``."""

from __future__ import annotations

import signal

__all__ = ["describe_exit"]


def describe_exit(returncode: int) -> str:
    """``exit status N`` for an exit, ``killed by signal N (NAME)`` for a signal (a negative
    ``returncode``, as ``subprocess`` and ``asyncio`` report it)."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "unknown signal"
    return f"killed by signal {-returncode} ({name})"
