"""Parsing server-side endpoints, model maps and access keys."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from azproxy.errors import ConfigError
from azproxy.settings.server_side import (
    RouteConfig,
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)

ENV = {"SWEDEN_KEY": "sweden-secret-key", "TEAM_KEY": "team-key-0123456789"}


def test_endpoint_forms() -> None:
    parsed = parse_endpoints(
        {
            "sweden": {
                "resource": "my-sweden",
                "api_key": "env:SWEDEN_KEY",
                "deployments": ["gpt-4o"],
            },
            "gw": {
                "url": "https://gw.example.com/openai-gw/",
                "entra": True,
                "api_version": "2025-04-01-preview",
            },
            "static": {"resource": "r", "ad_token": "eyJ0"},
        },
        ENV,
    )
    sweden, gw, static = parsed
    assert sweden.base_url("https://{resource}.openai.azure.com") == (
        "https://my-sweden.openai.azure.com"
    )
    assert sweden.api_key is not None and sweden.api_key.reveal() == "sweden-secret-key"
    assert "sweden-secret-key" not in repr(sweden)
    assert sweden.deployments == frozenset({"gpt-4o"})
    assert gw.base_url("ignored") == "https://gw.example.com/openai-gw"
    assert gw.entra and gw.api_version == "2025-04-01-preview"
    assert static.ad_token is not None


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"api_key": "k"}, "set exactly one of resource"),
        ({"resource": "a", "url": "https://x", "api_key": "k"}, "set exactly one of"),
        ({"resource": "evil.com", "api_key": "k"}, "is not a resource name"),
        ({"url": "ftp://x", "api_key": "k"}, "must be an http(s) URL"),
        ({"resource": "r"}, "set exactly one of api_key, ad_token or entra"),
        ({"resource": "r", "api_key": "k", "entra": True}, "found api_key, entra"),
        ({"resource": "r", "api_key": "env:MISSING"}, "MISSING is not set"),
        ({"resource": "r", "api_key": "k", "apikey": "x"}, "did you mean 'api_key'"),
        ({"resource": "r", "api_key": "k", "api_version": 2024}, "as a number"),
        (
            {
                "resource": "r",
                "api_key": "k",
                "api_version": datetime.date(2024, 10, 21),
            },
            'quote it: api_version = "2024-10-21"',
        ),
        ({"resource": "r", "api_key": "k", "api_version": "latest"}, "not an Azure"),
        ({"resource": "r", "api_key": "k", "deployments": ["../x"]}, "deployments"),
    ],
)
def test_endpoint_problems(table: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_endpoints({"e": table}, ENV)
    assert any(problem in p for p in caught.value.problems), caught.value.problems
    assert all(p.startswith("endpoints.e") for p in caught.value.problems)


def test_all_endpoint_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_endpoints({"a": {"resource": "x.y"}, "b": {"url": "nope"}}, ENV)
    assert len(caught.value.problems) >= 3


def test_model_map_env_form() -> None:
    routes = parse_model_map("gpt-4o=dep1, gpt-4o-mini=sweden/dep2,gpt-4o=east/dep3")
    assert routes == {
        "gpt-4o": (RouteConfig("", "dep1"), RouteConfig("east", "dep3")),
        "gpt-4o-mini": (RouteConfig("sweden", "dep2"),),
    }


def test_model_map_table_form() -> None:
    routes = parse_model_map(
        {
            "gpt-4o": [
                {"endpoint": "a", "deployment": "x", "priority": 1, "weight": 3},
                "b/y",
            ],
            "gpt-3.5-turbo": "a/gpt-35-turbo",
        }
    )
    assert routes["gpt-4o"] == (RouteConfig("a", "x", 1, 3), RouteConfig("b", "y"))
    assert routes["gpt-3.5-turbo"] == (RouteConfig("a", "gpt-35-turbo"),)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("gpt-4o", "is not model=deployment"),
        ({"m": "a/.."}, "deployment '..' is invalid"),
        ({"m": {"deployment": "x", "priority": -1}}, "priority must be"),
        ({"m": {"deployment": "x", "weight": 0}}, "weight must be"),
        ({"m": {"deployment": "x", "endpiont": "a"}}, "did you mean 'endpoint'"),
        ({"m": 3}, "expected"),
        ({"m": []}, "needs at least one deployment"),
    ],
)
def test_model_map_problems(raw: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_model_map(raw)
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_access_keys_forms() -> None:
    keys = parse_access_keys(
        ["env:TEAM_KEY", {"key": "other-key-0123456789", "name": "b", "models": ["m"]}],
        ENV,
    )
    assert keys[0].key.matches("team-key-0123456789")
    assert keys[0].name == "key-1" and keys[0].models is None
    assert keys[1].name == "b" and keys[1].models == frozenset({"m"})
    assert "team-key" not in repr(keys)
    from_env = parse_access_keys("aaaaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbbbb", ENV)
    assert [k.name for k in from_env] == ["key-1", "key-2"]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("short", "shorter than 16 characters"),
        (["env:NOPE"], "NOPE is not set"),
        ([{"key": "k" * 20, "models": "gpt-4o"}], "expected a list of model names"),
        ([{"key": "k" * 20, "modles": []}], "did you mean 'models'"),
        ({"a": 1}, "expected a list of keys"),
    ],
)
def test_access_key_problems(raw: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_access_keys(raw, ENV)
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_an_empty_models_list_is_refused_not_read_as_every_model() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_access_keys([{"key": "k" * 20, "models": []}], ENV)
    assert "an empty list would allow no model" in str(caught.value)
