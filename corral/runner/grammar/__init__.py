"""GBNF grammars for constrained decoding with llama.cpp's grammar sampler.

``format: "json"`` uses ``JSON_GRAMMAR``, any JSON object. ``format: {<JSON schema>}`` uses
``schema_to_grammar(schema)``, which raises ``SchemaError`` for what it cannot or will not
convert; ``corral.runner.grammar.schema`` says what is supported.

llama-cpp-python has a converter of its own, ``llama_cpp.llama_grammar.json_schema_to_gbnf``,
and we keep ours instead: that one signals bad input with ``assert`` (an ``AssertionError``,
not a client error, and nothing at all under ``python -O``), has no bounds on nesting depth or
grammar size, so a hostile schema can exhaust the server, and ignores ``minimum`` /
``maximum``. Ours raises ``SchemaError`` for every bad schema, bounds its work (``limits``) and
keeps numbers within their bounds.

Modules, each importing only those listed before it: ``limits``, ``errors``, ``gbnf`` (GBNF
text and the fixed JSON rules), ``charsets`` (code point sets), ``regex`` (``pattern``),
``numbers`` (``minimum`` / ``maximum``), ``keywords`` (reading schema keywords) and ``schema``
(the converter).
"""

from __future__ import annotations

from corral.runner.grammar.errors import SchemaError
from corral.runner.grammar.gbnf import JSON_GRAMMAR
from corral.runner.grammar.limits import MAX_DEPTH, MAX_REPEAT, MAX_RULES
from corral.runner.grammar.schema import schema_to_grammar

__all__ = [
    "JSON_GRAMMAR",
    "MAX_DEPTH",
    "MAX_REPEAT",
    "MAX_RULES",
    "SchemaError",
    "schema_to_grammar",
]
