"""JSON Schema → GBNF grammar, for Ollama's ``format: {<JSON schema>}``.

``schema_to_grammar(schema)`` returns GBNF text whose ``root`` rule matches a subset of the JSON
texts that validate against ``schema``, so whatever llama.cpp's grammar sampler lets a model
write parses as JSON and validates (up to the keywords listed under "not enforced"). The grammar
need not allow *every* valid text: properties come in the schema's order, numbers have bounded
digits, and strings from ``enum`` / ``const``, property names and ``pattern`` characters have one
spelling, the one ``json.dumps(..., ensure_ascii=False)`` writes (free strings take any escape).

Supported
    * ``type``: a name or a list of names (``object``, ``array``, ``string``, ``number``,
      ``integer``, ``boolean``, ``null``); without ``type`` the kind is inferred from the keywords
      present (``properties`` → object, ``items`` → array, ...), and ``{}`` / ``true`` is any
      JSON value. OpenAPI's ``nullable: true`` adds ``null``.
    * objects: ``properties`` are written in the schema's order; ``required`` ones always,
      optional ones may be left out. Only the listed properties are written (as if
      ``additionalProperties`` were ``false``); a required name that is not listed gets the
      ``additionalProperties`` schema. An object without properties is any JSON object, or its
      values follow ``additionalProperties`` when that is a schema.
    * arrays: ``items``, ``prefixItems`` (or the older list form of ``items`` with
      ``additionalItems``), ``minItems``, ``maxItems``.
    * strings: ``minLength`` / ``maxLength`` (in code points), ``format`` ``date``, ``time``,
      ``date-time`` and ``uuid`` (other formats are annotations and are not enforced), and
      ``pattern`` for a regex subset: literals, ``.``, classes ``[...]`` with ranges and negation,
      ``\\d \\w \\s`` (ASCII) and their negations, groups ``(...)``, ``(?:...)``, named groups,
      ``|``, quantifiers ``? * + {n} {n,} {n,m}`` (lazy forms too), ``^`` / ``$`` at the ends.
      Without anchors a pattern may match anywhere in the string, as JSON Schema says; every
      string allowed also matches in ECMAScript and in Python's ``re``.
    * numbers: integers without leading zeros; ``minimum``, ``maximum``, ``exclusiveMinimum``
      and ``exclusiveMaximum`` (draft 4 booleans too) are exact for ``integer``; for ``number``
      they allow the integers in range and the decimals ``I.fff`` whose whole interval
      ``[I, I+1)`` is in range. Unbounded numbers have at most 16 integer digits, 16 fraction
      digits and a 2-digit exponent, so a model cannot loop on digits.
    * ``enum`` and ``const`` with any JSON values, ``anyOf`` / ``oneOf`` as alternatives,
      ``allOf`` (merged), ``$ref`` to ``#``, ``#/$defs/...``, ``#/definitions/...`` or any other
      local JSON pointer; each referenced schema becomes one named rule, so recursion works.
    * whitespace between tokens is bounded (``ws ::= | " " | "\\n" [ \\t]{0,20}``).

Not enforced (the grammar allows documents that these would reject): ``uniqueItems``,
``multipleOf``, ``minProperties``, ``maxProperties``, the exclusivity of ``oneOf``, and
keywords next to ``enum`` / ``const`` (the listed values are written as given).
Repetition bounds above 4096 are lowered to 4096 (``maxLength``, ``maxItems``, ``{n,m}``).

``SchemaError`` (a ``ValueError``) is raised, and nothing else, for: a schema that is not an
object or boolean, malformed keyword values, an unknown ``type``, ``$ref`` that is not a local
JSON pointer or points nowhere, a ``$ref`` cycle that passes through no object or array,
unsatisfiable parts (``false``, empty ``enum``, ``minLength`` > ``maxLength``, ...),
``not`` / ``if`` / ``dependentSchemas`` / ``dependentRequired`` / ``dependencies`` /
``patternProperties`` / ``propertyNames`` (but for one that only says keys are strings, as
zod writes records) / ``contains`` / ``unevaluatedItems`` /
``$dynamicRef``, a ``pattern`` outside the subset (or combined with length bounds), conflicting
``allOf`` parts, and hostile sizes: nesting deeper than 64, more than 100,000 schema nodes
visited, 10,000 rules or 1,000,000 characters of grammar, minimums above 4096 repetitions.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final
from urllib.parse import unquote

from corral.runner.grammar.errors import SchemaError, show
from corral.runner.grammar.gbnf import (
    EMPTY_OBJECT,
    FORMATS,
    PRIMITIVES,
    QUOTE,
    RE_CLASS,
    RE_LITERAL,
    RE_NAME,
    alt,
    gbnf_literal,
    json_string,
    repeat,
    rule_base,
    seq,
)
from corral.runner.grammar.keywords import (
    KEYWORDS,
    LOWER_BOUNDS,
    SUB_SCHEMAS,
    TYPE_HINTS,
    TYPES,
    UPPER_BOUNDS,
    as_schema,
    bounds,
    constraints,
    finite,
    is_number,
    json_type_ok,
    schema_list,
)
from corral.runner.grammar.limits import (
    MAX_ALTERNATIVES,
    MAX_DEPTH,
    MAX_GRAMMAR_CHARS,
    MAX_PREFIX_ITEMS,
    MAX_RULES,
    MAX_STEPS,
)
from corral.runner.grammar.numbers import magnitudes
from corral.runner.grammar.regex import pattern_expr

_BOUND_LIMIT: Final = 10**18


def schema_to_grammar(schema: dict[str, Any], *, prefix: str = "", suffix: str = "") -> str:
    """GBNF text with a ``root`` rule for JSON documents that validate against ``schema``,
    between the literal texts ``prefix`` and ``suffix`` (a tool call's tags) when given."""
    if not isinstance(schema, dict):
        raise SchemaError(f"a JSON schema must be an object, not {type(schema).__name__}")
    if not prefix and not suffix:
        return _Converter(schema).run()
    text = _Converter(schema, root_name="doc").run()
    parts = [gbnf_literal(prefix)] if prefix else []
    parts.append("doc")
    if suffix:
        parts.append(gbnf_literal(suffix))
    return f"root ::= {' '.join(parts)}\n{text}"


class _Converter:
    def __init__(self, root: dict[str, Any], *, root_name: str = "root") -> None:
        self._root = root
        self._root_name = root_name
        self._rules: dict[str, str] = {}
        self._taken: set[str] = {"root", root_name, *PRIMITIVES}
        self._refs: dict[str, str] = {"[]": root_name}
        self._steps = 0

    # -- bookkeeping --

    def run(self) -> str:
        body = self._convert(self._root, 0, frozenset({"[]"}))
        lines = [f"{self._root_name} ::= {body}"]
        lines.extend(f"{name} ::= {rule}" for name, rule in self._rules.items())
        text = "\n".join(lines) + "\n"
        if len(text) > MAX_GRAMMAR_CHARS:
            raise SchemaError(f"the grammar would exceed {MAX_GRAMMAR_CHARS} characters")
        return text

    def _tick(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise SchemaError(f"schema nests deeper than {MAX_DEPTH} levels")
        self._steps += 1
        if self._steps > MAX_STEPS:
            raise SchemaError("schema is too large")

    def _fresh(self, base: str) -> str:
        if len(self._rules) >= MAX_RULES:
            raise SchemaError(f"the grammar would need more than {MAX_RULES} rules")
        name, n = base, 1
        while name in self._taken:
            n += 1
            name = f"{base}-{n}"
        self._taken.add(name)
        self._rules[name] = ""
        return name

    def _rule(self, base: str, body: str) -> str:
        name = self._fresh(base)
        self._rules[name] = body
        return name

    def _named(self, expr: str, base: str) -> str:
        """``expr`` itself when it is a name, literal or class, else a new rule for it (so that
        using it twice does not copy it: nested copies would grow exponentially)."""
        simple = RE_NAME.fullmatch(expr) or RE_LITERAL.fullmatch(expr) or RE_CLASS.fullmatch(expr)
        return expr if simple else self._rule(base, expr)

    def _prim(self, name: str) -> str:
        pending = [name]
        while pending:
            current = pending.pop()
            if current not in self._rules:
                body, uses = PRIMITIVES[current]
                self._rules[current] = body
                pending.extend(uses)
        return name

    # -- references --

    def _pointer(self, ref: object) -> list[str]:
        if not isinstance(ref, str):
            raise SchemaError("$ref must be a string")
        if ref == "#":
            return []
        if not ref.startswith("#/"):
            raise SchemaError(f"$ref {show(ref)} is not supported: only local '#/...' pointers")
        return [unquote(part).replace("~1", "/").replace("~0", "~") for part in ref[2:].split("/")]

    def _resolve(self, ref: object) -> Any:
        node: Any = self._root
        for part in self._pointer(ref):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and re.fullmatch(r"0|[1-9][0-9]{0,8}", part):
                if int(part) >= len(node):
                    raise SchemaError(f"unknown $ref {show(ref)}")
                node = node[int(part)]
            else:
                raise SchemaError(f"unknown $ref {show(ref)}")
        if not isinstance(node, dict | bool):
            raise SchemaError(f"$ref {show(ref)} does not point at a schema")
        return node

    def _ref(self, ref: object, depth: int, head: frozenset[str]) -> str:
        key = json.dumps(self._pointer(ref))
        if key in head:
            raise SchemaError(f"$ref {show(ref)} refers back to itself outside any object or array")
        name = self._refs.get(key)
        if name is not None:
            return name
        target = self._resolve(ref)
        assert isinstance(ref, str)
        name = self._fresh(rule_base(ref.rsplit("/", 1)[-1]))
        self._refs[key] = name
        self._rules[name] = self._convert(target, depth + 1, head | {key})
        return name

    # -- allOf merging --

    def _flatten(self, schema: object, depth: int) -> dict[str, Any]:
        """``schema`` with its ``$ref`` and ``allOf`` merged in."""
        self._tick(depth)
        node = as_schema(schema)
        if "$ref" not in node and "allOf" not in node:
            return node
        merged = {key: value for key, value in node.items() if key not in ("$ref", "allOf")}
        parts: list[Any] = []
        if "$ref" in node:
            parts.append(self._resolve(node["$ref"]))
        if "allOf" in node:
            parts.extend(schema_list(node, "allOf"))
        for part in parts:
            merged = self._merge(merged, part, depth + 1)
        return merged

    def _merge(self, first: object, second: object, depth: int) -> dict[str, Any]:
        a = self._flatten(first, depth + 1)
        b = self._flatten(second, depth + 1)
        out = dict(a)
        for key, value in b.items():
            out[key] = self._merge_key(key, out[key], value, depth) if key in out else value
        return out

    def _merge_key(self, key: str, a: Any, b: Any, depth: int) -> Any:
        if key == "format" or key not in KEYWORDS:  # annotations: keep the first
            return a
        if key == "properties":
            if not isinstance(a, dict) or not isinstance(b, dict):
                raise SchemaError("'properties' must be an object")
            both = dict(a)
            for name, sub in b.items():
                both[name] = {"allOf": [both[name], sub]} if name in both else sub
            return both
        if key == "required":
            if not isinstance(a, list) or not isinstance(b, list):
                raise SchemaError("'required' must be a list")
            return list(dict.fromkeys([*a, *b]))
        if key == "type":
            left, right = self._type_list(a), self._type_list(b)

            def widen(kinds: list[str]) -> set[str]:
                return {*kinds, "integer"} if "number" in kinds else set(kinds)

            common = [k for k in left + right if k in widen(left) and k in widen(right)]
            if not common:
                raise SchemaError("allOf parts have no type in common")
            return list(dict.fromkeys(common))
        if key in LOWER_BOUNDS | UPPER_BOUNDS:
            if is_number(a) and is_number(b):
                return max(a, b) if key in LOWER_BOUNDS else min(a, b)
            if isinstance(a, bool) and isinstance(b, bool):  # draft 4 exclusive flags
                return a or b
        elif key in SUB_SCHEMAS:
            return False if a is False or b is False else {"allOf": [a, b]}
        elif key == "enum":
            if not isinstance(a, list) or not isinstance(b, list):
                raise SchemaError("'enum' must be a list")
            keys = {self._canon(v, depth) for v in b}
            return [v for v in a if self._canon(v, depth) in keys] or self._unsatisfiable(key)
        elif key == "const":
            if self._canon(a, depth) == self._canon(b, depth):
                return a
            self._unsatisfiable(key)
        elif key in ("anyOf", "oneOf"):
            left, right = schema_list({key: a}, key), schema_list({key: b}, key)
            if len(left) * len(right) > MAX_ALTERNATIVES:
                raise SchemaError(f"allOf of {key} lists has too many combinations")
            return [{"allOf": [x, y]} for x in left for y in right]
        elif key == "nullable":
            return a is True and b is True
        elif a is b or (isinstance(a, str | int | float) and type(a) is type(b) and a == b):
            return a
        raise SchemaError(f"allOf parts have conflicting {key!r} values")

    def _unsatisfiable(self, key: str) -> Any:
        raise SchemaError(f"allOf parts have no {key!r} value in common")

    def _canon(self, value: object, depth: int) -> object:
        """A hashable form of a JSON value, equal for JSON-equal values."""
        self._tick(depth)
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return (type(value).__name__, value)
        if is_number(value):
            number = finite(value, "enum")
            if isinstance(number, float) and number.is_integer():
                number = int(number)
            return ("number", number)
        if isinstance(value, list):
            return ("array", tuple(self._canon(v, depth + 1) for v in value))
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise SchemaError("object keys in 'enum' / 'const' must be strings")
            items = sorted((k, self._canon(v, depth + 1)) for k, v in value.items())
            return ("object", tuple(items))
        raise SchemaError(f"{type(value).__name__} is not a JSON value")

    # -- schemas --

    def _type_list(self, value: object) -> list[str]:
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names:
            raise SchemaError("'type' must be a type name or a non-empty list of them")
        for name in names:
            if name not in TYPES:
                raise SchemaError(f"unknown type {show(name)}")
        return list(dict.fromkeys(names))

    def _convert(self, schema: object, depth: int, head: frozenset[str]) -> str:
        self._tick(depth)
        node = as_schema(schema)
        if "$ref" in node:
            if not constraints(node, "$ref"):
                return self._ref(node["$ref"], depth, head)
            return self._convert(self._flatten(node, depth), depth + 1, head)
        if "allOf" in node:
            parts = schema_list(node, "allOf")
            if len(parts) == 1 and not constraints(node, "allOf"):
                return self._convert(parts[0], depth + 1, head)
            return self._convert(self._flatten(node, depth), depth + 1, head)
        for key in ("anyOf", "oneOf"):
            if key in node:
                alts = [option for option in schema_list(node, key) if option is not False]
                if not alts:
                    raise SchemaError(f"{key} has no satisfiable alternative")
                rest = {k: v for k, v in node.items() if k != key}
                if constraints(rest):
                    alts = [self._merge(rest, option, depth) for option in alts]
                return alt([self._convert(option, depth + 1, head) for option in alts])
        nullable = node.get("nullable", False)
        if not isinstance(nullable, bool):
            raise SchemaError("'nullable' must be a boolean")
        expr = self._plain(node, depth, head)
        return alt([expr, self._prim("null")]) if nullable else expr

    def _plain(self, node: dict[str, Any], depth: int, head: frozenset[str]) -> str:
        types = self._type_list(node["type"]) if "type" in node else None
        values: list[Any] | None = None
        if "const" in node:
            values = [node["const"]]
            if "enum" in node:
                keys = {self._canon(v, depth) for v in schema_list(node, "enum")}
                if self._canon(node["const"], depth) not in keys:
                    raise SchemaError("'const' is not one of the 'enum' values")
        elif "enum" in node:
            values = schema_list(node, "enum")
        if values is not None:
            if types is not None:
                values = [v for v in values if any(json_type_ok(v, t) for t in types)]
            if not values:
                raise SchemaError("no 'enum' / 'const' value has the schema's type")
            return alt([self._literal(v, depth + 1) for v in values])
        if types is None:
            types = [kind for kind, keys in TYPE_HINTS if any(key in node for key in keys)]
            if not types:
                return self._prim("value")
        if "integer" in types and "number" in types:
            types.remove("integer")
        return alt([self._typed(node, kind, depth, head) for kind in types])

    def _typed(self, node: dict[str, Any], kind: str, depth: int, head: frozenset[str]) -> str:
        if kind in ("null", "boolean"):
            return self._prim(kind)
        if kind == "string":
            return self._string(node)
        if kind in ("number", "integer"):
            return self._number(node, kind == "integer")
        if kind == "object":
            return self._object(node, depth)
        return self._array(node, depth)

    def _literal(self, value: object, depth: int) -> str:
        """Exactly the JSON value ``value`` (with free whitespace between its tokens)."""
        self._tick(depth)
        self._prim("ws")
        if value is None or isinstance(value, bool):
            return f'"{json.dumps(value)}" ws'
        if isinstance(value, str):
            self._prim("ws")
            return f"{gbnf_literal(json_string(value))} ws"
        if is_number(value):
            number = finite(value, "enum")
            try:
                text = json.dumps(number)
            except ValueError as exc:  # int too large for str()
                raise SchemaError("a number in 'enum' / 'const' is too large") from exc
            self._prim("ws")
            return f"{gbnf_literal(text)} ws"
        if isinstance(value, list):
            items = [self._literal(item, depth + 1) for item in value]
            return seq('"[" ws', ' "," ws '.join(items), '"]" ws')
        if isinstance(value, dict):
            members = []
            for key, item in value.items():
                if not isinstance(key, str):
                    raise SchemaError("object keys in 'enum' / 'const' must be strings")
                key_text = gbnf_literal(json_string(key))
                members.append(seq(key_text, 'ws ":" ws', self._literal(item, depth + 1)))
            return seq('"{" ws', ' "," ws '.join(members), '"}" ws')
        raise SchemaError(f"{type(value).__name__} in 'enum' / 'const' is not a JSON value")

    def _string(self, node: dict[str, Any]) -> str:
        low, high = bounds(node, "Length")
        pattern = node.get("pattern")
        self._prim("ws")
        if pattern is not None:
            if not isinstance(pattern, str):
                raise SchemaError("'pattern' must be a string")
            if low > 0 or high is not None:
                raise SchemaError("'pattern' together with minLength/maxLength is not supported")
            self._prim("char")
            return seq(QUOTE, pattern_expr(pattern), QUOTE, "ws")
        if low == 0 and high is None:
            fmt = node.get("format")
            if isinstance(fmt, str) and fmt in FORMATS:
                return seq(QUOTE, self._prim(FORMATS[fmt]), QUOTE, "ws")
            return self._prim("string")
        return seq(QUOTE, repeat(self._prim("char"), low, high), QUOTE, "ws")

    def _number(self, node: dict[str, Any], integer: bool) -> str:
        low: float | None = None
        high: float | None = None
        low_x = high_x = False
        for key, is_low in (("minimum", True), ("maximum", False)):
            if key in node:
                value = finite(node[key], key)
                if is_low:
                    low = value
                else:
                    high = value
        for key, is_low in (("exclusiveMinimum", True), ("exclusiveMaximum", False)):
            if key not in node:
                continue
            value = node[key]
            if isinstance(value, bool):  # draft 4: modifies minimum / maximum
                if is_low:
                    low_x = low_x or (value and low is not None)
                else:
                    high_x = high_x or (value and high is not None)
                continue
            value = finite(value, key)
            if is_low and (low is None or value >= low):
                low, low_x = value, True
            elif not is_low and (high is None or value <= high):
                high, high_x = value, True
        if low is not None and low < -_BOUND_LIMIT:
            low = None
        if high is not None and high > _BOUND_LIMIT:
            high = None
        if (low is not None and low > _BOUND_LIMIT) or (high is not None and high < -_BOUND_LIMIT):
            raise SchemaError(f"numeric bounds beyond ±{_BOUND_LIMIT} are not supported")
        self._prim("ws")
        if low is None and high is None:
            return self._prim("integer" if integer else "number")
        alts: list[str] = []
        if high is None or high > 0 or (high == 0 and not high_x):
            plus_low, plus_x = (0.0, False) if low is None or low < 0 else (low, low_x)
            alts.extend(magnitudes(plus_low, plus_x, high, high_x, not integer))
        if low is None or low < 0:
            minus_low, minus_x = (0.0, False) if high is None or high > 0 else (-high, high_x)
            minus_high = None if low is None else -low
            negatives = magnitudes(minus_low, minus_x, minus_high, low_x, not integer)
            if negatives:
                alts.append(seq('"-"', alt(negatives)))
        if not alts:
            raise SchemaError("no number lies within minimum/maximum")
        return seq(alt(alts), "ws")

    def _object(self, node: dict[str, Any], depth: int) -> str:
        properties = node.get("properties", {})
        required = node.get("required", [])
        extra = node.get("additionalProperties", True)
        if not isinstance(properties, dict):
            raise SchemaError("'properties' must be an object")
        if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
            raise SchemaError("'required' must be a list of strings")
        if not isinstance(extra, dict | bool):
            raise SchemaError("'additionalProperties' must be a schema")
        wanted = set(required)
        entries: list[tuple[str, object, bool]] = []
        for name, sub in properties.items():
            if not isinstance(name, str):
                raise SchemaError("property names must be strings")
            if sub is False:
                if name in wanted:
                    raise SchemaError(f"required property {show(name)} has the schema `false`")
                continue
            entries.append((name, sub, name in wanted))
        for name in dict.fromkeys(required):
            if name not in properties:
                if extra is False:
                    raise SchemaError(f"required property {show(name)} is not allowed")
                entries.append((name, extra, True))
        self._prim("ws")
        if not entries:
            if extra is False or properties:
                return EMPTY_OBJECT
            if extra is True or not constraints(extra):
                return self._prim("object")
            value = self._named(self._convert(extra, depth + 1, frozenset()), "value")
            member = seq(self._prim("string"), '":" ws', value)
            members_expr = seq(member, repeat(f'"," ws {member}', 0, None))
            return seq('"{" ws', repeat(members_expr, 0, 1), '"}" ws')
        members = [
            seq(
                gbnf_literal(json_string(name)),
                'ws ":" ws',
                self._convert(sub, depth + 1, frozenset()),
            )
            for name, sub, _ in entries
        ]
        if all(req for _, _, req in entries):
            return seq('"{" ws', ' "," ws '.join(members), '"}" ws')
        # Optional members may be left out; commas go only between the members written. With
        # tail_i = ("," m_i)? tail_{i+1} (no "?" when m_i is required), the members are one of
        # m_j tail_{j+1} for each j up to the first required member r (all optional: or none).
        # Members and tails used twice get a rule each, so the grammar grows linearly.
        count = len(entries)
        first_required = next((i for i, (_, _, req) in enumerate(entries) if req), count)
        base = rule_base(f"obj-{entries[0][0]}")
        refs = [
            self._named(member, f"{base}-kv") if 0 < i <= first_required else member
            for i, member in enumerate(members)
        ]
        tails = [""] * (count + 1)
        for i in range(count - 1, 0, -1):
            step = f'"," ws {refs[i]}'
            tail = seq(step if entries[i][2] else repeat(step, 0, 1), tails[i + 1])
            tails[i] = self._named(tail, f"{base}-tail") if i <= first_required + 1 else tail
        alts = [seq(refs[j], tails[j + 1]) for j in range(min(first_required + 1, count))]
        body = alt(alts)
        if first_required == count:
            body = repeat(body, 0, 1)
        return seq('"{" ws', body, '"}" ws')

    def _array(self, node: dict[str, Any], depth: int) -> str:
        items = node.get("items", True)
        prefix = node.get("prefixItems", [])
        if isinstance(items, list):  # drafts 4-7: tuple form
            prefix, items = items, node.get("additionalItems", True)
        if not isinstance(prefix, list):
            raise SchemaError("'prefixItems' must be a list of schemas")
        if not isinstance(items, dict | bool):
            raise SchemaError("'items' must be a schema")
        low, high = bounds(node, "Items")
        if len(prefix) > MAX_PREFIX_ITEMS:
            raise SchemaError(f"more than {MAX_PREFIX_ITEMS} prefixItems are not supported")
        for index, sub in enumerate(prefix):
            if sub is False:
                prefix = prefix[:index]
                high = index if high is None else min(high, index)
                break
        if items is False:
            high = len(prefix) if high is None else min(high, len(prefix))
        if high is not None and high < low:
            raise SchemaError("no array length satisfies minItems, maxItems and the item schemas")
        self._prim("ws")
        count = len(prefix) if high is None else min(len(prefix), high)
        heads = [self._convert(sub, depth + 1, frozenset()) for sub in prefix[:count]]
        # elements after the prefix
        if high is not None and high <= count:
            rest = ""
        else:
            item = self._named(self._convert(items, depth + 1, frozenset()), "item")
            more_low = max(0, low - count)
            more_high = None if high is None else high - count
            if count:
                rest = repeat(f'"," ws {item}', more_low, more_high)
            else:
                later = repeat(
                    f'"," ws {item}',
                    max(0, more_low - 1),
                    None if more_high is None else more_high - 1,
                )
                rest = seq(item, later)
                if more_low == 0:
                    rest = repeat(rest, 0, 1)
        for index in range(count - 1, -1, -1):
            step = seq('"," ws' if index else "", heads[index], rest)
            rest = step if index < low else repeat(step, 0, 1)
        return seq('"[" ws', rest, '"]" ws')
