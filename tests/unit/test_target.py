"""What a Target shows of itself: it is handed to the retry log."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from azproxy.auth.azure_auth import ApiKeyAuth
from azproxy.relay.backends import Backend, Endpoint
from azproxy.relay.target import Outgoing, build_target
from azproxy.settings.secrets import Secret

KEY = "0123456789abcdef0123456789abcdef"
PROMPT = b'{"model": "gpt-4o", "messages": [{"content": "secret plan"}]}'


def test_a_target_names_its_host_and_never_its_key_or_body() -> None:
    endpoint = Endpoint(
        "res", "https://res.openai.azure.com", "2024-10-21", ApiKeyAuth(Secret(KEY))
    )
    client = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))
    outgoing = Outgoing("POST", "chat/completions", client, None, PROMPT, None)
    target = build_target(Backend(endpoint, "dep"), outgoing)
    assert target.headers["api-key"] == KEY  # it is there, to be sent
    assert str(target) == "upstream res.openai.azure.com"
    shown = repr(target)
    assert "res.openai.azure.com" in shown
    assert KEY not in shown
    assert "secret plan" not in shown
