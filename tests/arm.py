"""Evaluate the ARM template expressions that decide what azproxy is given.

No Azure and no bicep CLI here, so tests/deploy runs the expressions of
deploy/azure/*.json with this small evaluator: parameters bound and checked
against their constraints as Resource Manager checks them, then the values
built from them (app settings, secrets). Only the functions those templates
use are known; any other raises, so a template change that needs more fails
loudly instead of being half-checked. `if` evaluates only the branch taken,
as ARM's does, so `fail()` in the other branch is harmless.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DeploymentFailed", "Template"]

TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|(-?\d+)|([A-Za-z_]\w*)|(.))")


class DeploymentFailed(Exception):
    """What Resource Manager would answer instead of deploying."""


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Member:
    target: Node
    key: Node


Node = Call | Member | str | int


class Parser:
    """Recursive descent over one expression (without its outer brackets)."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        for string, number, name, other in TOKEN.findall(text):
            if string:
                self.tokens.append(("str", string[1:-1].replace("''", "'")))
            elif number:
                self.tokens.append(("int", number))
            elif name:
                self.tokens.append(("name", name))
            elif other.strip():
                self.tokens.append(("op", other))
        self.at = 0

    def parse(self) -> Node:
        node = self.expression()
        if self.at != len(self.tokens):
            raise SyntaxError(f"unexpected {self.tokens[self.at]}")
        return node

    def take(self, kind: str, value: str | None = None) -> str:
        if self.at >= len(self.tokens):
            raise SyntaxError(f"expected {value or kind}, found the end")
        found_kind, found = self.tokens[self.at]
        if found_kind != kind or (value is not None and found != value):
            raise SyntaxError(f"expected {value or kind}, found {found!r}")
        self.at += 1
        return found

    def peek(self, value: str) -> bool:
        return self.at < len(self.tokens) and self.tokens[self.at] == ("op", value)

    def expression(self) -> Node:
        node = self.primary()
        while self.peek(".") or self.peek("["):
            if self.take("op") == ".":
                node = Member(node, self.take("name"))
            else:
                node = Member(node, self.expression())
                self.take("op", "]")
        return node

    def primary(self) -> Node:
        kind, value = self.tokens[self.at]
        if kind == "str":
            self.at += 1
            return value
        if kind == "int":
            self.at += 1
            return int(value)
        name = self.take("name")
        self.take("op", "(")
        args: list[Node] = []
        while not self.peek(")"):
            args.append(self.expression())
            if not self.peek(")"):
                self.take("op", ",")
        self.take("op", ")")
        return Call(name, tuple(args))


def parse(expression: str) -> Node:
    return Parser(expression).parse()


Scope = Mapping[str, Any]
Function = Callable[..., Any]

# Functions whose arguments are all evaluated first.
STRICT: dict[str, Function] = {
    "add": lambda a, b: a + b,
    "and": lambda *args: all(args),
    "concat": lambda *args: (
        "".join(args) if isinstance(args[0], str) else [x for a in args for x in a]
    ),
    "createArray": lambda *args: list(args),
    "createObject": lambda *args: dict(zip(args[::2], args[1::2], strict=True)),
    "empty": lambda value: not value,
    "equals": lambda a, b: a == b,
    "greater": lambda a, b: a > b,
    "length": len,
    "less": lambda a, b: a < b,
    "not": lambda value: not value,
    "or": lambda *args: any(args),
    "split": lambda text, separator: text.split(separator),
    "string": str,
    # ARM's trim() removes leading and trailing white space, as str.strip().
    "trim": str.strip,
}


class Template:
    """One ARM template with its parameters bound (defaults applied, checked)."""

    def __init__(self, document: Mapping[str, Any], given: Mapping[str, Any]) -> None:
        self.document = document
        self.given = dict(given)
        declared = document["parameters"]
        unknown = set(given) - set(declared)
        if unknown:
            raise DeploymentFailed(f"unknown parameters {sorted(unknown)}")
        for name, spec in declared.items():
            if name in given:
                check_parameter(name, spec, given[name])
            elif "defaultValue" not in spec:
                raise DeploymentFailed(f"parameter {name} needs a value")

    def evaluate(self, value: Any) -> Any:
        """A template value: nested expressions ('[...]' strings) evaluated."""
        if (
            isinstance(value, str)
            and value.startswith("[")
            and not value.startswith("[[")
        ):
            return self.run(parse(value[1:-1]), {})
        if isinstance(value, str) and value.startswith("[["):
            return value[1:]
        if isinstance(value, list):
            return [self.evaluate(item) for item in value]
        if isinstance(value, dict):
            return {key: self.evaluate(item) for key, item in value.items()}
        return value

    def parameter(self, name: str) -> Any:
        if name in self.given:
            return self.given[name]
        return self.evaluate(self.document["parameters"][name]["defaultValue"])

    def run(self, node: Node, scope: Scope) -> Any:
        if isinstance(node, str | int):
            return node
        if isinstance(node, Member):
            target = self.run(node.target, scope)
            return target[self.run(node.key, scope)]
        special = self.special(node, scope)
        if special is not None:
            return special[0]
        if node.name not in STRICT:
            raise NotImplementedError(f"ARM function {node.name}() is unknown here")
        return STRICT[node.name](*(self.run(arg, scope) for arg in node.args))

    def special(self, node: Call, scope: Scope) -> tuple[Any] | None:
        """Functions that need the template, a scope or lazy arguments."""
        args = node.args
        if node.name == "parameters":
            return (self.parameter(self.run(args[0], scope)),)
        if node.name == "variables":
            return (
                self.evaluate(self.document["variables"][self.run(args[0], scope)]),
            )
        if node.name == "if":
            branch = args[1] if self.run(args[0], scope) else args[2]
            return (self.run(branch, scope),)
        if node.name == "fail":
            raise DeploymentFailed(self.run(args[0], scope))
        if node.name == "lambdaVariables":
            return (scope[self.run(args[0], scope)],)
        if node.name == "filter":
            items = self.run(args[0], scope)
            return ([item for item in items if self.call_lambda(args[1], scope, item)],)
        return None

    def call_lambda(self, node: Node, scope: Scope, item: Any) -> Any:
        if not (
            isinstance(node, Call) and node.name == "lambda" and len(node.args) == 2
        ):
            raise SyntaxError("filter() takes lambda('name', body)")
        name = self.run(node.args[0], scope)
        return self.run(node.args[1], {**scope, name: item})


def check_parameter(name: str, spec: Mapping[str, Any], value: Any) -> None:
    """Resource Manager's own checks of a parameter value, before any expression."""
    kind = spec["type"].lower()
    expected = {"string": str, "securestring": str, "int": int, "bool": bool}[kind]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise DeploymentFailed(f"parameter {name}: expected {kind}")
    if "allowedValues" in spec and value not in spec["allowedValues"]:
        raise DeploymentFailed(f"parameter {name}: not an allowed value")
    if isinstance(value, str) and not (
        spec.get("minLength", 0) <= len(value) <= spec.get("maxLength", len(value))
    ):
        raise DeploymentFailed(f"parameter {name}: length out of range")
    if isinstance(value, int) and not (
        spec.get("minValue", value) <= value <= spec.get("maxValue", value)
    ):
        raise DeploymentFailed(f"parameter {name}: value out of range")
