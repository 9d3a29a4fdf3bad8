from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from azproxy.auth.credentials import parse_passthrough, presented_token
from azproxy.errors import InvalidCredentials

KEY = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Authorization": "Bearer abc"}, "abc"),
        ({"Authorization": "bearer   abc "}, "abc"),
        ({"Authorization": "res:dep:key"}, "res:dep:key"),  # the original's form
        ({"api-key": "res:dep:key"}, "res:dep:key"),
        ({"Authorization": "Bearer a", "api-key": "b"}, "a"),
        ({"Authorization": "Bearer ", "api-key": "b"}, "b"),
        ({"Authorization": ""}, None),
        ({}, None),
    ],
)
def test_presented_token(headers: dict[str, str], expected: str | None) -> None:
    assert presented_token(CIMultiDictProxy(CIMultiDict(headers))) == expected


@pytest.mark.parametrize(
    ("token", "resource", "model_map", "default", "version"),
    [
        (f"res:dep:{KEY}", "res", {}, "dep", None),
        (
            f"my-res-01:gpt-35.turbo_x:{KEY}:2024-02-01",
            "my-res-01",
            {},
            "gpt-35.turbo_x",
            "2024-02-01",
        ),
        (f"R:d:{KEY}:2024-12-01-preview", "R", {}, "d", "2024-12-01-preview"),
        (f"r:d:{KEY}:v1", "r", {}, "d", "v1"),
        (
            f"r:gpt-4o|a,gpt-4o-mini|b:{KEY}",
            "r",
            {"gpt-4o": "a", "gpt-4o-mini": "b"},
            "a",
            None,
        ),
        (f"r:gpt-3.5-turbo|x:{KEY}", "r", {"gpt-3.5-turbo": "x"}, "x", None),
        ("a" * 64 + f":d:{KEY}", "a" * 64, {}, "d", None),
    ],
)
def test_valid_tokens(
    token: str,
    resource: str,
    model_map: dict[str, str],
    default: str,
    version: str | None,
) -> None:
    parsed = parse_passthrough(token)
    assert parsed.resource == resource
    assert dict(parsed.model_map) == model_map
    assert parsed.default_deployment == default
    assert parsed.api_version == version
    assert parsed.key == KEY
    assert KEY not in repr(parsed)


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("r:d", "2 ':'-separated parts"),
        (f"r:d:{KEY}:v:x", "5 ':'-separated parts"),
        (f"r.x:d:{KEY}", "resource name (part 1)"),
        (f"-r:d:{KEY}", "resource name (part 1)"),
        (f":d:{KEY}", "resource name (part 1)"),
        ("r:d:", "Azure key (part 3) is empty"),
        (f"r::{KEY}", "deployment (part 2)"),
        (f"r:_d:{KEY}", "deployment (part 2)"),
        (f"r:d d:{KEY}", "deployment (part 2)"),
        (f"r:a|:{KEY}", "model map (part 2)"),
        (f"r:|a:{KEY}", "model map (part 2)"),
        (f"r:a|b,,c|d:{KEY}", "model map (part 2)"),
        (f"r:d:{KEY}:2024-1-1", "API version (part 4)"),
        (f"r:d:{KEY}:2024-10-21-beta", "API version (part 4)"),
        # The endpoint's URL pasted as the resource.
        (f"https://myres.openai.azure.com:dep:{KEY}", "use the resource name, not"),
        (f"HTTP://myres.openai.azure.com/:dep:{KEY}", "use the resource name, not"),
    ],
)
def test_invalid_tokens_say_what_is_wrong_without_echoing(token: str, why: str) -> None:
    with pytest.raises(InvalidCredentials) as caught:
        parse_passthrough(token)
    assert why in caught.value.message
    assert KEY not in caught.value.message


def test_deployment_for() -> None:
    single = parse_passthrough(f"r:only:{KEY}")
    assert not single.needs_model
    assert single.deployment_for("anything") == "only"
    assert single.deployment_for(None) == "only"
    mapped = parse_passthrough(f"r:m1|d1,m2|d2:{KEY}")
    assert mapped.needs_model
    assert mapped.deployment_for("m2") == "d2"
    assert mapped.deployment_for("other") == "d1"
    assert mapped.model_names() == ["m1", "m2"]
