"""Credentials a client presents, parsed without any I/O.

A pass-through token (the original Azure OpenAI Proxy's format) carries
everything needed to reach Azure: `RESOURCE:DEPLOYMENT_SPEC:AZURE_KEY[:API_VERSION]`.
It comes in `Authorization: Bearer <token>` (or without `Bearer `, as the
original accepted) or in an `api-key` header. A browser, which cannot set
headers on a WebSocket, offers it as the `openai-insecure-api-key.<token>`
subprotocol instead (accepted on the realtime route only).

Validation is strict because the resource name becomes part of the upstream
host: only letters, digits and inner hyphens, so no host, port, path, `@`,
`.` or `%` can reach the URL. Error messages never echo any part of the token:
a misordered token could put the Azure key where the resource name belongs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from multidict import CIMultiDictProxy

from azproxy.errors import BadRequest, InvalidCredentials
from azproxy.settings.patterns import (
    API_VERSION_RE,
    DEPLOYMENT_RE,
    MODEL_RE,
    RESOURCE_RE,
)

__all__ = [
    "BAD_CREDENTIAL_PROTOCOL",
    "BAD_SUBPROTOCOL",
    "KEY_PROTOCOL",
    "PassthroughToken",
    "offered_protocols",
    "parse_passthrough",
    "presented_token",
    "protocol_token",
]

TOKEN_FORMAT = "RESOURCE:DEPLOYMENT:AZURE_KEY[:API_VERSION]"
# The subprotocol OpenAI's browser clients carry their key in.
KEY_PROTOCOL = "openai-insecure-api-key."
# RFC 6455 §4.1: each subprotocol is an RFC 7230 §3.2.6 token (tchar+).
SUBPROTOCOL_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A percent-decoded credential becomes a header value (Azure's api-key) or is
# compared with keys: visible ASCII only, so no CR, LF or NUL can reach a header.
DECODED_TOKEN_RE = re.compile(r"[\x21-\x7e]+")
BAD_SUBPROTOCOL = (
    "Sec-WebSocket-Protocol offers a subprotocol that is not a token (RFC 6455 "
    "§4.1: letters, digits and !#$%&'*+-.^_`|~). Percent-encode the credentials "
    f"in {KEY_PROTOCOL}<credentials> (encodeURIComponent)."
)
BAD_CREDENTIAL_PROTOCOL = (
    f"The credentials in the {KEY_PROTOCOL}<credentials> subprotocol decode to "
    "characters no credential has (control characters, spaces or non-ASCII)."
)


@dataclass(frozen=True, slots=True)
class PassthroughToken:
    resource: str
    # Model name -> deployment; empty when one deployment serves every model.
    model_map: Mapping[str, str]
    # The deployment for models the map does not name (the map's first entry).
    default_deployment: str
    key: str = field(repr=False)
    api_version: str | None

    def deployment_for(self, model: str | None) -> str:
        if model is None:
            return self.default_deployment
        return self.model_map.get(model, self.default_deployment)

    @property
    def needs_model(self) -> bool:
        """Whether the deployment depends on the request's `model`."""
        return len(self.model_map) > 1

    def model_names(self) -> list[str]:
        return list(self.model_map) or [self.default_deployment]


def presented_token(headers: CIMultiDictProxy[str]) -> str | None:
    """The credential string a client sent, or None when it sent none."""
    auth = headers.get("Authorization")
    if auth:
        scheme, _, rest = auth.partition(" ")
        token = rest.strip() if scheme.lower() == "bearer" else auth.strip()
        if token:
            return token
    key = headers.get("api-key")
    return key.strip() if key and key.strip() else None


def offered_protocols(headers: CIMultiDictProxy[str]) -> list[str]:
    """The WebSocket subprotocols a client offers, in its order (RFC 6455 §4.1).

    Raises BadRequest (never echoing the value) for one that is not a token:
    some go to Azure and one comes back to the client, where aiohttp would
    refuse or forward a header that no WebSocket client can send.
    """
    offered = [
        name.strip()
        for value in headers.getall("Sec-WebSocket-Protocol", ())
        for name in value.split(",")
        if name.strip()
    ]
    if not all(SUBPROTOCOL_RE.fullmatch(name) for name in offered):
        raise BadRequest(BAD_SUBPROTOCOL, code="invalid_subprotocol")
    return offered


def protocol_token(headers: CIMultiDictProxy[str]) -> str | None:
    """The credential a browser offers as `openai-insecure-api-key.<token>`.

    The token is percent-decoded: a subprotocol must be an HTTP token
    (RFC 6455 §4.1), so browsers refuse the `:` and `,` of a pass-through
    token; `encodeURIComponent(token)` makes it acceptable.
    """
    for name in offered_protocols(headers):
        if name.startswith(KEY_PROTOCOL):
            token = unquote(name[len(KEY_PROTOCOL) :]).strip()
            if not token:
                return None
            if not DECODED_TOKEN_RE.fullmatch(token):
                raise BadRequest(BAD_CREDENTIAL_PROTOCOL, code="invalid_subprotocol")
            return token
    return None


def _bad(why: str) -> InvalidCredentials:
    return InvalidCredentials(
        f"Invalid azproxy credentials: {why}. Expected {TOKEN_FORMAT} "
        "(or RESOURCE:model|deployment,model|deployment:AZURE_KEY[:API_VERSION]) "
        "in 'Authorization: Bearer ...' or an 'api-key' header."
    )


def parse_passthrough(token: str) -> PassthroughToken:
    """Parse a pass-through token; raise InvalidCredentials saying what is wrong."""
    if token[:8].lower().startswith(("https://", "http://")):
        # The endpoint URL pasted where the resource name goes: its "://"
        # would otherwise make it a token with a strange API version.
        raise _bad(
            "part 1 is a URL: use the resource name, not the URL (the NAME of "
            "https://NAME.openai.azure.com)"
        )
    parts = token.split(":")
    if len(parts) not in (3, 4):
        raise _bad(f"the token has {len(parts)} ':'-separated parts, not 3 or 4")
    resource, spec, key = parts[0], parts[1], parts[2]
    version = parts[3] if len(parts) == 4 else None
    if not RESOURCE_RE.fullmatch(resource):
        raise _bad(
            "the resource name (part 1) must be 1-64 letters, digits or inner hyphens"
        )
    if not key:
        raise _bad("the Azure key (part 3) is empty")
    if version is not None and not API_VERSION_RE.fullmatch(version):
        raise _bad(
            "the API version (part 4) must look like 2024-10-21, "
            "2024-12-01-preview or v1"
        )
    model_map, default = _parse_deployment_spec(spec)
    return PassthroughToken(resource, model_map, default, key, version)


def _parse_deployment_spec(spec: str) -> tuple[dict[str, str], str]:
    deployment_rule = (
        "deployment names are 1-64 letters, digits, '-', '_' or '.', "
        "starting with a letter or digit"
    )
    if "|" not in spec:
        if not DEPLOYMENT_RE.fullmatch(spec):
            raise _bad(f"the deployment (part 2) is invalid: {deployment_rule}")
        return {}, spec
    model_map: dict[str, str] = {}
    for pair in spec.split(","):
        model, sep, deployment = pair.partition("|")
        if not sep or not MODEL_RE.fullmatch(model):
            raise _bad("the model map (part 2) must be model|deployment,...")
        if not DEPLOYMENT_RE.fullmatch(deployment):
            raise _bad(f"the model map (part 2) is invalid: {deployment_rule}")
        model_map.setdefault(model, deployment)
    return model_map, next(iter(model_map.values()))
