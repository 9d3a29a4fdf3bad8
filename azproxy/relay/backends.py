"""Where a request can go: an Azure endpoint (its URL, API version and how
azproxy authenticates to it) and a deployment on it (a Backend).

Callers (auth/callers.py) hand out Backends; the attempts, the health board
and the target use them. Kept apart from the callers so that the relay
needs no caller to name where it sends.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azproxy.auth.azure_auth import UpstreamAuth

__all__ = ["Backend", "Endpoint"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    base_url: str
    api_version: str
    auth: UpstreamAuth
    # Per-family api-versions (family_api_versions): see families.route.
    # One table per process, so it takes no part in equality or hashing.
    family_versions: Mapping[str, str] = field(
        default_factory=dict, compare=False, hash=False
    )
    # Configured by the operator (not a client's pass-through token): Azure
    # refusing its credentials is azproxy's problem, not the client's.
    server_side: bool = False

    def authorize(self, headers: MutableMapping[str, str]) -> None:
        """Add the header that lets azproxy in (api-key, or Authorization:
        Bearer): every request and handshake to Azure, and the doctor's
        probe, go through here. Raises ServiceUnavailable when an Entra ID
        token is not at hand."""
        name, value = self.auth.header()
        headers[name] = value


@dataclass(frozen=True, slots=True)
class Backend:
    """One deployment on one endpoint: what a request is finally sent to."""

    endpoint: Endpoint
    deployment: str
    priority: int = 1
    weight: float = 1.0
    # A name guessed from the model (model_fallback): when Azure says it does
    # not exist, the next guess is tried.
    guess: bool = False

    @property
    def name(self) -> str:
        return f"{self.endpoint.name}/{self.deployment}"
