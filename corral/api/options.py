"""Model options: Ollama's ``options`` object and Modelfile ``PARAMETER`` values.

One table says each option's type, and one function, :func:`typed_option`, types a raw value
by it for every caller: a request's ``options`` (``validate_options``), a Modelfile
``PARAMETER`` (``parse_parameter``, the Modelfile request path) and a create request's
``parameters``. Values are checked with Ollama's rules and messages (``option "num_ctx" must
be of type integer``, ``invalid int value [x]``); in ``options`` integers given as floats are
truncated and unknown keys are ignored with a warning. ``Options`` is the internal, typed
result; load-time options (``RUNNER_OPTIONS``) decide whether a loaded runner can serve a
request, and become the runner's ``LoadSettings`` in the scheduler, which clamps them.

``Options.given`` names the load-time options a layer actually set (the model's Modelfile
``PARAMETER``s or the request's ``options``). The others hold defaults, and a default is no
reason to reload a runner: a request that leaves ``num_ctx`` unset uses a loaded runner whatever
its context, as Ollama's ``needsReload`` does for its automatic values.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from corral.errors import InvalidOptionError

__all__ = [
    "OPTION_KINDS",
    "RUNNER_OPTIONS",
    "Options",
    "Source",
    "parse_parameter",
    "typed_option",
    "validate_options",
]

logger = logging.getLogger(__name__)

Kind = Literal["int", "float", "bool", "str", "strs"]

#: every option name Ollama accepts and its type (seed and newest, deprecated ones included)
OPTION_KINDS: dict[str, Kind] = {
    "num_ctx": "int",
    "num_batch": "int",
    "num_gpu": "int",
    "main_gpu": "int",
    "num_thread": "int",
    "num_parallel": "int",
    "use_mmap": "bool",
    "use_mlock": "bool",
    "numa": "bool",
    "low_vram": "bool",
    "f16_kv": "bool",
    "logits_all": "bool",
    "vocab_only": "bool",
    "draft_num_predict": "int",
    "num_keep": "int",
    "seed": "int",
    "num_predict": "int",
    "top_k": "int",
    "top_p": "float",
    "min_p": "float",
    "tfs_z": "float",
    "typical_p": "float",
    "repeat_last_n": "int",
    "temperature": "float",
    "repeat_penalty": "float",
    "presence_penalty": "float",
    "frequency_penalty": "float",
    "mirostat": "int",
    "mirostat_tau": "float",
    "mirostat_eta": "float",
    "penalize_newline": "bool",
    "stop": "strs",
}

#: options fixed when a runner loads; a request that changes one needs another runner
RUNNER_OPTIONS = frozenset(
    {"num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "use_mmap", "num_parallel"}
)

_INT_TEXT = re.compile(r"[+-]?[0-9]{1,20}")  # longer is out of int64's range anyway
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_FLOAT32_MAX = 3.4028234663852886e38

#: where a raw option value comes from, which decides how it is read (see :func:`typed_option`)
Source = Literal["options", "modelfile", "parameters"]


def typed_option(key: str, value: Any, *, source: Source = "options") -> Any:
    """One raw option value typed by :data:`OPTION_KINDS`; ``InvalidOptionError`` otherwise.

    The one place option values are typed. ``source`` says how ``value`` is read:

    - ``"options"``: a request's JSON ``options`` (Ollama's ``FromMap``): the JSON type must
      match (``option "num_ctx" must be of type integer``), a float given for an integer is
      truncated, numbers must be finite, a string for a list option is a one-item list.
    - ``"modelfile"``: the text of a Modelfile ``PARAMETER``, read as Go's ``ParseInt``
      (int64), ``ParseFloat(, 32)`` and ``ParseBool`` do (``invalid int value [x]``); a list
      option's text is one item, unquoted.
    - ``"parameters"``: a create request's JSON ``parameters``, saved with the model: a string
      for a non-list option is read as Modelfile text, any other value as JSON that must also
      fit the types Ollama stores (int64, finite float32), since a model saved with ``1e30``
      as ``num_ctx`` would fail every load, far from its cause.

    A key is matched case-insensitively; an unknown one is ``unknown parameter '<key>'``.
    """
    name = key.lower()
    kind = OPTION_KINDS.get(name)
    if kind is None:
        raise InvalidOptionError(f"unknown parameter '{key}'")
    if source == "modelfile" or (
        source == "parameters" and isinstance(value, str) and kind != "strs"
    ):
        return _from_text(kind, str(value).strip())
    typed = _from_json(name, kind, value)
    if source == "parameters":
        _check_stored_range(typed, value)
    return typed


def _from_json(key: str, kind: Kind, value: Any) -> Any:
    """A JSON value against the option's kind, with Ollama's ``FromMap`` messages."""
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidOptionError(f'option "{key}" must be of type integer')
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidOptionError(f'option "{key}" must be of type integer')
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidOptionError(f'option "{key}" must be of type float32')
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range
            raise InvalidOptionError(f'option "{key}" must be a finite number') from None
        if not math.isfinite(number):
            raise InvalidOptionError(f'option "{key}" must be a finite number')
        return number
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidOptionError(f'option "{key}" must be of type boolean')
        return value
    if kind == "strs":
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidOptionError(f'option "{key}" must be of an array of strings')
        return list(value)
    if not isinstance(value, str):  # pragma: no cover - no "str" options today
        raise InvalidOptionError(f'option "{key}" must be of type string')
    return value


def _from_text(kind: Kind, value: str) -> Any:
    """Modelfile text against the option's kind, as Go's ``strconv`` parses it."""
    if kind == "int":
        # Go's ParseInt(value, 10, 64): ASCII digits, an optional sign, int64's range.
        number = int(value) if _INT_TEXT.fullmatch(value) else None
        if number is None or not _INT64_MIN <= number <= _INT64_MAX:
            raise InvalidOptionError(f"invalid int value [{value}]")
        return number
    if kind == "float":
        try:
            number_f = float(value)
        except ValueError:
            raise InvalidOptionError(f"invalid float value [{value}]") from None
        if not _fits_float32(number_f):  # ParseFloat(value, 32)
            raise InvalidOptionError(f"invalid float value [{value}]")
        return number_f
    if kind == "bool":
        lowered = value.lower()
        if lowered in {"true", "1", "t"}:
            return True
        if lowered in {"false", "0", "f"}:
            return False
        raise InvalidOptionError(f"invalid bool value [{value}]")
    if kind == "strs":
        return [_unquote(value)]
    return value


def _check_stored_range(typed: Any, raw: Any) -> None:
    """A JSON value saved with a model must fit Ollama's types, as Modelfile text must."""
    if isinstance(typed, int) and not isinstance(typed, bool):
        if not _INT64_MIN <= typed <= _INT64_MAX:
            raise InvalidOptionError(f"invalid int value [{raw}]")
    elif isinstance(typed, float) and not _fits_float32(typed):
        raise InvalidOptionError(f"invalid float value [{raw}]")


