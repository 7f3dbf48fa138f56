"""``corral.imports.submodule_only``: one submodule without the package's ``__init__``, the
rest of the package on first use."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.imports import submodule_only


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package whose ``__init__`` counts its runs and re-exports ``tables``, as ``gguf``
    does, with a second submodule."""
    name = "corral_test_pkg_" + tmp_path.name.replace("-", "_")
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text(
        textwrap.dedent(
            """
            import builtins
            builtins.INIT_RUNS = getattr(builtins, "INIT_RUNS", 0) + 1
            from .tables import *
            HEAVY = "loaded"
            """
        )
    )
    (root / "tables.py").write_text("SIZES = {1: 2}\n")
    (root / "other.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import builtins

    monkeypatch.setattr(builtins, "INIT_RUNS", 0, raising=False)
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def _init_runs() -> int:
    import builtins

    return int(builtins.INIT_RUNS)  # type: ignore[attr-defined]


def test_submodule_loads_without_the_package_init(package: str) -> None:
    tables = submodule_only(package, "tables")
    assert tables.SIZES == {1: 2}
    assert _init_runs() == 0
    assert sys.modules[f"{package}.tables"] is tables


def test_another_submodule_still_loads_alone(package: str) -> None:
    submodule_only(package, "tables")
    pkg = sys.modules[package]
    assert pkg.other.VALUE == 7  # attribute access on a submodule
    other = __import__(f"{package}.other", fromlist=["VALUE"])
    assert other.VALUE == 7
    assert _init_runs() == 0


def test_any_other_name_runs_the_init_once(package: str) -> None:
    submodule_only(package, "tables")
    pkg = sys.modules[package]
    assert pkg.HEAVY == "loaded"
    assert pkg.SIZES == {1: 2}  # what the init's star import re-exports
    assert _init_runs() == 1
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        _ = pkg.missing
    assert _init_runs() == 1


def test_from_import_of_an_init_name_works(package: str) -> None:
    submodule_only(package, "tables")
    namespace: dict[str, object] = {}
    exec(f"from {package} import HEAVY", namespace)
    assert namespace["HEAVY"] == "loaded"


def test_an_imported_package_is_used_as_is(package: str) -> None:
    __import__(package)
    assert _init_runs() == 1
    tables = submodule_only(package, "tables")
    assert tables.SIZES == {1: 2}
    assert _init_runs() == 1


def test_a_missing_submodule_leaves_nothing_behind(package: str) -> None:
    with pytest.raises(ModuleNotFoundError):
        submodule_only(package, "nothing_here")
    assert package not in sys.modules
