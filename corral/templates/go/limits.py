"""The bounds that keep an untrusted template from hanging or exhausting the server.

The other modules read these as ``limits.NAME`` at run time, so a test may lower one for a while.
"""

from __future__ import annotations

from typing import Final

MAX_OUTPUT_CHARS: Final = 10 * 1024 * 1024
"""Most characters one render may produce, and the largest string a function may build."""
MAX_BUILT_CHARS: Final = 200 * 1024 * 1024
"""Most characters (and list elements) functions may build in one render, all together."""
MAX_ITERATIONS: Final = 1_000_000
"""Most ``range`` iterations in one render, all loops together."""
MAX_STEPS: Final = 4_000_000
"""Most nodes and commands evaluated in one render."""
MAX_CPU_SECONDS: Final = 1.0
"""Most CPU time (of the rendering thread) one render may use; checked every 256 steps and
iterations, so a template within the counts above still cannot run for long."""
MAX_TEMPLATE_DEPTH: Final = 100
"""Deepest chain of ``template`` calls, which is how a template recurses."""
MAX_NESTING: Final = 100
"""Deepest nesting of blocks and parentheses in the source; keeps recursion off Python's limit."""
