"""A small renderer for the subset of Go's text/template that Ollama chat templates use, so tests can
render a Modelfile's TEMPLATE without Ollama or Go.

Covered, with Go's meaning: text and ``{{ ... }}`` actions with whitespace trimming (``{{-`` and
``-}}``); ``range $i, $_ := X`` / ``range X``; ``if`` / ``else if`` / ``else`` / ``end``; variables
declared with ``:=`` and assigned with ``=`` (an assignment changes the variable where it was
declared, as in Go); ``.Field``, ``$.Field``, ``$var``, ``.`` and ``$``; string and integer literals;
parenthesised calls of ``eq``, ``ne``, ``len``, ``slice``, ``and``, ``or``, ``not``. Anything else
raises ``ValueError``, so a template using more than this subset fails its test instead of rendering
something Go would not.
"""

from __future__ import annotations

import re
from typing import Any

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+)|(?P<op>:=|=|,|\(|\))|'
                    r"(?P<var>\$\w*(?:\.\w+)*)|(?P<field>(?:\.\w+)+|\.)|(?P<name>\w+))")
_WHITESPACE = " \t\r\n"


def render(template: str, data: dict[str, Any]) -> str:
    """``template`` executed with ``data`` as its dot (and ``$``)."""
    nodes, stop = _parse(_lex(template), 0)
    if stop is not None:
        raise ValueError(f"unexpected {{{{ {stop[1]} }}}}")
    out: list[str] = []
    _run(nodes, data, [{"$": data}], out)
    return "".join(out)


# lexing and parsing -------------------------------------------------------------------------------
def _lex(template: str) -> list[tuple[str, str]]:
    """("text", s) and ("action", source) pieces, with the trim markers applied to the text."""
    pieces: list[tuple[str, str]] = []
    position, trim_next = 0, False
    for match in _ACTION.finditer(template):
        text = template[position:match.start()]
        if trim_next:
            text = text.lstrip(_WHITESPACE)
        if match.group(1):
            text = text.rstrip(_WHITESPACE)
        pieces += [("text", text), ("action", match.group(2).strip())]
        position, trim_next = match.end(), bool(match.group(3))
    text = template[position:]
    pieces.append(("text", text.lstrip(_WHITESPACE) if trim_next else text))
    return pieces


def _parse(pieces: list[tuple[str, str]], index: int) -> tuple[list[tuple], Any]:
    """Nodes from ``pieces[index:]`` up to an unmatched ``else`` / ``end``: (nodes, (index, action))."""
    nodes: list[tuple] = []
    while index < len(pieces):
        kind, source = pieces[index]
        index += 1
        if kind == "text":
            nodes.append(("text", source))
        elif source == "end" or source.startswith("else"):
            return nodes, (index, source)
        elif source.startswith("if "):
            node, index = _parse_if(pieces, index, source[3:])
            nodes.append(node)
        elif source.startswith("range "):
            body, stop = _parse(pieces, index)
            if stop is None or stop[1] != "end":
                raise ValueError("range without end")
            names, expression, _ = _declaration(source[6:])
            nodes.append(("range", names, expression, body))
            index = stop[0]
        else:
            names, expression, operator = _declaration(source)
            if names:
                nodes.append(("set", names[0], expression, operator == ":="))
            else:
                nodes.append(("print", expression))
    return nodes, None


def _parse_if(pieces: list[tuple[str, str]], index: int, condition: str) -> tuple[tuple, int]:
    branches, otherwise = [], []
    while True:
        body, stop = _parse(pieces, index)
        if stop is None:
            raise ValueError("if without end")
        branches.append((_expression(condition), body))
        index, action = stop
        if action == "end":
            return ("if", branches, otherwise), index
        if action.startswith("else if "):
            condition = action[8:]
            continue
        if action != "else":
            raise ValueError(f"unsupported {{{{ {action} }}}}")
        otherwise, stop = _parse(pieces, index)
        if stop is None or stop[1] != "end":
            raise ValueError("else without end")
        return ("if", branches, otherwise), stop[0]


