"""The registry's error, re-exported: it lives in the one error tree, :mod:`corral.errors`."""

from __future__ import annotations

from corral.errors import RegistryError

__all__ = ["RegistryError"]
