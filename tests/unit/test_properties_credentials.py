"""Properties of pass-through token parsing, for any string a client can send.

The token format is the documented one (README, DESIGN.md §2):
RESOURCE:DEPLOYMENT_SPEC:AZURE_KEY[:API_VERSION], the spec a deployment or
model|deployment,model|deployment. The valid names below are written from
that documentation, not from azproxy's own patterns.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from azproxy.auth.credentials import (
    KEY_PROTOCOL,
    parse_passthrough,
    presented_token,
    protocol_token,
)
from azproxy.errors import InvalidCredentials

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
PATH_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")  # nothing to encode, no '/'

# Resource names: 1-64 letters, digits or inner hyphens.
resources = st.builds(
    lambda first, middle, last: first + middle + last,
    st.sampled_from(ALNUM),
    st.text(ALNUM + "-", max_size=62),
    st.sampled_from(ALNUM),
) | st.sampled_from(ALNUM)
# Deployment names: 1-64 letters, digits, '-', '_' or '.', starting alnum.
deployments = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(ALNUM),
    st.text(ALNUM + "-_.", max_size=63),
)
# Model names as clients send them: anything but whitespace and | , :
models = st.text(
    st.characters(codec="utf-8", exclude_characters=" \t\r\n\f\v|,:"),
    min_size=1,
    max_size=40,
).filter(lambda m: not any(c.isspace() for c in m))
api_versions = (
    st.none()
    | st.sampled_from(["v1"])
    | st.builds(
        lambda y, m, d, preview: f"{y:04d}-{m:02d}-{d:02d}{preview}",
        st.integers(0, 9999),
        st.integers(0, 99),
        st.integers(0, 99),
        st.sampled_from(["", "-preview"]),
    )
)
# An Azure key: any non-empty text without ':' (azproxy passes it on as is).
keys = st.text(st.characters(codec="utf-8"), min_size=1).filter(lambda k: ":" not in k)
# The keys a header can carry: visible ASCII (real ones are 32 hex digits).
header_keys = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"),
    min_size=1,
)
# Hostile strings: the token's own separators, lookalikes and URL syntax.
hostile = st.text(
    # \u0663 and \uff11: an Arabic-Indic three and a fullwidth one
    st.sampled_from(
        list(":|,.-_/@%?#\\ \t\r\n\x00\u00e9\u0663\uff11") + list(ALNUM[:6])
    ),
    max_size=60,
) | st.text(max_size=60)


def token_of(resource: str, spec: str, key: str, version: str | None) -> str:
    return ":".join([resource, spec, key] + ([version] if version else []))


near_valid = st.builds(
    token_of,
    hostile | resources,
    hostile
    | deployments
    | st.lists(st.tuples(models, deployments)).map(
        lambda pairs: ",".join(f"{m}|{d}" for m, d in pairs)
    ),
    hostile | keys,
    hostile | api_versions,
)


@given(hostile | near_valid)
def test_any_string_is_refused_or_gives_names_safe_in_a_url(token: str) -> None:
    try:
        parsed = parse_passthrough(token)
    except InvalidCredentials:
        return
    # The resource becomes a host label, each deployment a path segment.
    assert HOST_LABEL.fullmatch(parsed.resource)
    for deployment in {parsed.deployment_for(None), *parsed.model_map.values()}:
        assert PATH_SEGMENT.fullmatch(deployment) and deployment.strip(".")


@given(
    resource=hostile | resources,
    spec=hostile | deployments,
    version=st.none() | hostile | api_versions,
    key=keys,
    other_key=keys,
)
def test_a_refusal_says_nothing_about_the_key(
    resource: str, spec: str, version: str | None, key: str, other_key: str
) -> None:
    """The message is the same whatever the key is; so it cannot hold it."""
    messages = []
    for k in (key, other_key):
        try:
            parse_passthrough(token_of(resource, spec, k, version))
        except InvalidCredentials as error:
            messages.append(str(error))
    if messages:
        assert messages == [messages[0]] * 2
        if len(key) >= 8:
            assert key not in messages[0]


@given(st.text(min_size=12).filter(lambda t: ":" not in t))
def test_a_refusal_never_echoes_a_part_of_the_token(secret: str) -> None:
    # A misordered token can put the key anywhere: every place is tried.
    for token in (
        f"{secret}:dep:key",
        f"res:{secret}:key",
        f"res:dep|{secret}:key",
        f"res:dep:key:{secret}",
        f"{secret}",
        f"res:dep:{secret}:2024-10-21:x",
    ):
        try:
            parse_passthrough(token)
        except InvalidCredentials as error:
            assert secret not in str(error)


@given(
    resource=resources,
    pairs=st.lists(
        st.tuples(models, deployments), max_size=5, unique_by=lambda p: p[0]
    ),
    single=deployments,
    key=keys,
    version=api_versions,
)
def test_a_valid_token_round_trips(
    resource: str,
    pairs: list[tuple[str, str]],
    single: str,
    key: str,
    version: str | None,
) -> None:
    spec = ",".join(f"{m}|{d}" for m, d in pairs) if pairs else single
    token = parse_passthrough(token_of(resource, spec, key, version))
    assert (token.resource, token.key, token.api_version) == (resource, key, version)
    if not pairs:
        assert token.deployment_for(None) == single
        assert token.deployment_for("any-model") == single
        return
    for model, deployment in pairs:
        assert token.deployment_for(model) == deployment
    assert token.deployment_for(None) == pairs[0][1]  # the first is the default
    assert sorted(token.model_names()) == sorted(m for m, _ in pairs)


@given(resource=resources, spec=deployments, key=header_keys, version=api_versions)
def test_the_token_is_found_where_clients_put_it(
    resource: str, spec: str, key: str, version: str | None
) -> None:
    text = token_of(resource, spec, key, version)
    for name, value in (
        ("Authorization", f"Bearer {text}"),
        ("Authorization", f"bearer  {text} "),
        ("api-key", text),
        ("Sec-WebSocket-Protocol", f"realtime, {KEY_PROTOCOL}{quote(text, safe='')}"),
    ):
        headers = CIMultiDictProxy(CIMultiDict({name: value}))
        found = (
            protocol_token(headers) if "Protocol" in name else presented_token(headers)
        )
        assert found == text
        assert parse_passthrough(found).key == key
