"""Every way of running the image waits for azproxy's shutdown grace before SIGKILL.

On SIGTERM azproxy lets streams in flight run for AZPROXY_SHUTDOWN_GRACE_S, ends
the ones still running with an explicit error event, and exits about a second
later. A runtime that kills it sooner cuts streams mid-answer with no error event:
each stop timeout here must cover the grace azproxy gets there, plus that second
and a margin. scripts/container-smoke checks the image's own pair for real (a
plain `docker stop` with a stream longer than the grace in flight).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from azproxy import Config
from tests.arm import Template
from tests.deploy.shipped import (
    AZURE,
    COMPOSE_FILES,
    DOCKER_STOP_TIMEOUT_S,
    IMAGE,
    K8S,
    ROOT,
    env_names,
    image_env,
    load_json,
    load_yaml,
    resource,
)

# After the grace, the server gives the cut streams up to 1 s (server.py's
# shutdown_timeout) to send their error event; then the process exits.
CLOSE_S = 1.0
MARGIN_S = 1.0
# App Service kills a container this long after SIGTERM, 5 s unless
# WEBSITES_CONTAINER_STOP_TIME_LIMIT says otherwise (120 at most).
APP_SERVICE_MAX_STOP_S = 120
OWN_IMAGE = "myregistry.azurecr.io/azproxy:0.1.0"


def image_grace() -> float:
    return float(image_env()["AZPROXY_SHUTDOWN_GRACE_S"])


def test_the_image_stops_within_docker_stops_default() -> None:
    # `docker stop`, `docker compose down` and friends wait 10 s by default.
    assert image_grace() + CLOSE_S + MARGIN_S <= DOCKER_STOP_TIMEOUT_S
    # The image's value, not azproxy's default, is what a container gets.
    assert image_grace() < Config().shutdown_grace_s


def duration_s(value: str) -> float:
    """A compose duration such as 30s, 1m30s or 1.5s."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s|ms|us)", value)
    assert parts and "".join(n + u for n, u in parts) == value, value
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    return sum(float(number) * scale[unit] for number, unit in parts)


def serves_azproxy(path: Path, service: dict[str, Any]) -> bool:
    """A service running this repository's image with its default command (serve)."""
    build = service.get("build")
    built_here = (
        isinstance(build, dict) and (path.parent / build["context"]).resolve() == ROOT
    )
    published = str(service.get("image", "")).startswith(IMAGE)
    return (built_here or published) and "command" not in service


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.parent.name)
def test_compose_waits_for_the_grace(path: Path) -> None:
    services = load_yaml(path)["services"]
    serving = {name: s for name, s in services.items() if serves_azproxy(path, s)}
    assert serving, f"{path} runs no azproxy"
    for name, service in serving.items():
        env = service.get("environment", {})
        grace = float(env.get("AZPROXY_SHUTDOWN_GRACE_S") or image_grace())
        assert "stop_grace_period" in service, f"{name}: no stop_grace_period"
        period = duration_s(service["stop_grace_period"])
        assert period >= grace + CLOSE_S + MARGIN_S, name


def test_kubernetes_waits_for_the_pause_and_the_grace() -> None:
    pod = load_yaml(K8S / "deployment.yaml")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = env_names(container["env"])
    grace = float(env["AZPROXY_SHUTDOWN_GRACE_S"]["value"])
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The preStop pause runs first, inside the same termination grace period.
    needed = pause + grace + CLOSE_S + MARGIN_S
    assert pod["terminationGracePeriodSeconds"] >= needed


def grace_values(spec: dict[str, Any]) -> list[int]:
    return sorted({spec["minValue"], spec["defaultValue"], spec["maxValue"]})


@pytest.mark.parametrize(
    "grace",
    grace_values(
        load_json(AZURE / "azure-deploy.json")["parameters"]["shutdownGraceSeconds"]
    ),
)
def test_app_service_waits_for_the_grace(grace: int) -> None:
    document = load_json(AZURE / "azure-deploy.json")
    given = {
        "resourcePrefix": "myproxy",
        "containerImage": OWN_IMAGE,
        "shutdownGraceSeconds": grace,
    }
    template = Template(document, given)
    site = resource(document, "Microsoft.Web/sites")
    values = template.evaluate(site["properties"]["siteConfig"]["appSettings"])
    settings = {item["name"]: item["value"] for item in values}
    assert float(settings["AZPROXY_SHUTDOWN_GRACE_S"]) == grace
    stop = int(settings["WEBSITES_CONTAINER_STOP_TIME_LIMIT"])
    assert grace + CLOSE_S + MARGIN_S <= stop <= APP_SERVICE_MAX_STOP_S


@pytest.mark.parametrize(
    "grace",
    grace_values(
        load_json(AZURE / "containerapp.json")["parameters"]["shutdownGraceSeconds"]
    ),
)
def test_container_apps_wait_for_the_grace(grace: int) -> None:
    document = load_json(AZURE / "containerapp.json")
    given = {
        "containerImage": OWN_IMAGE,
        "openAIAccountName": "myresource",
        "modelMap": "gpt-4o=my-gpt-4o",
        "accessKeys": "0123456789abcdef",
        "shutdownGraceSeconds": grace,
    }
    template = Template(document, given)
    spec = resource(document, "Microsoft.App/containerApps")["properties"]["template"]
    stop = template.evaluate(spec["terminationGracePeriodSeconds"])
    (container,) = spec["containers"]
    env = env_names(container["env"])
    assert float(template.evaluate(env["AZPROXY_SHUTDOWN_GRACE_S"]["value"])) == grace
    assert stop >= grace + CLOSE_S + MARGIN_S