def _declaration(source: str) -> tuple[list[str], list, str]:
    """The variables a ``$a, $b := x`` / ``$a = x`` action names, its expression and its operator."""
    tokens = _tokens(source)
    for position, (kind, value) in enumerate(tokens):
        if kind == "op" and value in (":=", "="):
            names = [name for kind, name in tokens[:position] if kind == "var"]
            return names, _command(tokens[position + 1:]), value
    return [], _command(tokens), ""


def _expression(source: str) -> list:
    return _command(_tokens(source))


def _tokens(source: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(source.rstrip()):
        match = _TOKEN.match(source, position)
        if not match:
            raise ValueError(f"cannot read {source[position:]!r}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        position = match.end()
    return tokens


def _command(tokens: list[tuple[str, str]]) -> list:
    """A command: a list of operands, the first a function name when there are several."""
    operands, position = [], 0
    while position < len(tokens):
        kind, value = tokens[position]
        if value == "(":
            depth, end = 1, position + 1
            while depth:
                depth += {"(": 1, ")": -1}.get(tokens[end][1], 0) if tokens[end][0] == "op" else 0
                end += 1
            operands.append(("call", _command(tokens[position + 1:end - 1])))
            position = end
            continue
        if kind == "op":
            raise ValueError(f"unexpected {value!r}")
        operands.append((kind, value))
        position += 1
    return operands


# running ------------------------------------------------------------------------------------------
def _run(nodes: list[tuple], dot: Any, scopes: list[dict[str, Any]], out: list[str]) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "print":
            out.append(_text(_evaluate(node[1], dot, scopes)))
        elif kind == "set":
            _, name, expression, declare = node
            value = _evaluate(expression, dot, scopes)
            if declare:
                scopes[-1][name] = value
            else:
                next(scope for scope in reversed(scopes) if name in scope)[name] = value
        elif kind == "if":
            _, branches, otherwise = node
            body = next((body for condition, body in branches if _truth(_evaluate(condition, dot, scopes))), otherwise)
            _run(body, dot, scopes + [{}], out)
        elif kind == "range":
            _, names, expression, body = node
            for index, item in enumerate(_evaluate(expression, dot, scopes) or []):
                scope = dict(zip(names, (index, item))) if len(names) == 2 else dict(zip(names, (item,)))
                _run(body, item, scopes + [scope], out)


def _evaluate(command: list, dot: Any, scopes: list[dict[str, Any]]) -> Any:
    if len(command) > 1 or (command and command[0][0] == "name"):
        name, arguments = command[0][1], command[1:]
        if command[0][0] != "name" or name not in _FUNCTIONS:
            raise ValueError(f"unsupported function {name!r}")
        if name in ("and", "or"):  # Go evaluates them lazily, from the left
            value = None
            for argument in arguments:
                value = _operand(argument, dot, scopes)
                if _truth(value) == (name == "or"):
                    return value
            return value
        return _FUNCTIONS[name](*(_operand(argument, dot, scopes) for argument in arguments))
    return _operand(command[0], dot, scopes)


def _operand(operand: tuple, dot: Any, scopes: list[dict[str, Any]]) -> Any:
    kind, value = operand
    if kind == "call":
        return _evaluate(value, dot, scopes)
    if kind == "str":
        return value[1:-1].encode().decode("unicode_escape")
    if kind == "num":
        return int(value)
    if kind == "field":
        return _fields(dot, value)
    if kind == "var":
        name, _, path = value.partition(".")
        found = next((scope[name] for scope in reversed(scopes) if name in scope), KeyError)
        if found is KeyError:
            raise ValueError(f"undefined variable {name}")
        return _fields(found, "." + path) if path else found
    raise ValueError(f"unsupported operand {value!r}")


def _fields(value: Any, path: str) -> Any:
    for name in filter(None, path.split(".")):
        value = value[name]
    return value


def _truth(value: Any) -> bool:
    return bool(value)  # Go's: false, 0, nil and empty strings, slices and maps are false


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_FUNCTIONS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "len": len,
    "slice": lambda items, start, end=None: items[start:end],
    "not": lambda a: not _truth(a),
    "and": None,  # evaluated lazily in _evaluate
    "or": None,
}
