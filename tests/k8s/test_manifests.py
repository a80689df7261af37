"""Deployment files against the code: dashboard queries vs the exported metrics, k8s YAML, Dockerfile stages.

The dashboard check derives the series names from ``ServiceMetrics()`` itself, so renaming a metric or a
label in ``service/metrics.py`` without updating ``k8s/grafana/dashboard.json`` fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from service.metrics import ServiceMetrics
from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "k8s"
DASHBOARD = K8S / "grafana" / "dashboard.json"
PROBE_PATHS = {"/healthz", "/readyz"}

# PromQL words that look like metric names: binary and set operators, grouping modifiers
PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w.$])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()")


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name ``ServiceMetrics()`` exports -> its label names (``le`` on histogram buckets)."""
    metrics = ServiceMetrics()
    labels: dict[str, frozenset[str]] = {}
    for wrapper in vars(metrics).values():
        if isinstance(wrapper, MetricWrapperBase):
            for family in wrapper.describe():
                labels[family.name] = frozenset(wrapper._labelnames)
    series: dict[str, frozenset[str]] = {}
    for family in metrics.registry.collect():
        assert family.name in labels, f"{family.name} is registered but no ServiceMetrics attribute"
        own = labels[family.name]
        # a Histogram family is exposed as _bucket, _count and _sum series
        if family.type == "histogram":
            series |= {f"{family.name}_bucket": own | {"le"}, f"{family.name}_count": own}
            series[f"{family.name}_sum"] = own
        # a Counter family's name drops the _total that its series carry
        elif family.type == "counter":
            series[f"{family.name}_total"] = own
        else:
            series[family.name] = own
    return series


def promql_refs(expr: str) -> tuple[set[str], set[str], dict[str, set[str]]]:
    """(metric names, labels in by/without/on/ignoring clauses, metric -> labels in its {matchers})."""
    text = _STRING.sub('""', expr)
    grouping = {name.strip() for m in _GROUPING.finditer(text) for name in m.group(1).split(",")}
    text = _GROUPING.sub(" ", text)
    matchers: dict[str, set[str]] = {}
    for m in _SELECTOR.finditer(text):
        matchers.setdefault(m.group(1) or "", set()).update(_MATCHER.findall(m.group(2)))
    text = _RANGE.sub(" ", _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text))
    names = {name for name in _IDENT.findall(text) if name not in PROMQL_KEYWORDS}
    return names, grouping - {""}, matchers


def promql_problems(expr: str, series: dict[str, frozenset[str]]) -> list[str]:
    """What in one query does not match the exported series (empty when all is well)."""
    names, grouping, matchers = promql_refs(expr)
    problems = [f"unknown metric {n!r}" for n in sorted(names - series.keys())]
    if "" in matchers:
        problems.append(f"selector without a metric name: {sorted(matchers[''])}")
    for name in sorted(names & series.keys()):
        used = grouping | matchers.get(name, set())
        problems += [f"{name} has no label {label!r}" for label in sorted(used - series[name])]
    if not names:
        problems.append("no metric in the query")
    return problems


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every query, rows' nested panels included."""
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def datasources(node: Any) -> Iterator[Any]:
    """Every ``datasource`` value in a JSON tree."""
    if isinstance(node, dict):
        yield from ([node["datasource"]] if "datasource" in node else [])
        for value in node.values():
            yield from datasources(value)
    elif isinstance(node, list):
        for value in node:
            yield from datasources(value)


def dashboard_problems(dashboard: dict[str, Any]) -> list[str]:
    series = exported_series()
    return [
        f"{title}: {p}"
        for title, e in dashboard_exprs(dashboard)
        for p in promql_problems(e, series)
    ]


def test_promql_refs_finds_names_grouping_and_matcher_labels() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{route!~"/a|b",'
        ' status=~"5.."}[5m]))) / (sum(rate(rec_batch_size_sum[1m] offset 5m)) or vector(0))'
    )
    names, grouping, matchers = promql_refs(expr)
    assert names == {"http_request_duration_seconds_bucket", "rec_batch_size_sum"}
    assert grouping == {"le", "route"}
    assert matchers == {"http_request_duration_seconds_bucket": {"route", "status"}}


