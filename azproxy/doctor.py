"""`azproxy check-config`: say what the settings mean, and with --probe ask
Redis (redis_url) and each mapped deployment whether it answers, explaining
the likely cause when it does not. The most common failure across Azure proxies is a 404
DeploymentNotFound from a wrong name; this finds it before a user does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from azproxy import fleet
from azproxy.app import create_app
from azproxy.auth.gate import GATE
from azproxy.keys import SESSION, UpstreamSession
from azproxy.relay.families import route_for
from azproxy.relay.mapping import upstream_url

if TYPE_CHECKING:
    from azproxy.relay.backends import Backend
    from azproxy.settings.config import Config

__all__ = ["ProbeResults", "describe", "explain", "probe"]

PROBE_BODY = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}


def describe(config: Config, heading: str = "config OK") -> str:
    """What the settings amount to: one line ("config OK" unless a probe is
    still to say whether the deployments answer), then the limits of each
    key that has some."""
    endpoints = ", ".join(e.name for e in config.endpoints) or "none"
    mode = "on" if config.passthrough_allowed else "off"
    line = (
        f"{heading}: endpoints: {endpoints}; models: {len(config.model_map)}; "
        f"access keys: {len(config.access_keys)}; pass-through tokens: {mode}"
    )
    if config.redis_url is not None:
        line += f"; {fleet.describe(config)}"
    lines = [line]
    # Entries sharing a name share one set of counters: shown once.
    limited = {k.name: k.limits for k in config.access_keys if k.limits is not None}
    if limited:
        where = (
            "counted in each process; --workers: each"
            if config.redis_url is None
            else "shared by every process through Redis"
        )
        lines.append(f"limits per key ({where}):")
        lines += [f"  {name}: {limits.describe()}" for name, limits in limited.items()]
    return "\n".join(lines)


@dataclass
class ProbeResults:
    ok: bool = True
    lines: list[str] = field(default_factory=list)
    probed: int = 0
    failed: int = 0
    redis_failed: bool = False

    def verdict(self) -> str:
        """The last line: whether the config works, deployments included."""
        if self.redis_failed:
            deployments = (
                f" and {self.failed} of {self.probed} deployment(s) do not answer"
                if self.failed
                else ""
            )
            return (
                f"config FAILED the probe: Redis does not answer{deployments} "
                "(FAIL above)"
            )
        if not self.probed:
            return "config OK: nothing to probe"
        if self.ok:
            return f"config OK: {self.probed} deployment(s) answer"
        return (
            f"config FAILED the probe: {self.failed} of {self.probed} "
            "deployment(s) do not answer (FAIL above)"
        )


async def probe(config: Config) -> ProbeResults:
    """Send a one-token chat request to every mapped deployment."""
    results = ProbeResults()
    if config.redis_url is not None:
        good, why = await fleet.ping(config)
        results.ok &= good
        results.redis_failed = not good
        mark = "ok  " if good else "FAIL"
        results.lines.append(f"{mark} redis {config.redis_url.shown}: {why}")
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()  # opens the session, fetches Entra ID tokens
    try:
        router = app[GATE].router
        seen: set[str] = set()
        for model, backends in router.routes.items():
            for backend in backends:
                if backend.name in seen:
                    continue
                seen.add(backend.name)
                good, why = await probe_one(app[SESSION], backend)
                results.ok &= good
                results.probed += 1
                results.failed += not good
                mark = "ok  " if good else "FAIL"
                results.lines.append(f"{mark} {model} -> {backend.name}: {why}")
        if not seen:
            results.lines.append("nothing to probe: no model is mapped")
    finally:
        await runner.cleanup()
    return results


async def probe_one(session: UpstreamSession, backend: Backend) -> tuple[bool, str]:
    endpoint = backend.endpoint
    route = route_for("chat/completions", endpoint)
    url = upstream_url(
        endpoint.base_url,
        "chat/completions",
        deployment=backend.deployment,
        route=route,
    )
    body = dict(PROBE_BODY)
    if route.v1:
        body["model"] = backend.deployment
    headers: dict[str, str] = {}
    try:
        endpoint.authorize(headers)
        async with session.post(
            url, json=body, headers=headers, allow_redirects=False
        ) as response:
            text = await response.read()
    except aiohttp.ClientError as exc:
        return False, f"cannot reach {endpoint.base_url} ({type(exc).__name__})"
    except Exception as exc:  # e.g. no Entra ID token
        return False, str(exc)
    return explain(response.status, text, backend)


def explain(status: int, body: bytes, backend: Backend) -> tuple[bool, str]:
    """What an answer to the probe means, and what to change when it fails."""
    code = _error_code(body)
    endpoint = backend.endpoint
    if status < 300:
        return True, "answers"
    if status == 429:
        return True, "exists, rate-limited right now (429)"
    if status == 400:
        return True, f"exists (400 {code}: probably not a chat model)"
    if status == 401:
        return False, (
            "401: the key or token is not accepted by this resource; check the "
            "endpoint's api_key (or its Entra ID role assignment)"
        )
    if status == 403:
        return False, (
            "403: the identity may not use this resource; assign it the "
            "'Cognitive Services OpenAI User' role, or check network rules"
        )
    if status == 404 and code == "DeploymentNotFound":
        return False, (
            f"404 DeploymentNotFound: {endpoint.base_url} has no deployment "
            f"named {backend.deployment!r}; use the deployment name shown in the "
            "Azure AI Foundry portal (it is not the model name: gpt-35-turbo, "
            "not gpt-3.5-turbo)"
        )
    if status == 404:
        return False, (
            f"404: wrong endpoint URL, or api-version {endpoint.api_version} "
            "is not served there"
        )
    return False, f"{status} {code}".strip()


def _error_code(body: bytes) -> str:
    try:
        error = json.loads(body).get("error") or {}
        return str(error.get("code") or "")
    except (ValueError, AttributeError):
        return ""
