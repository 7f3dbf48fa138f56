"""The executor: walks the syntax tree against data, within the budgets in ``limits``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from corral.templates.go import limits
from corral.templates.go.functions import FUNCTIONS, check_arity
from corral.templates.go.nodes import (
    Action,
    BreakNode,
    Call,
    Chain,
    Command,
    Conditional,
    Dot,
    Expr,
    Function,
    Literal,
    Nil,
    Node,
    Pipeline,
    Range,
    SubPipe,
    Text,
    Variable,
    describe_expr,
)
from corral.templates.go.values import EvalError, field, iteration, text_of, truth


class _BreakSignal(Exception):
    """Unwinds from ``{{break}}`` to its range (nesting is checked at parse time)."""


class _ContinueSignal(Exception):
    """Unwinds from ``{{continue}}`` to its range."""


_MISSING: Final = object()
"""No piped value: distinct from None, which is a legitimate value to pipe."""


class Executor:
    """One render's state: variables, output and the budgets that stop hostile templates."""

    def __init__(self, defines: Mapping[str, tuple[Node, ...]]) -> None:
        self.line = 1
        self._defines = defines
        self._names: list[str] = []
        self._values: list[Any] = []
        self._out: list[str] = []
        self._out_chars = 0
        self._built = 0
        self._steps = 0
        self._iterations = 0
        self._depth = 0
        self._deadline = time.thread_time() + limits.MAX_CPU_SECONDS

    def run(self, root: tuple[Node, ...], data: Any) -> str:
        self._names, self._values = ["$"], [data]
        self._walk(root, data)
        return "".join(self._out)

    # budgets

    def _step(self) -> None:
        self._steps += 1
        if self._steps > limits.MAX_STEPS:
            raise EvalError(f"execution took more than {limits.MAX_STEPS} steps")
        if not self._steps % 256:
            self._check_time()

    def _check_time(self) -> None:
        if time.thread_time() > self._deadline:
            raise EvalError(
                f"execution took more than {limits.MAX_CPU_SECONDS:g} s of CPU time (the limit)"
            )

    def _emit(self, text: str) -> None:
        self._out_chars += len(text)
        if self._out_chars > limits.MAX_OUTPUT_CHARS:
            raise EvalError(f"output larger than {limits.MAX_OUTPUT_CHARS} characters")
        self._out.append(text)

    def _charge(self, size: int) -> None:
        if size > limits.MAX_OUTPUT_CHARS:
            raise EvalError(f"result larger than {limits.MAX_OUTPUT_CHARS} characters")
        self._built += size
        if self._built > limits.MAX_BUILT_CHARS:
            raise EvalError(f"functions built more than {limits.MAX_BUILT_CHARS} characters")

    # variables

    def _push(self, name: str, value: Any) -> None:
        self._names.append(name)
        self._values.append(value)

    def _pop(self, mark: int) -> None:
        del self._names[mark:]
        del self._values[mark:]

    def _position(self, name: str) -> int:
        names = self._names
        for position in range(len(names) - 1, -1, -1):
            if names[position] == name:
                return position
        raise EvalError(f"undefined variable: {name}")

    # statements

    def _walk(self, nodes: tuple[Node, ...], dot: Any) -> None:
        for node in nodes:
            self._step()
            if isinstance(node, Text):
                self._emit(node.text)
            elif isinstance(node, Action):
                self._action(node, dot)
            elif isinstance(node, Conditional):
                self._conditional(node, dot)
            elif isinstance(node, Range):
                self._range(node, dot)
            elif isinstance(node, Call):
                self._call(node, dot)
            elif isinstance(node, BreakNode):
                raise _BreakSignal
            else:
                raise _ContinueSignal

    def _action(self, node: Action, dot: Any) -> None:
        self.line = node.line
        value = self._pipeline(node.pipe, dot)
        if not node.pipe.decl:
            self._emit(text_of(value))

    def _conditional(self, node: Conditional, dot: Any) -> None:
        mark = len(self._names)
        for branch in node.branches:
            self.line = branch.pipe.line
            value = self._pipeline(branch.pipe, dot)
            if truth(value):
                self._walk(branch.body, value if node.keyword == "with" else dot)
                break
        else:
            self._walk(node.otherwise, dot)
        self._pop(mark)

    def _range(self, node: Range, dot: Any) -> None:
        self.line = node.line
        pipe, mark = node.pipe, len(self._names)
        items = iteration(self._commands(pipe, dot), len(pipe.decl))
        base = len(self._names)  # the pipeline itself may have declared variables
        if not pipe.is_assign:
            for name in pipe.decl:
                self._push(name, None)
        inner = len(self._names)
        empty = True
        for key, element in items:
            empty = False
            self._iterations += 1
            if self._iterations > limits.MAX_ITERATIONS:
                raise EvalError(f"range ran more than {limits.MAX_ITERATIONS} iterations")
            if not self._iterations % 256:
                self._check_time()
            self._bind(pipe, base, key, element)
            try:
                self._walk(node.body, element)
            except _BreakSignal:
                break
            except _ContinueSignal:
                pass
            finally:
                self._pop(inner)
        if empty:
            self._walk(node.otherwise, dot)
        self._pop(mark)

    def _bind(self, pipe: Pipeline, base: int, key: Any, element: Any) -> None:
        """Set the range variables: one gets the element, two get the key and the element."""
        if not pipe.decl:
            return
        values = [element] if len(pipe.decl) == 1 else [key, element]
        for offset, (name, value) in enumerate(zip(pipe.decl, values, strict=True)):
            position = self._position(name) if pipe.is_assign else base + offset
            self._values[position] = value

    def _call(self, node: Call, dot: Any) -> None:
        self.line = node.line
        body = self._defines.get(node.name)
        if body is None:
            raise EvalError(f'no such template "{node.name}"')
        new_dot = None if node.pipe is None else self._pipeline(node.pipe, dot)
        if self._depth >= limits.MAX_TEMPLATE_DEPTH:
            raise EvalError(f"exceeded maximum template depth ({limits.MAX_TEMPLATE_DEPTH})")
        saved = self._names, self._values
        self._names, self._values = ["$"], [new_dot]
        self._depth += 1
        self._walk(body, new_dot)
        self._depth -= 1
        self._names, self._values = saved

    # expressions

    def _pipeline(self, pipe: Pipeline, dot: Any) -> Any:
        value = self._commands(pipe, dot)
        for name in pipe.decl:
            if pipe.is_assign:
                self._values[self._position(name)] = value
            else:
                self._push(name, value)
        return value

    def _commands(self, pipe: Pipeline, dot: Any) -> Any:
        value: Any = _MISSING
        for command in pipe.commands:
            value = self._command(command, dot, value)
        return value

    def _command(self, command: Command, dot: Any, final: Any) -> Any:
        self.line = command.line
        self._step()
        head = command.args[0]
        if isinstance(head, Function):
            return self._invoke(head.name, command.args[1:], dot, final)
        if len(command.args) > 1 or final is not _MISSING:
            raise EvalError(f"can't give argument to non-function {describe_expr(head)}")
        if isinstance(head, Nil):
            raise EvalError("nil is not a command")
        return self._arg(head, dot)

    def _arg(self, expr: Expr, dot: Any) -> Any:
        if isinstance(expr, Chain):
            value = self._arg(expr.base, dot)
            for name in expr.names:
                value = field(value, name)
            return value
        if isinstance(expr, Dot):
            return dot
        if isinstance(expr, Literal):
            return expr.value
        if isinstance(expr, Variable):
            return self._values[self._position(expr.name)]
        if isinstance(expr, SubPipe):
            return self._pipeline(expr.pipe, dot)
        if isinstance(expr, Function):
            return self._invoke(expr.name, (), dot, _MISSING)
        return None

    def _invoke(self, name: str, exprs: tuple[Expr, ...], dot: Any, final: Any) -> Any:
        if name in ("and", "or"):
            return self._logical(name, exprs, dot, final)
        func = FUNCTIONS[name]
        args = [self._arg(expr, dot) for expr in exprs]
        if final is not _MISSING:
            args.append(final)
        check_arity(name, func, len(args))
        try:
            result = func.call(args)
        except EvalError as exc:
            raise EvalError(f"error calling {name}: {exc}") from exc
        except Exception as exc:  # odd input that no check foresaw still fails as a template error
            raise EvalError(f"error calling {name}: {type(exc).__name__}: {exc}") from exc
        if func.builds and isinstance(result, str | list):
            self._charge(len(result))
        return result

    def _logical(self, name: str, exprs: tuple[Expr, ...], dot: Any, final: Any) -> Any:
        """``and``/``or`` evaluate lazily, as since Go 1.18: ``and .X (index .X 0)`` is safe."""
        stop_when = name == "or"
        value: Any = _MISSING
        for expr in exprs:
            value = self._arg(expr, dot)
            if truth(value) == stop_when:
                return value
        if final is not _MISSING:
            value = final
        if value is _MISSING:
            raise EvalError(f"wrong number of args for {name}: want at least 1 got 0")
        return value