def test_dashboard_queries_use_only_exported_metrics_and_labels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert len(list(dashboard_exprs(dashboard))) >= 10
    assert dashboard_problems(dashboard) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("rec_stage_duration_seconds_bucket", "rec_stage_seconds_bucket", "unknown metric"),
        ("rec_reloads_total", "rec_reloads", "unknown metric"),
        ("by (le, stage)", "by (le, step)", "no label 'step'"),
        ("rec_model_info ==", "rec_model_info_bucket ==", "unknown metric"),
        ('status=~\\"5..\\"', 'code=~\\"5..\\"', "no label 'code'"),
    ],
)
def test_dashboard_check_catches_renames(old: str, new: str, expected: str) -> None:
    text = DASHBOARD.read_text()
    assert old in text
    problems = dashboard_problems(json.loads(text.replace(old, new)))
    assert any(expected in p for p in problems), problems


def test_dashboard_shows_every_exported_family_and_uses_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = set().union(*(promql_refs(e)[0] for _, e in dashboard_exprs(dashboard)))
    families = {re.sub(r"_(bucket|count|sum|total)$", "", s) for s in exported_series()}
    assert families <= {re.sub(r"_(bucket|count|sum|total)$", "", s) for s in used}
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    sources = list(datasources(dashboard["panels"]))
    assert len(sources) > len(dashboard["panels"]), "panels and queries must name their datasource"
    assert all(source == {"type": "prometheus", "uid": "${datasource}"} for source in sources)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# ---- Kubernetes manifests ------------------------------------------------------------------------


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, from the resources listed in kustomization.yaml."""
    kustomization = load_docs(K8S / "kustomization.yaml")[0]
    found = {}
    for resource in kustomization["resources"]:
        for doc in load_docs(K8S / resource):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def test_all_yaml_parses_and_kustomization_lists_every_manifest() -> None:
    paths = sorted(K8S.rglob("*.yaml"))
    assert len(paths) >= 12
    for path in paths:
        docs = load_docs(path)
        assert docs, f"{path} is empty"
        if "provisioning" in path.parts:
            assert all(doc["apiVersion"] == 1 for doc in docs), path
        else:
            assert all({"apiVersion", "kind"} <= doc.keys() for doc in docs), path
    kustomization = load_docs(K8S / "kustomization.yaml")[0]
    top_level = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == top_level
    for generator in kustomization["configMapGenerator"]:
        for entry in generator["files"]:
            assert (K8S / entry.split("=")[-1]).is_file(), entry


def workers_ok(argv: list[str]) -> bool:
    """One uvicorn process: ``--workers 1`` / ``--workers=1`` or no workers flag at all."""
    for i, arg in enumerate(argv):
        if arg == "--workers" and argv[i + 1 : i + 2] != ["1"]:
            return False
        if arg.startswith("--workers=") and arg != "--workers=1":
            return False
    return True


def test_workers_ok_rejects_more_than_one_worker() -> None:
    assert workers_ok(["uvicorn", "x:app", "--workers", "1"])
    assert workers_ok(["uvicorn", "x:app"])
    assert not workers_ok(["uvicorn", "x:app", "--workers", "4"])
    assert not workers_ok(["uvicorn", "x:app", "--workers=2"])


def test_deployment_probes_command_resources_and_security(objects: dict[Any, Any]) -> None:
    pod = objects[("Deployment", "recsys")]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    probes = {k: container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert {p["httpGet"]["path"] for p in probes.values()} <= PROBE_PATHS
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert (
        probes["livenessProbe"]["failureThreshold"] > probes["readinessProbe"]["failureThreshold"]
    )
    assert container["command"][0] == "uvicorn"
    assert workers_ok(container["command"])
    assert "service.app:create_app" in container["command"]
    assert "--factory" in container["command"]
    assert (
        container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"] == "1"
    )
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert mounts["artifacts"]["readOnly"] is True
    assert volumes["artifacts"]["persistentVolumeClaim"]["readOnly"] is True
    assert (
        "PersistentVolumeClaim",
        volumes["artifacts"]["persistentVolumeClaim"]["claimName"],
    ) in objects


def test_configmap_sets_only_known_settings(objects: dict[Any, Any]) -> None:
    data = objects[("ConfigMap", "recsys-config")]["data"]
    fields = {f"RECSYS_{name.upper()}" for name in Settings.model_fields}
    assert {k for k in data if k.startswith("RECSYS_")} <= fields
    assert float(data["RECSYS_RELOAD_POLL_SECONDS"]) > 0
    assert data["RECSYS_ARTIFACT"] == "/artifacts"
    redis_host = re.fullmatch(r"redis://([\w-]+):6379/\d+", data["RECSYS_REDIS_URL"])
    assert redis_host
    assert ("Service", redis_host.group(1)) in objects


def test_service_monitor_hpa_and_pdb_point_at_the_api(objects: dict[Any, Any]) -> None:
    deployment = objects[("Deployment", "recsys")]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    service = objects[("Service", "recsys")]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    monitor = objects[("ServiceMonitor", "recsys")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]
    }
    hpa = objects[("HorizontalPodAutoscaler", "recsys")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "recsys"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["averageUtilization"] == 70
    pdb = objects[("PodDisruptionBudget", "recsys")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_redis_persists_and_training_job_trains_then_exports(objects: dict[Any, Any]) -> None:
    redis = objects[("StatefulSet", "redis")]
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert redis["spec"]["volumeClaimTemplates"]
    job = objects[("Job", "recsys-train")]["spec"]["template"]["spec"]
    script = " ".join(job["containers"][0]["command"] + job["containers"][0]["args"])
    assert (
        script.index("torchrun") < script.index("-m training train") < script.index("recsys export")
    )
    assert "--out /artifacts" in script
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in job["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert "recsys-artifacts" in claims


def test_training_job_runs_indexed_torchrun_workers_behind_a_headless_service(
    objects: dict[Any, Any],
) -> None:
    job = objects[("Job", "recsys-train")]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    workers = int(env["WORKERS"])
    assert workers >= 2
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == workers
    script = " ".join(container["args"])
    assert '--nnodes "$WORKERS"' in script
    assert '--node-rank "$JOB_COMPLETION_INDEX"' in script
    # pod 0's stable name is <job>-0.<subdomain>, the subdomain a headless Service over the Job's pods
    service = objects[("Service", pod["subdomain"])]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
    master = re.search(r"--master-addr (\S+) --master-port (\d+)", script)
    assert master is not None
    assert master.group(1) == f"{job['metadata']['name']}-0.{pod['subdomain']}"
    assert int(master.group(2)) in {p["port"] for p in service["spec"]["ports"]}
    assert int(master.group(2)) in {p["containerPort"] for p in container["ports"]}
    # only rank 0's pod exports, after training
    export = script.index("recsys export")
    assert '[ "$JOB_COMPLETION_INDEX" = 0 ]' in script[script.index("-m training train") : export]


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed"
)
def test_kustomize_builds_with_the_dashboard_configmap() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=60
    )
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert all(d["metadata"].get("namespace") == "recsys" for d in docs if d["kind"] != "Namespace")
    (board,) = [d for d in docs if d["metadata"]["name"] == "recsys-grafana-dashboard"]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["recsys-service.json"]) == json.loads(DASHBOARD.read_text())


# ---- Dockerfile ----------------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (FROM image or stage, instructions with continuations joined); ARG defaults resolved."""
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", "\n".join(lines), flags=re.MULTILINE))
    stages: dict[str, tuple[str, list[str]]] = {}
    for line in lines:
        if m := re.fullmatch(r"FROM (\S+) AS (\w+)", line, flags=re.IGNORECASE):
            image = re.sub(r"\$\{(\w+)\}", lambda a: args[a.group(1)], m.group(1))
            stages[m.group(2)] = (image, [])
        elif stages:
            stages[next(reversed(stages))][1].append(line)
    return stages


