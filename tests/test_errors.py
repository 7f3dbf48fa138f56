"""The error tree: every class has a status, a docstring and a message that prints as is."""

from __future__ import annotations

import pytest

from corral import errors
from corral.errors import (
    BadRequestError,
    CorralError,
    GGUFError,
    InvalidDigestError,
    InvalidNameError,
    ModelNotFoundError,
    RequestCanceledError,
    ServerBusyError,
    StoreError,
)

STATUSES = {400, 404, 409, 499, 500, 503}


def _subclasses(cls: type[CorralError]) -> list[type[CorralError]]:
    found: list[type[CorralError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


# only the classes defined in corral.errors: tests elsewhere may define their own subclasses
ALL = [cls for cls in _subclasses(CorralError) if cls.__module__ == "corral.errors"]


def _construct(cls: type[CorralError]) -> CorralError:
    try:
        return cls()  # type: ignore[call-arg]
    except TypeError:
        return cls("something went wrong")


def test_the_tree_is_complete() -> None:
    exported = {getattr(errors, name) for name in errors.__all__}
    assert set(ALL) | {CorralError} == exported
    assert len(ALL) == 17


@pytest.mark.parametrize("cls", [CorralError, *ALL], ids=lambda cls: cls.__name__)
def test_every_error(cls: type[CorralError]) -> None:
    assert isinstance(cls.status, int)
    assert cls.status in STATUSES
    assert cls.__doc__
    assert cls.__doc__.strip()
    exc = cls("explicit message") if cls is not ModelNotFoundError else cls("m")
    assert str(exc) == exc.message
    exc = _construct(cls)
    assert isinstance(exc, Exception)
    assert exc.message
    assert str(exc) == exc.message
    assert exc.args == (exc.message,)
    assert exc.status == cls.status


def test_statuses_follow_the_tree() -> None:
    for cls in ALL:
        if issubclass(cls, BadRequestError):
            assert cls.status == 400, cls
    assert errors.NotFoundError.status == 404
    assert ModelNotFoundError.status == 404
    assert errors.ConflictError.status == 409
    assert RequestCanceledError.status == 499
    assert errors.RunnerError.status == 500
    assert errors.CatalogError.status == 500
    assert errors.InsufficientMemoryError.status == 500


def test_server_busy() -> None:
    exc = ServerBusyError()
    assert exc.message == "server busy, please try again.  maximum pending requests exceeded"
    assert str(exc) == exc.message
    assert exc.status == 503


def test_model_not_found() -> None:
    exc = ModelNotFoundError("x")
    assert str(exc) == "model 'x' not found, try pulling it first"
    assert exc.status == 404
    assert exc.name == "x"
    assert str(ModelNotFoundError("x", hint=False)) == "model 'x' not found"


def test_defaults() -> None:
    assert str(InvalidNameError()) == "invalid model name"
    assert InvalidNameError().status == 400
    assert str(InvalidDigestError()) == "invalid digest format"
    assert str(RequestCanceledError()) == "request canceled"
    assert str(InvalidNameError("custom")) == "custom"


def test_gguf_error_is_a_store_error_with_status_400() -> None:
    exc = GGUFError("invalid file magic")
    assert isinstance(exc, StoreError)
    assert isinstance(exc, CorralError)
    assert GGUFError.status == 400
    assert StoreError.status == 500
    with pytest.raises(StoreError):
        raise exc
