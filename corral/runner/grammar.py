"""GBNF grammars for constrained decoding (llama.cpp's grammar sampler).

``format: "json"`` uses ``JSON_GRAMMAR``: any JSON object. Whitespace is bounded so that a
small model cannot wander into endless newlines, which unbounded ``ws`` rules invite.
"""

from __future__ import annotations

__all__ = ["JSON_GRAMMAR"]

JSON_GRAMMAR = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9]{1,4})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
"""
