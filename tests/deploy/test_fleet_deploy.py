"""The fleet's shipping files, parsed (no cluster, no docker): the Kubernetes
variant with Redis, the compose file with two replicas, Redis and nginx, and
the Container Apps template's optional Redis URL. The names must line up: the
URL azproxy gets names the Redis Service and port, its password comes from
the Secret the Redis reads, and azproxy itself accepts the URL. A full run of
the compose file is opt-in: scripts/fleet-compose-smoke."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from azproxy import Config
from tests.deploy.shipped import AZURE, K8S, PORT, ROOT, dockerfile_stages, load_yaml
from tests.deploy.test_manifests import (
    ENDPOINT,
    MODEL_MAP,
    OWN_IMAGE,
    container_app_env,
    deployment,
    nginx_directives,
)

FLEET = K8S / "fleet"
COMPOSE = ROOT / "deploy" / "compose"


def documents(path: str) -> dict[str, dict[str, Any]]:
    """The manifests of a multi-document file, by kind."""
    found = {d["kind"]: d for d in yaml.safe_load_all((FLEET / path).read_text())}
    return found


def arg_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def redis_url_of(env: list[dict[str, Any]], password: str) -> Config:
    """The Config azproxy builds from these env entries (secrets filled in)."""
    values = {
        item["name"]: item.get("value", password)
        for item in env
        if "value" in item or "valueFrom" in item
    }
    return Config.load(environ=values)


def test_kubernetes_fleet_adds_redis_to_the_base() -> None:
    kustomization = load_yaml(FLEET / "kustomization.yaml")
    assert kustomization["resources"] == ["../", "redis.yaml"]
    (patch,) = kustomization["patches"]
    assert (FLEET / patch["path"]).is_file()
    base, _, _ = deployment()
    patched = load_yaml(FLEET / patch["path"])
    assert (patched["kind"], patched["metadata"]["name"]) == (
        "Deployment",
        base["metadata"]["name"],
    )


def test_kubernetes_names_line_up_and_azproxy_accepts_the_url() -> None:
    manifests = documents("redis.yaml")
    service, redis = manifests["Service"], manifests["StatefulSet"]
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    patch = load_yaml(FLEET / "azproxy-redis-url.yaml")
    (azproxy,) = patch["spec"]["template"]["spec"]["containers"]
    assert azproxy["name"] == deployment()[2]["name"]
    # One Secret, one key: the password Redis requires is the one azproxy sends.
    secret_refs = [
        item["valueFrom"]["secretKeyRef"]
        for item in container["env"] + azproxy["env"]
        if "valueFrom" in item
    ]
    assert secret_refs == [{"name": "azproxy-redis", "key": "password"}] * 2
    assert arg_after(container["args"], "--requirepass") == "$(REDIS_PASSWORD)"
    config = redis_url_of(azproxy["env"], "a-password-from-the-secret")
    assert config.redis_url is not None
    port = service["spec"]["ports"][0]["port"]
    assert config.redis_url.shown == f"redis://{service['metadata']['name']}:{port}/0"
    assert config.redis_url.reveal().startswith("redis://:a-password-from-the-secret@")
    assert service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    assert redis["spec"]["serviceName"] == service["metadata"]["name"]


def test_kubernetes_redis_keeps_an_append_only_file_on_a_volume() -> None:
    redis = documents("redis.yaml")["StatefulSet"]
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert arg_after(args, "--appendonly") == "yes"
    assert arg_after(args, "--appendfsync") == "everysec"
    assert arg_after(args, "--maxmemory-policy") == "noeviction"
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    (mount,) = container["volumeMounts"]
    assert mount["name"] == claim["metadata"]["name"]
    assert mount["mountPath"] == arg_after(args, "--dir")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def squeezed(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE / "docker-compose.yml")


def test_compose_runs_two_replicas_on_one_redis() -> None:
    services = compose()["services"]
    replicas = [name for name in services if name.startswith("azproxy-")]
    assert replicas == ["azproxy-1", "azproxy-2"]
    envs = [services[name]["environment"] for name in replicas]
    assert envs[0] == envs[1]
    url = envs[0]["AZPROXY_REDIS_URL"]
    config = Config.load(environ={"AZPROXY_REDIS_URL": url, "REDIS_PASSWORD": "pw"})
    assert config.redis_url is not None
    assert config.redis_url.shown == "redis://redis:6379/0"
    assert "redis" in services
    assert all("redis" in services[name]["depends_on"] for name in replicas)
    # The password is the variable Redis requires too, never in the URL itself.
    assert "${REDIS_PASSWORD" in envs[0]["REDIS_PASSWORD"]
    command = services["redis"]["command"]
    assert arg_after(command, "--requirepass").startswith("${REDIS_PASSWORD")
    assert arg_after(command, "--appendonly") == "yes"
    assert arg_after(command, "--appendfsync") == "everysec"
    (volume,) = services["redis"]["volumes"]
    assert volume.split(":")[1] == "/data"
    assert volume.split(":")[0] in compose()["volumes"]


def test_compose_nginx_is_the_shipped_site_with_both_replicas() -> None:
    services = compose()["services"]
    (mount,) = services["nginx"]["volumes"]
    site = COMPOSE / mount.split(":")[0]
    assert site.is_file()
    text = " ".join(line.split("#", 1)[0] for line in site.read_text().splitlines())
    directives = re.sub(r"\s+", " ", text)
    servers = re.findall(r"server (\S+);", directives)
    assert servers == [f"azproxy-1:{PORT}", f"azproxy-2:{PORT}"]
    shipped = nginx_directives().replace(f"server 127.0.0.1:{PORT};", "")
    both = "".join(f"server {s}; " for s in servers)
    assert squeezed(directives.replace(both, "")) == squeezed(shipped)


def test_compose_file_runs_on_docker_compose_1_too() -> None:
    # docker-compose 1.29 (Debian 12's, Ubuntu 22.04's) refuses any other top-level
    # key, Compose v2's `name:` among them; scripts/fleet-compose-smoke runs it so.
    keys = {key for key in compose() if not key.startswith("x-")}
    assert keys <= {"version", "services", "volumes", "networks", "configs", "secrets"}


def test_compose_nginx_starts_once_both_replicas_are_healthy() -> None:
    # A request nginx sends to a replica not yet listening marks it down for 10 s.
    services = compose()["services"]
    healthy = {"condition": "service_healthy"}
    replicas = ("azproxy-1", "azproxy-2")
    assert services["nginx"]["depends_on"] == dict.fromkeys(replicas, healthy)
    # ... which the image's own HEALTHCHECK decides (the compose file sets none).
    assert dockerfile_stages()[-1].args("HEALTHCHECK")
    assert all("healthcheck" not in services[name] for name in replicas)


@pytest.mark.parametrize("redis_url", ["", "rediss://:access-key@cache.example:10000"])
def test_container_app_takes_an_optional_redis_url(redis_url: str) -> None:
    given = {
        "containerImage": OWN_IMAGE,
        "openAIAccountName": "myresource",
        "azureOpenAIEndpoint": ENDPOINT,
        "modelMap": MODEL_MAP,
        "accessKeys": "0123456789abcdef",
        "redisUrl": redis_url,
    }
    env = container_app_env(given)
    # A secret cannot be empty: `none` says "no shared state" to azproxy.
    assert env["AZPROXY_REDIS_URL"] == (redis_url or "none")
    config = Config.load(environ=env)
    if redis_url:
        assert config.redis_url is not None
        assert config.redis_url.shown == "rediss://cache.example:10000"
    else:
        assert config.redis_url is None
    params = (AZURE / "containerapp.json").read_text()
    assert '"redisUrl"' in params
