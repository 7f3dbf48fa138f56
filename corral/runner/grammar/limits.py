"""The bounds on conversion that keep a hostile schema from exhausting the server."""

from __future__ import annotations

from typing import Final

MAX_DEPTH: Final = 64
MAX_RULES: Final = 10_000
MAX_STEPS: Final = 100_000
MAX_GRAMMAR_CHARS: Final = 1_000_000
MAX_REPEAT: Final = 4096
MAX_PREFIX_ITEMS: Final = 256
MAX_PATTERN_CHARS: Final = 2000
MAX_ALTERNATIVES: Final = 1000
