"""Model names, parsed and validated exactly as Ollama's ``types/model/name.go`` does.

Why: a model name becomes four directory levels of the on-disk store
(``manifests/<host>/<namespace>/<model>/<tag>``), so a name is both the user's handle on a
model and a file path. It must follow Ollama's grammar so that a store Ollama wrote is read
as is, and it must never be able to name a path outside the store.

What can go wrong, and how it is prevented: every :class:`Name` is validated when it is
built (``__post_init__``), whichever constructor is used, so a ``Name`` value cannot exist
with a part that is empty, ``.`` or ``..``, contains ``/``, ``\\`` or NUL, is non-ASCII, or
is too long. Any violation raises :class:`~corral.errors.InvalidNameError` with Ollama's
message "invalid model name".

Grammar: ``[scheme://][host/][namespace/]model[:tag][@digest]``; defaults
``registry.ollama.ai`` / ``library`` / ``latest``. Comparisons between names are
case-insensitive in Ollama; use :meth:`Name.casefold_key` for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from corral.errors import InvalidDigestError, InvalidNameError
from corral.store.digest import parse_digest

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_NAMESPACE",
    "DEFAULT_TAG",
    "Name",
]

DEFAULT_HOST: Final = "registry.ollama.ai"
DEFAULT_NAMESPACE: Final = "library"
DEFAULT_TAG: Final = "latest"

_MAX_HOST: Final = 350
_MAX_NAMESPACE: Final = 80
_MAX_MODEL: Final = 80
_MAX_TAG: Final = 80

_FIRST: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_REST_NAMESPACE: Final = _FIRST | frozenset("-")
_REST_MODEL_TAG: Final = _REST_NAMESPACE | frozenset(".")
_REST_HOST: Final = _REST_MODEL_TAG | frozenset(":")

_SCHEMES: Final = ("http://", "https://")


def _valid_part(part: str, max_len: int, rest: frozenset[str]) -> bool:
    """Whether ``part`` is 1..max_len chars, starts alphanumeric/_ and continues in ``rest``."""
    if not 1 <= len(part) <= max_len:
        return False
    if part[0] not in _FIRST:
        return False
    return all(c in rest for c in part[1:])


def _cut_last(s: str, sep: str) -> tuple[str, str] | None:
    """Split ``s`` at the last ``sep``; None when absent; InvalidNameError if a side is empty."""
    i = s.rfind(sep)
    if i < 0:
        return None
    before, after = s[:i], s[i + len(sep) :]
    if not before or not after:
        raise InvalidNameError()
    return before, after


@dataclass(frozen=True, slots=True)
class Name:
    """A fully qualified, validated model name (host, namespace, model, tag).

    Construct with :meth:`parse` for user input, or directly with the four parts (for
    example from on-disk directory names); both paths validate every part.
    """

    host: str
    namespace: str
    model: str
    tag: str

    def __post_init__(self) -> None:
        for part in (self.host, self.namespace, self.model, self.tag):
            if not isinstance(part, str) or not part.isascii():
                raise InvalidNameError()
        if not (
            _valid_part(self.host, _MAX_HOST, _REST_HOST)
            and _valid_part(self.namespace, _MAX_NAMESPACE, _REST_NAMESPACE)
            and _valid_part(self.model, _MAX_MODEL, _REST_MODEL_TAG)
            and _valid_part(self.tag, _MAX_TAG, _REST_MODEL_TAG)
        ):
            raise InvalidNameError()

    @classmethod
    def parse(cls, raw: str) -> Name:
        """Parse ``[scheme://][host/][namespace/]model[:tag][@digest]``, filling defaults.

        A digest suffix is validated and then dropped: callers that must honour it use
        :meth:`parse_reference`. Raises :class:`InvalidNameError` for anything outside the
        grammar.
        """
        return cls.parse_reference(raw)[0]

    @classmethod
    def parse_reference(cls, raw: str) -> tuple[Name, str | None]:
        """Like :meth:`parse`, with the ``@digest`` suffix (``sha256:<hex>``) or None.

        The digest names one exact manifest (the sha256 of its bytes, the ID ``list``
        shows), so a caller must check it rather than fall back to whatever the tag holds.
        """
        if not isinstance(raw, str) or not raw or not raw.isascii():
            raise InvalidNameError()
        s = raw
        digest: str | None = None
        cut = _cut_last(s, "@")
        if cut is not None:
            s, suffix = cut
            try:
                digest = parse_digest(suffix)
            except InvalidDigestError:
                raise InvalidNameError() from None

        tag = DEFAULT_TAG
        if s.rfind(":") > s.rfind("/"):
            cut = _cut_last(s, ":")
            assert cut is not None  # rfind(":") >= 0 here
            s, tag = cut

        host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
        cut = _cut_last(s, "/")
        if cut is None:
            model = s
        else:
            s, model = cut
            cut = _cut_last(s, "/")
            if cut is None:
                namespace = s
            else:
                host, namespace = cut
                for scheme in _SCHEMES:
                    if host.startswith(scheme):
                        host = host[len(scheme) :]
                        break
        # Anything left malformed (a "/" in host, "." in namespace, ...) fails here.
        return cls(host, namespace, model, tag), digest

    @property
    def display_long(self) -> str:
        """``host/namespace/model:tag``, always fully qualified."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def display_short(self) -> str:
        """The shortest form Ollama shows: ``smollm2:135m``, ``me/tiny:1``, ``h/ns/m:t``."""
        if self.host.lower() != DEFAULT_HOST:
            return self.display_long
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    def __str__(self) -> str:
        return self.display_long

    def manifest_parts(self) -> tuple[str, str, str, str]:
        """The four path components under ``manifests/``: (host, namespace, model, tag)."""
        return (self.host, self.namespace, self.model, self.tag)

    def casefold_key(self) -> tuple[str, str, str, str]:
        """A key under which names that differ only in (ASCII) case compare equal."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def equal_fold(self, other: Name) -> bool:
        """Whether ``other`` names the same model, ignoring case (Ollama's ``EqualFold``)."""
        return self.casefold_key() == other.casefold_key()
