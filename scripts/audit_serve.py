"""Audit the service's dependencies for known vulnerabilities (pip-audit, PyPI's advisory data).

The audited set is what the ``serve`` extra installs: the project's dependencies and that extra, with every
package they require, at the versions installed in this environment (nothing of train or export: the service
image runs without them). Fails (exit 1) when a vulnerability with a fixed release is found; a vulnerability
without a fix is printed and does not fail. When pip-audit can read no vulnerability data (no network, or its
service answers for no package) the audit is skipped with the reason printed (exit 0): the check needs the
network, the rest of CI does not.

    .venv/bin/python scripts/audit_serve.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
EXTRA = "serve"


def top_level_requirements(
    pyproject: Path = REPO / "pyproject.toml", extra: str = EXTRA
) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"][extra]]


def closure(requirements: list[str]) -> dict[str, str]:
    """Installed name -> version of ``requirements`` and everything they require (markers evaluated here)."""
    found: dict[str, str] = {}
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(
                f"{req.name} is required by the {EXTRA} extra but not installed"
            ) from None
        if name not in found:
            found[name] = dist.version
            todo += [(Requirement(r), "") for r in dist.requires or []]
        for wanted in req.extras:  # e.g. uvicorn[standard]: the extra's own requirements
            todo += [(Requirement(r), wanted) for r in dist.requires or [] if "extra" in r]
    return dict(sorted(found.items()))


def fixable(report: dict[str, Any]) -> tuple[list[str], list[str]]:
    """pip-audit's JSON report -> (vulnerabilities with a fixed release, those without), one line each."""
    fix, nofix = [], []
    for dep in report.get("dependencies", []):
        if "skip_reason" in dep:
            nofix.append(f"{dep['name']}: not audited: {dep['skip_reason']}")
        for vuln in dep.get("vulns", []):
            versions = vuln.get("fix_versions") or []
            line = f"{dep['name']} {dep['version']}: {vuln['id']}"
            if versions:
                fix.append(f"{line} (fixed in {', '.join(versions)})")
            else:
                nofix.append(f"{line}: known, no fixed release")
    return fix, nofix


def pip_audit_command(requirements: Path) -> list[str]:
    exe = shutil.which("pip-audit", path=str(Path(sys.executable).parent)) or shutil.which(
        "pip-audit"
    )
    if exe is None:
        raise SystemExit("pip-audit is not installed (it is in the dev group: scripts/setup.sh)")
    return [exe, "--disable-pip", "--no-deps", "--progress-spinner", "off", "--format", "json",
            "-r", str(requirements)]  # fmt: skip


def main() -> int:
    pinned = closure(top_level_requirements())
    pinned.pop(canonicalize_name("alphafuse-recsys"), None)  # this project, not on PyPI
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "serve-requirements.txt"
        requirements.write_text("".join(f"{name}=={v}\n" for name, v in pinned.items()))
        done = subprocess.run(pip_audit_command(requirements), capture_output=True, text=True)
    why = unreadable(done)
    if why is not None:
        print(f"dependency audit skipped: PyPI's vulnerability data cannot be read here ({why})")
        return 0
    fix, nofix = fixable(json.loads(done.stdout))
    print(f"dependency audit: {len(pinned)} packages of the {EXTRA} extra")
    for line in nofix:
        print(f"  {line}")
    for line in fix:
        print(f"  VULNERABLE, upgrade: {line}")
    return 1 if fix else 0


def unreadable(done: subprocess.CompletedProcess[str]) -> str | None:
    """Why pip-audit's run audited nothing (no report, or every package skipped), or None when it audited."""
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"pip-audit gave no report, exit {done.returncode}: {tail}"
    deps = report.get("dependencies", [])
    if deps and all("skip_reason" in d for d in deps):
        return f"no package could be audited: {deps[0]['skip_reason']}"
    return None


if __name__ == "__main__":
    sys.exit(main())
