"""scripts/audit_serve.py, the CI step that audits the serve dependencies: what it audits, when it fails, when it
skips. No network: PyPI is replaced by a local server and pip-audit by its report."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "audit_serve", REPO / "scripts" / "audit_serve.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_audited_set_is_the_serve_extra_and_what_it_requires(audit: ModuleType) -> None:
    requirements = audit.top_level_requirements()
    assert any(r.startswith("fastapi") for r in requirements)
    pinned = audit.closure(requirements)
    # direct, transitive (fastapi -> starlette), and an extra's requirements (uvicorn[standard] -> uvloop)
    assert {
        "fastapi",
        "onnxruntime",
        "faiss-cpu",
        "redis",
        "hiredis",
        "starlette",
        "uvloop",
    } <= set(pinned)
    assert not {"torch", "pandas", "sentence-transformers", "pytest"} & set(pinned)
    assert all(version[0].isdigit() for version in pinned.values())


REPORT: dict[str, Any] = {
    "dependencies": [
        {
            "name": "a",
            "version": "1.0",
            "vulns": [{"id": "PYSEC-1", "fix_versions": ["1.1", "2.0"]}],
        },
        {"name": "b", "version": "2.0", "vulns": [{"id": "GHSA-x", "fix_versions": []}]},
        {"name": "c", "version": "3.0", "vulns": []},
        {"name": "d", "skip_reason": "Dependency not found on PyPI"},
    ]
}


def test_only_vulnerabilities_with_a_fix_fail(audit: ModuleType) -> None:
    fix, nofix = audit.fixable(REPORT)
    assert fix == ["a 1.0: PYSEC-1 (fixed in 1.1, 2.0)"]
    assert nofix == [
        "b 2.0: GHSA-x: known, no fixed release",
        "d: not audited: Dependency not found on PyPI",
    ]


def _fake_pip_audit(
    audit: ModuleType, monkeypatch: pytest.MonkeyPatch, stdout: str, audited: list[str]
) -> None:
    def pip_audit(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        audited.extend(Path(argv[-1]).read_text().splitlines())
        return subprocess.CompletedProcess(argv, 1, stdout, "ConnectionError: no route")

    monkeypatch.setattr(audit, "pip_audit_command", lambda req: ["pip-audit", "-r", str(req)])
    monkeypatch.setattr(audit.subprocess, "run", pip_audit)


@pytest.mark.parametrize(
    ("stdout", "reason"),
    [
        ("", "pip-audit gave no report, exit 1: ConnectionError: no route"),
        (json.dumps({"dependencies": REPORT["dependencies"][3:]}), "no package could be audited"),
    ],
)
def test_an_audit_that_reads_no_vulnerability_data_skips_with_the_reason(
    audit: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stdout: str,
    reason: str,
) -> None:
    _fake_pip_audit(audit, monkeypatch, stdout, [])
    assert audit.main() == 0
    out = capsys.readouterr().out
    assert out.startswith("dependency audit skipped: PyPI's vulnerability data cannot be read here")
    assert reason in out


@pytest.mark.parametrize(
    ("report", "code"), [(REPORT, 1), ({"dependencies": REPORT["dependencies"][1:]}, 0)]
)
def test_the_step_fails_on_a_fixable_vulnerability(
    audit: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    report: dict[str, Any],
    code: int,
) -> None:
    audited: list[str] = []
    _fake_pip_audit(audit, monkeypatch, json.dumps(report), audited)
    assert audit.main() == code
    out = capsys.readouterr().out
    assert ("VULNERABLE, upgrade: a 1.0: PYSEC-1" in out) == (code == 1)
    assert "b 2.0: GHSA-x: known, no fixed release" in out
    assert any(line.startswith("fastapi==") for line in audited)
    assert not any(line.startswith("alphafuse-recsys") for line in audited)
