"""The parser: builds the syntax tree from tokens, with the checks Go makes at parse time."""

from __future__ import annotations

from typing import NoReturn

from corral.errors import TemplateError
from corral.templates.go import limits
from corral.templates.go.functions import FUNCTIONS
from corral.templates.go.lexer import Kind, Token, describe
from corral.templates.go.nodes import (
    Action,
    Branch,
    BreakNode,
    Call,
    Chain,
    Command,
    Conditional,
    ContinueNode,
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
    is_empty,
)


class Parser:
    """Recursive descent over the tokens; checks what Go checks at parse time."""

    def __init__(self, tokens: list[Token]) -> None:
        self._tokens = tokens
        self._i = 0
        self._vars: list[str] = ["$"]
        self._range_depth = 0
        self._nesting = 0
        self.defines: dict[str, tuple[Node, ...]] = {}
        self.fields: set[str] = set()

    def parse(self) -> tuple[Node, ...]:
        nodes, end = self._list(top=True)
        if end.kind is not Kind.EOF:
            self._fail(end, "unexpected {{" + end.text + "}}")
        return nodes

    def _fail(self, token: Token, message: str) -> NoReturn:
        raise TemplateError(f"template: {token.line}: {message}")

    def _peek(self, ahead: int = 0) -> Token:
        return self._tokens[min(self._i + ahead, len(self._tokens) - 1)]

    def _next(self) -> Token:
        token = self._tokens[self._i]
        self._i = min(self._i + 1, len(self._tokens) - 1)
        return token

    def _expect_right(self, context: str) -> None:
        token = self._next()
        if token.kind is not Kind.RIGHT:
            self._fail(token, f"unexpected {describe(token)} in {context}")

    def _enter(self, token: Token) -> None:
        self._nesting += 1
        if self._nesting > limits.MAX_NESTING:
            self._fail(token, f"nesting deeper than {limits.MAX_NESTING} levels")

    def _list(self, *, top: bool = False) -> tuple[tuple[Node, ...], Token]:
        """Parse nodes up to ``{{end}}``, ``{{else`` or EOF and return that terminator."""
        nodes: list[Node] = []
        while True:
            token = self._next()
            if token.kind is Kind.TEXT:
                nodes.append(Text(token.text))
                continue
            if token.kind is Kind.EOF:
                return tuple(nodes), token
            head = self._peek()
            if head.kind is Kind.KEYWORD and head.value in ("end", "else"):
                self._next()
                if head.value == "end":
                    self._expect_right("end")
                return tuple(nodes), head
            if head.kind is Kind.KEYWORD and head.value == "define":
                self._next()
                if not top:
                    self._fail(head, "unexpected {{define}}: define is only allowed at top level")
                self._define(head)
                continue
            nodes.append(self._action())

    def _scoped_list(self, opener: Token) -> tuple[tuple[Node, ...], Token]:
        mark = len(self._vars)
        nodes, end = self._list()
        del self._vars[mark:]
        if end.kind is Kind.EOF:
            opening = "{{" + opener.text + "}}"
            self._fail(end, f"unexpected EOF: {opening} on line {opener.line} has no {{{{end}}}}")
        return nodes, end

    def _else_list(self, opener: Token) -> tuple[Node, ...]:
        nodes, end = self._scoped_list(opener)
        if end.value != "end":
            self._fail(end, "expected {{end}}; found {{else}}")
        return nodes

    def _action(self) -> Node:
        token = self._peek()
        if token.kind is not Kind.KEYWORD:
            pipe = self._pipeline("command", Kind.RIGHT)
            return Action(pipe.line, pipe)
        self._next()
        match token.value:
            case "if" | "with":
                return self._conditional(token)
            case "range":
                return self._range(token)
            case "template":
                return self._template(token)
            case "block":
                return self._block(token)
            case _:
                return self._loop_control(token)

    def _loop_control(self, token: Token) -> Node:
        if self._range_depth == 0:
            self._fail(token, "{{" + token.text + "}} outside {{range}}")
        self._expect_right(token.text)
        return BreakNode(token.line) if token.value == "break" else ContinueNode(token.line)

    def _conditional(self, token: Token) -> Node:
        keyword = str(token.value)
        self._enter(token)
        mark = len(self._vars)
        branches: list[Branch] = []
        otherwise: tuple[Node, ...] = ()
        pipe = self._pipeline(keyword, Kind.RIGHT)
        while True:
            body, end = self._scoped_list(token)
            branches.append(Branch(pipe, body))
            if end.value == "end":
                break
            following = self._peek()
            if following.kind is Kind.KEYWORD and following.value == keyword:
                self._next()
                pipe = self._pipeline(keyword, Kind.RIGHT)
                continue
            self._expect_right("else")
            otherwise = self._else_list(token)
            break
        del self._vars[mark:]
        self._nesting -= 1
        return Conditional(token.line, keyword, tuple(branches), otherwise)

    def _range(self, token: Token) -> Node:
        self._enter(token)
        mark = len(self._vars)
        pipe = self._pipeline("range", Kind.RIGHT)
        self._range_depth += 1
        body, end = self._scoped_list(token)
        self._range_depth -= 1
        otherwise: tuple[Node, ...] = ()
        if end.value == "else":
            self._expect_right("else")
            otherwise = self._else_list(token)
        del self._vars[mark:]
        self._nesting -= 1
        return Range(token.line, pipe, body, otherwise)

    def _template_name(self, context: str) -> str:
        token = self._next()
        if token.kind is not Kind.STRING:
            self._fail(token, f"unexpected {describe(token)} in {context}")
        return str(token.value)

    def _template(self, token: Token) -> Node:
        name = self._template_name("template clause")
        if self._peek().kind is Kind.RIGHT:
            self._next()
            return Call(token.line, name, None)
        return Call(token.line, name, self._pipeline("template clause", Kind.RIGHT))

    def _define(self, token: Token) -> None:
        name = self._template_name("define clause")
        self._expect_right("define clause")
        self._add_define(token, name, self._separate_tree(token))

    def _block(self, token: Token) -> Node:
        name = self._template_name("block clause")
        pipe = self._pipeline("block clause", Kind.RIGHT)
        self._add_define(token, name, self._separate_tree(token))
        return Call(token.line, name, pipe)

    def _separate_tree(self, token: Token) -> tuple[Node, ...]:
        """A definition sees only ``$`` and is outside any range, as a Go template tree is."""
        self._enter(token)
        saved = self._vars, self._range_depth
        self._vars, self._range_depth = ["$"], 0
        body, end = self._scoped_list(token)
        if end.value != "end":
            self._fail(end, f"unexpected {{{{else}}}} in {token.text} clause")
        self._vars, self._range_depth = saved
        self._nesting -= 1
        return body

    def _add_define(self, token: Token, name: str, body: tuple[Node, ...]) -> None:
        existing = self.defines.get(name)
        if existing is not None and not is_empty(existing):
            if is_empty(body):
                return
            self._fail(token, f'multiple definition of template "{name}"')
        self.defines[name] = body

    def _pipeline(self, context: str, end_kind: Kind) -> Pipeline:
        line = self._peek().line
        decl, is_assign = self._declarations(context)
        if self._peek().kind in (Kind.RIGHT, Kind.RPAREN):
            self._fail(self._peek(), f"missing value for {context}")
        commands = [self._command()]
        while True:
            token = self._next()
            if token.kind is end_kind:
                break
            if token.kind is not Kind.PIPE:
                self._fail(token, f"unexpected {describe(token)} in {context}")
            commands.append(self._command())
        for stage, command in enumerate(commands[1:], start=2):
            if isinstance(command.args[0], Literal | Dot | Nil):
                self._fail(token, f"non executable command in pipeline stage {stage}")
        if not is_assign:
            self._vars.extend(decl)
        return Pipeline(line, decl, is_assign, tuple(commands))

    def _declarations(self, context: str) -> tuple[tuple[str, ...], bool]:
        first, after = self._peek(), self._peek(1)
        if first.kind is not Kind.VARIABLE:
            return (), False
        names: tuple[str, ...]
        if after.kind in (Kind.DECLARE, Kind.ASSIGN):
            names, operator, consumed = (str(first.value),), after, 2
        elif after.kind is Kind.COMMA:
            if context != "range":
                self._fail(after, f"too many declarations in {context}")
            second, operator = self._peek(2), self._peek(3)
            if second.kind is not Kind.VARIABLE:
                self._fail(second, "range can only initialize variables")
            if operator.kind not in (Kind.DECLARE, Kind.ASSIGN):
                self._fail(operator, f"unexpected {describe(operator)} in range declaration")
            names, consumed = (str(first.value), str(second.value)), 4
        else:
            return (), False
        self._i += consumed
        is_assign = operator.kind is Kind.ASSIGN
        if is_assign:
            for name in names:
                self._check_variable(operator, name)
        return names, is_assign

    def _check_variable(self, token: Token, name: str) -> None:
        if name not in self._vars:
            self._fail(token, f'undefined variable "{name}"')

    def _command(self) -> Command:
        line = self._peek().line
        args: list[Expr] = []
        while True:
            token = self._peek()
            if token.kind in (Kind.PIPE, Kind.RIGHT, Kind.RPAREN, Kind.EOF):
                break
            if args and not token.spaced:
                self._fail(token, f"unexpected {describe(token)} in operand")
            args.append(self._operand())
        if not args:
            self._fail(token, "missing command")
        return Command(line, tuple(args))

    def _operand(self) -> Expr:
        start = self._peek()
        term = self._term()
        names: list[str] = []
        while self._peek().kind is Kind.FIELD and not self._peek().spaced:
            names.append(str(self._next().value))
        if not names:
            return term
        self.fields.update(name.casefold() for name in names)
        if isinstance(term, Chain):
            return Chain(term.base, term.names + tuple(names))
        if isinstance(term, Variable | SubPipe | Function):
            return Chain(term, tuple(names))
        return self._fail(start, f"unexpected . after term {describe(start)}")

    def _term(self) -> Expr:
        token = self._next()
        match token.kind:
            case Kind.FIELD:
                self.fields.add(str(token.value).casefold())
                return Chain(Dot(), (str(token.value),))
            case Kind.DOT:
                return Dot()
            case Kind.NIL:
                return Nil()
            case Kind.STRING | Kind.NUMBER | Kind.BOOL:
                return Literal(token.value)
            case Kind.VARIABLE:
                self._check_variable(token, str(token.value))
                return Variable(str(token.value))
            case Kind.IDENT:
                if token.value not in FUNCTIONS:
                    self._fail(token, f'function "{token.value}" not defined')
                return Function(str(token.value))
            case Kind.LPAREN:
                self._enter(token)
                pipe = self._pipeline("parenthesized pipeline", Kind.RPAREN)
                self._nesting -= 1
                return SubPipe(pipe)
            case _:
                return self._fail(token, f"unexpected {describe(token)} in operand")
