"""The syntax tree the parser builds and the executor walks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypeAlias

from corral.templates.go.lexer import SPACE
from corral.templates.go.values import text_of


@dataclass(frozen=True, slots=True)
class Dot:
    pass


@dataclass(frozen=True, slots=True)
class Nil:
    pass


@dataclass(frozen=True, slots=True)
class Literal:
    value: str | int | float | bool


@dataclass(frozen=True, slots=True)
class Variable:
    name: str


@dataclass(frozen=True, slots=True)
class Function:
    name: str


@dataclass(frozen=True, slots=True)
class SubPipe:
    pipe: Pipeline


@dataclass(frozen=True, slots=True)
class Chain:
    """Field lookups on a base: ``.A.B`` (base is dot), ``$x.A`` or ``(pipeline).A``."""

    base: Expr
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Command:
    line: int
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Pipeline:
    line: int
    decl: tuple[str, ...]
    is_assign: bool
    commands: tuple[Command, ...]


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Action:
    line: int
    pipe: Pipeline


@dataclass(frozen=True, slots=True)
class Branch:
    pipe: Pipeline
    body: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Conditional:
    """``if`` or ``with``; ``else if`` chains are flat branches so long chains cost no depth."""

    line: int
    keyword: str
    branches: tuple[Branch, ...]
    otherwise: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Range:
    line: int
    pipe: Pipeline
    body: tuple[Node, ...]
    otherwise: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Call:
    line: int
    name: str
    pipe: Pipeline | None


@dataclass(frozen=True, slots=True)
class BreakNode:
    line: int


@dataclass(frozen=True, slots=True)
class ContinueNode:
    line: int


Expr: TypeAlias = Dot | Nil | Literal | Variable | Function | SubPipe | Chain
Node: TypeAlias = Text | Action | Conditional | Range | Call | BreakNode | ContinueNode


def describe_expr(expr: Expr) -> str:
    if isinstance(expr, Dot):
        return "."
    if isinstance(expr, Nil):
        return "nil"
    if isinstance(expr, Literal):
        return json.dumps(expr.value) if isinstance(expr.value, str) else text_of(expr.value)
    if isinstance(expr, Variable | Function):
        return expr.name
    if isinstance(expr, SubPipe):
        return "(...)"
    base = "" if isinstance(expr.base, Dot) else describe_expr(expr.base)
    return base + "".join(f".{name}" for name in expr.names)


def is_empty(nodes: tuple[Node, ...]) -> bool:
    """Go lets a non-empty definition replace an empty (whitespace-only) one, nothing else."""
    return all(isinstance(node, Text) and not node.text.strip(SPACE) for node in nodes)
