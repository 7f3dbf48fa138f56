"""The progress event of a pull, a push or a create: one of Ollama's progress objects.

``{"status": ...}`` alone for a step (``pulling manifest``, ``writing manifest``,
``success``), or with ``digest``, ``total`` and ``completed`` (bytes) for a blob on the
way; the server relays each as one NDJSON line. A plain dict: the statuses and their
fields are Ollama's, and the relay passes them on as they are.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ProgressEvent"]

ProgressEvent = dict[str, Any]
