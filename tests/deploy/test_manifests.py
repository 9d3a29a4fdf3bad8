"""The shipping files agree with the image and with each other.

No network and no docker: the ARM templates, Kubernetes manifests and compose files
are parsed and their critical fields checked (kubeconform, helm and the bicep CLI are
not available here). `nginx -t` runs on the nginx site when nginx is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from azproxy import Config, create_app
from azproxy.errors import ConfigError
from azproxy.settings.config import settings
from tests.arm import DeploymentFailed, Template
from tests.conftest import AZURE_KEY
from tests.deploy.shipped import (
    AZURE,
    IMAGE,
    K8S,
    PORT,
    ROOT,
    dockerfile_stages,
    env_names,
    load_json,
    load_yaml,
    resource,
    strings,
)

NGINX_SITE = ROOT / "deploy" / "nginx" / "azproxy.conf"
OPENAI_USER_ROLE = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
UIS = (
    "chatbot-ui",
    "chatgpt-lite",
    "chatgpt-minimal",
    "chatgpt-next-web",
    "chatgpt-web",
)


# ARM templates (both) ------------------------------------------------------------

ARM_TEMPLATES = ("azure-deploy.json", "containerapp.json")


@pytest.mark.parametrize("name", ARM_TEMPLATES)
def test_arm_references_resolve(name: str) -> None:
    template = load_json(AZURE / name)
    text = json.dumps(template)
    params = set(template["parameters"])
    variables = set(template.get("variables", {}))
    used_params = set(re.findall(r"parameters\('([^']+)'\)", text))
    used_vars = set(re.findall(r"variables\('([^']+)'\)", text))
    assert used_params <= params, f"undeclared parameters {used_params - params}"
    assert params <= used_params, f"unused parameters {params - used_params}"
    assert used_vars <= variables, f"undeclared variables {used_vars - variables}"


@pytest.mark.parametrize("name", ARM_TEMPLATES)
def test_arm_expressions_are_balanced(name: str) -> None:
    for value in strings(load_json(AZURE / name)):
        if value.startswith("[") and not value.startswith("[["):
            assert value.endswith("]"), value
            assert value.count("(") == value.count(")"), value
            assert value.count("'") % 2 == 0, value


@pytest.mark.parametrize("name", ARM_TEMPLATES)
def test_arm_secrets_are_secure_and_not_defaulted(name: str) -> None:
    template = load_json(AZURE / name)
    params = template["parameters"]
    secure = {k for k, v in params.items() if v["type"] == "securestring"}
    for must_be_secure in ("accessKeys", "registryPassword"):
        assert must_be_secure in secure
    for key in secure:
        assert not params[key].get("defaultValue"), f"{key} has a default secret"
    # A secure value copied into a variable would lose its protection.
    variables_text = json.dumps(template.get("variables", {}))
    for key in secure:
        assert f"parameters('{key}')" not in variables_text, key
    # Deployment errors are shown and logged: fail() says only fixed words.
    text = json.dumps(template)
    assert text.count("fail(") == len(re.findall(r"fail\('(?:[^']|'')*'\)", text))


# App Service -----------------------------------------------------------------


def test_app_service_template() -> None:
    template = load_json(AZURE / "azure-deploy.json")
    params = template["parameters"]
    for required in (
        "resourcePrefix",
        "containerImage",
        "azureOpenAIEndpoint",
        "azureOpenAIApiKey",
        "openAIApiVersion",
        "modelMap",
        "accessKeys",
        "useEntraId",
        "corsOrigins",
        "logLevel",
        "shutdownGraceSeconds",
    ):
        assert required in params, required
    assert params["azureOpenAIApiKey"]["type"] == "securestring"
    assert params["containerImage"]["defaultValue"] == f"{IMAGE}:latest"
    assert params["registryUrl"]["defaultValue"] == "https://" + IMAGE.split("/")[0]

    site = resource(template, "Microsoft.Web/sites")
    config = site["properties"]["siteConfig"]
    assert "parameters('containerImage')" in config["linuxFxVersion"]
    assert config["linuxFxVersion"].startswith("[concat('DOCKER|'")
    assert config["healthCheckPath"] == "/healthz"
    assert config["webSocketsEnabled"] is True
    assert site["properties"]["httpsOnly"] is True
    assert site["identity"]["type"] == "SystemAssigned"

    base = env_names(template["variables"]["baseAppSettings"])
    assert base["WEBSITES_PORT"]["value"] == str(PORT)
    settings_text = json.dumps(template["variables"]) + config["appSettings"]
    for env in (
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_API_KEY",
        "OPENAI_API_VERSION",
        "AZPROXY_MODEL_MAP",
        "AZPROXY_ACCESS_KEYS",
        "AZPROXY_ENTRA",
        "AZPROXY_CORS_ORIGINS",
        "AZPROXY_LOG_LEVEL",
        "AZPROXY_SHUTDOWN_GRACE_S",
    ):
        assert env in settings_text, env

    role = resource(template, "Microsoft.Authorization/roleAssignments")
    assert template["variables"]["openAIUserRoleId"] == OPENAI_USER_ROLE
    assert "useEntraId" in role["condition"]


# Container Apps --------------------------------------------------------------


def container_app() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    template = load_json(AZURE / "containerapp.json")
    app = resource(template, "Microsoft.App/containerApps")
    (container,) = app["properties"]["template"]["containers"]
    return template, app, container


def test_container_app_identity_and_role() -> None:
    template, app, _ = container_app()
    assert app["identity"]["type"] == "SystemAssigned"
    role = resource(template, "Microsoft.Authorization/roleAssignments")
    assert template["variables"]["openAIUserRoleId"] == OPENAI_USER_ROLE
    props = role["properties"]
    assert "variables('openAIUserRoleId')" in props["roleDefinitionId"]
    assert "Microsoft.App/containerApps" in props["principalId"]
    assert ".identity.principalId" in props["principalId"]
    assert props["principalType"] == "ServicePrincipal"
    assert "Microsoft.CognitiveServices/accounts" in role["scope"]
    assert "condition" not in role


def test_container_app_settings() -> None:
    template, app, container = container_app()
    assert template["parameters"]["containerImage"]["defaultValue"] == f"{IMAGE}:latest"
    assert container["image"] == "[parameters('containerImage')]"
    ingress = app["properties"]["configuration"]["ingress"]
    assert ingress["targetPort"] == PORT
    assert ingress["external"] is True

    env = env_names(container["env"])
    assert env["AZPROXY_ENTRA"]["value"] == "true"
    assert "AZURE_OPENAI_ENDPOINT" in env
    assert "AZPROXY_MODEL_MAP" in env
    assert "AZURE_OPENAI_API_KEY" not in env  # Entra ID, no key
    secret_ref = env["AZPROXY_ACCESS_KEYS"]["secretRef"]
    assert "value" not in env["AZPROXY_ACCESS_KEYS"]
    assert f"'{secret_ref}'" in app["properties"]["configuration"]["secrets"]


def test_container_app_probes_and_scale() -> None:
    template, app, container = container_app()
    probes = {p["type"]: p["httpGet"] for p in container["probes"]}
    assert probes["Liveness"] == {"path": "/healthz", "port": PORT}
    assert probes["Readiness"] == {"path": "/readyz", "port": PORT}

    spec = app["properties"]["template"]
    scale = spec["scale"]
    assert scale["minReplicas"] == "[parameters('minReplicas')]"
    assert scale["maxReplicas"] == "[parameters('maxReplicas')]"
    (rule,) = scale["rules"]
    assert "concurrentRequests" in rule["http"]["metadata"]
    grace = re.fullmatch(
        r"\[add\(parameters\('shutdownGraceSeconds'\), (\d+)\)\]",
        spec["terminationGracePeriodSeconds"],
    )
    assert grace and int(grace.group(1)) > 0
    for name in ("minReplicas", "maxReplicas", "shutdownGraceSeconds"):
        assert template["parameters"][name]["type"] == "int"


def test_bicep_matches_arm() -> None:
    bicep = (AZURE / "containerapp.bicep").read_text()
    arm = load_json(AZURE / "containerapp.json")
    bicep_params = set(re.findall(r"^param (\w+) ", bicep, re.MULTILINE))
    assert bicep_params == set(arm["parameters"])
    for name, spec in arm["parameters"].items():
        declared = re.search(
            rf"((?:^@.*\n|^  .*\n|^\]\)\n)*)^param {name} ", bicep, re.M
        )
        assert declared, name
        decorators = declared.group(1)
        is_secure = "@secure()" in decorators
        assert is_secure == (spec["type"] == "securestring"), name
        for limit in ("minLength", "maxLength", "minValue", "maxValue"):
            if limit in spec:
                assert f"@{limit}({spec[limit]})" in decorators, (name, limit)
            else:
                assert f"@{limit}(" not in decorators, (name, limit)
        default = spec.get("defaultValue")
        if isinstance(default, str) and not default.startswith("["):
            assert re.search(
                rf"^param {name} string = '{re.escape(default)}'$", bicep, re.M
            )
    for needle in (
        "type: 'SystemAssigned'",
        f"targetPort: {PORT}",
        "path: '/healthz'",
        "path: '/readyz'",
        OPENAI_USER_ROLE,
        "{ name: 'AZPROXY_ENTRA', value: 'true' }",
        "secretRef: 'access-keys'",
        "concurrentRequests: concurrentRequests",
        "minReplicas: minReplicas",
        "maxReplicas: maxReplicas",
        "terminationGracePeriodSeconds: shutdownGraceSeconds + 5",
        "principalType: 'ServicePrincipal'",
    ):
        assert needle in bicep, needle


# Access keys: a template refuses what azproxy would refuse ---------------------
# A key azproxy refuses (shorter than 16 characters), or server-side credentials with
# no key at all, would deploy and then crash-loop: the templates stop the deployment
# instead. The templates' own expressions run here (tests/arm.py) on key lists, and
# what they decide is compared with what azproxy decides about the same keys.

LONG = "0123456789abcdef"  # 16 characters: azproxy's minimum
ACCESS_KEY_LISTS = [
    "",
    LONG,
    f"{LONG}-x,{LONG}-y",
    f" {LONG} , {LONG}-z ",
    f"{LONG},,",
    LONG[:15],
    "short",
    f"{LONG},{LONG[:15]}",
    f"{LONG[:15]},{LONG}",
    ",".join(["abc"] * 6),  # 23 characters, every key short
    "," * 20,  # no key at all
]
ENDPOINT = "https://myresource.openai.azure.com"
MODEL_MAP = "gpt-4o=my-gpt-4o"
# Given, so that these tests check the keys alone (the default image has its own test).
OWN_IMAGE = "myregistry.azurecr.io/azproxy:0.1.0"


def azproxy_refuses(env: dict[str, str]) -> bool:
    try:
        Config.load(environ=env)
    except ConfigError:
        return True
    return False


def app_service_settings(given: dict[str, Any]) -> dict[str, str]:
    """The app settings (the container's environment) App Service would get."""
    document = load_json(AZURE / "azure-deploy.json")
    site = resource(document, "Microsoft.Web/sites")
    template = Template(document, given)
    values = template.evaluate(site["properties"]["siteConfig"]["appSettings"])
    return {item["name"]: item["value"] for item in values}


def container_app_env(given: dict[str, Any]) -> dict[str, str]:
    """The container's environment in the Container Apps template, secrets resolved."""
    document = load_json(AZURE / "containerapp.json")
    app = resource(document, "Microsoft.App/containerApps")
    template = Template(document, given)
    secrets = template.evaluate(app["properties"]["configuration"]["secrets"])
    by_name = {secret["name"]: secret["value"] for secret in secrets}
    (container,) = app["properties"]["template"]["containers"]
    env = {}
    for item in container["env"]:
        if "secretRef" in item:
            env[item["name"]] = by_name[item["secretRef"]]
        else:
            env[item["name"]] = template.evaluate(item["value"])
    return env


@pytest.mark.parametrize("server_side", [True, False], ids=["endpoint", "passthrough"])
@pytest.mark.parametrize("keys", ACCESS_KEY_LISTS)
def test_app_service_refuses_the_keys_azproxy_refuses(
    keys: str, server_side: bool
) -> None:
    given: dict[str, Any] = {
        "resourcePrefix": "myproxy",
        "containerImage": OWN_IMAGE,
        "accessKeys": keys,
    }
    meant = {"AZPROXY_ACCESS_KEYS": keys}
    if server_side:
        given |= {
            "azureOpenAIEndpoint": ENDPOINT,
            "azureOpenAIApiKey": AZURE_KEY,
            "modelMap": MODEL_MAP,
        }
        meant |= {
            "AZURE_OPENAI_ENDPOINT": ENDPOINT,
            "AZURE_OPENAI_API_KEY": AZURE_KEY,
            "AZPROXY_MODEL_MAP": MODEL_MAP,
        }
    try:
        env = app_service_settings(given)
    except DeploymentFailed as exc:
        assert azproxy_refuses(meant), f"the template refused keys azproxy takes: {exc}"
        return
    assert not azproxy_refuses(meant), "the template deploys keys azproxy refuses"
    assert not azproxy_refuses(env)  # what the container really gets
    assert env.get("AZPROXY_ACCESS_KEYS", "") == (keys if keys.strip(", ") else "")


@pytest.mark.parametrize("keys", ACCESS_KEY_LISTS)
def test_container_app_refuses_the_keys_azproxy_refuses(keys: str) -> None:
    given = {
        "containerImage": OWN_IMAGE,
        "openAIAccountName": "myresource",
        "azureOpenAIEndpoint": ENDPOINT,
        "modelMap": MODEL_MAP,
        "accessKeys": keys,
    }
    meant = {
        "AZPROXY_ENTRA": "true",
        "AZURE_OPENAI_ENDPOINT": ENDPOINT,
        "AZPROXY_MODEL_MAP": MODEL_MAP,
        "AZPROXY_ACCESS_KEYS": keys,
    }
    try:
        env = container_app_env(given)
    except DeploymentFailed as exc:
        assert azproxy_refuses(meant), f"the template refused keys azproxy takes: {exc}"
        return
    assert not azproxy_refuses(meant), "the template deploys keys azproxy refuses"
    assert not azproxy_refuses(env)
    assert env["AZPROXY_ACCESS_KEYS"] == keys


def test_container_app_form_asks_for_16_characters() -> None:
    # The portal's form and `az deployment` check minLength before anything runs.
    params = load_json(AZURE / "containerapp.json")["parameters"]
    assert params["accessKeys"]["minLength"] == 16
    assert "16 characters" in params["accessKeys"]["metadata"]["description"]
    bicep = (AZURE / "containerapp.bicep").read_text()
    assert "length(trim(k)) < 16" in bicep
    assert "fail('accessKeys:" in bicep


# Kubernetes ------------------------------------------------------------------


def deployment() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    deploy = load_yaml(K8S / "deployment.yaml")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return deploy, pod, container


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (found,) = [p for p in container["ports"] if p["name"] == port]
    number = found["containerPort"]
    assert isinstance(number, int)
    return number


def test_deployment_probes_and_port() -> None:
    deploy, _, container = deployment()
    assert deploy["apiVersion"] == "apps/v1"
    assert [p["containerPort"] for p in container["ports"]] == [PORT]
    live = container["livenessProbe"]["httpGet"]
    ready = container["readinessProbe"]["httpGet"]
    assert live["path"] == "/healthz"
    assert ready["path"] == "/readyz"
    assert port_number(container, live["port"]) == PORT
    assert port_number(container, ready["port"]) == PORT


def test_startup_probe_gates_liveness() -> None:
    # A slow start (a busy node) is waited for by the startup probe, not mistaken
    # for a dead pod; liveness then needs no initial delay.
    _, _, container = deployment()
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert port_number(container, startup["httpGet"]["port"]) == PORT
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20
    assert "initialDelaySeconds" not in container["livenessProbe"]


def test_prometheus_scrapes_the_pods() -> None:
    deploy, _, container = deployment()
    annotations = deploy["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert port_number(container, int(annotations["prometheus.io/port"])) == PORT
    routes = {r.canonical for r in create_app(Config()).router.resources()}
    assert annotations["prometheus.io/path"] == "/metrics" in routes


def test_pods_spread_over_nodes_and_zones() -> None:
    deploy, pod, _ = deployment()
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in spread.values():
        assert constraint["maxSkew"] == 1
        # Prefer, never block: a one-node or one-zone cluster must still schedule.
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]


def test_deployment_security_and_resources() -> None:
    _, pod, container = deployment()
    pod_sec = pod.get("securityContext", {})
    sec = container["securityContext"]
    assert pod_sec.get("runAsNonRoot") is True or sec.get("runAsNonRoot") is True
    assert pod_sec.get("runAsUser", sec.get("runAsUser")) not in (None, 0)
    assert sec["readOnlyRootFilesystem"] is True
    assert sec["allowPrivilegeEscalation"] is False
    assert sec["capabilities"]["drop"] == ["ALL"]
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    assert pod["automountServiceAccountToken"] is False


def quantity_bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", value)
    assert match, f"not a Kubernetes quantity this test reads: {value}"
    power = ["", "Ki", "Mi", "Gi", "Ti"].index(match.group(2) or "")
    return int(match.group(1)) << (10 * power)


def test_tmp_holds_every_spooled_body() -> None:
    # Spooled bodies (uploads whose file part precedes `model`, bodies past
    # max_buffered_body_mb) stay within max_spool_mb per process, 503 past it;
    # a full emptyDir would get the pod evicted instead.
    _, pod, container = deployment()
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    size = quantity_bytes(volume["emptyDir"]["sizeLimit"])
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    config = Config.load(None, env)
    assert size > config.workers * config.max_spool_bytes
    requested = container["resources"]["requests"]["ephemeral-storage"]
    assert quantity_bytes(requested) >= size


def test_deployment_reads_the_example_secret() -> None:
    _, _, container = deployment()
    secret = load_yaml(K8S / "secret.example.yaml")
    refs = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
    assert refs == [secret["metadata"]["name"]]
    plain = {e["name"] for e in container.get("env", [])}
    assert not plain & set(secret["stringData"]), "secret values set in plain env"


def test_service_links_cannot_pass_for_settings() -> None:
    # Kubernetes gives each pod {SERVICE}_PORT=tcp://IP:PORT for every Service
    # in its namespace: for the Service named azproxy, that is AZPROXY_PORT.
    service = load_yaml(K8S / "service.yaml")
    prefix = service["metadata"]["name"].upper().replace("-", "_") + "_"
    assert prefix == "AZPROXY_"
    link = {f"{prefix}PORT": f"tcp://10.0.0.11:{PORT}"}
    with pytest.raises(ConfigError) as refused:
        Config.load(None, link)
    assert "enableServiceLinks: false" in str(refused.value)
    _, pod, _ = deployment()
    assert pod["enableServiceLinks"] is False


def test_service_selects_the_pods() -> None:
    deploy, _, container = deployment()
    service = load_yaml(K8S / "service.yaml")
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector and selector.items() <= labels.items()
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == PORT
    assert port_number(container, port["targetPort"]) == PORT


def test_hpa_targets_the_deployment() -> None:
    deploy, _, _ = deployment()
    hpa = load_yaml(K8S / "hpa.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deploy["metadata"]["name"],
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_the_autoscaler_owns_the_replica_count() -> None:
    # A `replicas:` in the Deployment would reset the HPA's count on every apply.
    deploy, _, _ = deployment()
    assert "replicas" not in deploy["spec"]


def test_disruption_budget_keeps_a_pod_serving() -> None:
    deploy, _, _ = deployment()
    pdb = load_yaml(K8S / "pdb.yaml")
    assert (pdb["apiVersion"], pdb["kind"]) == ("policy/v1", "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # One pod may go while another serves: every autoscaler keeps two or more.
    keda = load_yaml(K8S / "keda-scaledobject.yaml")
    assert load_yaml(K8S / "hpa.yaml")["spec"]["minReplicas"] >= 2
    assert keda["spec"]["minReplicaCount"] >= 2


async def test_keda_option_scales_on_requests_in_flight(
    aiohttp_client: AiohttpClient,
) -> None:
    deploy, _, _ = deployment()
    scaled = load_yaml(K8S / "keda-scaledobject.yaml")
    assert (scaled["apiVersion"], scaled["kind"]) == (
        "keda.sh/v1alpha1",
        "ScaledObject",
    )
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        deploy["metadata"]["name"],
    )
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    names = set(re.findall(r"\bazproxy_\w+", trigger["metadata"]["query"]))
    assert names & {"azproxy_requests_in_flight", "azproxy_streams_in_flight"}
    assert float(trigger["metadata"]["threshold"]) > 0
    # The query names only metrics azproxy exports.
    client = await aiohttp_client(create_app(Config()))
    exported = await (await client.get("/metrics")).text()
    for name in names:
        assert re.search(rf"^{name} ", exported, re.M), f"azproxy exports no {name}"
    # Down as slowly as the HPA: streams hold connections for minutes.
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    hpa = load_yaml(K8S / "hpa.yaml")
    assert behavior["scaleDown"] == hpa["spec"]["behavior"]["scaleDown"]


def test_secret_example_has_only_placeholders() -> None:
    secret = load_yaml(K8S / "secret.example.yaml")
    assert secret["kind"] == "Secret"
    assert "data" not in secret  # base64 would hide what is in it
    values = secret["stringData"]
    assert {"AZURE_OPENAI_API_KEY", "AZPROXY_ACCESS_KEYS"} <= set(values)
    for key, value in values.items():
        assert "REPLACE" in value, f"{key} is not an obvious placeholder"
        # Azure OpenAI keys: 32 hex digits, or 84 base62 characters.
        assert not re.search(r"[0-9a-fA-F]{32}|[A-Za-z0-9]{40,}", value), key


def test_kustomization_lists_the_manifests() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    resources = kustomization["resources"]
    assert {"deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"} <= set(resources)
    assert "secret.example.yaml" not in resources  # would overwrite a real Secret
    # An option, not a default: it needs KEDA and Prometheus, and replaces hpa.yaml.
    assert "keda-scaledobject.yaml" not in resources
    for name in resources:
        assert (K8S / name).is_file(), name
    (image,) = kustomization["images"]
    assert image["name"] == IMAGE
    _, _, container = deployment()
    assert container["image"].rsplit(":", 1)[0] == IMAGE


# What the files expect from the package ----------------------------------------

# Read by azproxy besides its settings' AZPROXY_* names (config.py), or by the
# programs around it (the simulator, azure-identity, App Service, the UIs).
OTHER_ENV = {
    "AZPROXY_CONFIG",
    "AZPROXY_SIM_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_AD_TOKEN",
    "OPENAI_API_VERSION",
}
SHIPPED = [
    ROOT / "Dockerfile",
    *sorted((ROOT / "deploy").rglob("*.*")),
    *sorted((ROOT / "e2e").glob("*/docker-compose.yml")),
]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_files_name_only_settings_azproxy_reads(path: Path) -> None:
    text = path.read_text()
    known = {s.env for s in settings() if s.env} | OTHER_ENV
    # env:NAME references in the example config name the operator's own variables.
    refs = set(re.findall(r"env:([A-Z0-9_]+)", text))
    for name in set(re.findall(r"\bAZPROXY_[A-Z0-9_]+\b", text)) - refs:
        assert name in known, f"{name} is no azproxy setting"
    for name in set(re.findall(r"\bAZURE_OPENAI_[A-Z0-9_]+\b", text)) - refs:
        assert name in known, f"azproxy does not read {name}"


def test_probe_paths_are_served() -> None:
    routes = {r.canonical for r in create_app(Config()).router.resources()}
    for path in (K8S / "deployment.yaml", AZURE / "containerapp.json"):
        probed = set(re.findall(r"/(?:healthz|readyz)\b", path.read_text()))
        assert probed and probed <= routes, path.name


# Compose files for the chat UIs ----------------------------------------------


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form of environment:"
    return env


@pytest.mark.parametrize("ui", UIS)
def test_compose_runs_ui_against_azproxy(ui: str) -> None:
    path = ROOT / "e2e" / ui / "docker-compose.yml"
    services = load_yaml(path)["services"]
    proxy = services["azproxy"]
    assert (path.parent / proxy["build"]["context"]).resolve() == ROOT
    assert "profiles" not in proxy

    front = services[ui]
    assert "build" not in front and front["image"]
    env = environment(front)
    urls = [v for v in env.values() if isinstance(v, str) and "azproxy" in v]
    assert urls, f"{ui} is not pointed at azproxy"
    assert all(re.fullmatch(rf"http://azproxy:{PORT}(/v1)?", url) for url in urls)
    assert "OPENAI_API_KEY" in env
    assert "azproxy" in front["depends_on"]


def test_every_ui_has_a_compose_file() -> None:
    found = {p.parent.name for p in (ROOT / "e2e").glob("*/docker-compose.yml")}
    assert found == set(UIS)
    readme = (ROOT / "e2e" / "README.md").read_text()
    for ui in UIS:
        assert f"`{ui}/`" in readme


# nginx -----------------------------------------------------------------------


def nginx_directives() -> str:
    """The site without comments, one space between words."""
    lines = (line.split("#", 1)[0] for line in NGINX_SITE.read_text().splitlines())
    return re.sub(r"\s+", " ", " ".join(lines))


def seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)([smh]?)", value)
    assert match, f"not an nginx time: {value}"
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def test_nginx_site_is_streaming_safe() -> None:
    text = nginx_directives()
    for directive in (
        "proxy_buffering off;",
        "proxy_cache off;",
        "proxy_request_buffering off;",
        "proxy_http_version 1.1;",
        "map $http_upgrade $connection_upgrade {",
        "location /v1/realtime {",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
    ):
        assert directive in text, directive
    for timeout in ("proxy_read_timeout", "proxy_send_timeout", "send_timeout"):
        match = re.search(rf"(?<!_){timeout} (\w+);", text)
        assert match and seconds(match.group(1)) >= 3600, timeout
    body = re.search(r"client_max_body_size (\d+)m;", text)
    assert body and int(body.group(1)) >= 512
    # Includable in http {}: no top-level blocks of its own.
    assert not re.search(r"(^|[;}] )(http|events) \{", text)


def test_nginx_accepts_the_site(tmp_path: Path) -> None:
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx to run `nginx -t`)")
    (tmp_path / "nginx.conf").write_text(
        "pid nginx.pid;\n"
        "error_log stderr;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        "    access_log off;\n"
        "    client_body_temp_path tmp_body;\n"
        "    proxy_temp_path tmp_proxy;\n"
        "    fastcgi_temp_path tmp_fastcgi;\n"
        "    uwsgi_temp_path tmp_uwsgi;\n"
        "    scgi_temp_path tmp_scgi;\n"
        f"    include {NGINX_SITE};\n"
        "}\n"
    )
    result = subprocess.run(
        [nginx, "-p", f"{tmp_path}/", "-c", "nginx.conf", "-e", "stderr", "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


# Dockerfile ------------------------------------------------------------------


def test_dockerfile_basics() -> None:
    stages = dockerfile_stages()
    assert [stage.base for stage in stages] == ["python:3.11-slim"] * len(stages)
    final = stages[-1]
    assert final.args("EXPOSE") == [str(PORT)]
    assert final.args("STOPSIGNAL") == ["SIGTERM"]
    (user,) = final.args("USER")
    assert user.split(":")[0] not in ("0", "root")
    (cmd,) = final.args("CMD")
    serve = ["azproxy", "serve", "--host", "0.0.0.0", "--port", str(PORT)]
    assert json.loads(cmd) == serve
    (healthcheck,) = final.args("HEALTHCHECK")
    assert "/healthz" in healthcheck and " CMD [" in healthcheck
    for stage in stages:
        assert not stage.args("ARG")  # nothing secret passed at build time
        for env in stage.args("ENV"):
            assert not re.search(r"KEY|SECRET|TOKEN|PASSWORD", env), env
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*", ".dockerignore should be an allow-list"
