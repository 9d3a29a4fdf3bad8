"""The published image: its one name, the release workflow, the lock it installs.

The workflow cannot run here (no GitHub, no registry): actionlint checks it, and
these tests check that it builds what scripts/container-smoke builds and runs, and
publishes it under the name in deploy/IMAGE that every template, manifest and
document uses.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.shipped import (
    AZURE,
    IMAGE,
    ROOT,
    dockerfile_stages,
    load_json,
    load_yaml,
)

WORKFLOWS = ROOT / ".github" / "workflows"
RELEASE = WORKFLOWS / "release.yml"
LOCK = ROOT / "requirements.lock"
# The command that regenerates the lock; the lock's header and docs/deploy.md say it.
LOCK_COMMAND = (
    "uv pip compile setup.cfg --extra entra --universal --python-version 3.11 "
    "--generate-hashes -o requirements.lock"
)
README = (ROOT / "README.md").read_text()
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
# Where the image name is written out besides deploy/IMAGE.
DOCUMENTS = sorted(
    {
        ROOT / "README.md",
        ROOT / "Dockerfile",
        *ROOT.glob("docs/**/*.md"),
        *(p for p in (ROOT / "deploy").rglob("*") if p.is_file()),
        *ROOT.glob("e2e/**/*.md"),
        *ROOT.glob("e2e/*/docker-compose.yml"),
        *WORKFLOWS.glob("*.yml"),
    }
)


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


# The name ---------------------------------------------------------------------


def test_the_image_name_is_one_plain_reference() -> None:
    assert (ROOT / "deploy" / "IMAGE").read_text() == IMAGE + "\n"
    # registry/owner/name, lower case (OCI), no tag: the tag is chosen where it is used.
    assert re.fullmatch(r"ghcr\.io/[a-z0-9]+(?:[._-][a-z0-9]+)*/azproxy", IMAGE)


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_copy_of_the_image_name_matches(path: Path) -> None:
    text = path.read_text()
    for ref in re.findall(r"ghcr\.io/[\w.-]+/azproxy\b[\w.:@-]*", text):
        name = re.split(r"[:@]", ref)[0]
        assert name == IMAGE, f"{path.name}: {ref} is not {IMAGE}"


def test_the_image_name_is_where_deployers_look() -> None:
    places = [
        ROOT / "README.md",
        DEPLOY_DOC,
        AZURE / "azure-deploy.json",
        AZURE / "containerapp.json",
        AZURE / "containerapp.bicep",
        ROOT / "deploy" / "kubernetes" / "deployment.yaml",
        ROOT / "deploy" / "kubernetes" / "kustomization.yaml",
        *ROOT.glob("e2e/*/docker-compose.yml"),
    ]
    for path in places:
        assert IMAGE in path.read_text(), path


def test_readme_has_the_deploy_to_azure_button() -> None:
    button = re.search(
        r"\[!\[Deploy to Azure\]\(https://aka\.ms/deploytoazurebutton\)\]"
        r"\(https://portal\.azure\.com/#create/Microsoft\.Template/uri/([^)\s]+)\)",
        README,
    )
    assert button, "no Deploy to Azure button in README.md"
    encoded = button.group(1)
    raw = unquote(encoded)
    assert quote(raw, safe="") == encoded, "the template URL must be URL-encoded whole"
    match = re.fullmatch(
        r"https://raw\.githubusercontent\.com/([^/]+)/[^/]+/[^/]+/deploy/azure/azure-deploy\.json",
        raw,
    )
    assert match, raw
    # The button's repository and the image have one owner (ghcr.io: lower case).
    assert match.group(1).lower() == IMAGE.split("/")[1]
    assert raw in DEPLOY_DOC.read_text()
    # One click: every parameter but the name prefix has a default.
    params = load_json(AZURE / "azure-deploy.json")["parameters"]
    assert [name for name, p in params.items() if "defaultValue" not in p] == [
        "resourcePrefix"
    ]


def test_readme_links_the_deploy_doc() -> None:
    assert "(docs/deploy.md)" in README
    doc = DEPLOY_DOC.read_text()
    for step in (
        "git tag v",
        "git push",
        "Change visibility",
        "public",
        "deploy/IMAGE",
    ):
        assert step in doc, step


# The release workflow ---------------------------------------------------------


def workflow_steps(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (job,) = workflow["jobs"].values()
    return {step["uses"].split("@")[0]: step for step in job["steps"] if "uses" in step}


def test_release_publishes_on_a_version_tag() -> None:
    workflow: dict[Any, Any] = load_yaml(RELEASE)
    # YAML 1.1 reads a bare `on` key as True.
    assert workflow[True] == {"push": {"tags": ["v*"]}}
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == {"contents": "read", "packages": "write"}
    steps = workflow_steps(workflow)
    assert set(steps) >= {
        "actions/checkout",
        "docker/setup-qemu-action",
        "docker/setup-buildx-action",
        "docker/login-action",
        "docker/metadata-action",
        "docker/build-push-action",
    }
    login = steps["docker/login-action"]["with"]
    assert login["registry"] == IMAGE.split("/")[0]
    assert login["password"] == "${{ secrets.GITHUB_TOKEN }}"

    meta = steps["docker/metadata-action"]["with"]
    # The name comes from deploy/IMAGE, read by an earlier step.
    (reader,) = [s for s in job["steps"] if s.get("id") == "image"]
    assert "deploy/IMAGE" in reader["run"] and "GITHUB_OUTPUT" in reader["run"]
    assert meta["images"] == "${{ steps.image.outputs.name }}"
    assert meta["tags"] == "type=semver,pattern={{version}}"
    assert meta["flavor"] == "latest=auto"  # `latest` too, except for pre-releases


def test_release_builds_what_the_container_smoke_builds() -> None:
    build = workflow_steps(load_yaml(RELEASE))["docker/build-push-action"]["with"]
    assert build["context"] == "." and build["file"] == "Dockerfile"
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["push"] is True
    assert build["sbom"] is True
    assert build["provenance"] == "mode=max"
    for output in ("tags", "labels", "annotations"):
        assert build[output] == f"${{{{ steps.meta.outputs.{output} }}}}"
    smoke = (ROOT / "scripts" / "container-smoke").read_text()
    (command,) = re.findall(r'"\$DOCKER" build ([^>|\n]*)', smoke)
    assert command.endswith(" . ") and " -f " not in command  # ./Dockerfile


def labels(lines: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in lines.strip().splitlines())


def test_oci_labels_agree() -> None:
    meta = workflow_steps(load_yaml(RELEASE))["docker/metadata-action"]["with"]
    final = dockerfile_stages()[-1]
    (label,) = final.args("LABEL")
    static = dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', label))
    metadata = setup_cfg()["metadata"]
    assert static == {
        "org.opencontainers.image.title": metadata["name"],
        "org.opencontainers.image.description": metadata["description"],
        "org.opencontainers.image.licenses": metadata["license"],
    }
    # The workflow adds source, version, revision and created, and sets the same three.
    assert labels(meta["labels"]) == static
    assert labels(meta["annotations"]) == static


def tool(name: str) -> str | None:
    """A tool from the test extra: on PATH, or next to this Python."""
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.is_file() else None)


def test_workflows_pass_actionlint() -> None:
    actionlint = tool("actionlint")
    if actionlint is None:
        pytest.skip("actionlint not installed (the test extra brings it on Linux)")
    # shellcheck checks the `run:` scripts; without it actionlint skips them.
    shellcheck = tool("shellcheck") or ""
    files = sorted(str(p) for p in WORKFLOWS.glob("*.y*ml"))
    assert files
    try:
        result = subprocess.run(
            [
                actionlint,
                "-no-color",
                f"-shellcheck={shellcheck}",
                "-pyflakes=",
                *files,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=ROOT,
        )
    except OSError as exc:
        pytest.skip(f"actionlint cannot run here: {exc}")
    assert result.returncode == 0, result.stdout + result.stderr


# A reproducible image ------------------------------------------------------------


def locked() -> dict[str, tuple[Version, Requirement, list[str]]]:
    """requirements.lock: name -> (version, requirement, sha256 hashes)."""
    text = re.sub(r"\\\n", " ", LOCK.read_text())
    pins: dict[str, tuple[Version, Requirement, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement_text, *options = line.split(" --hash=")
        requirement = Requirement(requirement_text)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", line
        hashes = [option.strip() for option in options]
        pins[canonicalize_name(requirement.name)] = (
            Version(specifier.version),
            requirement,
            hashes,
        )
    return pins


def test_the_lock_pins_every_file_by_hash() -> None:
    header = LOCK.read_text().split("\n", 2)[:2]
    assert LOCK_COMMAND in header[1], "the lock's header names its command"
    assert LOCK_COMMAND in DEPLOY_DOC.read_text()
    pins = locked()
    assert pins
    for name, (_, _, hashes) in pins.items():
        assert hashes, f"{name} has no hash"
        for digest in hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), (name, digest)


# Both image platforms: CPython 3.11 on Debian (glibc), amd64 and arm64.
IMAGE_PLATFORMS = [
    {
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "python_version": "3.11",
        "python_full_version": "3.11.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": machine,
    }
    for machine in ("x86_64", "aarch64")
]


def test_the_lock_satisfies_setup_cfg() -> None:
    # setup.cfg changed and the lock not regenerated: this fails, naming the package.
    options = setup_cfg()["options"]
    extras = setup_cfg()["options.extras_require"]
    wanted = [
        Requirement(line)
        for line in (options["install_requires"] + extras["entra"]).splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    pins = locked()
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        for platform in IMAGE_PLATFORMS:
            if requirement.marker and not requirement.marker.evaluate(platform):
                continue
            assert name in pins, f"{name} is not in requirements.lock: regenerate it"
            version, pinned, _ = pins[name]
            assert requirement.specifier.contains(version, prereleases=True), (
                f"requirements.lock has {name} {version}, setup.cfg wants "
                f"{requirement.specifier}: regenerate it"
            )
            assert not pinned.marker or pinned.marker.evaluate(platform), name


def test_the_image_installs_only_the_locked_wheels() -> None:
    build, final = dockerfile_stages()
    assert build.name == "build" and final.name is None
    assert "requirements.lock ." in build.args("COPY")[0]
    wheels, package = build.args("RUN")
    for needed in (
        "pip wheel",
        "--require-hashes",
        "--only-binary=:all:",
        "--wheel-dir /wheels",
        "-r requirements.lock",
    ):
        assert needed in wheels, needed
    assert "--no-deps" in package and package.endswith(" --wheel-dir /wheels .")
    # The final stage copies nothing in: it installs the build stage's wheels, offline.
    assert not final.args("COPY") and not final.args("ADD")
    (install,) = final.args("RUN")
    assert install.startswith(
        "--mount=type=bind,from=build,source=/wheels,target=/wheels "
    )
    assert "pip install" in install and "--no-index" in install
    assert install.endswith(" /wheels/*.whl")
    allowed = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!requirements.lock" in allowed and "!LICENSE" in allowed


def test_license_is_mit_as_setup_cfg_says() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the azproxy authors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
    assert setup_cfg()["metadata"]["license"] == "MIT"
