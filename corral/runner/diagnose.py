"""Why a runner process ended, in words a user can act on.

A runner that dies takes its reason with it; what is left is its exit status, the tail of
its stderr and what the kernel counted. ``explain`` turns those into one sentence:

- SIGILL: the engine was compiled for instructions this CPU lacks; the fix is a rebuild;
- SIGKILL while the kernel's OOM killer ran (``/proc/vmstat`` ``oom_kill`` went up since the
  runner started): memory, and what to lower;
- SIGSEGV, SIGABRT, SIGBUS, SIGFPE: a crash inside llama.cpp, with its last log lines
  (a ``GGML_ASSERT`` prints its condition there);
- exit status ``ENGINE_UNUSABLE``: the runner refused to start a build this CPU cannot run,
  and said why on stderr.
The server's log and the client's error carry the same words.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path

from corral.engine.exits import describe_exit
from corral.engine.features import REBUILD_HINT

__all__ = ["ENGINE_UNUSABLE", "OomCounter", "explain", "oom_kills"]

#: the runner's exit status when the installed engine cannot run on this CPU (EX_CONFIG)
ENGINE_UNUSABLE = 78

_CRASHES = (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE)


def oom_kills(vmstat: Path = Path("/proc/vmstat")) -> int | None:
    """How many processes the kernel's OOM killer has killed since boot (None: unknown)."""
    try:
        text = vmstat.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class OomCounter:
    """The OOM-kill count when a runner started, to tell later whether the killer ran."""

    def __init__(self, vmstat: Path = Path("/proc/vmstat")) -> None:
        self._vmstat = vmstat
        self._start = oom_kills(vmstat)

    def fired(self) -> bool:
        now = oom_kills(self._vmstat)
        return self._start is not None and now is not None and now > self._start


_TELLING = ("GGML_ASSERT", "GGML_ABORT", "error", "Error", "failed", "Assertion")


def _last_lines(stderr_tail: Sequence[str], count: int = 4) -> str:
    """The lines that say what went wrong (an assert, an error) if there are any, else the
    last few."""
    lines = [line.strip() for line in stderr_tail if line.strip()]
    telling = [line for line in lines if any(word in line for word in _TELLING)]
    return " | ".join((telling or lines)[-count:])


def explain(returncode: int | None, stderr_tail: Sequence[str], *, oom_killed: bool) -> str:
    """One sentence on how a runner ended, starting with its exit status or signal."""
    if returncode is None:
        return "still running"
    status = describe_exit(returncode)
    if returncode == -signal.SIGILL:
        return (
            f"{status}: the engine (llama.cpp) was built for instructions this CPU cannot"
            f" run; rebuild it for this machine with `{REBUILD_HINT}`"
        )
    if returncode == -signal.SIGKILL:
        if oom_killed:
            return (
                f"{status}: the kernel's out-of-memory killer ended it; the model needs more"
                " memory than is free (try a smaller num_ctx or num_parallel, or unload other"
                " models)"
            )
        return status
    if returncode < 0 and -returncode in _CRASHES:
        lines = _last_lines(stderr_tail)
        return f"{status}: llama.cpp crashed" + (f"; its last log lines: {lines}" if lines else "")
    if returncode == ENGINE_UNUSABLE:
        for line in reversed(stderr_tail):
            if "error:" in line:
                return f"{status}: {line.split('error:', 1)[1].strip()}"
    return status
