"""The registry's error: what a registry (or the way to it) did wrong, in Ollama's words."""

from __future__ import annotations

from corral.errors import CorralError

__all__ = ["RegistryError"]


class RegistryError(CorralError):
    """A registry refused, failed, or could not be reached; ``unreachable`` says which."""

    status = 500

    def __init__(self, message: str, *, unreachable: bool = False, status: int = 500) -> None:
        super().__init__(message)
        self.unreachable = unreachable
        self.status = status
