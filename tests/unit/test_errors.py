"""One exception tree: every exception azproxy defines hangs under
AzproxyError, the module docstring draws all of them, and an error is
built whole (its status, type and code fixed at creation)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import azproxy.errors as errors
from azproxy.errors import AzproxyError, Internal, ProxyError

PACKAGE = Path(errors.__file__).parent


def defined_exceptions() -> list[tuple[str, str, list[str]]]:
    """(module, class, base names) of every class azproxy defines whose bases
    include an exception-ish name (the simulator is a separate program)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "simulator" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases]
                if any(b.endswith(("Exception", "Error")) for b in bases):
                    found.append((str(path.relative_to(PACKAGE)), node.name, bases))
    return found


def test_every_exception_lives_in_errors_py() -> None:
    elsewhere = [(m, c) for m, c, _ in defined_exceptions() if m != "errors.py"]
    assert elsewhere == []


def test_every_exception_hangs_under_the_root() -> None:
    classes = [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    ]
    assert len(classes) >= 20
    for cls in classes:
        assert issubclass(cls, AzproxyError), cls


def test_the_docstring_draws_every_class() -> None:
    drawn = errors.__doc__ or ""
    for _, obj in inspect.getmembers(errors, inspect.isclass):
        if issubclass(obj, BaseException) and obj.__module__ == errors.__name__:
            assert f"+ {obj.__name__} " in drawn or f"* {obj.__name__} " in drawn, obj


def test_internal_exceptions_are_never_http_errors() -> None:
    for cls in (errors.Failure, errors.AllCoolingDown, errors.ShuttingDown):
        assert issubclass(cls, Internal)
        assert not issubclass(cls, ProxyError)


def test_an_error_is_built_with_its_status_and_reworded_into_a_new_one() -> None:
    error = ProxyError("Teapot.", status=418, type="odd", code="teapot")
    assert (error.status, error.type, error.code) == (418, "odd", "teapot")
    assert ProxyError.status == 500 and ProxyError.type == "api_error"
    again = error.reworded("Teapot, twice.")
    assert again is not error and error.message == "Teapot."
    assert (again.message, again.status, again.type, again.code) == (
        "Teapot, twice.",
        418,
        "odd",
        "teapot",
    )
    limited = errors.RateLimited("Slow down.", headers={"Retry-After": "1"})
    reworded = limited.reworded("Slower.")
    assert type(reworded) is errors.RateLimited
    assert reworded.headers == {"Retry-After": "1"} and reworded.status == 429


@pytest.mark.parametrize("status", [400, 502])
def test_an_error_response_has_the_status_it_was_built_with(status: int) -> None:
    response = ProxyError("x", status=status).response()
    assert response.status == status
