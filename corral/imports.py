"""One submodule of a third-party package without the package's ``__init__``.

Some packages import everything from their ``__init__``: ``gguf`` (numpy, its writer, its
quantizers) for the type tables alone, ``llama_cpp`` (its ``Llama`` class, chat formats,
disk cache) for the C bindings alone. On a cold start that is a good part of a second.
:func:`submodule_only` registers the package without running its ``__init__``, imports the
one submodule, and runs the ``__init__`` the first time any other name of the package is
asked for, so ``package.Anything``, ``from package import Anything`` and ``import
package.other`` all still work, just later. Where the package was already imported, it is
used as is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any

__all__ = ["submodule_only"]


def submodule_only(package_name: str, submodule: str) -> ModuleType:
    """``package_name.submodule``, imported without running ``package_name``'s
    ``__init__`` if the package is not imported yet (see the module's docstring)."""
    qualified = f"{package_name}.{submodule}"
    if package_name in sys.modules:
        return importlib.import_module(qualified)
    spec = importlib.util.find_spec(package_name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return importlib.import_module(qualified)  # not a plain package: the usual way
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader
    state = {"initialized": False}

    def rest_of_package(name: str) -> Any:
        if not name.startswith("_") and importlib.util.find_spec(f"{package_name}.{name}"):
            return importlib.import_module(f"{package_name}.{name}")  # a submodule alone
        if not state["initialized"]:
            state["initialized"] = True
            loader.exec_module(package)  # the package's own __init__, in its own module
            if name in package.__dict__:
                return package.__dict__[name]
        raise AttributeError(f"module {package_name!r} has no attribute {name!r}")

    package.__getattr__ = rest_of_package  # type: ignore[method-assign]
    sys.modules[package_name] = package
    try:
        return importlib.import_module(qualified)
    except BaseException:
        del sys.modules[package_name]
        raise
