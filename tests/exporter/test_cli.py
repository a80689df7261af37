"""The ``recsys`` entry point: ``serve`` is the service's own command, run without torch or training code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from exporter.cli import main
status = main(sys.argv[1:])
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "training", "sentence_transformers"})
print("loaded:", ",".join(loaded), "status:", status)
"""


def _recsys(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_serve_is_the_service_command_and_imports_no_torch() -> None:
    done = _recsys("serve", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: recsys serve" in done.stdout
    assert "--artifact" in done.stdout
    assert "--reload-poll-seconds" in done.stdout
    assert done.stdout.rstrip().endswith("loaded:  status: 0")


def test_serve_passes_the_service_command_exit_status_back() -> None:
    done = _recsys("serve", "--no-such-flag")
    assert done.returncode == 0, done.stderr  # main returned; the probe printed its status
    assert "unrecognized arguments: --no-such-flag" in done.stderr
    assert done.stdout.rstrip().endswith("loaded:  status: 2")


def test_the_other_commands_are_still_there() -> None:
    done = _recsys("--help")
    assert done.returncode == 0, done.stderr  # argparse exits 0 after the help
    for command in ("quickstart", "data", "train", "evaluate", "export", "events", "serve"):
        assert command in done.stdout