def test_runtime_image_installs_only_the_serve_extra() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "runtime", "the service image must be the default (last) target"
    base, runtime = stages["runtime"]
    while base in stages:
        base = stages[base][0]
    assert base == "python:3.11-slim"
    copies = [ln for ln in runtime if ln.startswith("COPY --from=")]
    assert copies == ["COPY --from=builder /opt/venv /opt/venv"]
    installs = [
        ln
        for name in ("base", "builder", "runtime")
        for ln in stages[name][1]
        if "pip install" in ln
    ]
    extras = {e for ln in installs for e in re.findall(r"\[([\w,]+)\]", ln)}
    assert extras == {"serve"}
    assert not any("torch" in ln for ln in installs)
    assert any("find_spec('torch') is not None" in ln for ln in runtime)
    assert "pip wheel . --no-deps" in " ".join(stages["builder"][1])


def test_runtime_runs_uvicorn_as_non_root_and_trainer_has_the_export_extra() -> None:
    stages = dockerfile_stages()
    runtime = stages["runtime"][1]
    users = [ln.split()[1] for ln in runtime if ln.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert "EXPOSE 8000" in runtime
    assert any(ln.startswith("HEALTHCHECK") and "/healthz" in ln for ln in runtime)
    (cmd,) = [json.loads(ln.removeprefix("CMD ")) for ln in runtime if ln.startswith("CMD ")]
    assert cmd[:3] == ["uvicorn", "service.app:create_app", "--factory"]
    assert workers_ok(cmd)
    trainer = " ".join(stages["trainer"][1])
    assert '"torch==2.13.0"' in trainer
    assert '[export]"' in trainer