def _fits_float32(number: float) -> bool:
    return math.isfinite(number) and abs(number) <= _FLOAT32_MAX


def validate_options(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """A request's ``options`` object → checked values; unknown keys dropped with a warning."""
    if not raw:
        return {}
    checked: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in OPTION_KINDS:
            logger.warning("invalid option provided: %s", key)
            continue
        if value is None:
            continue
        checked[key] = typed_option(key, value)
    return checked


def parse_parameter(key: str, text: str) -> Any:
    """A Modelfile ``PARAMETER key value`` → typed value, with Ollama's messages."""
    return typed_option(key, text, source="modelfile")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@dataclass(frozen=True, slots=True)
class Options:
    """Every option with Ollama's default; build with ``Options.merged``."""

    num_ctx: int = 4096
    num_batch: int = 512
    num_gpu: int = -1
    main_gpu: int = 0
    num_thread: int = 0
    num_parallel: int = 0
    use_mmap: bool | None = None
    #: tokens a draft model guesses per step (speculative decoding; 0: off). Ollama counts it
    #: among its runner options; here each request may set it without another runner
    draft_num_predict: int = 4
    num_keep: int = 4
    seed: int = -1
    num_predict: int = -1
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_last_n: int = 64
    temperature: float = 0.8
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    stop: tuple[str, ...] = field(default_factory=tuple)
    #: load-time options some layer set; the rest are defaults that match any loaded runner
    given: frozenset[str] = frozenset()

    @classmethod
    def merged(cls, *layers: Mapping[str, Any], num_ctx_default: int = 4096) -> Options:
        """Defaults, then each layer in order (model params, then request options)."""
        values: dict[str, Any] = {"num_ctx": num_ctx_default}
        given: set[str] = set()
        names = {f.name for f in fields(cls)} - {"given"}
        for layer in layers:
            for key, value in layer.items():
                if key in names and value is not None:
                    values[key] = tuple(value) if key == "stop" else value
                    if key in RUNNER_OPTIONS:
                        given.add(key)
        # values as given: the scheduler clamps the load-time ones where it builds a
        # runner's LoadSettings, in one place
        return cls(**values, given=frozenset(given))

    def is_set(self, name: str) -> bool:
        """Whether the load-time option ``name`` was set rather than left at its default."""
        return name in self.given

    def runner_key(self) -> dict[str, Any]:
        """The load-time options, for deciding whether a loaded runner fits a request."""
        return {k: v for k, v in self._values().items() if k in RUNNER_OPTIONS}

    def sampling(self) -> dict[str, Any]:
        """The per-request options the runner applies to one generation."""
        return {k: v for k, v in self._values().items() if k not in RUNNER_OPTIONS}

    def _values(self) -> dict[str, Any]:
        values = asdict(self)
        del values["given"]
        return values
