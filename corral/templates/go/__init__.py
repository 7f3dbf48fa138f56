"""Go ``text/template`` for Ollama model templates: a lexer, a parser and an evaluator.

Ollama stores a model's prompt format as a Go template, so corral has to run that language
from Python. This package implements the part of ``text/template`` that model templates use,
with Go's semantics wherever they change the prompt text, and a data model that fits Python.

Supported:
    * text and actions, trim markers ``{{- `` / `` -}}``, comments ``{{/* ... */}}``;
    * pipelines ``a | f b`` (the value goes in as the last argument), ``( ... )`` sub-expressions,
      field chains ``.A.B``, ``$x.A``, ``(pipeline).A``;
    * literals: Go-escaped ``"strings"``, raw ```strings```, ``'c'`` characters, Go integer and
      float syntax, ``true``, ``false``, ``nil``;
    * variables: ``$x := ...``, ``$x = ...`` and ``$``, with Go's block scoping;
    * ``if`` / ``else if`` / ``else``, ``with`` / ``else with`` / ``else``, ``range`` over lists,
      dicts (sorted keys) and ints (Go 1.22) with ``else``, ``break`` and ``continue``;
    * ``define``, ``template`` and ``block``;
    * Go's functions ``and or not eq ne lt le gt ge len index slice print printf println html js
      urlquery`` and Ollama's ``json currentDate yesterdayDate toTypeScriptType``.

Data model: dicts are looked up by exact key, other objects by public attribute; a missing key
is ``None`` (Go's ``missingkey=zero``), and a field of ``None`` is ``None``. ``None`` prints as
nothing and dicts and lists print as compact JSON, because Ollama's tool types print that way.

Deliberately left out, or different from Go:
    * method calls and ``call``: data is plain JSON-like values, and letting a user-supplied
      template call Python callables would be unsafe;
    * custom delimiters, ``html/template`` escaping, complex numbers, 3-index slices;
    * strings are code points, not UTF-8 bytes, for ``len``, ``index`` and ``slice``;
    * ints and floats compare with each other, and ``printf``'s float verbs take ints (JSON
      gives Python both kinds of number, where Go has only float64);
    * ``<nil>`` and ``<no value>`` print as the empty string, maps as JSON not ``map[k:v]``.

Untrusted templates must not hang or exhaust the server, so execution is bounded: output size,
characters built by functions, range iterations, evaluation steps, CPU time and template call
depth.
Only ``TemplateError`` ever leaves this package; any other exception is wrapped into one.

Modules, each importing only those listed before it: ``limits`` (the bounds), ``lexer``,
``values`` (Go's view of Python data), ``nodes`` (the syntax tree), ``printf``, ``functions``,
``parser``, ``execute`` and ``template`` (``GoTemplate``, the entry point).
"""

from __future__ import annotations

from corral.templates.go.limits import (
    MAX_BUILT_CHARS,
    MAX_CPU_SECONDS,
    MAX_ITERATIONS,
    MAX_NESTING,
    MAX_OUTPUT_CHARS,
    MAX_STEPS,
    MAX_TEMPLATE_DEPTH,
)
from corral.templates.go.template import GoTemplate

__all__ = [
    "MAX_BUILT_CHARS",
    "MAX_CPU_SECONDS",
    "MAX_ITERATIONS",
    "MAX_NESTING",
    "MAX_OUTPUT_CHARS",
    "MAX_STEPS",
    "MAX_TEMPLATE_DEPTH",
    "GoTemplate",
]
