"""Reading the shipping files (templates, manifests, compose files, Dockerfile)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "AZURE",
    "COMPOSE_FILES",
    "DOCKER_STOP_TIMEOUT_S",
    "IMAGE",
    "K8S",
    "PORT",
    "ROOT",
    "Stage",
    "dockerfile_instructions",
    "dockerfile_stages",
    "env_names",
    "image_env",
    "load_json",
    "load_yaml",
    "resource",
    "strings",
]

ROOT = Path(__file__).resolve().parents[2]
AZURE = ROOT / "deploy" / "azure"
K8S = ROOT / "deploy" / "kubernetes"
PORT = 3000
# The published image's name, without a tag: the one place it is written.
IMAGE = (ROOT / "deploy" / "IMAGE").read_text().strip()
COMPOSE_FILES = sorted((ROOT / "e2e").glob("*/docker-compose.yml"))
# `docker stop` and compose send SIGKILL this long after SIGTERM unless told otherwise.
DOCKER_STOP_TIMEOUT_S = 10


def load_json(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text())
    assert isinstance(document, dict)
    return document


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path} is not one YAML mapping"
    return document


def strings(node: Any) -> list[str]:
    """Every string value in a parsed JSON/YAML tree."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return []


def resource(template: dict[str, Any], type_: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        r for r in template["resources"] if r["type"] == type_
    ]
    assert len(found) == 1, f"expected one {type_} resource, found {len(found)}"
    return found[0]


def env_names(env: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in env}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    pairs = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), re.sub(r"\s+", " ", rest.strip())))
    return pairs


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def dockerfile_stages() -> list[Stage]:
    stages: list[Stage] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(base, name or None))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def image_env() -> dict[str, str]:
    """The ENV of the image that runs (the Dockerfile's last stage)."""
    env: dict[str, str] = {}
    for rest in dockerfile_stages()[-1].args("ENV"):
        env.update(re.findall(r"(\w+)=(\S+)", rest))
    return env
