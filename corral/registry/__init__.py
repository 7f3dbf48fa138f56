"""OCI distribution (v2) client: pull (parallel, resumable, verified) and push, with auth.

Everything here is asyncio; progress is a stream of Ollama's progress objects handed to a
callback. ``registry → store`` only.
"""

from __future__ import annotations

from corral.registry.client import RegistryClient, registry_url
from corral.registry.errors import RegistryError
from corral.registry.pull import PullOptions, pull_model
from corral.registry.push import push_model

__all__ = [
    "PullOptions",
    "RegistryClient",
    "RegistryError",
    "pull_model",
    "push_model",
    "registry_url",
]
