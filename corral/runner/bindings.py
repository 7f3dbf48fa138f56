"""llama.cpp's C bindings for the runner process, without the ``llama_cpp`` package's
high-level layer.

``import llama_cpp`` runs the package's ``__init__``, which imports its ``Llama`` class, chat
formats and disk cache (jinja2, diskcache, ...): a good part of a runner's start-up time,
for code the runner never calls. ``python -m corral.runner`` imports this module before
anything else touches ``llama_cpp``: only ``llama_cpp.llama_cpp`` (the ctypes bindings) is
loaded (``corral.imports.submodule_only``) and its names are put on the package, as the
package's ``from .llama_cpp import *`` would, so ``import llama_cpp as llama`` elsewhere
sees every binding. Any other ``llama_cpp`` name (``Llama``, ``__version__``) still works:
the rest of the package loads on its first use. Where ``llama_cpp`` was already imported (a
test process), the real package is used as is.
"""

from __future__ import annotations

import sys

from corral.imports import submodule_only

__all__ = ["llama"]

_bindings = submodule_only("llama_cpp", "llama_cpp")
llama = sys.modules["llama_cpp"]
for _name, _value in vars(_bindings).items():
    if not _name.startswith("_") and _name not in llama.__dict__:
        setattr(llama, _name, _value)
